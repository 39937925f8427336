// libFuzzer target: the byte-level BPE tokenizer must encode any valid UTF-8 string, with and without
// special-token matching and under every pre-tokenizer, so that decode(encode(s)) == s byte for byte;
// it must reject invalid UTF-8 (checked here independently) with a text_error, never crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "peft/text/bpe.hpp"

namespace {
namespace t = peft::text;

/// A small vocabulary: the 256 byte tokens, a few merges, two control tokens and one user-defined token.
t::bpe_vocabulary small_vocabulary(const char* pre) {
  t::bpe_vocabulary v;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    t::detail::bpe::append_utf8(s, t::detail::bpe::byte_to_unicode()[std::size_t(b)]);
    v.tokens.push_back(s);
  }
  v.types.assign(256, t::bpe_token_type::normal);
  for (const char* m : {"Ġ t", "h e", "Ġt he", "i n", "in g", "Ġ Ġ", "ĠĠ ĠĠ", "1 2", "' s", "Ċ Ċ"}) {
    const std::string s = m;
    v.merges.push_back(s);
    v.tokens.push_back(s.substr(0, s.find(' ')) + s.substr(s.find(' ') + 1));
    v.types.push_back(t::bpe_token_type::normal);
  }
  for (const char* c : {"<|im_start|>", "<|im_end|>"}) {
    v.tokens.push_back(c);
    v.types.push_back(t::bpe_token_type::control);
  }
  v.tokens.push_back("<tool>");
  v.types.push_back(t::bpe_token_type::user_defined);
  v.pre_tokenizer = pre;
  v.eos = std::int32_t(v.tokens.size() - 2);
  v.source = "fuzz";
  return v;
}

/// Strict UTF-8 validity (no overlong forms, no surrogates, nothing above U+10FFFF), written apart from
/// the library's ICU-based check.
bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    std::uint32_t cp, min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07, min = 0x10000;
    else return false;
    if (s.size() - i < n) return false;
    for (std::size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

void check(const t::bpe_tokenizer& tok, std::string_view text, bool parse_special, bool valid) {
  std::vector<std::int32_t> ids;
  try {
    ids = tok.encode(text, true, parse_special);
  } catch (const t::text_error&) {
    if (valid) __builtin_trap();  // every byte has a token, so only invalid UTF-8 may be refused
    return;
  }
  if (!valid) __builtin_trap();  // invalid UTF-8 accepted
  for (const auto id : ids)
    if (id < 0 || std::size_t(id) >= tok.size()) __builtin_trap();
  if (tok.decode(ids) != text) __builtin_trap();  // round trip broken
  std::string streamed;
  for (const auto id : ids) streamed += tok.token_text(id);
  if (streamed != text) __builtin_trap();
  if (!parse_special) {
    std::string joined;
    for (const auto w : tok.pre_tokenize(text)) {
      if (w.empty()) __builtin_trap();
      joined += w;
    }
    if (joined != text) __builtin_trap();  // the pre-tokenizer's words must cover the text exactly
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const t::bpe_tokenizer smollm(small_vocabulary("smollm"));
  static const t::bpe_tokenizer gpt2(small_vocabulary("gpt2"));
  static const t::bpe_tokenizer llama3(small_vocabulary("llama-bpe"));
  static const t::bpe_tokenizer fallback(small_vocabulary("default"));
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid = valid_utf8(text);
  check(smollm, text, true, valid);
  check(smollm, text, false, valid);
  check(gpt2, text, false, valid);
  check(llama3, text, false, valid);
  check(fallback, text, false, valid);
  return 0;
}
