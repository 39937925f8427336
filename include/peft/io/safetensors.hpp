#pragma once
/// \file Reading and writing safetensors files (the format of Hugging Face checkpoints and adapters).
///
/// Layout: 8-byte little-endian header length N, N bytes of JSON header, then the data region. The
/// header maps each tensor name to {dtype, shape, data_offsets: [begin, end)} relative to the data
/// region, plus an optional string-to-string `__metadata__`. The reader memory-maps the file and
/// validates everything before handing out a byte: header length within the file and at most 100 MB,
/// a JSON object with no duplicate names, known dtypes, shapes and offsets of the right JSON types,
/// byte counts equal to shape x dtype size, and tensors tiling the data region with no gap or overlap.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "peft/core/storage_format.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/mapped_file.hpp"

namespace peft::io {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

/// Element types of safetensors files.
enum class dtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

using peft::non_finite_count;

/// NaN / infinite elements of little-endian data of dtype `t` (an all-ones exponent field is what
/// makes a float non-finite, in every one of the four widths); integer types have none.
inline non_finite_count count_non_finite(dtype t, std::span<const std::byte> data) {
  switch (t) {
    case dtype::F64: {
      non_finite_count r;
      for (std::size_t i = 0; i < data.size() / 8; ++i) {
        std::uint64_t v;
        std::memcpy(&v, data.data() + i * 8, 8);
        if ((v & 0x7FF0000000000000ull) == 0x7FF0000000000000ull && r.count++ == 0) r.first = i;
      }
      return r;
    }
    case dtype::F32: return peft::count_non_finite(storage_format::f32, data.data(), data.size() / 4);
    case dtype::F16: return peft::count_non_finite(storage_format::f16, data.data(), data.size() / 2);
    case dtype::BF16: return peft::count_non_finite(storage_format::bf16, data.data(), data.size() / 2);
    default: return {};
  }
}

/// Bytes per element of `t`.
constexpr std::size_t dtype_size(dtype t) noexcept {
  switch (t) {
    case dtype::F64: case dtype::I64: return 8;
    case dtype::F32: case dtype::I32: return 4;
    case dtype::F16: case dtype::BF16: case dtype::I16: return 2;
    case dtype::I8: case dtype::U8: case dtype::BOOL: return 1;
  }
  return 0;
}
/// The header spelling of `t` ("F32", ...).
constexpr const char* dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::F64: return "F64";
    case dtype::F32: return "F32";
    case dtype::F16: return "F16";
    case dtype::BF16: return "BF16";
    case dtype::I64: return "I64";
    case dtype::I32: return "I32";
    case dtype::I16: return "I16";
    case dtype::I8: return "I8";
    case dtype::U8: return "U8";
    case dtype::BOOL: return "BOOL";
  }
  return "?";
}
inline std::optional<dtype> parse_dtype(std::string_view s) {
  for (dtype t : {dtype::F64, dtype::F32, dtype::F16, dtype::BF16, dtype::I64, dtype::I32, dtype::I16, dtype::I8, dtype::U8,
                  dtype::BOOL})
    if (s == dtype_name(t)) return t;
  return std::nullopt;
}

/// One tensor entry of a header.
struct tensor_info {
  std::string name;
  io::dtype dtype;
  std::vector<std::size_t> shape;
  std::size_t begin = 0, end = 0;  ///< byte range inside the data region
  [[nodiscard]] std::size_t numel() const {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

/// A parsed, validated safetensors file (or in-memory buffer). Copies are cheap and share the mapping.
class safetensors_file {
 public:
  /// Maps and validates `path`. Throws `io_error` naming the file and what is wrong.
  static safetensors_file open(const std::filesystem::path& path) {
    auto map = mapped_file::open(path);
    safetensors_file f;
    f.storage_ = map;
    f.parse(map->bytes(), path.string());
    return f;
  }
  /// Validates a buffer already in memory; `source` names it in errors. The buffer must outlive the
  /// returned object.
  static safetensors_file parse_buffer(std::span<const std::byte> bytes, const std::string& source = "<buffer>") {
    safetensors_file f;
    f.parse(bytes, source);
    return f;
  }

  [[nodiscard]] const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  [[nodiscard]] const tensor_info* find(std::string_view name) const {
    const auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  /// Raw bytes of a tensor.
  [[nodiscard]] std::span<const std::byte> bytes(const tensor_info& t) const { return data_.subspan(t.begin, t.end - t.begin); }
  /// The F32 data in place, without a copy, when the tensor is F32 and suitably aligned.
  [[nodiscard]] std::optional<std::span<const float>> f32_view(const tensor_info& t) const {
    const auto b = bytes(t);
    if (t.dtype != dtype::F32 || reinterpret_cast<std::uintptr_t>(b.data()) % alignof(float) != 0) return std::nullopt;
    return std::span<const float>(reinterpret_cast<const float*>(b.data()), t.numel());
  }
  /// How many elements of a floating-point tensor are NaN or infinite, and the first one's index
  /// (integer tensors have none). Works on the bytes in place, by exponent bits, so it is one pass.
  [[nodiscard]] non_finite_count count_non_finite(const tensor_info& t) const { return io::count_non_finite(t.dtype, bytes(t)); }
  /// The values converted to T (F64, F32, F16, BF16 and the integer types are accepted).
  template <class T>
  std::vector<T> read(const tensor_info& t) const {
    const auto b = bytes(t);
    std::vector<T> out(t.numel());
    auto load = [&]<class S>(std::type_identity<S>) {
      for (std::size_t i = 0; i < out.size(); ++i) {
        S v;
        std::memcpy(&v, b.data() + i * sizeof(S), sizeof(S));
        out[i] = T(v);
      }
    };
    switch (t.dtype) {
      case dtype::F64: load(std::type_identity<double>{}); break;
      case dtype::F32: load(std::type_identity<float>{}); break;
      case dtype::I64: load(std::type_identity<std::int64_t>{}); break;
      case dtype::I32: load(std::type_identity<std::int32_t>{}); break;
      case dtype::I16: load(std::type_identity<std::int16_t>{}); break;
      case dtype::I8: load(std::type_identity<std::int8_t>{}); break;
      case dtype::U8: case dtype::BOOL: load(std::type_identity<std::uint8_t>{}); break;
      case dtype::F16: case dtype::BF16:
        for (std::size_t i = 0; i < out.size(); ++i) {
          std::uint16_t h;
          std::memcpy(&h, b.data() + 2 * i, 2);
          out[i] = T(t.dtype == dtype::F16 ? half_to_float(h) : bf16_to_float(h));
        }
        break;
    }
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw io_error("safetensors '" + source_ + "': " + what); }

  void parse(std::span<const std::byte> bytes, const std::string& source) {
    using nlohmann::json;
    source_ = source;
    if (bytes.size() < 8) fail(peft::detail::concat("truncated: ", bytes.size(), " bytes, too short for the 8-byte header length"));
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    constexpr std::uint64_t max_header = 100u << 20;
    if (n > bytes.size() - 8)
      fail(peft::detail::concat("header length ", n, " exceeds the ", bytes.size() - 8, " bytes after the length field"));
    if (n > max_header) fail(peft::detail::concat("header length ", n, " exceeds the 100 MB limit"));
    const char* text = reinterpret_cast<const char*>(bytes.data() + 8);
    std::set<std::string> seen;
    std::string duplicate;
    json header;
    try {
      header = json::parse(text, text + n, [&](int depth, json::parse_event_t ev, json& parsed) {
        if (depth == 1 && ev == json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
        return true;
      });
    } catch (const json::exception& e) {
      fail(peft::detail::concat("header is not valid JSON: ", e.what()));
    }
    if (!duplicate.empty()) fail("duplicate tensor name '" + duplicate + "' in the header");
    if (!header.is_object()) fail("header is not a JSON object");
    data_ = bytes.subspan(8 + n);
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ is not an object");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) fail("__metadata__ value for '" + m.key() + "' is not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      if (!v.is_object()) fail("entry '" + name + "' is not an object");
      tensor_info t;
      t.name = name;
      const auto dt = v.find("dtype");
      if (dt == v.end() || !dt->is_string()) fail("entry '" + name + "' has no string 'dtype'");
      const auto parsed = parse_dtype(dt->get<std::string>());
      if (!parsed) fail("entry '" + name + "' has unknown dtype '" + dt->get<std::string>() + "'");
      t.dtype = *parsed;
      const auto sh = v.find("shape");
      if (sh == v.end() || !sh->is_array()) fail("entry '" + name + "' has no array 'shape'");
      std::size_t count = 1;
      bool overflow = false;
      for (const auto& d : *sh) {
        if (!d.is_number_unsigned()) fail("entry '" + name + "' has a shape entry that is not a non-negative integer");
        const auto dim = d.get<std::uint64_t>();
        t.shape.push_back(std::size_t(dim));
        if (dim != 0 && count > SIZE_MAX / dim) overflow = true;
        count *= std::size_t(dim);
      }
      const auto off = v.find("data_offsets");
      if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
          !(*off)[1].is_number_unsigned())
        fail("entry '" + name + "' needs 'data_offsets' as two non-negative integers");
      t.begin = std::size_t((*off)[0].get<std::uint64_t>());
      t.end = std::size_t((*off)[1].get<std::uint64_t>());
      if (t.begin > t.end) fail(peft::detail::concat("entry '", name, "' has data_offsets [", t.begin, ", ", t.end, ") reversed"));
      if (t.end > data_.size())
        fail(peft::detail::concat("entry '", name, "' ends at byte ", t.end, " beyond the data region of ", data_.size(), " bytes"));
      if (overflow || count > SIZE_MAX / dtype_size(t.dtype) || count * dtype_size(t.dtype) != t.end - t.begin)
        fail(peft::detail::concat("entry '", name, "': shape ", shape_text(t.shape), " of ", dtype_name(t.dtype), " needs ",
                                  overflow ? std::string("more than SIZE_MAX") : std::to_string(count * dtype_size(t.dtype)),
                                  " bytes but data_offsets span ", t.end - t.begin));
      tensors_.push_back(std::move(t));
    }
    // The tensors must tile the data region: sorted by offset, each begins where the previous ends.
    std::vector<const tensor_info*> order;
    for (const auto& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](auto a, auto b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
    std::size_t pos = 0;
    const tensor_info* prev = nullptr;
    for (const auto* t : order) {
      if (t->begin < pos)
        fail(peft::detail::concat("tensor '", t->name, "' [", t->begin, ", ", t->end, ") overlaps '", prev->name, "' [",
                                  prev->begin, ", ", prev->end, ")"));
      if (t->begin > pos) fail(peft::detail::concat("gap in the data region between bytes ", pos, " and ", t->begin));
      pos = t->end;
      prev = t;
    }
    if (pos != data_.size())
      fail(peft::detail::concat("the tensors cover ", pos, " bytes but the data region has ", data_.size()));
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }
  static std::string shape_text(const std::vector<std::size_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  }

  std::shared_ptr<const mapped_file> storage_;
  std::span<const std::byte> data_;
  std::string source_;
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// A tensor to write: name, dtype, shape and its raw little-endian bytes.
struct tensor_to_write {
  std::string name;
  io::dtype dtype = dtype::F32;
  std::vector<std::size_t> shape;
  std::vector<std::byte> data;

  /// F32 tensor from any arithmetic values.
  template <class T>
  static tensor_to_write f32(std::string name, std::vector<std::size_t> shape, std::span<const T> values) {
    tensor_to_write t{std::move(name), dtype::F32, std::move(shape), {}};
    t.data.resize(values.size() * 4);
    for (std::size_t i = 0; i < values.size(); ++i) {
      const float f = float(values[i]);
      std::memcpy(t.data.data() + 4 * i, &f, 4);
    }
    return t;
  }
};

/// Serialises tensors and metadata as safetensors bytes: header keys sorted, header padded with spaces
/// to a multiple of 8 bytes (as the reference implementation does), data in header order.
/// Throws `io_error` for duplicate names or a byte count that does not match shape x dtype, and
/// `numeric_error` for a tensor holding NaN or infinite values (a model or adapter with them is
/// broken, and a file that carried them would look like a result).
inline std::vector<std::byte> serialize_safetensors(const std::vector<tensor_to_write>& tensors,
                                                     const std::map<std::string, std::string>& metadata = {}) {
  using nlohmann::json;
  std::map<std::string, const tensor_to_write*> sorted;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || !sorted.emplace(t.name, &t).second)
      throw io_error("safetensors: duplicate or reserved tensor name '" + t.name + "'");
    std::size_t n = 1;
    for (auto d : t.shape) n *= d;
    if (n * dtype_size(t.dtype) != t.data.size())
      throw io_error(peft::detail::concat("safetensors: tensor '", t.name, "' has ", t.data.size(), " bytes for ", n,
                                          " elements of ", dtype_name(t.dtype)));
    if (const auto bad = count_non_finite(t.dtype, t.data))
      throw numeric_error(peft::detail::concat("refusing to write tensor '", t.name, "': ", bad.count, " of its ", n,
                                               " values are NaN or infinite (the first at element ", bad.first, ")"));
  }
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  for (const auto& [name, t] : sorted) {
    header[name] = {{"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->data.size()}}};
    offset += t->data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::vector<std::byte> out(8 + text.size() + offset);
  const std::uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::size_t pos = 8 + text.size();
  for (const auto& [name, t] : sorted) {
    if (!t->data.empty()) std::memcpy(out.data() + pos, t->data.data(), t->data.size());  // an empty tensor's data may be null
    pos += t->data.size();
  }
  return out;
}

/// Writes a safetensors file atomically (see `write_file_atomically`).
inline void write_safetensors(const std::filesystem::path& path, const std::vector<tensor_to_write>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const auto bytes = serialize_safetensors(tensors, metadata);
  write_file_atomically(path, {std::span<const std::byte>(bytes)});
}

}  // namespace peft::io
