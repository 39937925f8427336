// libFuzzer target: the safetensors header parser must accept or reject any byte string with an
// io_error, never crash, hang or read out of bounds (run under AddressSanitizer and UBSan).
#include <cstddef>
#include <cstdint>
#include <span>

#include "peft/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = peft::io::safetensors_file::parse_buffer(std::as_bytes(std::span(data, size)), "fuzz");
    for (const auto& t : f.tensors()) {
      // Accepted files must be readable end to end.
      const auto values = f.read<float>(t);
      if (values.size() != t.numel()) __builtin_trap();
    }
  } catch (const peft::io::io_error&) {
  }
  return 0;
}
