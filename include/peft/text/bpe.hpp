#pragma once
/// \file Byte-level BPE tokenizer (GPT-2 style) giving the ids of Hugging Face `tokenizers` for GPT-2,
/// SmolLM2 / StarCoder (digits split one by one) and Llama 3 vocabularies, from GGUF metadata or a
/// `tokenizer.json`; and the ChatML prompt format with SmolLM2's default system prompt.
///
/// Pipeline of `bpe_tokenizer::encode`: UTF-8 validation; added tokens (control, user-defined) cut out of
/// the text, leftmost-longest, as HF's AddedVocabulary does; each stretch between them pre-tokenized by
/// the regex of the GGUF `tokenizer.ggml.pre` name (hand-written matchers, Unicode classes from ICU);
/// each word mapped byte by byte through GPT-2's byte-to-unicode table and merged by rank exactly as
/// HF's BPE model does (lowest rank first, leftmost first among equal ranks).

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/text/text_error.hpp"

namespace peft::text {

/// Kinds of vocabulary entries, with the values of GGUF's `tokenizer.ggml.token_type`.
enum class bpe_token_type : std::int32_t {
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6
};

/// Everything a byte-level BPE tokenizer needs, as GGUF stores it (`tokenizer.ggml.*`).
///
/// Requirements (checked by `bpe_tokenizer`'s constructor): token texts unique; `types` empty or as long
/// as `tokens`; every merge "a b" names two tokens whose concatenation is a token; special ids in range;
/// `pre_tokenizer` one of the supported names (see `bpe_tokenizer`).
struct bpe_vocabulary {
  /// id -> token text; normal tokens in byte-level form (GPT-2's byte-to-unicode map, "Ġthe"), control
  /// and user-defined tokens as the raw UTF-8 text they match ("<|im_start|>").
  std::vector<std::string> tokens;
  std::vector<bpe_token_type> types;  ///< same length as `tokens`; empty means all normal
  std::vector<std::string> merges;    ///< "a b" pairs; the rank of a merge is its index
  std::string pre_tokenizer = "gpt2";  ///< GGUF `tokenizer.ggml.pre`
  std::optional<std::int32_t> bos, eos, unk, pad;
  bool add_bos = false, add_eos = false;  ///< added by `encode(..., add_special = true)`
  /// Emit a word as one token when it is in the vocabulary, without merging (HF's BPE `ignore_merges`);
  /// unset: as llama.cpp decides from the pre-tokenizer name (on for the Llama 3 family).
  std::optional<bool> ignore_merges;
  std::string source;  ///< file name for error messages
};

/// One message of a chat.
struct chat_message {
  std::string role, content;
};

namespace detail::bpe {

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68 to U+0100...
inline const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[std::size_t(b)] = printable ? char32_t(b) : next++;
    }
    return t;
  }();
  return table;
}

/// Inverse of `byte_to_unicode` over U+0000..U+0143; -1 where no byte maps.
inline const std::array<std::int16_t, 324>& unicode_to_byte() {
  static const std::array<std::int16_t, 324> table = [] {
    std::array<std::int16_t, 324> t{};
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_unicode()[std::size_t(b)]] = std::int16_t(b);
    return t;
  }();
  return table;
}

inline void append_utf8(std::string& out, char32_t c) {
  char buf[4];
  std::int32_t n = 0;
  U8_APPEND_UNSAFE(reinterpret_cast<std::uint8_t*>(buf), n, static_cast<UChar32>(c));
  out.append(buf, std::size_t(n));
}

/// Byte-level form of raw bytes ("a b" -> "aĠb").
inline std::string to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char ch : bytes) append_utf8(out, byte_to_unicode()[static_cast<std::uint8_t>(ch)]);
  return out;
}

/// Raw bytes of a byte-level text, or nullopt when a character is outside the byte-level alphabet.
inline std::optional<std::string> from_byte_level(std::string_view text) {
  std::string out;
  const auto* s = reinterpret_cast<const std::uint8_t*>(text.data());
  const auto n = static_cast<std::int32_t>(text.size());
  for (std::int32_t i = 0; i < n;) {
    UChar32 c;
    U8_NEXT(s, i, n, c);
    if (c < 0 || c >= 324 || unicode_to_byte()[std::size_t(c)] < 0) return std::nullopt;
    out.push_back(static_cast<char>(unicode_to_byte()[std::size_t(c)]));
  }
  return out;
}

/// Byte offset of the first invalid UTF-8 sequence (overlong forms and surrogates included), if any.
inline std::optional<std::size_t> invalid_utf8_at(std::string_view text) {
  if (text.size() > std::size_t(std::numeric_limits<std::int32_t>::max()))  // offsets are 32-bit
    throw text_error(peft::detail::concat("bpe: a text of ", text.size(), " bytes is longer than 2^31 - 1"));
  const auto* s = reinterpret_cast<const std::uint8_t*>(text.data());
  const auto n = static_cast<std::int32_t>(text.size());
  for (std::int32_t i = 0; i < n;) {
    const std::int32_t start = i;
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    UChar32 c;
    U8_NEXT(s, i, n, c);
    if (c < 0) return std::size_t(start);
  }
  return std::nullopt;
}

/// Pre-tokenizer families; each is one regex (or a chain of them) from llama.cpp's `llama-vocab.cpp`.
enum class pre_kind {
  gpt2,     ///< 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ (HF ByteLevel)
  smollm,   ///< \p{N} isolated, then gpt2 on the rest (HF Sequence[Digits(individual), ByteLevel])
  llama3,   ///< (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  fallback  ///< llama.cpp's "default": [\p{P}$+<=>^~|]+, then gpt2, then \p{N}+, then [0-9]{3}
};

inline constexpr std::string_view supported_pre_names =
    "gpt2, gpt-2 (GPT-2 regex); smollm, starcoder (digits one by one, then GPT-2); llama-bpe, llama3, llama-v3 "
    "(Llama 3 regex); default (llama.cpp's fallback chain; also used for an empty name)";

inline std::optional<pre_kind> parse_pre(std::string_view name) {
  if (name == "gpt2" || name == "gpt-2") return pre_kind::gpt2;
  if (name == "smollm" || name == "starcoder") return pre_kind::smollm;
  if (name == "llama-bpe" || name == "llama3" || name == "llama-v3") return pre_kind::llama3;
  if (name == "default" || name.empty()) return pre_kind::fallback;
  return std::nullopt;
}

/// Character classes the regexes test, as bit flags.
enum : std::uint8_t { letter = 1, number = 2, space = 4, punct = 8, newline = 16 };

inline std::uint8_t classify(UChar32 c) {
  std::uint8_t k = 0;
  const auto mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) k |= letter;
  if (mask & U_GC_N_MASK) k |= number;
  if (u_isUWhiteSpace(c)) k |= space;  // Rust regex / Oniguruma `\s` is Unicode White_Space
  if ((mask & U_GC_P_MASK) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' || c == '~' ||
      c == '|')
    k |= punct;  // only llama.cpp's "default" chain uses this class
  if (c == '\r' || c == '\n') k |= newline;
  return k;
}

/// A code point of the input: the character, its byte offset and its classes.
struct cpt {
  char32_t c;
  std::uint32_t begin;
  std::uint8_t k;
};

/// [begin, end) indices into the code points.
using piece = std::pair<std::uint32_t, std::uint32_t>;

inline bool is_other(std::uint8_t k) { return (k & (letter | number | space)) == 0; }  // [^\s\p{L}\p{N}]

inline std::uint32_t run_end(const std::vector<cpt>& p, std::uint32_t i, std::uint32_t b, std::uint8_t cls) {
  while (i < b && (p[i].k & cls)) ++i;
  return i;
}

/// \s+(?!\S)|\s+ at i (p[i] is whitespace): the run, less its last character when a non-space follows.
inline std::uint32_t whitespace_end(const std::vector<cpt>& p, std::uint32_t i, std::uint32_t b) {
  const std::uint32_t k = run_end(p, i, b, space);
  return (k < b && k - i >= 2) ? k - 1 : k;
}

/// Length of the contraction ('s 't 're 've 'm 'll 'd) at i, 0 if none; `fold` makes it case-insensitive.
inline std::uint32_t contraction(const std::vector<cpt>& p, std::uint32_t i, std::uint32_t b, bool fold) {
  if (p[i].c != '\'' || i + 1 >= b) return 0;
  auto at = [&](std::uint32_t j) -> char32_t {
    if (j >= b) return 0;
    const char32_t c = p[j].c;
    return (fold && c >= 'A' && c <= 'Z') ? c + 32 : c;
  };
  const char32_t c1 = at(i + 1), c2 = at(i + 2);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

/// GPT-2's regex over [a, b), treating b as the end of the text.
inline void split_gpt2(const std::vector<cpt>& p, std::uint32_t a, std::uint32_t b, std::vector<piece>& out) {
  for (std::uint32_t i = a; i < b;) {
    std::uint32_t e;
    if (const auto n = contraction(p, i, b, false)) {
      e = i + n;
    } else {
      const std::uint32_t j = (p[i].c == ' ' && i + 1 < b && !(p[i + 1].k & space)) ? i + 1 : i;  // ` ?`
      const std::uint8_t k = p[j].k;
      if (k & letter) e = run_end(p, j, b, letter);
      else if (k & number) e = run_end(p, j, b, number);
      else if (is_other(k)) {
        e = j;
        while (e < b && is_other(p[e].k)) ++e;
      } else e = whitespace_end(p, i, b);
    }
    out.emplace_back(i, e);
    i = e;
  }
}

/// Sequence[Digits(individual_digits), ByteLevel regex]: every \p{N} alone, GPT-2's regex in between.
inline void split_smollm(const std::vector<cpt>& p, std::uint32_t a, std::uint32_t b, std::vector<piece>& out) {
  for (std::uint32_t i = a; i < b;) {
    if (p[i].k & number) {
      out.emplace_back(i, i + 1);
      ++i;
      continue;
    }
    std::uint32_t e = i;
    while (e < b && !(p[e].k & number)) ++e;
    split_gpt2(p, i, e, out);
    i = e;
  }
}

/// Llama 3's regex over [a, b).
inline void split_llama3(const std::vector<cpt>& p, std::uint32_t a, std::uint32_t b, std::vector<piece>& out) {
  for (std::uint32_t i = a; i < b;) {
    const std::uint8_t k = p[i].k;
    std::uint32_t e = 0;
    if (const auto n = contraction(p, i, b, true)) {
      e = i + n;
    } else if (k & letter) {
      e = run_end(p, i, b, letter);
    } else if (!(k & (newline | number)) && i + 1 < b && (p[i + 1].k & letter)) {  // [^\r\n\p{L}\p{N}]?\p{L}+
      e = run_end(p, i + 1, b, letter);
    } else if (k & number) {
      e = std::min(run_end(p, i, b, number), i + 3);  // \p{N}{1,3}
    } else if (const std::uint32_t j = (p[i].c == ' ' && i + 1 < b) ? i + 1 : i; is_other(p[j].k)) {
      e = j;  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
      while (e < b && is_other(p[e].k)) ++e;
      e = run_end(p, e, b, newline);
    } else {  // whitespace at i
      const std::uint32_t r = run_end(p, i, b, space);
      std::uint32_t last_nl = r;
      for (std::uint32_t q = r; q > i; --q)
        if (p[q - 1].k & newline) {
          last_nl = q - 1;
          break;
        }
      e = last_nl < r ? last_nl + 1 : whitespace_end(p, i, b);  // \s*[\r\n]+, else \s+(?!\S)|\s+
    }
    out.emplace_back(i, e);
    i = e;
  }
}

/// Splits every piece of `in` by an isolating rule: `match(i, b)` gives the end of a match at i (i if none).
template <class Match>
void isolate(const std::vector<piece>& in, std::vector<piece>& out, Match match) {
  for (const auto& [a, b] : in) {
    std::uint32_t gap = a;
    for (std::uint32_t i = a; i < b;) {
      const std::uint32_t e = match(i, b);
      if (e == i) {
        ++i;
        continue;
      }
      if (gap < i) out.emplace_back(gap, i);
      out.emplace_back(i, e);
      i = gap = e;
    }
    if (gap < b) out.emplace_back(gap, b);
  }
}

/// llama.cpp's "default" chain of isolating splits (each regex splits the pieces the previous one left).
inline void split_fallback(const std::vector<cpt>& p, std::uint32_t a, std::uint32_t b, std::vector<piece>& out) {
  std::vector<piece> s1, s2, s3;
  isolate({{a, b}}, s1, [&](std::uint32_t i, std::uint32_t e) { return run_end(p, i, e, punct); });
  for (const auto& [x, y] : s1) split_gpt2(p, x, y, s2);
  isolate(s2, s3, [&](std::uint32_t i, std::uint32_t e) { return run_end(p, i, e, number); });
  auto ascii_digit = [&](std::uint32_t i) { return p[i].c >= '0' && p[i].c <= '9'; };
  isolate(s3, out, [&](std::uint32_t i, std::uint32_t e) {
    return (i + 3 <= e && ascii_digit(i) && ascii_digit(i + 1) && ascii_digit(i + 2)) ? i + 3 : i;
  });
}

/// j[k] when j is an object holding k, else null (const operator[] must not see a missing key).
inline const nlohmann::json& field(const nlohmann::json& j, const char* k) {
  static const nlohmann::json null_json;
  return j.is_object() && j.contains(k) ? j[k] : null_json;
}

/// Hash for heterogeneous lookup of std::string keys by std::string_view.
struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

}  // namespace detail::bpe

/// A byte-level BPE tokenizer.
///
/// Supported `pre_tokenizer` names (llama.cpp's regex for each): "gpt2"/"gpt-2"; "smollm"/"starcoder"
/// (each digit alone, then GPT-2's regex); "llama-bpe"/"llama3"/"llama-v3" (Llama 3's regex, with
/// `ignore_merges` on unless the vocabulary says otherwise); "default" or "" (llama.cpp's fallback chain,
/// which no Hugging Face tokenizer uses: GGUF files without a `pre` name get it, with degraded quality).
///
/// Guarantees: ids identical to Hugging Face `tokenizers` with the matching pre-tokenizer (checked for
/// SmolLM2-135M-Instruct by the bpe suites of tests/test_text.cpp and tests/test_decoder.cpp); `decode(encode(s)) == s` byte for byte for valid
/// UTF-8 `s`; immutable after construction, so `encode` and `decode` may run concurrently (no cache).
class bpe_tokenizer {
 public:
  /// Validates `v` (see `bpe_vocabulary`); throws `text_error` naming `v.source` and what is wrong.
  explicit bpe_tokenizer(bpe_vocabulary v) : v_(std::move(v)) {
    namespace d = detail::bpe;
    if (v_.tokens.empty()) fail("has no tokens");
    if (v_.tokens.size() > std::size_t(std::numeric_limits<std::int32_t>::max())) fail("has too many tokens");
    const auto n = std::int32_t(v_.tokens.size());
    if (v_.types.empty()) v_.types.assign(v_.tokens.size(), bpe_token_type::normal);
    if (v_.types.size() != v_.tokens.size())
      fail(peft::detail::concat("has ", v_.types.size(), " token types for ", v_.tokens.size(), " tokens"));
    const auto pre = d::parse_pre(v_.pre_tokenizer);
    if (!pre)
      fail(peft::detail::concat("pre-tokenizer '", v_.pre_tokenizer, "' is not supported (supported: ",
                                d::supported_pre_names, ")"));
    pre_ = *pre;
    ignore_merges_ = v_.ignore_merges.value_or(pre_ == d::pre_kind::llama3);

    ids_.reserve(v_.tokens.size());
    for (std::int32_t id = 0; id < n; ++id) {
      const auto t = static_cast<std::int32_t>(v_.types[std::size_t(id)]);
      if (t < 1 || t > 6) fail(peft::detail::concat("token ", id, " has token type ", t, ", not in 1..6"));
      const auto [it, fresh] = ids_.emplace(v_.tokens[std::size_t(id)], id);
      if (!fresh)
        fail(peft::detail::concat("token '", v_.tokens[std::size_t(id)], "' appears twice, as ids ", it->second,
                                  " and ", id));
    }
    using named_id = std::pair<const char*, std::optional<std::int32_t>>;
    for (const auto& [name, id] : {named_id{"bos", v_.bos}, named_id{"eos", v_.eos}, named_id{"unk", v_.unk},
                                   named_id{"pad", v_.pad}})
      if (id && (*id < 0 || *id >= n))
        fail(peft::detail::concat(name, " id ", *id, " is not in [0, ", n, ")"));
    if (v_.add_bos && !v_.bos) fail("asks to add a BOS token but has no bos id");
    if (v_.add_eos && !v_.eos) fail("asks to add an EOS token but has no eos id");

    merges_.reserve(v_.merges.size());
    for (std::size_t r = 0; r < v_.merges.size(); ++r) {
      const std::string_view m = v_.merges[r];
      const auto cut = m.find(' ', 1);  // as llama.cpp: a token never starts the pair with its separator
      if (cut == std::string_view::npos)
        fail(peft::detail::concat("merge ", r, " '", m, "' is not two tokens separated by a space"));
      const auto a = token_id(m.substr(0, cut)), b = token_id(m.substr(cut + 1));
      if (!a || !b)
        fail(peft::detail::concat("merge ", r, " '", m, "' names unknown token '",
                                  std::string(a ? m.substr(cut + 1) : m.substr(0, cut)), "'"));
      const auto c = token_id(std::string(m.substr(0, cut)) + std::string(m.substr(cut + 1)));
      if (!c) fail(peft::detail::concat("merge ", r, " '", m, "' makes a token that is not in the vocabulary"));
      merges_[key(*a, *b)] = {std::int32_t(r), *c};  // a repeated pair keeps its last rank, as HF does
    }

    for (int byte = 0; byte < 256; ++byte) {
      std::string s;
      d::append_utf8(s, d::byte_to_unicode()[std::size_t(byte)]);
      byte_ids_[std::size_t(byte)] = token_id(s).value_or(-1);
    }

    pieces_.resize(v_.tokens.size());
    for (std::int32_t id = 0; id < n; ++id) {
      const std::string& t = v_.tokens[std::size_t(id)];
      const auto type = v_.types[std::size_t(id)];
      std::string& out = pieces_[std::size_t(id)];
      if (type == bpe_token_type::normal || type == bpe_token_type::unused) {
        out = d::from_byte_level(t).value_or(t);  // as HF's ByteLevel decoder: raw text if not byte-level
      } else if (unsigned byte = 0; type == bpe_token_type::byte && t.size() == 6 && t.starts_with("<0x") &&
                 t.back() == '>' && std::from_chars(t.data() + 3, t.data() + 5, byte, 16).ptr == t.data() + 5) {
        out = std::string(1, static_cast<char>(byte));  // SentencePiece-style byte token "<0xE2>"
      } else {
        out = t;
      }
      const bool matched = type == bpe_token_type::control || type == bpe_token_type::user_defined ||
                           type == bpe_token_type::unknown;
      if (matched && !t.empty()) added_[static_cast<std::uint8_t>(t[0])].push_back(id);
    }
    for (auto& list : added_)  // longest first: HF's added-token matching is leftmost-longest
      std::stable_sort(list.begin(), list.end(), [&](std::int32_t x, std::int32_t y) {
        return v_.tokens[std::size_t(x)].size() > v_.tokens[std::size_t(y)].size();
      });
  }

  /// Reads a Hugging Face `tokenizer.json` whose model is "BPE" (no dropout, no subword prefix or suffix)
  /// with no normalizer and a byte-level pre-tokenizer: ByteLevel(use_regex) -> "gpt2";
  /// Sequence[Digits(individual_digits), ByteLevel(use_regex)] -> "smollm"; Sequence[Split(Llama 3 regex,
  /// Isolated), ByteLevel(no regex)] -> "llama-bpe". BOS/EOS come from a TemplateProcessing or
  /// RobertaProcessing post-processor; bos/eos/pad/unk names from a `tokenizer_config.json` beside it if
  /// present. Added tokens become control (special) or user-defined tokens. Anything else: `text_error`.
  static bpe_tokenizer from_tokenizer_json(const std::filesystem::path& path) {
    const std::string src = path.string();
    auto bad = [&](const std::string& what) { return text_error("tokenizer.json '" + src + "': " + what); };
    nlohmann::json j;
    {
      std::ifstream in(path);
      if (!in) throw text_error("cannot open '" + src + "'");
      try {
        j = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw bad(std::string("not valid JSON: ") + e.what());
      }
    }
    try {
      return from_json(j, path);
    } catch (const nlohmann::json::exception& e) {  // a field of an unexpected JSON type
      throw bad(std::string("unexpected content: ") + e.what());
    }
  }

  /// Token ids of `utf8`. `add_special`: prepend BOS / append EOS as the vocabulary's add_bos / add_eos
  /// say (SmolLM2 adds neither; HF's default `encode` call gives the same ids). `parse_special`: texts of
  /// control (and unknown-type) tokens in the input become their ids; user-defined tokens always do (as
  /// HF's non-special added tokens and llama.cpp). Throws `text_error` naming the byte offset of
  /// invalid UTF-8, or a byte without a token when the vocabulary has no unk id.
  [[nodiscard]] std::vector<std::int32_t> encode(std::string_view utf8, bool add_special = true,
                                                 bool parse_special = true) const {
    if (const auto at = detail::bpe::invalid_utf8_at(utf8))
      throw text_error(peft::detail::concat(where(), "invalid UTF-8 at byte ", *at));
    std::vector<std::int32_t> out;
    if (add_special && v_.add_bos) out.push_back(*v_.bos);
    workspace w;
    std::size_t start = 0;
    for (std::size_t pos = 0; pos < utf8.size();) {
      if (const auto id = added_at(utf8, pos, parse_special)) {
        encode_text(utf8.substr(start, pos - start), out, w);
        out.push_back(*id);
        pos += v_.tokens[std::size_t(*id)].size();
        start = pos;
      } else {
        ++pos;
      }
    }
    encode_text(utf8.substr(start), out, w);
    if (add_special && v_.add_eos) out.push_back(*v_.eos);
    return out;
  }

  /// The words BPE runs on (views into `utf8`), as the pre-tokenizer cuts `utf8` when no added token
  /// is matched. Throws `text_error` on invalid UTF-8.
  [[nodiscard]] std::vector<std::string_view> pre_tokenize(std::string_view utf8) const {
    if (const auto at = detail::bpe::invalid_utf8_at(utf8))
      throw text_error(peft::detail::concat(where(), "invalid UTF-8 at byte ", *at));
    workspace w;
    split(utf8, w);
    std::vector<std::string_view> out;
    for (const auto& [a, b] : w.pieces)
      out.push_back(utf8.substr(w.cpts[a].begin, w.cpts[b].begin - w.cpts[a].begin));
    return out;
  }

  /// The bytes of `ids` concatenated: byte-exact inverse of `encode` for normal tokens (a prefix of an
  /// encoding may end inside a UTF-8 sequence; no replacement characters are made). Control and unknown
  /// tokens appear as their text unless `skip_special`. Throws `text_error` for an id out of range.
  [[nodiscard]] std::string decode(std::span<const std::int32_t> ids, bool skip_special = false) const {
    std::string out;
    for (const auto id : ids) {
      check_id(id);
      const auto t = v_.types[std::size_t(id)];
      if (skip_special && (t == bpe_token_type::control || t == bpe_token_type::unknown)) continue;
      out += pieces_[std::size_t(id)];
    }
    return out;
  }

  /// The bytes token `id` decodes to (for streaming output; may be part of a UTF-8 sequence).
  [[nodiscard]] std::string token_text(std::int32_t id) const {
    check_id(id);
    return pieces_[std::size_t(id)];
  }

  [[nodiscard]] std::size_t size() const noexcept { return v_.tokens.size(); }
  /// Id of a token given in vocabulary form (byte-level for normal tokens), if any.
  [[nodiscard]] std::optional<std::int32_t> token_id(std::string_view token) const {
    const auto it = ids_.find(token);
    return it == ids_.end() ? std::nullopt : std::optional<std::int32_t>(it->second);
  }
  [[nodiscard]] const bpe_vocabulary& vocabulary() const noexcept { return v_; }
  [[nodiscard]] bool ignores_merges() const noexcept { return ignore_merges_; }

 private:
  /// Per-call buffers, reused across the words of one `encode`.
  struct workspace {
    std::vector<detail::bpe::cpt> cpts;
    std::vector<detail::bpe::piece> pieces;
    struct symbol {
      std::int32_t id, prev, next;
      bool live;
    };
    std::vector<symbol> symbols;
    struct candidate {
      std::int32_t rank, pos, id;
    };
    std::vector<candidate> heap;
  };

  static std::uint64_t key(std::int32_t a, std::int32_t b) {
    return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw text_error("bpe vocabulary" + quoted_source() + ": " + what);
  }
  [[nodiscard]] std::string quoted_source() const { return v_.source.empty() ? std::string() : " '" + v_.source + "'"; }
  [[nodiscard]] std::string where() const { return "bpe" + quoted_source() + ": "; }
  void check_id(std::int32_t id) const {
    if (id < 0 || std::size_t(id) >= v_.tokens.size())
      throw text_error(peft::detail::concat(where(), "token id ", id, " is not in [0, ", v_.tokens.size(), ")"));
  }

  [[nodiscard]] std::optional<std::int32_t> added_at(std::string_view text, std::size_t pos, bool parse_special) const {
    for (const auto id : added_[static_cast<std::uint8_t>(text[pos])]) {
      const auto t = v_.types[std::size_t(id)];
      if (!parse_special && t != bpe_token_type::user_defined) continue;
      if (text.substr(pos).starts_with(v_.tokens[std::size_t(id)])) return id;
    }
    return std::nullopt;
  }

  /// Decodes `text` (valid UTF-8) into code points with a sentinel, then pre-tokenizes it.
  void split(std::string_view text, workspace& w) const {
    namespace d = detail::bpe;
    w.cpts.clear();
    w.pieces.clear();
    const auto* s = reinterpret_cast<const std::uint8_t*>(text.data());
    const auto n = static_cast<std::int32_t>(text.size());
    for (std::int32_t i = 0; i < n;) {
      const auto begin = std::uint32_t(i);
      UChar32 c;
      U8_NEXT_UNSAFE(s, i, c);
      w.cpts.push_back({char32_t(c), begin, d::classify(c)});
    }
    const auto count = std::uint32_t(w.cpts.size());
    w.cpts.push_back({0, std::uint32_t(n), 0});
    switch (pre_) {
      case d::pre_kind::gpt2: d::split_gpt2(w.cpts, 0, count, w.pieces); break;
      case d::pre_kind::smollm: d::split_smollm(w.cpts, 0, count, w.pieces); break;
      case d::pre_kind::llama3: d::split_llama3(w.cpts, 0, count, w.pieces); break;
      case d::pre_kind::fallback: d::split_fallback(w.cpts, 0, count, w.pieces); break;
    }
  }

  void encode_text(std::string_view text, std::vector<std::int32_t>& out, workspace& w) const {
    if (text.empty()) return;
    split(text, w);
    for (const auto& [a, b] : w.pieces) {
      const std::uint32_t begin = w.cpts[a].begin;
      encode_word(text.substr(begin, w.cpts[b].begin - begin), out, w);
    }
  }

  /// BPE of one word, as HF's `Word::merge_all`: a heap of (rank, position) candidates; stale ones skipped.
  void encode_word(std::string_view word, std::vector<std::int32_t>& out, workspace& w) const {
    if (ignore_merges_)
      if (const auto id = token_id(detail::bpe::to_byte_level(word))) {
        out.push_back(*id);
        return;
      }
    auto& sym = w.symbols;
    sym.clear();
    for (const char ch : word) {
      std::int32_t id = byte_ids_[static_cast<std::uint8_t>(ch)];
      if (id < 0) {
        if (!v_.unk)
          throw text_error(peft::detail::concat(where(), "byte 0x", std::hex, int(static_cast<std::uint8_t>(ch)),
                                                " has no token and the vocabulary has no unk id"));
        id = *v_.unk;
      }
      const auto i = std::int32_t(sym.size());
      sym.push_back({id, i - 1, i + 1, true});
    }
    if (sym.size() > 1) {
      sym.back().next = -1;
      auto& heap = w.heap;
      heap.clear();
      const auto later = [](const workspace::candidate& x, const workspace::candidate& y) {
        return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;  // min-heap on (rank, pos)
      };
      auto push = [&](std::int32_t pos) {
        const auto nx = sym[std::size_t(pos)].next;
        if (nx < 0) return;
        const auto it = merges_.find(key(sym[std::size_t(pos)].id, sym[std::size_t(nx)].id));
        if (it == merges_.end()) return;
        heap.push_back({it->second.first, pos, it->second.second});
        std::push_heap(heap.begin(), heap.end(), later);
      };
      for (std::int32_t i = 0; i + 1 < std::int32_t(sym.size()); ++i) push(i);
      while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const auto top = heap.back();
        heap.pop_back();
        auto& left = sym[std::size_t(top.pos)];
        if (!left.live || left.next < 0) continue;
        auto& right = sym[std::size_t(left.next)];
        const auto it = merges_.find(key(left.id, right.id));
        if (it == merges_.end() || it->second.second != top.id) continue;  // stale candidate
        left.id = top.id;
        right.live = false;
        left.next = right.next;
        if (left.next >= 0) sym[std::size_t(left.next)].prev = top.pos;
        if (left.prev >= 0) push(left.prev);
        push(top.pos);
      }
    }
    for (std::int32_t i = 0; i >= 0 && std::size_t(i) < sym.size(); i = sym[std::size_t(i)].next)
      out.push_back(sym[std::size_t(i)].id);
  }

  /// The part of `from_tokenizer_json` after parsing (nlohmann exceptions become `text_error` there).
  static bpe_tokenizer from_json(nlohmann::json& j, const std::filesystem::path& path) {
    const std::string src = path.string();
    auto bad = [&](const std::string& what) { return text_error("tokenizer.json '" + src + "': " + what); };
    if (!j.is_object() || !j["model"].is_object()) throw bad("has no 'model' object");
    auto& model = j["model"];
    const std::string type = model.value("type", std::string("(none)"));
    if (type != "BPE") throw bad("model type '" + type + "' is not supported (only BPE)");
    auto is_set = [&](const char* k) {
      return model.contains(k) && !model[k].is_null() && !(model[k].is_string() && model[k].get<std::string>().empty());
    };
    if (is_set("dropout") && !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0))
      throw bad("BPE dropout is not supported");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (is_set(k)) throw bad(std::string("BPE '") + k + "' is not supported");
    if (!model["vocab"].is_object()) throw bad("model has no 'vocab' object");

    bpe_vocabulary v;
    v.source = src;
    v.tokens.resize(model["vocab"].size());
    std::vector<bool> seen(v.tokens.size());
    auto place = [&](std::size_t id, const std::string& text, const char* where) {
      if (id >= (std::size_t(1) << 26)) throw bad(peft::detail::concat(where, " has id ", id, ", beyond 2^26"));
      if (id >= v.tokens.size()) v.tokens.resize(id + 1), seen.resize(id + 1);
      if (seen[id] && v.tokens[id] != text)
        throw bad(peft::detail::concat(where, " gives id ", id, " to '", text, "' but it is '", v.tokens[id], "'"));
      v.tokens[id] = text;
      seen[id] = true;
    };
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
      if (!it.value().is_number_unsigned()) throw bad("vocab id of '" + it.key() + "' is not a non-negative integer");
      place(it.value().get<std::size_t>(), it.key(), "vocab");
    }
    if (model.contains("merges") && model["merges"].is_array()) {
      for (const auto& m : model["merges"]) {
        if (m.is_string()) v.merges.push_back(m.get<std::string>());
        else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
          v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
        else throw bad("a merge is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
    if (model.contains("ignore_merges") && model["ignore_merges"].is_boolean())
      v.ignore_merges = model["ignore_merges"].get<bool>();

    std::vector<std::pair<std::size_t, bool>> added;  // id, special
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& t : j["added_tokens"]) {
        using detail::bpe::field;
        if (!field(t, "id").is_number_unsigned() || !field(t, "content").is_string())
          throw bad("an added token lacks 'id' or 'content'");
        const std::string content = t["content"].get<std::string>();
        for (const char* k : {"lstrip", "rstrip", "single_word"})
          if (t.value(k, false)) throw bad("added token '" + content + "' uses '" + k + "', which is not supported");
        place(t["id"].get<std::size_t>(), content, "added_tokens");
        added.emplace_back(t["id"].get<std::size_t>(), t.value("special", false));
      }
    }
    for (std::size_t id = 0; id < seen.size(); ++id)
      if (!seen[id]) throw bad(peft::detail::concat("no token has id ", id, " (ids must be contiguous)"));
    v.types.assign(v.tokens.size(), bpe_token_type::normal);
    for (const auto& [id, special] : added)
      v.types[id] = special ? bpe_token_type::control : bpe_token_type::user_defined;

    v.pre_tokenizer = pre_name(j["normalizer"], j["pre_tokenizer"], bad);

    auto id_of = [&](const std::string& text) -> std::optional<std::int32_t> {
      for (std::size_t i = 0; i < v.tokens.size(); ++i)
        if (v.tokens[i] == text) return std::int32_t(i);
      return std::nullopt;
    };
    if (model.contains("unk_token") && model["unk_token"].is_string())
      v.unk = id_of(model["unk_token"].get<std::string>());
    read_post_processor(j["post_processor"], v, id_of, bad);

    const auto config = path.parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(config)) {
      std::ifstream in(config);
      nlohmann::json c;
      try {
        c = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw text_error("'" + config.string() + "': not valid JSON: " + e.what());
      }
      auto name = [&](const char* k) -> std::optional<std::string> {
        if (!c.is_object() || !c.contains(k)) return std::nullopt;
        if (c[k].is_string()) return c[k].get<std::string>();
        if (c[k].is_object() && c[k]["content"].is_string()) return c[k]["content"].get<std::string>();
        return std::nullopt;
      };
      using slot_of = std::pair<const char*, std::optional<std::int32_t>*>;
      for (auto [k, slot] : {slot_of{"bos_token", &v.bos}, slot_of{"eos_token", &v.eos}, slot_of{"pad_token", &v.pad},
                             slot_of{"unk_token", &v.unk}})
        if (const auto n = name(k)) {
          if (const auto id = id_of(*n)) *slot = id;
        }
    }
    return bpe_tokenizer(std::move(v));
  }

  /// Pre-tokenizer name of a tokenizer.json's normalizer and pre_tokenizer, or `text_error`.
  template <class Bad>
  static std::string pre_name(const nlohmann::json& norm, const nlohmann::json& pre, const Bad& bad) {
    using detail::bpe::field;
    if (!norm.is_null() && !(norm.is_object() && norm.value("type", "") == "Sequence" &&
                             field(norm, "normalizers").is_array() && field(norm, "normalizers").empty()))
      throw bad("normalizer '" + (norm.is_object() ? norm.value("type", std::string("?")) : std::string("?")) +
                "' is not supported (byte-level BPE takes the text as it is)");
    auto type = [](const nlohmann::json& p) {
      return p.is_object() ? p.value("type", std::string("?")) : std::string("null");
    };
    auto byte_level = [&](const nlohmann::json& p, bool regex) {
      if (type(p) != "ByteLevel") return false;
      if (p.value("add_prefix_space", false)) throw bad("ByteLevel add_prefix_space=true is not supported");
      return p.value("use_regex", true) == regex;
    };
    if (byte_level(pre, true)) return "gpt2";
    if (type(pre) == "Sequence" && field(pre, "pretokenizers").is_array()) {
      const auto& s = field(pre, "pretokenizers");
      if (s.size() == 2 && type(s[0]) == "Digits" && s[0].value("individual_digits", false) && byte_level(s[1], true))
        return "smollm";
      const auto& regex = field(field(s.empty() ? s : s[0], "pattern"), "Regex");
      if (s.size() == 2 && type(s[0]) == "Split" && regex.is_string() && regex.template get<std::string>() == llama3_regex &&
          s[0].value("behavior", "") == "Isolated" &&
          !s[0].value("invert", false) && byte_level(s[1], false))
        return "llama-bpe";
      std::string parts;
      for (const auto& p : s) parts += (parts.empty() ? "" : ", ") + type(p);
      throw bad("pre_tokenizer Sequence[" + parts +
                "] is not supported (supported: ByteLevel; Sequence[Digits(individual_digits), ByteLevel]; "
                "Sequence[Split(Llama 3 regex), ByteLevel(use_regex=false)])");
    }
    throw bad("pre_tokenizer '" + type(pre) + "' is not supported (a byte-level BPE needs ByteLevel)");
  }

  template <class IdOf, class Bad>
  static void read_post_processor(const nlohmann::json& pp, bpe_vocabulary& v, const IdOf& id_of, const Bad& bad) {
    using detail::bpe::field;
    if (pp.is_null()) return;
    const std::string type = pp.is_object() ? pp.value("type", std::string("?")) : std::string("?");
    if (type == "ByteLevel") return;
    if (type == "Sequence" && field(pp, "processors").is_array()) {
      for (const auto& p : field(pp, "processors")) read_post_processor(p, v, id_of, bad);
      return;
    }
    if (type == "RobertaProcessing") {
      const auto &cls = field(pp, "cls"), &sep = field(pp, "sep");
      auto named = [](const nlohmann::json& x) { return x.is_array() && !x.empty() && x[0].is_string(); };
      if (!named(cls) || !named(sep))
        throw bad("RobertaProcessing lacks 'cls' or 'sep'");
      v.bos = id_of(cls[0].template get<std::string>());
      v.eos = id_of(sep[0].template get<std::string>());
      v.add_bos = v.add_eos = v.bos && v.eos;
      return;
    }
    if (type != "TemplateProcessing") throw bad("post_processor '" + type + "' is not supported");
    const auto& single = field(pp, "single");
    if (!single.is_array()) throw bad("TemplateProcessing has no 'single' list");
    std::size_t seq = single.size();
    for (std::size_t i = 0; i < single.size(); ++i)
      if (single[i].is_object() && single[i].contains("Sequence")) seq = i;
    if (seq == single.size() || seq > 1 || single.size() - seq > 2)
      throw bad("TemplateProcessing 'single' is not [special] $A [special]");
    auto special = [&](const nlohmann::json& item) -> std::int32_t {
      const auto& id_name = field(field(item, "SpecialToken"), "id");
      if (!id_name.is_string())
        throw bad("TemplateProcessing 'single' holds an item that is neither $A nor a special token");
      const std::string name = id_name.template get<std::string>();
      const auto& ids = field(field(field(pp, "special_tokens"), name.c_str()), "ids");
      if (ids.is_array() && ids.size() == 1 && ids[0].is_number_integer()) return ids[0].template get<std::int32_t>();
      if (const auto id = id_of(name)) return *id;
      throw bad("TemplateProcessing names unknown special token '" + name + "'");
    };
    if (seq == 1) v.bos = special(single[0]), v.add_bos = true;
    if (single.size() - seq == 2) v.eos = special(single[seq + 1]), v.add_eos = true;
  }

  static constexpr std::string_view llama3_regex =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

  bpe_vocabulary v_;
  detail::bpe::pre_kind pre_ = detail::bpe::pre_kind::gpt2;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, std::int32_t, detail::bpe::string_hash, std::equal_to<>> ids_;
  std::unordered_map<std::uint64_t, std::pair<std::int32_t, std::int32_t>> merges_;  // (a, b) -> (rank, merged id)
  std::array<std::int32_t, 256> byte_ids_{};
  std::vector<std::string> pieces_;                     // id -> decoded bytes
  std::array<std::vector<std::int32_t>, 256> added_{};  // first byte -> matchable tokens, longest first
};

/// True when `tmpl` (a Jinja chat template) produces ChatML (`<|im_start|>` ... `<|im_end|>`).
inline bool is_chatml_template(std::string_view tmpl) {
  return tmpl.find("<|im_start|>") != std::string_view::npos && tmpl.find("<|im_end|>") != std::string_view::npos;
}

/// The default system prompt of a ChatML template: the text between "<|im_start|>system\n" and
/// "<|im_end|>" inside one string literal of the template (the newline raw or written "\n"; Jinja string
/// escapes undone). nullopt when no literal holds a whole system message (e.g. only
/// `'<|im_start|>system\n' + messages[0]['content']`).
inline std::optional<std::string> default_system_prompt_from_template(std::string_view tmpl) {
  static constexpr std::string_view open = "<|im_start|>system", close = "<|im_end|>";
  for (std::size_t at = tmpl.find(open); at != std::string_view::npos; at = tmpl.find(open, at + 1)) {
    std::size_t i = at + open.size();
    if (tmpl.substr(i, 1) == "\n") i += 1;
    else if (tmpl.substr(i, 2) == "\\n") i += 2;
    else continue;
    const auto q = tmpl.substr(0, at).find_last_of("'\"");  // the quote that opens the enclosing literal
    if (q == std::string_view::npos) continue;
    std::string text;
    for (; i < tmpl.size(); ++i) {
      if (tmpl.substr(i).starts_with(close)) return text;
      const char c = tmpl[i];
      if (c == tmpl[q]) break;  // the literal ends before the message does
      if (c == '\\' && i + 1 < tmpl.size()) {
        const char e = tmpl[++i];
        text += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
      } else {
        text += c;
      }
    }
  }
  return std::nullopt;
}

/// Renders `messages` as SmolLM2's chat template does: for each message
/// "<|im_start|>{role}\n{content}<|im_end|>\n", preceded by a system message with `default_system` when
/// the first message is not a system message, then "<|im_start|>assistant\n" if `add_generation_prompt`.
/// As the template, an empty chat gets no system message.
inline std::string apply_chatml(std::span<const chat_message> messages,
                                const std::optional<std::string>& default_system, bool add_generation_prompt = true) {
  std::string out;
  if (!messages.empty() && messages.front().role != "system" && default_system)
    out += "<|im_start|>system\n" + *default_system + "<|im_end|>\n";
  for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace peft::text
