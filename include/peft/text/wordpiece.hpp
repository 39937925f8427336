#pragma once
/// \file WordPiece tokenizer for BERT, matching Hugging Face's `BertTokenizerFast` (the `tokenizers`
/// library's BertNormalizer, BertPreTokenizer, WordPiece model and BERT post-processor).
///
/// Pipeline: UTF-8 validation; clean-up (drop NUL, U+FFFD and control characters, map every whitespace
/// character to a space); spaces around CJK ideographs; for uncased models accent stripping (NFD, then
/// drop nonspacing marks) and lower-casing; split on whitespace and around every punctuation character;
/// greedy longest-match WordPiece with `##` continuations, `[UNK]` for a word with no segmentation or
/// longer than `max_input_chars_per_word`; then `[CLS] A [SEP] (B [SEP])`, truncation, padding.
/// Unicode properties and normalisation come from ICU.

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/text/text_error.hpp"

namespace peft::text {

/// One encoded sequence (or pair). `offsets` are [begin, end) byte offsets into the input text of
/// each token ({0, 0} for special tokens and padding); `word_ids` give the index of the word a token
/// came from (-1 for special tokens and padding) and `sequence_ids` 0 or 1 (-1 likewise).
struct encoding {
  std::vector<std::int32_t> ids;
  std::vector<std::int32_t> token_type_ids;
  std::vector<std::int32_t> attention_mask;
  std::vector<std::pair<std::size_t, std::size_t>> offsets;
  std::vector<std::int32_t> word_ids;
  std::vector<std::int32_t> sequence_ids;
  std::vector<std::string> tokens;
};

/// Options of `wordpiece_tokenizer::encode`.
struct encode_options {
  std::size_t max_length = 512;  ///< truncate to this many tokens including specials (0: no limit)
  bool pad_to_max_length = false;
  bool add_special_tokens = true;
};

namespace detail {
inline bool is_whitespace(UChar32 c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || u_charType(c) == U_SPACE_SEPARATOR;
}
inline bool is_control(UChar32 c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (u_charType(c)) {
    case U_CONTROL_CHAR: case U_FORMAT_CHAR: case U_SURROGATE: case U_PRIVATE_USE_CHAR: case U_UNASSIGNED: return true;
    default: return false;
  }
}
inline bool is_punctuation(UChar32 c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  switch (u_charType(c)) {
    case U_DASH_PUNCTUATION: case U_START_PUNCTUATION: case U_END_PUNCTUATION: case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION: case U_INITIAL_PUNCTUATION: case U_FINAL_PUNCTUATION: return true;
    default: return false;
  }
}
inline bool is_cjk(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}
inline void append_utf8(std::string& out, UChar32 c) {
  char buf[4];
  std::int32_t n = 0;
  U8_APPEND_UNSAFE(reinterpret_cast<std::uint8_t*>(buf), n, c);  // c is a valid scalar value: at most 4 bytes
  out.append(buf, std::size_t(n));
}
/// A code point of the normalised text and the byte range of the original text it came from.
struct mapped_char {
  UChar32 c;
  std::size_t begin, end;
};
}  // namespace detail

/// A BERT WordPiece tokenizer: vocabulary, casing and special tokens.
class wordpiece_tokenizer {
 public:
  /// From a vocabulary (one token per line; the line number is the id).
  wordpiece_tokenizer(std::vector<std::string> vocab, bool lowercase, std::optional<bool> strip_accents = std::nullopt)
      : vocab_(std::move(vocab)), lowercase_(lowercase), strip_accents_(strip_accents.value_or(lowercase)) {
    for (std::size_t i = 0; i < vocab_.size(); ++i) ids_.emplace(vocab_[i], std::int32_t(i));
    auto special = [&](const char* t) {
      const auto it = ids_.find(t);
      if (it == ids_.end()) throw text_error(std::string("wordpiece: the vocabulary has no ") + t + " token");
      return it->second;
    };
    unk_ = special("[UNK]");
    cls_ = special("[CLS]");
    sep_ = special("[SEP]");
    pad_ = special("[PAD]");
  }

  /// Reads `vocab.txt` (UTF-8, one token per line).
  static wordpiece_tokenizer from_vocab_file(const std::filesystem::path& path, bool lowercase) {
    std::ifstream in(path);
    if (!in) throw text_error("cannot open vocabulary '" + path.string() + "'");
    std::vector<std::string> vocab;
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      vocab.push_back(line);
    }
    if (vocab.empty()) throw text_error("vocabulary '" + path.string() + "' is empty");
    return wordpiece_tokenizer(std::move(vocab), lowercase);
  }

  /// Reads a `tokenizer.json` with a WordPiece model and a BertNormalizer (its lowercase and
  /// strip_accents settings are honoured).
  static wordpiece_tokenizer from_tokenizer_json(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) throw text_error("cannot open '" + path.string() + "'");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw text_error(path.string() + ": not valid JSON: " + e.what());
    }
    const auto& model = j["model"];
    if (!model.is_object() || model.value("type", "") != "WordPiece" || !model["vocab"].is_object())
      throw text_error(path.string() + ": 'model' is not a WordPiece model with a vocab object");
    std::vector<std::string> vocab(model["vocab"].size());
    for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
      if (!it.value().is_number_unsigned() || it.value().get<std::size_t>() >= vocab.size())
        throw text_error(path.string() + ": vocab id of '" + it.key() + "' is not in [0, vocab size)");
      vocab[it.value().get<std::size_t>()] = it.key();
    }
    bool lower = true;
    std::optional<bool> strip;
    if (j["normalizer"].is_object()) {
      const auto& n = j["normalizer"];
      if (n.contains("lowercase") && n["lowercase"].is_boolean()) lower = n["lowercase"].get<bool>();
      if (n.contains("strip_accents") && n["strip_accents"].is_boolean()) strip = n["strip_accents"].get<bool>();
    }
    wordpiece_tokenizer t(std::move(vocab), lower, strip);
    if (model.contains("max_input_chars_per_word") && model["max_input_chars_per_word"].is_number_unsigned())
      t.max_chars_per_word_ = model["max_input_chars_per_word"].get<std::size_t>();
    return t;
  }

  /// Words of `text` after normalisation and pre-tokenisation, with their byte ranges in `text`.
  [[nodiscard]] std::vector<std::pair<std::string, std::pair<std::size_t, std::size_t>>> words(std::string_view text) const {
    std::vector<std::pair<std::string, std::pair<std::size_t, std::size_t>>> out;
    for (const auto& w : split_words(text)) out.push_back({w.text, {w.chars.front().begin, w.chars.back().end}});
    return out;
  }

  /// Encodes one sequence, or a pair when `second` is given.
  [[nodiscard]] encoding encode(std::string_view first, std::optional<std::string_view> second = std::nullopt,
                                const encode_options& opt = {}) const {
    return assemble(pieces(first), second ? pieces(*second) : std::vector<piece>{}, second.has_value(), opt);
  }

  /// Encodes text already split into words (Hugging Face's `is_split_into_words=True`): each word is
  /// normalised and split further, and `word_ids` refer to the input words. Offsets are into the words
  /// joined by single spaces.
  [[nodiscard]] encoding encode_words(const std::vector<std::string>& words, const encode_options& opt = {}) const {
    std::vector<piece> all;
    std::size_t base = 0;
    for (std::size_t i = 0; i < words.size(); ++i) {
      for (auto p : pieces(words[i])) {
        p.word = std::int32_t(i);
        p.offsets.first += base;
        p.offsets.second += base;
        all.push_back(p);
      }
      base += words[i].size() + 1;
    }
    return assemble(std::move(all), {}, false, opt);
  }

 private:
  struct piece {
    std::int32_t id;
    std::pair<std::size_t, std::size_t> offsets;
    std::int32_t word;
  };

  [[nodiscard]] encoding assemble(std::vector<piece> a, std::vector<piece> b, bool second, const encode_options& opt) const {
    const std::size_t specials = opt.add_special_tokens ? (second ? 3 : 2) : 0;
    if (opt.max_length) {
      if (opt.max_length < specials)
        throw text_error(peft::detail::concat("wordpiece: max_length ", opt.max_length, " leaves no room for ", specials,
                                              " special tokens"));
      // longest_first: drop from the longer sequence until both fit.
      while (a.size() + b.size() + specials > opt.max_length) (b.size() > a.size() ? b : a).pop_back();
    }
    encoding e;
    auto add = [&](std::int32_t id, const std::string& tok, std::pair<std::size_t, std::size_t> off, std::int32_t word,
                   std::int32_t seq, std::int32_t type) {
      e.ids.push_back(id);
      e.tokens.push_back(tok);
      e.offsets.push_back(off);
      e.word_ids.push_back(word);
      e.sequence_ids.push_back(seq);
      e.token_type_ids.push_back(type);
      e.attention_mask.push_back(1);
    };
    if (opt.add_special_tokens) add(cls_, "[CLS]", {0, 0}, -1, -1, 0);
    for (const auto& p : a) add(p.id, vocab_[std::size_t(p.id)], p.offsets, p.word, 0, 0);
    if (opt.add_special_tokens) add(sep_, "[SEP]", {0, 0}, -1, -1, 0);
    if (second) {
      for (const auto& p : b) add(p.id, vocab_[std::size_t(p.id)], p.offsets, p.word, 1, 1);
      if (opt.add_special_tokens) add(sep_, "[SEP]", {0, 0}, -1, -1, 1);
    }
    if (opt.pad_to_max_length && opt.max_length)
      while (e.ids.size() < opt.max_length) {
        add(pad_, "[PAD]", {0, 0}, -1, -1, 0);
        e.attention_mask.back() = 0;
      }
    return e;
  }

 public:
  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_.size(); }
  [[nodiscard]] std::int32_t pad_id() const noexcept { return pad_; }
  [[nodiscard]] std::int32_t unk_id() const noexcept { return unk_; }
  [[nodiscard]] std::int32_t cls_id() const noexcept { return cls_; }
  [[nodiscard]] std::int32_t sep_id() const noexcept { return sep_; }
  [[nodiscard]] bool lowercase() const noexcept { return lowercase_; }
  [[nodiscard]] const std::string& token(std::int32_t id) const { return vocab_.at(std::size_t(id)); }
  [[nodiscard]] std::optional<std::int32_t> id(const std::string& token) const {
    const auto it = ids_.find(token);
    return it == ids_.end() ? std::nullopt : std::optional<std::int32_t>(it->second);
  }

 private:
  /// A pre-tokenised word: its normalised UTF-8 text and, per code point, where it came from.
  struct word_chars {
    std::string text;
    std::vector<detail::mapped_char> chars;
  };
  [[nodiscard]] std::vector<word_chars> split_words(std::string_view text) const {
    std::vector<word_chars> out;
    word_chars cur;
    auto flush = [&] {
      if (!cur.chars.empty()) out.push_back(std::move(cur));
      cur = {};
    };
    for (const auto& m : normalize(text)) {
      if (detail::is_whitespace(m.c)) {
        flush();
      } else if (detail::is_punctuation(m.c)) {
        flush();
        word_chars p;
        detail::append_utf8(p.text, m.c);
        p.chars.push_back(m);
        out.push_back(std::move(p));
      } else {
        detail::append_utf8(cur.text, m.c);
        cur.chars.push_back(m);
      }
    }
    flush();
    return out;
  }

  /// Validated, cleaned, CJK-spaced, accent-stripped and lower-cased code points with their origins.
  [[nodiscard]] std::vector<detail::mapped_char> normalize(std::string_view text) const {
    std::vector<detail::mapped_char> out;
    const auto* s = reinterpret_cast<const std::uint8_t*>(text.data());
    const auto n = static_cast<std::int32_t>(text.size());
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfd = strip_accents_ ? icu::Normalizer2::getNFDInstance(status) : nullptr;
    if (U_FAILURE(status)) throw text_error("wordpiece: ICU NFD normaliser unavailable");
    for (std::int32_t i = 0; i < n;) {
      const std::int32_t start = i;
      UChar32 c;
      U8_NEXT(s, i, n, c);
      if (c < 0) throw text_error(peft::detail::concat("wordpiece: invalid UTF-8 at byte ", start));
      const auto b = std::size_t(start), e = std::size_t(i);
      if (c == 0 || c == 0xFFFD || detail::is_control(c)) continue;
      if (detail::is_whitespace(c)) {
        out.push_back({' ', b, e});
        continue;
      }
      if (detail::is_cjk(c)) {
        out.push_back({' ', b, e});
        out.push_back({c, b, e});
        out.push_back({' ', b, e});
        continue;
      }
      icu::UnicodeString u(c);
      if (nfd) {
        icu::UnicodeString d;
        nfd->normalize(u, d, status);
        u.remove();
        for (std::int32_t k = 0; k < d.length();) {
          const UChar32 dc = d.char32At(k);
          if (u_charType(dc) != U_NON_SPACING_MARK) u.append(dc);
          k += U16_LENGTH(dc);
        }
      }
      if (lowercase_) u.toLower(icu::Locale::getRoot());
      for (std::int32_t k = 0; k < u.length();) {
        const UChar32 lc = u.char32At(k);
        out.push_back({lc, b, e});
        k += U16_LENGTH(lc);
      }
    }
    return out;
  }

  /// WordPiece ids of every word of `text`, with exact byte offsets into `text`.
  [[nodiscard]] std::vector<piece> pieces(std::string_view text) const {
    std::vector<piece> out;
    std::int32_t word_index = 0;
    for (const auto& w : split_words(text)) {
      // Byte boundaries of the word's code points inside w.text.
      std::vector<std::size_t> bounds{0};
      for (const auto& m : w.chars) bounds.push_back(bounds.back() + std::size_t(U8_LENGTH(m.c)));
      const std::size_t chars = w.chars.size();
      auto span_of = [&](std::size_t a, std::size_t b) { return std::pair{w.chars[a].begin, w.chars[b - 1].end}; };
      std::vector<piece> word_pieces;
      bool bad = chars > max_chars_per_word_;
      for (std::size_t start = 0; !bad && start < chars;) {
        std::size_t end = chars;
        std::optional<std::int32_t> found;
        for (; end > start; --end) {
          std::string sub = w.text.substr(bounds[start], bounds[end] - bounds[start]);
          if (start > 0) sub = "##" + sub;
          if (const auto it = ids_.find(sub); it != ids_.end()) {
            found = it->second;
            break;
          }
        }
        if (!found) {
          bad = true;
          break;
        }
        word_pieces.push_back({*found, span_of(start, end), word_index});
        start = end;
      }
      if (bad) word_pieces.assign(1, piece{unk_, span_of(0, chars), word_index});
      out.insert(out.end(), word_pieces.begin(), word_pieces.end());
      ++word_index;
    }
    return out;
  }

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, std::int32_t> ids_;
  bool lowercase_, strip_accents_;
  std::size_t max_chars_per_word_ = 100;
  std::int32_t unk_ = 0, cls_ = 0, sep_ = 0, pad_ = 0;
};

/// Labels for token classification: the word's label on its first piece, `ignore` on the others and
/// on special tokens and padding (Hugging Face's usual alignment).
inline std::vector<std::int32_t> align_word_labels(const encoding& e, const std::vector<std::int32_t>& word_labels,
                                                   std::int32_t ignore = -100) {
  std::vector<std::int32_t> out(e.ids.size(), ignore);
  std::int32_t previous = -1;
  for (std::size_t i = 0; i < e.ids.size(); ++i) {
    const std::int32_t w = e.word_ids[i];
    if (w >= 0 && w != previous) {
      if (std::size_t(w) >= word_labels.size())
        throw text_error(peft::detail::concat("align_word_labels: token ", i, " belongs to word ", w, " but only ",
                                              word_labels.size(), " labels were given"));
      out[i] = word_labels[std::size_t(w)];
    }
    if (w >= 0) previous = w;
  }
  return out;
}

}  // namespace peft::text
