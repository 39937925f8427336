#pragma once
/// \file Reading GGUF files (llama.cpp's checkpoint format: metadata and tensors in one file).
///
/// Layout (versions 2 and 3, little-endian): "GGUF", uint32 version, uint64 tensor count, uint64
/// metadata count; metadata entries (string key, uint32 type, value; strings are a uint64 length and
/// bytes, arrays a uint32 element type, a uint64 count and the elements); tensor entries (string
/// name, uint32 rank, uint64 extents innermost first, uint32 GGML type, uint64 offset); padding to
/// `general.alignment` (default 32); the data region. The reader memory-maps the file and checks
/// everything before handing out a byte: every length and count against the bytes left, known
/// value and tensor types, no duplicate keys or names, ranks 1-4 with positive extents whose product
/// does not overflow, rows that are whole blocks of the tensor's type, offsets aligned and inside the
/// data region, and tensors that do not overlap. Errors name the file, the entry and what is wrong.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "peft/core/packed_matrix.hpp"
#include "peft/core/storage_format.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/mapped_file.hpp"

namespace peft::io {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

/// Metadata value types of GGUF.
enum class gguf_type : std::uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, boolean = 7, string = 8,
  array = 9, uint64 = 10, int64 = 11, float64 = 12
};

inline const char* gguf_type_name(gguf_type t) noexcept {
  switch (t) {
    case gguf_type::uint8: return "uint8";
    case gguf_type::int8: return "int8";
    case gguf_type::uint16: return "uint16";
    case gguf_type::int16: return "int16";
    case gguf_type::uint32: return "uint32";
    case gguf_type::int32: return "int32";
    case gguf_type::float32: return "float32";
    case gguf_type::boolean: return "bool";
    case gguf_type::string: return "string";
    case gguf_type::array: return "array";
    case gguf_type::uint64: return "uint64";
    case gguf_type::int64: return "int64";
    case gguf_type::float64: return "float64";
  }
  return "?";
}

/// One metadata value. Integers keep their sign (`std::int64_t` or `std::uint64_t`), floats are
/// widened to double; arrays keep their element type and hold integers, floats or strings (an array
/// of arrays keeps only its count).
struct gguf_value {
  using integer_array = std::vector<std::int64_t>;
  using float_array = std::vector<double>;
  using string_array = std::vector<std::string>;
  gguf_type type = gguf_type::uint8;
  gguf_type element_type = gguf_type::uint8;  ///< for arrays
  std::uint64_t count = 0;                    ///< array length
  std::variant<std::int64_t, std::uint64_t, double, bool, std::string, integer_array, float_array, string_array> data;
};

/// GGML tensor types this reader accepts, with their GGUF type ids.
struct gguf_tensor_type {
  std::uint32_t id;
  storage_format format;
};
inline constexpr gguf_tensor_type gguf_tensor_types[] = {
    {0, storage_format::f32},  {1, storage_format::f16},  {2, storage_format::q4_0},  {3, storage_format::q4_1},
    {8, storage_format::q8_0}, {12, storage_format::q4_k}, {14, storage_format::q6_k}, {30, storage_format::bf16}};

/// The GGML name of a type id (for messages about types this reader does not take).
inline std::string ggml_type_name(std::uint32_t id) {
  static constexpr const char* names[] = {"F32",  "F16",  "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0",   "Q5_1",
                                          "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",   "Q8_K",
                                          "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
                                          "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16"};
  return id < std::size(names) ? names[id] : "type " + std::to_string(id);
}

/// One tensor entry. `shape` is outermost first, as a row-major tensor (GGUF stores innermost
/// first): a linear weight of ne = [in, out] has shape {out, in}.
struct gguf_tensor_info {
  std::string name;
  storage_format format = storage_format::f32;
  std::uint32_t type_id = 0;
  std::vector<std::size_t> shape;
  std::uint64_t offset = 0;  ///< inside the data region
  std::size_t bytes = 0;
  [[nodiscard]] std::size_t numel() const {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  /// Rows x columns when viewed as a matrix: the innermost extent is the columns.
  [[nodiscard]] std::size_t cols() const { return shape.back(); }
  [[nodiscard]] std::size_t rows() const { return numel() / cols(); }
};

/// A parsed, validated GGUF file. Copies are cheap and share the mapping; tensors viewed as
/// `packed_matrix` keep the mapping alive.
class gguf_file {
 public:
  /// Maps and validates `path`. Throws `io_error` naming the file and what is wrong.
  static gguf_file open(const std::filesystem::path& path) {
    auto map = mapped_file::open(path);
    gguf_file f;
    f.storage_ = map;
    f.parse(map->bytes(), path.string());
    return f;
  }
  /// Validates a buffer in memory; `source` names it in errors. The buffer must outlive the object.
  static gguf_file parse_buffer(std::span<const std::byte> bytes, const std::string& source = "<buffer>") {
    gguf_file f;
    f.parse(bytes, source);
    return f;
  }

  [[nodiscard]] std::uint32_t version() const noexcept { return version_; }
  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  [[nodiscard]] std::size_t alignment() const noexcept { return alignment_; }
  [[nodiscard]] const std::map<std::string, gguf_value, std::less<>>& metadata() const noexcept { return metadata_; }
  [[nodiscard]] const std::vector<gguf_tensor_info>& tensors() const noexcept { return tensors_; }

  [[nodiscard]] const gguf_value* find(std::string_view key) const {
    const auto it = metadata_.find(key);
    return it == metadata_.end() ? nullptr : &it->second;
  }
  [[nodiscard]] bool contains(std::string_view key) const { return find(key) != nullptr; }
  [[nodiscard]] const gguf_tensor_info* find_tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

  // ---- typed metadata readers: each throws io_error naming the file and key when the key is
  // ---- missing (the plain forms) or holds another type.
  [[nodiscard]] std::string get_string(std::string_view key) const { return std::get<std::string>(typed(key, gguf_type::string).data); }
  [[nodiscard]] std::optional<std::string> get_string_or(std::string_view key) const {
    return contains(key) ? std::optional(get_string(key)) : std::nullopt;
  }
  /// Any integer type whose value is >= 0 and fits `std::uint64_t`.
  [[nodiscard]] std::uint64_t get_uint(std::string_view key) const {
    const gguf_value& v = required(key);
    if (const auto* u = std::get_if<std::uint64_t>(&v.data)) return *u;
    if (const auto* i = std::get_if<std::int64_t>(&v.data); i && *i >= 0) return std::uint64_t(*i);
    fail(peft::detail::concat("metadata '", key, "' is ", describe(v), ", not a non-negative integer"));
  }
  [[nodiscard]] std::optional<std::uint64_t> get_uint_or(std::string_view key) const {
    return contains(key) ? std::optional(get_uint(key)) : std::nullopt;
  }
  /// Any integer (within int64) or float type, as double.
  [[nodiscard]] double get_float(std::string_view key) const {
    const gguf_value& v = required(key);
    if (const auto* d = std::get_if<double>(&v.data)) return *d;
    if (const auto* i = std::get_if<std::int64_t>(&v.data)) return double(*i);
    if (const auto* u = std::get_if<std::uint64_t>(&v.data)) return double(*u);
    fail(peft::detail::concat("metadata '", key, "' is ", describe(v), ", not a number"));
  }
  [[nodiscard]] std::optional<double> get_float_or(std::string_view key) const {
    return contains(key) ? std::optional(get_float(key)) : std::nullopt;
  }
  [[nodiscard]] bool get_bool(std::string_view key) const { return std::get<bool>(typed(key, gguf_type::boolean).data); }
  [[nodiscard]] std::optional<bool> get_bool_or(std::string_view key) const {
    return contains(key) ? std::optional(get_bool(key)) : std::nullopt;
  }
  [[nodiscard]] const std::vector<std::string>& get_string_array(std::string_view key) const {
    const gguf_value& v = required(key);
    if (const auto* a = std::get_if<gguf_value::string_array>(&v.data)) return *a;
    fail(peft::detail::concat("metadata '", key, "' is ", describe(v), ", not an array of strings"));
  }
  [[nodiscard]] const std::vector<std::int64_t>& get_integer_array(std::string_view key) const {
    const gguf_value& v = required(key);
    if (const auto* a = std::get_if<gguf_value::integer_array>(&v.data)) return *a;
    fail(peft::detail::concat("metadata '", key, "' is ", describe(v), ", not an array of integers"));
  }

  /// Raw bytes of a tensor (inside the mapping).
  [[nodiscard]] std::span<const std::byte> bytes(const gguf_tensor_info& t) const { return data_.subspan(t.offset, t.bytes); }
  /// The tensor as a rows x cols packed matrix viewing the mapping (no copy), kept alive by it.
  [[nodiscard]] packed_matrix matrix(const gguf_tensor_info& t) const {
    return packed_matrix(t.format, t.rows(), t.cols(), bytes(t), storage_, t.name);
  }
  /// The tensor's values as T, dequantized (bit-exact with the `gguf` Python package).
  template <class T = float>
  [[nodiscard]] std::vector<T> dequantize(const gguf_tensor_info& t) const {
    std::vector<T> out(t.numel());
    dequantize_blocks(t.format, bytes(t).data(), t.numel() / format_traits(t.format).block_elements, out.data());
    return out;
  }

  /// The tensor's elements that are, or dequantize to, NaN or infinity (a scan of its scales for the
  /// quantized formats; nothing is dequantized).
  [[nodiscard]] non_finite_count count_non_finite(const gguf_tensor_info& t) const {
    return peft::count_non_finite(t.format, bytes(t).data(), t.numel() / format_traits(t.format).block_elements);
  }

  [[noreturn]] void fail(const std::string& what) const { throw io_error("GGUF '" + source_ + "': " + what); }

 private:
  // Sizes above these are refused as corrupt long before memory runs out.
  static constexpr std::uint64_t max_string = 64u << 20;
  static constexpr std::uint64_t max_entries = 1u << 24;

  /// A bounds-checked cursor over the header.
  struct reader {
    const gguf_file& file;
    std::span<const std::byte> bytes;
    std::size_t pos = 0;
    std::string context;  // what is being read, for messages

    [[noreturn]] void truncated(std::size_t want) const {
      file.fail(peft::detail::concat("truncated at byte ", pos, " reading ", context, ": ", want, " bytes needed, ",
                                     bytes.size() - pos, " left"));
    }
    template <class T>
    T scalar() {
      if (bytes.size() - pos < sizeof(T)) truncated(sizeof(T));
      T v;
      std::memcpy(&v, bytes.data() + pos, sizeof(T));
      pos += sizeof(T);
      return v;
    }
    std::string string() {
      const auto n = scalar<std::uint64_t>();
      if (n > bytes.size() - pos) file.fail(peft::detail::concat("string length ", n, " at byte ", pos - 8, " in ", context,
                                                                 " exceeds the ", bytes.size() - pos, " bytes left"));
      if (n > max_string) file.fail(peft::detail::concat("string length ", n, " in ", context, " exceeds the 64 MB limit"));
      std::string s(reinterpret_cast<const char*>(bytes.data() + pos), std::size_t(n));
      pos += std::size_t(n);
      return s;
    }
  };

  static std::size_t scalar_size(gguf_type t) {
    switch (t) {
      case gguf_type::uint8: case gguf_type::int8: case gguf_type::boolean: return 1;
      case gguf_type::uint16: case gguf_type::int16: return 2;
      case gguf_type::uint32: case gguf_type::int32: case gguf_type::float32: return 4;
      case gguf_type::uint64: case gguf_type::int64: case gguf_type::float64: return 8;
      case gguf_type::string: return 8;  // at least the length
      case gguf_type::array: return 12;  // at least element type and count
    }
    return 0;
  }
  gguf_type value_type(reader& r) const {
    const auto raw = r.scalar<std::uint32_t>();
    if (raw > std::uint32_t(gguf_type::float64))
      fail(peft::detail::concat("unknown value type ", raw, " in ", r.context, " at byte ", r.pos - 4));
    return gguf_type(raw);
  }
  /// Reads one scalar of type t as integer, float, bool or string.
  std::variant<std::int64_t, std::uint64_t, double, bool, std::string> scalar_value(reader& r, gguf_type t) const {
    switch (t) {
      case gguf_type::uint8: return std::uint64_t(r.scalar<std::uint8_t>());
      case gguf_type::int8: return std::int64_t(r.scalar<std::int8_t>());
      case gguf_type::uint16: return std::uint64_t(r.scalar<std::uint16_t>());
      case gguf_type::int16: return std::int64_t(r.scalar<std::int16_t>());
      case gguf_type::uint32: return std::uint64_t(r.scalar<std::uint32_t>());
      case gguf_type::int32: return std::int64_t(r.scalar<std::int32_t>());
      case gguf_type::uint64: return r.scalar<std::uint64_t>();
      case gguf_type::int64: return r.scalar<std::int64_t>();
      case gguf_type::float32: return double(r.scalar<float>());
      case gguf_type::float64: return r.scalar<double>();
      case gguf_type::boolean: {
        const auto b = r.scalar<std::uint8_t>();
        if (b > 1) fail(peft::detail::concat("bool value ", unsigned(b), " (not 0 or 1) in ", r.context));
        return b == 1;
      }
      case gguf_type::string: return r.string();
      case gguf_type::array: break;
    }
    fail("internal: array read as a scalar in " + r.context);
  }
  gguf_value read_value(reader& r, gguf_type t, int depth) const {
    gguf_value v;
    v.type = t;
    if (t != gguf_type::array) {
      std::visit([&](auto&& x) { v.data = std::move(x); }, scalar_value(r, t));
      return v;
    }
    v.element_type = value_type(r);
    v.count = r.scalar<std::uint64_t>();
    if (v.count > max_entries || v.count * scalar_size(v.element_type) > r.bytes.size() - r.pos)
      fail(peft::detail::concat("array of ", v.count, " ", gguf_type_name(v.element_type), " in ", r.context,
                                " does not fit in the ", r.bytes.size() - r.pos, " bytes left"));
    if (v.element_type == gguf_type::array) {
      if (depth > 4) fail("arrays nested more than 4 deep in " + r.context);
      for (std::uint64_t i = 0; i < v.count; ++i) read_value(r, gguf_type::array, depth + 1);  // checked, not kept
      v.data = gguf_value::integer_array{};
      return v;
    }
    gguf_value::integer_array ints;
    gguf_value::float_array floats;
    gguf_value::string_array strings;
    for (std::uint64_t i = 0; i < v.count; ++i) {
      auto x = scalar_value(r, v.element_type);
      if (auto* s = std::get_if<std::string>(&x)) strings.push_back(std::move(*s));
      else if (auto* d = std::get_if<double>(&x)) floats.push_back(*d);
      else if (auto* b = std::get_if<bool>(&x)) ints.push_back(*b ? 1 : 0);
      else if (auto* si = std::get_if<std::int64_t>(&x)) ints.push_back(*si);
      else {
        const auto u = std::get<std::uint64_t>(x);
        if (u > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
          fail(peft::detail::concat("array element ", i, " of ", r.context, " (", u, ") exceeds int64"));
        ints.push_back(std::int64_t(u));
      }
    }
    if (v.element_type == gguf_type::string) v.data = std::move(strings);
    else if (v.element_type == gguf_type::float32 || v.element_type == gguf_type::float64) v.data = std::move(floats);
    else v.data = std::move(ints);
    return v;
  }

  static std::string describe(const gguf_value& v) {
    if (v.type == gguf_type::array) return peft::detail::concat("an array of ", v.count, " ", gguf_type_name(v.element_type));
    return std::string("a ") + gguf_type_name(v.type);
  }
  const gguf_value& required(std::string_view key) const {
    const gguf_value* v = find(key);
    if (!v) fail(peft::detail::concat("metadata key '", key, "' is missing"));
    return *v;
  }
  const gguf_value& typed(std::string_view key, gguf_type t) const {
    const gguf_value& v = required(key);
    if (v.type != t) fail(peft::detail::concat("metadata '", key, "' is ", describe(v), ", not a ", gguf_type_name(t)));
    return v;
  }

  void parse(std::span<const std::byte> bytes, const std::string& source) {
    source_ = source;
    reader r{*this, bytes, 0, "the header"};
    if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0) fail("not a GGUF file (the first 4 bytes are not \"GGUF\")");
    r.pos = 4;
    version_ = r.scalar<std::uint32_t>();
    if (version_ != 2 && version_ != 3)
      fail(peft::detail::concat("version ", version_, " is not supported (versions 2 and 3 are)"));
    const auto tensor_count = r.scalar<std::uint64_t>();
    const auto kv_count = r.scalar<std::uint64_t>();
    if (tensor_count > max_entries || tensor_count * 24 > bytes.size())
      fail(peft::detail::concat("tensor count ", tensor_count, " cannot fit in a file of ", bytes.size(), " bytes"));
    if (kv_count > max_entries || kv_count * 12 > bytes.size())
      fail(peft::detail::concat("metadata count ", kv_count, " cannot fit in a file of ", bytes.size(), " bytes"));

    for (std::uint64_t i = 0; i < kv_count; ++i) {
      r.context = peft::detail::concat("metadata entry ", i);
      std::string key = r.string();
      r.context = peft::detail::concat("metadata '", key, "'");
      const gguf_type t = value_type(r);
      gguf_value v = read_value(r, t, 0);
      if (metadata_.count(key)) fail("duplicate metadata key '" + key + "'");
      metadata_.emplace(std::move(key), std::move(v));
    }
    alignment_ = 32;
    if (const gguf_value* a = find("general.alignment")) {
      const auto* u = std::get_if<std::uint64_t>(&a->data);
      if (!u || *u == 0 || *u > 1u << 20 || (*u & (*u - 1)) != 0)
        fail("general.alignment must be a power of two up to 1 MiB");
      alignment_ = std::size_t(*u);
    }

    for (std::uint64_t i = 0; i < tensor_count; ++i) {
      r.context = peft::detail::concat("tensor entry ", i);
      gguf_tensor_info t;
      t.name = r.string();
      r.context = "tensor '" + t.name + "'";
      const auto rank = r.scalar<std::uint32_t>();
      if (rank == 0 || rank > 4) fail(peft::detail::concat("tensor '", t.name, "' has rank ", rank, " (1 to 4 expected)"));
      std::vector<std::size_t> ne(rank);
      std::uint64_t count = 1;
      for (auto& e : ne) {
        const auto d = r.scalar<std::uint64_t>();
        if (d == 0 || d > std::uint64_t(1) << 40 || count > std::numeric_limits<std::uint64_t>::max() / d ||
            count * d > std::uint64_t(1) << 48)
          fail(peft::detail::concat("tensor '", t.name, "' has an invalid or overflowing extent ", d));
        count *= d;
        e = std::size_t(d);
      }
      t.shape.assign(ne.rbegin(), ne.rend());
      t.type_id = r.scalar<std::uint32_t>();
      const auto* known = std::find_if(std::begin(gguf_tensor_types), std::end(gguf_tensor_types),
                                       [&](const gguf_tensor_type& g) { return g.id == t.type_id; });
      if (known == std::end(gguf_tensor_types))
        fail(peft::detail::concat("tensor '", t.name, "' has type ", ggml_type_name(t.type_id),
                                  ", which this reader does not take (F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K)"));
      t.format = known->format;
      const auto row = storage_bytes(t.format, ne[0]);
      if (!row)
        fail(peft::detail::concat("tensor '", t.name, "': its rows of ", ne[0], " elements are not whole ",
                                  format_traits(t.format).block_elements, "-element blocks of ", format_traits(t.format).name));
      t.bytes = *row * std::size_t(count / ne[0]);
      t.offset = r.scalar<std::uint64_t>();
      if (t.offset % alignment_ != 0)
        fail(peft::detail::concat("tensor '", t.name, "' offset ", t.offset, " is not a multiple of the alignment ", alignment_));
      if (tensor_index_.count(t.name)) fail("duplicate tensor name '" + t.name + "'");
      tensor_index_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }
    const std::size_t data_start = (r.pos + alignment_ - 1) / alignment_ * alignment_;
    if (data_start > bytes.size() && !tensors_.empty())
      fail(peft::detail::concat("the data region (at byte ", data_start, ") starts past the end of the file (", bytes.size(), " bytes)"));
    data_ = bytes.subspan(std::min(data_start, bytes.size()));
    std::vector<const gguf_tensor_info*> by_offset;
    for (const auto& t : tensors_) {
      if (t.offset > data_.size() || t.bytes > data_.size() - t.offset)
        fail(peft::detail::concat("tensor '", t.name, "' (", t.bytes, " bytes at offset ", t.offset,
                                  ") runs past the end of the data region (", data_.size(), " bytes)"));
      by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i)
      if (by_offset[i - 1]->offset + by_offset[i - 1]->bytes > by_offset[i]->offset)
        fail("tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  }

  std::shared_ptr<const mapped_file> storage_;
  std::string source_;
  std::uint32_t version_ = 0;
  std::size_t alignment_ = 32;
  std::map<std::string, gguf_value, std::less<>> metadata_;
  std::vector<gguf_tensor_info> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
  std::span<const std::byte> data_;
};

}  // namespace peft::io
