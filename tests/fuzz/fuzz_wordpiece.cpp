// libFuzzer target: the WordPiece tokenizer must encode any byte string or reject it with a
// text_error (invalid UTF-8), never crash; every encoding must be internally consistent.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "peft/text/wordpiece.hpp"

#ifndef PEFT_FUZZ_VOCAB
#error "define PEFT_FUZZ_VOCAB as the path of a WordPiece vocabulary"
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto tok = peft::text::wordpiece_tokenizer::from_vocab_file(PEFT_FUZZ_VOCAB, true);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto e = tok.encode(text, std::nullopt, {.max_length = 64, .pad_to_max_length = true});
    if (e.ids.size() != 64 || e.offsets.size() != 64 || e.word_ids.size() != 64) __builtin_trap();
    for (std::size_t i = 0; i < e.ids.size(); ++i) {
      if (e.ids[i] < 0 || std::size_t(e.ids[i]) >= tok.vocab_size()) __builtin_trap();
      if (e.offsets[i].first > e.offsets[i].second || e.offsets[i].second > size) __builtin_trap();
    }
    const auto half = size / 2;
    (void)tok.encode(text.substr(0, half), text.substr(half), {.max_length = 32});
  } catch (const peft::text::text_error&) {
  }
  return 0;
}
