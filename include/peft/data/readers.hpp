#pragma once
/// \file Readers for labelled text: sentence classification (TSV/CSV) and token tagging (CoNLL).
///
/// Every error names the file and the 1-based line: a missing or extra column, an empty line where an
/// example is expected, a line over `max_line_bytes` (found before the rest of it is read), a NUL
/// byte, invalid UTF-8, a tag missing from a CoNLL line.

#include <unicode/utf8.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <istream>
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

/// A column of a table file: its 0-based position, or, in a file with a header line, its name.
/// Default-constructed: not given (the reader's defaults apply).
struct column {
  std::optional<std::size_t> index{};
  std::string name{};
  column() = default;
  column(std::size_t i) : index(i) {}  // NOLINT(google-explicit-constructor): `.label_column = 2`
  column(std::string n) : name(std::move(n)) {}  // NOLINT(google-explicit-constructor)
  column(const char* n) : name(n) {}             // NOLINT(google-explicit-constructor)
  [[nodiscard]] bool given() const noexcept { return index.has_value() || !name.empty(); }
};

/// Options of `read_classification_file`.
struct table_options {
  char delimiter = '\t';  ///< '\t' for TSV, ',' for CSV (RFC 4180 quotes are honoured)
  bool header = false;    ///< the first line names the columns
  /// Which columns hold the text, the optional second text of a pair, and the label. Not given: a
  /// header's `text` / `sentence` / `sentence1`, `text_pair` / `sentence2` and `label` columns; without
  /// such names, a two-column file is text then label, and a wider one is an error (say which).
  column text_column{}, pair_column{}, label_column{};
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

/// Reads one line of `in` (without its '\n'; a trailing '\r' is dropped) into `line`. Returns false
/// at the end of the input. A line longer than `max_bytes` throws `data_error` (`where`:`number`) as
/// soon as the limit is passed, before the rest of it is read, so a huge line costs no memory; so does
/// a NUL byte (binary data), and invalid UTF-8.
inline bool read_text_line(std::istream& in, std::string& line, std::size_t max_bytes, const std::string& where,
                           std::size_t number) {
  line.clear();
  std::streambuf* sb = in.rdbuf();
  bool any = false;
  for (;;) {
    const int c = sb->sbumpc();
    if (c == std::char_traits<char>::eof()) {
      in.setstate(std::ios::eofbit);
      if (!any) return false;
      break;
    }
    any = true;
    if (c == '\n') break;
    if (c == '\0')
      throw data_error(peft::detail::concat(where, ":", number, ": NUL byte at byte ", line.size() + 1, " (not a text file?)"));
    line.push_back(char(c));
    if (line.size() > max_bytes + 1)  // + 1: a '\r' before the newline does not count
      throw data_error(peft::detail::concat(where, ":", number, ": line longer than the limit of ", max_bytes, " bytes"));
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.size() > max_bytes)
    throw data_error(peft::detail::concat(where, ":", number, ": line longer than the limit of ", max_bytes, " bytes"));
  if (!valid_utf8(line)) throw data_error(peft::detail::concat(where, ":", number, ": invalid UTF-8"));
  return true;
}

/// Calls `f(line, number)` for each line of `in`, named `source` in errors (see `read_text_line`).
template <class F>
void for_each_line(std::istream& in, const std::string& source, std::size_t max_bytes, F&& f) {
  std::string line;
  for (std::size_t number = 1; read_text_line(in, line, max_bytes, source, number); ++number) f(line, number);
  if (in.bad()) throw data_error("reading '" + source + "' failed");
}
/// Opens `path` for `read(stream)`; a file that cannot be opened is a `data_error` naming it.
template <class Read>
auto with_file(const std::filesystem::path& path, Read&& read) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw data_error("'" + path.string() + "' is a directory, not a data file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw data_error("cannot open '" + path.string() + "'");
  return read(in);
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

/// The columns of a table file, resolved from the options and the first line.
struct table_layout {
  std::size_t columns = 0, text = 0, label = 0;
  std::optional<std::size_t> pair;
};
inline table_layout resolve_layout(const std::vector<std::string>& first, const table_options& o, const std::string& where) {
  table_layout t{first.size()};
  auto names = [&] {
    std::string all;
    for (const auto& n : first) all += (all.empty() ? "" : ", ") + ("'" + n + "'");
    return all;
  };
  auto find = [&](const column& c, std::initializer_list<const char*> defaults, const char* role) -> std::optional<std::size_t> {
    if (c.index) {
      if (*c.index >= t.columns)
        throw data_error(peft::detail::concat(where, ": the ", role, " column is number ", *c.index + 1, " but the file has ",
                                              t.columns, " column(s)"));
      return c.index;
    }
    if (!c.name.empty()) {
      if (!o.header)
        throw data_error(peft::detail::concat(where, ": the ", role, " column is named '", c.name,
                                              "', but names need a header line (--header), or give its number"));
      for (std::size_t i = 0; i < first.size(); ++i)
        if (first[i] == c.name) return i;
      throw data_error(peft::detail::concat(where, ": no ", role, " column named '", c.name, "' (the header has ", names(), ")"));
    }
    if (o.header)
      for (const char* d : defaults)
        for (std::size_t i = 0; i < first.size(); ++i)
          if (first[i] == d) return i;
    return std::nullopt;
  };
  const auto text = find(o.text_column, {"text", "sentence", "sentence1"}, "text");
  const auto label = find(o.label_column, {"label", "labels"}, "label");
  t.pair = find(o.pair_column, {"text_pair", "sentence2"}, "pair");
  if (t.columns < 2)
    throw data_error(peft::detail::concat(where, ": 1 column, expected at least 2 (text and label separated by ",
                                          o.delimiter == '\t' ? "a tab" : "','", ")"));
  const std::size_t named = std::size_t(t.pair.has_value()) + 2;
  if (!text && !label && t.columns > named)
    throw data_error(peft::detail::concat(where, ": ", t.columns, " columns", o.header ? " (" + names() + ")" : std::string(),
                                          ": say which holds the text and which the label (text_column / label_column; "
                                          "peft-train: --text-column, --label-column)"));
  t.text = text.value_or(0);
  t.label = label.value_or(t.columns - 1);
  if (t.text == t.label || (t.pair && (*t.pair == t.text || *t.pair == t.label)))
    throw data_error(where + ": the text, pair and label columns must be different columns");
  return t;
}
}  // namespace detail

/// Reads a TSV/CSV classification file: one example a line, text (and optional pair) and label
/// columns (see `table_options`). Every line must have as many columns as the first (so an unquoted
/// comma in a CSV text, or a stray column, is an error naming the line, never a shifted field); empty
/// lines and empty labels are errors.
inline std::vector<labeled_text> read_classification(std::istream& in, const std::string& source, const table_options& o = {}) {
  std::vector<labeled_text> out;
  std::optional<detail::table_layout> layout;
  std::size_t first_line = 0;
  detail::for_each_line(in, source, o.max_line_bytes, [&](const std::string& line, std::size_t number) {
    const std::string where = peft::detail::concat(source, ":", number);
    if (line.find_first_not_of(" \t") == std::string::npos) throw data_error(where + ": empty line");
    const auto fields = detail::split_fields(line, o.delimiter, where);
    if (!layout) {
      layout = detail::resolve_layout(fields, o, where);
      first_line = number;
      if (o.header) return;
    }
    if (fields.size() != layout->columns)
      throw data_error(peft::detail::concat(where, ": ", fields.size(), " column(s), but line ", first_line, " has ",
                                            layout->columns,
                                            o.delimiter == ',' ? " (a ',' inside a text must be within double quotes)"
                                                               : " (a tab inside a text, or a missing column?)"));
    labeled_text ex{fields[layout->text], std::nullopt, fields[layout->label], number};
    if (layout->pair) ex.text_pair = fields[*layout->pair];
    if (ex.label.empty()) throw data_error(where + ": empty label");
    out.push_back(std::move(ex));
  });
  if (out.empty()) throw data_error("'" + source + "' has no examples");
  return out;
}
/// `read_classification` of the file `path`.
inline std::vector<labeled_text> read_classification_file(const std::filesystem::path& path, const table_options& o = {}) {
  return detail::with_file(path, [&](std::istream& in) { return read_classification(in, path.string(), o); });
}

/// Reads a CoNLL tagging file: one token a line, its fields separated by tabs (or, in a file without
/// tabs, by spaces); the first field is the token and the last the tag, so CoNLL-2003's
/// `word POS chunk NER` lines give the word and its NER tag. Every token line must have as many fields
/// as the first. A blank line ends a sentence, `-DOCSTART-` lines (document boundaries) are skipped.
/// Tokens may be any UTF-8 (emoji, URLs, mentions). A sentence's token i is at line `first_line + i`.
inline std::vector<tagged_sentence> read_conll(std::istream& in, const std::string& source, std::size_t max_line_bytes = 1 << 20) {
  std::vector<tagged_sentence> out;
  tagged_sentence cur;
  std::size_t columns = 0, first_line = 0;
  auto flush = [&] {
    if (!cur.tokens.empty()) out.push_back(std::move(cur));
    cur = {};
  };
  detail::for_each_line(in, source, max_line_bytes, [&](const std::string& line, std::size_t number) {
    if (line.find_first_not_of(" \t") == std::string::npos) return flush();
    if (line.rfind("-DOCSTART-", 0) == 0) return flush();
    const char sep = line.find('\t') != std::string::npos ? '\t' : ' ';
    std::vector<std::string> fields;
    for (std::size_t i = 0; i <= line.size();) {
      const std::size_t j = std::min(line.find(sep, i), line.size());
      if (j > i || sep == '\t') fields.push_back(line.substr(i, j - i));
      i = j + 1;
    }
    const bool empty_field = std::any_of(fields.begin(), fields.end(), [](const std::string& f) {
      return f.find_first_not_of(' ') == std::string::npos;
    });
    if (fields.size() < 2 || empty_field)
      throw data_error(peft::detail::concat(source, ":", number, ": expected 'token<TAB>tag', got '", line, "'"));
    if (columns == 0) columns = fields.size(), first_line = number;
    if (fields.size() != columns)
      throw data_error(peft::detail::concat(source, ":", number, ": ", fields.size(), " fields, but line ", first_line,
                                            " has ", columns, " (every token line needs the same columns)"));
    if (cur.tokens.empty()) cur.first_line = number;
    cur.tokens.push_back(fields.front());
    cur.tags.push_back(fields.back());
  });
  flush();
  if (out.empty()) throw data_error("'" + source + "' has no sentences");
  return out;
}
/// `read_conll` of the file `path`.
inline std::vector<tagged_sentence> read_conll(const std::filesystem::path& path, std::size_t max_line_bytes = 1 << 20) {
  return detail::with_file(path, [&](std::istream& in) { return read_conll(in, path.string(), max_line_bytes); });
}

/// Checks that every tag is `O`, `B-<type>` or `I-<type>` (what entity-level scoring needs), naming
/// the file and line of the first that is not.
inline void require_bio_tags(const std::vector<tagged_sentence>& sentences, const std::string& source) {
  for (const auto& s : sentences)
    for (std::size_t i = 0; i < s.tags.size(); ++i) {
      const std::string& t = s.tags[i];
      if (t == "O" || (t.size() >= 3 && (t[0] == 'B' || t[0] == 'I') && t[1] == '-')) continue;
      throw data_error(peft::detail::concat(source, ":", s.first_line + i, ": tag '", t,
                                            "' is not O, B-<type> or I-<type> (entity scoring needs BIO tags)"));
    }
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
