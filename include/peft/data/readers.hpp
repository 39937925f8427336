#pragma once
/// \file Readers for labelled text: sentence classification (TSV/CSV) and token tagging (CoNLL).
///
/// Every error names the file and the 1-based line: a missing column, an empty line where an example
/// is expected, a line over `max_line_bytes`, invalid UTF-8, a tag missing from a CoNLL line.

#include <unicode/utf8.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::data {

/// Malformed data file; the message names the file and line.
struct data_error : error {
  using error::error;
};

/// One sentence-classification example.
struct labeled_text {
  std::string text;
  std::optional<std::string> text_pair;
  std::string label;
  std::size_t line = 0;  ///< 1-based line in its file
};

/// One tagged sentence (CoNLL).
struct tagged_sentence {
  std::vector<std::string> tokens;
  std::vector<std::string> tags;
  std::size_t first_line = 0;
};

/// Options of `read_classification_file`.
struct table_options {
  char delimiter = '\t';          ///< '\t' for TSV, ',' for CSV (RFC 4180 quotes are honoured)
  bool header = false;            ///< skip the first line
  std::size_t text_column = 0;
  std::optional<std::size_t> pair_column{};
  std::optional<std::size_t> label_column{};  ///< default: the last column
  std::size_t max_line_bytes = 1 << 20;
};

namespace detail {
inline bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(s.data());
  for (std::int32_t i = 0, n = std::int32_t(s.size()); i < n;) {
    UChar32 c;
    U8_NEXT(p, i, n, c);
    if (c < 0) return false;
  }
  return true;
}
/// Reads lines (without the newline; a trailing '\r' is dropped), checking length and UTF-8.
template <class F>
void for_each_line(const std::filesystem::path& path, std::size_t max_bytes, F&& f) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw data_error("cannot open '" + path.string() + "'");
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > max_bytes)
      throw data_error(peft::detail::concat(path.string(), ":", number, ": line of ", line.size(), " bytes exceeds the limit of ",
                                            max_bytes));
    if (!valid_utf8(line)) throw data_error(peft::detail::concat(path.string(), ":", number, ": invalid UTF-8"));
    f(line, number);
  }
}
/// Splits a line on `delim`; with ',' fields may be double-quoted ("" is a quote inside quotes).
inline std::vector<std::string> split_fields(const std::string& line, char delim, const std::string& where) {
  std::vector<std::string> out;
  std::string field;
  bool quoted = false, was_quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (delim == ',' && c == '"') {
      if (quoted && i + 1 < line.size() && line[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (quoted) {
        quoted = false;
      } else if (field.empty() && !was_quoted) {
        quoted = was_quoted = true;
      } else {
        field += c;
      }
    } else if (c == delim && !quoted) {
      out.push_back(std::move(field));
      field.clear();
      was_quoted = false;
    } else {
      field += c;
    }
  }
  if (quoted) throw data_error(where + ": unterminated quoted field");
  out.push_back(std::move(field));
  return out;
}
}  // namespace detail

/// Reads a TSV/CSV classification file: one example a line, text (and optional pair) and label
/// columns. Empty lines are errors (a line must be an example).
inline std::vector<labeled_text> read_classification_file(const std::filesystem::path& path, const table_options& o = {}) {
  std::vector<labeled_text> out;
  detail::for_each_line(path, o.max_line_bytes, [&](const std::string& line, std::size_t number) {
    if (o.header && number == 1) return;
    const std::string where = peft::detail::concat(path.string(), ":", number);
    if (line.find_first_not_of(" \t") == std::string::npos) throw data_error(where + ": empty line");
    const auto fields = detail::split_fields(line, o.delimiter, where);
    const std::size_t label_col = o.label_column.value_or(fields.size() - 1);
    const std::size_t need = std::max({o.text_column, label_col, o.pair_column.value_or(0)}) + 1;
    if (fields.size() < need || fields.size() < 2)
      throw data_error(peft::detail::concat(where, ": ", fields.size(), " column(s), expected at least ", std::max<std::size_t>(need, 2),
                                            " (text and label separated by ", o.delimiter == '\t' ? "a tab" : "','", ")"));
    labeled_text ex{fields[o.text_column], std::nullopt, fields[label_col], number};
    if (o.pair_column) ex.text_pair = fields[*o.pair_column];
    if (ex.label.empty()) throw data_error(where + ": empty label");
    out.push_back(std::move(ex));
  });
  if (out.empty()) throw data_error("'" + path.string() + "' has no examples");
  return out;
}

/// Reads a CoNLL tagging file: `token<whitespace>tag` per line (the tag is the last field), a blank line
/// ends a sentence, `-DOCSTART-` lines are skipped. Tokens may be any UTF-8 (emoji, URLs, mentions).
inline std::vector<tagged_sentence> read_conll(const std::filesystem::path& path, std::size_t max_line_bytes = 1 << 20) {
  std::vector<tagged_sentence> out;
  tagged_sentence cur;
  auto flush = [&] {
    if (!cur.tokens.empty()) out.push_back(std::move(cur));
    cur = {};
  };
  detail::for_each_line(path, max_line_bytes, [&](const std::string& line, std::size_t number) {
    if (line.find_first_not_of(" \t") == std::string::npos) return flush();
    if (line.rfind("-DOCSTART-", 0) == 0) return;
    const auto split = line.find_last_of("\t ");
    if (split == std::string::npos || split == 0 || split + 1 == line.size())
      throw data_error(peft::detail::concat(path.string(), ":", number, ": expected 'token<TAB>tag', got '", line, "'"));
    if (cur.tokens.empty()) cur.first_line = number;
    std::string token = line.substr(0, split);
    while (!token.empty() && (token.back() == '\t' || token.back() == ' ')) token.pop_back();
    cur.tokens.push_back(token);
    cur.tags.push_back(line.substr(split + 1));
  });
  flush();
  if (out.empty()) throw data_error("'" + path.string() + "' has no sentences");
  return out;
}

/// The label vocabulary of a task: names in a fixed order, and their ids.
class label_set {
 public:
  label_set() = default;
  explicit label_set(std::vector<std::string> names) : names_(std::move(names)) {
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (!ids_.emplace(names_[i], std::int32_t(i)).second) throw data_error("label_set: duplicate label '" + names_[i] + "'");
  }
  /// The sorted distinct labels of `labels`.
  static label_set from(const std::vector<std::string>& labels) {
    std::set<std::string> s(labels.begin(), labels.end());
    return label_set(std::vector<std::string>(s.begin(), s.end()));
  }
  /// Id of `label`; `where` names the file and line in the error for an unknown label.
  [[nodiscard]] std::int32_t id(const std::string& label, const std::string& where) const {
    const auto it = ids_.find(label);
    if (it == ids_.end()) {
      std::string known;
      for (const auto& n : names_) known += (known.empty() ? "" : ", ") + n;
      throw data_error(where + ": label '" + label + "' is not one of {" + known + "}");
    }
    return it->second;
  }
  [[nodiscard]] const std::vector<std::string>& names() const noexcept { return names_; }
  [[nodiscard]] std::size_t size() const noexcept { return names_.size(); }

 private:
  std::vector<std::string> names_;
  std::map<std::string, std::int32_t> ids_;
};

}  // namespace peft::data
