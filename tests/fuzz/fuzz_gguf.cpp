// libFuzzer target: the GGUF reader must accept or reject any byte string with an io_error, never
// crash, hang or read out of bounds (run under AddressSanitizer and UBSan); whatever it accepts must
// answer every metadata getter (a value or an io_error), dequantize every tensor and view every tensor
// as a packed matrix; a tokenizer built from the metadata must build or fail with a peft::error.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/io/gguf.hpp"
#include "peft/text/gguf_vocabulary.hpp"

namespace {
/// Calls `f`; an io_error (wrong type, missing key) is an answer too.
template <class F>
void answer(F&& f) {
  try {
    f();
  } catch (const peft::io::io_error&) {
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = peft::io::gguf_file::parse_buffer(std::as_bytes(std::span(data, size)), "fuzz.gguf");
    for (const auto& entry : f.metadata()) {
      const std::string& key = entry.first;  // (clang 14 cannot capture structured bindings)
      const peft::io::gguf_value& value = entry.second;
      if (!f.contains(key) || f.find(key) != &value) __builtin_trap();
      answer([&] { (void)f.get_string(key); });
      answer([&] { (void)f.get_uint(key); });
      answer([&] { (void)f.get_float(key); });
      answer([&] { (void)f.get_bool(key); });
      answer([&] {
        if (f.get_string_array(key).size() != value.count) __builtin_trap();
      });
      answer([&] {
        const auto& a = f.get_integer_array(key);
        if (value.element_type != peft::io::gguf_type::array && a.size() != value.count) __builtin_trap();
      });
    }
    answer([&] { (void)f.get_string_or("tokenizer.chat_template"); });
    answer([&] { (void)f.get_uint_or("general.alignment"); });
    if (f.get_string_or("no such key") || f.get_uint_or("no such key") || f.get_float_or("no such key") ||
        f.get_bool_or("no such key"))
      __builtin_trap();
    for (const auto& t : f.tensors()) {
      if (f.find_tensor(t.name) != &t) __builtin_trap();
      if (t.numel() > (std::size_t(1) << 20)) continue;  // keep each input cheap
      const auto values = f.dequantize<float>(t);
      if (values.size() != t.numel()) __builtin_trap();
      // The scale scan that load_gguf refuses non-finite tensors by must agree with the values.
      std::size_t bad = 0, first = 0;
      for (std::size_t i = 0; i < values.size(); ++i)
        if (!std::isfinite(values[i]) && bad++ == 0) first = i;
      const auto scan = f.count_non_finite(t);
      if (scan.count != bad || (bad && scan.first != first)) __builtin_trap();
      const auto m = f.matrix(t);
      if (m.rows() != t.rows() || m.cols() != t.cols()) __builtin_trap();
      std::vector<float> row(m.cols());
      m.dequantize_rows(0, 1, row.data());
    }
    try {
      const auto tok = peft::text::bpe_tokenizer_from_gguf(f);
      (void)tok.decode(tok.encode("Hello 123 <|im_start|>"));
    } catch (const peft::error&) {  // io_error for metadata, text_error for the vocabulary itself
    }
  } catch (const peft::error&) {  // io_error from the reader; any other peft::error a library check
  }
  return 0;
}
