#pragma once
/// \file Crash-safe file writes: data goes to a temporary file in the target's directory, is flushed
/// to disk, and is renamed over the target. A crash or an exception midway leaves the previous file
/// intact and no partial file under the target name. Only regular files are replaced: a FIFO, a
/// device or `/dev/stdout` is written to as it is, and a symbolic link keeps pointing where it did.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "peft/core/error.hpp"

namespace peft::io {

/// I/O failure (missing file, permission, full disk, malformed content) naming the file.
struct io_error : error {
  using error::error;
};

namespace detail {
inline std::string errno_text() { return std::strerror(errno); }

/// Owns a POSIX file descriptor.
class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_;
};
}  // namespace detail

namespace detail {
/// Writes every byte of `parts` to `fd`; false (errno set) on failure.
inline bool write_all(int fd, std::initializer_list<std::span<const std::byte>> parts) {
  for (const auto& part : parts) {
    const std::byte* p = part.data();
    std::size_t left = part.size();
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      p += n;
      left -= std::size_t(n);
    }
  }
  return true;
}
}  // namespace detail

/// Writes the concatenation of `parts` to `target`.
///
/// A regular file (or a new name) is replaced atomically: temporary file, fsync, rename, fsync of the
/// directory, so a crash or an error leaves the previous file intact and no partial file under the
/// target name. A symbolic link is followed and the file it names replaced the same way (the link
/// stays). Anything else that exists under the name (a FIFO, a terminal, `/dev/stdout`, a device) is
/// written to as it is, never replaced by a regular file; a directory is an error. Throws `io_error`
/// naming the file and the system error.
inline void write_file_atomically(const std::filesystem::path& requested, std::initializer_list<std::span<const std::byte>> parts) {
  namespace fs = std::filesystem;
  fs::path target = requested;
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(target, ec))) {
    const fs::path resolved = fs::weakly_canonical(target, ec);
    if (!ec) target = resolved;
  }
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode)) throw io_error(peft::detail::concat("cannot write '", requested.string(), "': it is a directory"));
    // A FIFO, terminal, socket or device: its reader expects the bytes, not a new file in its place.
    detail::fd_guard fd(::open(target.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.get() < 0) throw io_error(peft::detail::concat("cannot open '", requested.string(), "' for writing: ", detail::errno_text()));
    if (!detail::write_all(fd.get(), parts))
      throw io_error(peft::detail::concat("writing '", requested.string(), "': write failed: ", detail::errno_text()));
    return;
  }
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  const int raw = ::mkstemp(tmpl.data());
  if (raw < 0) throw io_error(peft::detail::concat("cannot create a temporary file next to '", target.string(), "': ", detail::errno_text()));
  detail::fd_guard fd(raw);
  const fs::path tmp(tmpl);
  auto fail = [&](const char* what) {
    const std::string msg = peft::detail::concat("writing '", target.string(), "': ", what, ": ", detail::errno_text());
    ::unlink(tmp.c_str());
    throw io_error(msg);
  };
  if (!detail::write_all(fd.get(), parts)) fail("write failed");
  if (::fchmod(fd.get(), 0644) != 0) fail("fchmod failed");
  if (::fsync(fd.get()) != 0) fail("fsync failed");
  if (::close(fd.release()) != 0) fail("close failed");
  if (::rename(tmp.c_str(), target.c_str()) != 0) fail("rename failed");
  detail::fd_guard dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY));
  if (dfd.get() >= 0) ::fsync(dfd.get());  // make the rename durable; best effort
}

/// `write_file_atomically` for text.
inline void write_text_atomically(const std::filesystem::path& target, std::string_view text) {
  write_file_atomically(target, {std::as_bytes(std::span(text.data(), text.size()))});
}

}  // namespace peft::io
