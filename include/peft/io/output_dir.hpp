#pragma once
/// \file Output directories that lose nothing: a lock that says a run owns a directory, an atomic
/// exchange of two paths (so a finished result replaces the previous one in one step), staging
/// directories that are cleaned when their owner died, and the removal of temporary files that an
/// interrupted `write_file_atomically` left behind.
///
/// The pattern (what `peft-train train` and `merge` do): build the new result beside the old one,
/// then swap it in with `exchange_paths`; until that instant the previous result is whole, and after
/// it the new one is.

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc 2.28)
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "peft/io/atomic_file.hpp"

namespace peft::io {

/// An exclusive advisory lock (flock) on a directory, held for the object's lifetime and released by
/// the kernel when the process dies, so a crashed owner never leaves a stale lock.
class directory_lock {
 public:
  /// Locks `dir` (which must exist); throws `io_error` when another process holds it, naming `what`
  /// (e.g. "another peft-train run").
  directory_lock(const std::filesystem::path& dir, const std::string& what) : fd_(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (fd_.get() < 0) throw io_error(peft::detail::concat("cannot open directory '", dir.string(), "': ", detail::errno_text()));
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK)
        throw io_error(peft::detail::concat("'", dir.string(), "' is in use by ", what, " (it holds the directory's lock); wait for it "
                                            "to finish or choose another output directory"));
      throw io_error(peft::detail::concat("cannot lock '", dir.string(), "': ", detail::errno_text()));
    }
  }
  /// Tries to lock `dir`: false when another process holds the lock (or it cannot be opened).
  static bool is_free(const std::filesystem::path& dir) {
    detail::fd_guard fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    return fd.get() >= 0 && ::flock(fd.get(), LOCK_EX | LOCK_NB) == 0;
  }

 private:
  detail::fd_guard fd_;
};

/// Swaps what the paths `a` and `b` name, in one atomic step when the file system can (Linux
/// `renameat2(RENAME_EXCHANGE)`); elsewhere `b` is moved aside first, so a crash in between leaves
/// `b`'s old content under `b.old`. Both must exist on the same file system. Throws `io_error`.
inline void exchange_paths(const std::filesystem::path& a, const std::filesystem::path& b) {
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) return;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    throw io_error(peft::detail::concat("cannot swap '", a.string(), "' and '", b.string(), "': ", detail::errno_text()));
#endif
  const std::filesystem::path aside = b.string() + ".old";
  std::error_code ec;
  std::filesystem::rename(b, aside, ec);
  if (!ec) std::filesystem::rename(a, b, ec);
  if (!ec) std::filesystem::rename(aside, a, ec);
  if (ec) throw io_error(peft::detail::concat("cannot swap '", a.string(), "' and '", b.string(), "': ", ec.message()));
}

/// Puts `staged` (a file or directory) at `target`: renamed there when `target` does not exist, else
/// exchanged with it and the previous content removed. Same file system required. Throws `io_error`.
inline void replace_with(const std::filesystem::path& staged, const std::filesystem::path& target) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(target, ec))) {
    fs::rename(staged, target, ec);
    if (ec) throw io_error(peft::detail::concat("cannot move '", staged.string(), "' to '", target.string(), "': ", ec.message()));
    return;
  }
  exchange_paths(staged, target);
  fs::remove_all(staged, ec);  // now the previous content; a failure leaves litter, not a wrong result
}

/// True for the names `write_file_atomically` gives its temporary files (".<name>.tmp.XXXXXX").
inline bool is_atomic_write_temporary(const std::string& name) {
  const auto at = name.rfind(".tmp.");
  return name.size() > 1 && name[0] == '.' && at != std::string::npos && at > 1 && name.size() - at == 11;
}

/// Removes what an interrupted `write_file_atomically` left in `dir` (not recursive); call it only
/// while owning the directory (a `directory_lock`), when no write of one's own is under way.
inline std::size_t remove_stale_temporaries(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::size_t n = 0;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec) && is_atomic_write_temporary(e.path().filename().string()) && fs::remove(e.path(), ec)) ++n;
  return n;
}

/// A new directory beside `target` (".<name>.<tag>.XXXXXX" in its parent, so that it can be swapped
/// in with `replace_with`), locked while this object lives and removed with everything in it unless
/// `commit` moved it to `target`. Staging directories of the same target and tag whose owner died
/// (their lock is free) are removed first.
class staging_directory {
 public:
  staging_directory(const std::filesystem::path& requested, const std::string& tag) : target_(normal(requested)) {
    namespace fs = std::filesystem;
    const fs::path& target = target_;
    const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
    const std::string prefix = "." + target.filename().string() + "." + tag + ".";
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(parent, ec))
      if (const auto name = e.path().filename().string();
          name.rfind(prefix, 0) == 0 && name.size() == prefix.size() + 6 && e.is_directory(ec) && directory_lock::is_free(e.path()))
        fs::remove_all(e.path(), ec);
    std::string tmpl = (parent / (prefix + "XXXXXX")).string();
    if (!::mkdtemp(tmpl.data()))
      throw io_error(peft::detail::concat("cannot create a staging directory next to '", target.string(), "': ", detail::errno_text()));
    path_ = tmpl;
    lock_ = std::make_unique<directory_lock>(path_, "another process");
  }
  staging_directory(const staging_directory&) = delete;
  staging_directory& operator=(const staging_directory&) = delete;
  ~staging_directory() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  /// Moves the staged directory to the target (replacing what was there in one step).
  void commit() {
    replace_with(path_, target_);
    path_.clear();
  }

 private:
  static std::filesystem::path normal(const std::filesystem::path& p) {
    auto n = std::filesystem::absolute(p).lexically_normal();
    return n.filename().empty() ? n.parent_path() : n;  // "out/" names "out"
  }
  std::filesystem::path target_;
  std::filesystem::path path_;
  std::unique_ptr<directory_lock> lock_;
};

}  // namespace peft::io
