#pragma once
/// \file `peft::io::mapped_file`: a whole regular file mapped read-only into memory, shared by the
/// checkpoint readers (safetensors, GGUF) and by the tensors that view it.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>

#include "peft/io/atomic_file.hpp"

namespace peft::io {

/// A read-only private mapping of a file. Guarantees: `bytes()` stays valid while any shared
/// pointer to the object lives; an empty file maps to an empty span.
class mapped_file {
 public:
  /// Maps `path`. Throws `io_error` naming the file when it cannot be opened, is not a regular file
  /// (a directory, a FIFO, a device) or cannot be mapped.
  static std::shared_ptr<const mapped_file> open(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw io_error(peft::detail::concat("cannot open '", path.string(), "': ", detail::errno_text()));
    detail::fd_guard guard(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw io_error(peft::detail::concat("cannot stat '", path.string(), "': ", detail::errno_text()));
    if (!S_ISREG(st.st_mode)) throw io_error(peft::detail::concat("'", path.string(), "' is not a regular file"));
    std::shared_ptr<mapped_file> map(new mapped_file);
    map->size_ = std::size_t(st.st_size);
    if (map->size_ > 0) {
      void* p = ::mmap(nullptr, map->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) throw io_error(peft::detail::concat("cannot map '", path.string(), "': ", detail::errno_text()));
      map->data_ = static_cast<const std::byte*>(p);
    }
    return map;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
  }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  mapped_file() = default;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace peft::io
