#pragma once
/// \file TensorBoard scalar logging without TensorFlow or protobuf: writes the event file format
/// (`events.out.tfevents.*`) that `tensorboard --logdir DIR` reads. The format is a sequence of
/// TFRecords, each holding one `tensorflow.Event` protobuf; the handful of fields needed for scalars
/// are encoded by hand here.

#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "peft/core/error.hpp"
#include "peft/io/atomic_file.hpp"

namespace peft::train {

namespace detail {

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord framing requires.
/// crc32c("123456789") == 0xE3069283.
inline std::uint32_t crc32c(std::string_view data) noexcept {
  static constexpr std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t crc = 0xFFFFFFFFu;
  for (const char ch : data) crc = table[(crc ^ static_cast<unsigned char>(ch)) & 0xFFu] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

/// The masked CRC stored in TFRecords (masking keeps a CRC of data that itself contains CRCs robust).
inline std::uint32_t masked_crc32c(std::string_view data) noexcept {
  const std::uint32_t crc = crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

/// Appends `v` little-endian in `bytes` bytes; byte shifts make this independent of host endianness.
inline void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}

inline void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7Fu) | 0x80u));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

/// Protobuf wire types used by the event messages.
enum class wire : std::uint32_t { varint = 0, fixed64 = 1, length_delimited = 2, fixed32 = 5 };

inline void put_key(std::string& out, std::uint32_t field, wire type) { put_varint(out, (std::uint64_t(field) << 3) | std::uint32_t(type)); }

inline void put_double(std::string& out, std::uint32_t field, double v) {
  put_key(out, field, wire::fixed64);
  put_le(out, std::bit_cast<std::uint64_t>(v), 8);
}
inline void put_float(std::string& out, std::uint32_t field, float v) {
  put_key(out, field, wire::fixed32);
  put_le(out, std::bit_cast<std::uint32_t>(v), 4);
}
/// int64 fields are varints of the two's-complement value (a negative step takes ten bytes).
inline void put_int64(std::string& out, std::uint32_t field, std::int64_t v) {
  put_key(out, field, wire::varint);
  put_varint(out, static_cast<std::uint64_t>(v));
}
/// Strings, bytes and embedded messages alike: key, length, payload.
inline void put_bytes(std::string& out, std::uint32_t field, std::string_view payload) {
  put_key(out, field, wire::length_delimited);
  put_varint(out, payload.size());
  out.append(payload);
}

/// Event { wall_time = 1; file_version = 3 }: the record TensorBoard expects first in every file.
inline std::string file_version_event(double wall_time) {
  std::string event;
  put_double(event, 1, wall_time);
  put_bytes(event, 3, "brain.Event:2");
  return event;
}

/// Event { wall_time = 1; step = 2; summary = 5 { value = 1 { tag = 1; simple_value = 2 } } }.
inline std::string scalar_event(double wall_time, std::int64_t step, std::string_view tag, float value) {
  std::string summary_value;
  put_bytes(summary_value, 1, tag);
  put_float(summary_value, 2, value);
  std::string summary;
  put_bytes(summary, 1, summary_value);
  std::string event;
  put_double(event, 1, wall_time);
  put_int64(event, 2, step);
  put_bytes(event, 5, summary);
  return event;
}

/// TFRecord framing: uint64 length, masked CRC of those 8 bytes, data, masked CRC of the data.
inline std::string tfrecord(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(out), 4);
  out.append(data);
  put_le(out, masked_crc32c(data), 4);
  return out;
}

inline double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

struct file_closer {
  void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};

}  // namespace detail

/// Appends scalar summaries to a new TensorBoard event file
/// `DIR/events.out.tfevents.<unix seconds>.<hostname>.<pid>.<n>` (`n` counts writers in this
/// process, so two writers opened in the same second never share a file; an existing file is never
/// overwritten). Records are buffered: `flush()` makes them visible to a running TensorBoard, and the
/// destructor flushes what is left. Move-only; a moved-from writer may only be destroyed or assigned to.
/// Not thread-safe: one writer per thread, or external locking.
class tensorboard_writer {
 public:
  /// Creates `dir` (and parents) if needed, opens a new event file in it and writes the
  /// file-version record. Throws `io::io_error` naming the path if the directory cannot be created or
  /// the file cannot be opened or written.
  explicit tensorboard_writer(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw io::io_error(peft::detail::concat("tensorboard_writer: cannot create directory '", dir.string(), "': ", ec.message()));
    static std::atomic<unsigned> counter{0};
    const double now = detail::unix_seconds_now();
    path_ = dir / peft::detail::concat("events.out.tfevents.", static_cast<long long>(now), ".", detail::host_name(), ".", ::getpid(), ".",
                                       counter.fetch_add(1));
    // "x": fail rather than clobber an existing file (C11 exclusive mode, supported by fopen).
    file_.reset(std::fopen(path_.c_str(), "wbx"));
    if (!file_) throw io::io_error(peft::detail::concat("tensorboard_writer: cannot create '", path_.string(), "': ", std::strerror(errno)));
    write_record(detail::file_version_event(now));
  }

  tensorboard_writer(tensorboard_writer&&) noexcept = default;
  tensorboard_writer& operator=(tensorboard_writer&&) noexcept = default;
  tensorboard_writer(const tensorboard_writer&) = delete;
  tensorboard_writer& operator=(const tensorboard_writer&) = delete;
  /// Flushes and closes the file; errors here are ignored (a destructor cannot throw), so call
  /// `flush()` first where a lost tail must be noticed.
  ~tensorboard_writer() = default;

  /// Appends `value` (stored as a 32-bit float, as TensorBoard's `simple_value` is) for `tag` at
  /// `step`, stamped with the current wall time. A non-finite value (NaN, inf, or a double outside the
  /// float range, which becomes inf) is written as is; TensorBoard shows it as NaN/inf rather than
  /// the writer dropping it, so a diverged run stays visible. Throws `io::io_error` naming the file on
  /// a write failure; the file may then end in a partial record, which readers skip as truncated.
  void add_scalar(std::string_view tag, double value, std::int64_t step) {
    write_record(detail::scalar_event(detail::unix_seconds_now(), step, tag, static_cast<float>(value)));
  }

  /// Hands buffered records to the operating system, so a running TensorBoard sees them (no fsync:
  /// losing the last records in an OS crash is acceptable for logs). Throws `io::io_error` naming the
  /// file on failure (e.g. a full disk).
  void flush() {
    require_open();
    if (std::fflush(file_.get()) != 0)
      throw io::io_error(peft::detail::concat("tensorboard_writer: flushing '", path_.string(), "' failed: ", std::strerror(errno)));
  }

  /// The event file being written.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void require_open() const {
    if (!file_) throw io::io_error("tensorboard_writer: used after being moved from");
  }
  void write_record(std::string_view event) {
    require_open();
    const std::string rec = detail::tfrecord(event);
    if (std::fwrite(rec.data(), 1, rec.size(), file_.get()) != rec.size())
      throw io::io_error(peft::detail::concat("tensorboard_writer: writing '", path_.string(), "' failed: ", std::strerror(errno)));
  }

  std::filesystem::path path_;
  std::unique_ptr<std::FILE, detail::file_closer> file_;
};

}  // namespace peft::train
