// libFuzzer target: the data readers (TSV, CSV with quotes and a header, CoNLL) must read a file or
// reject it with peft::data::data_error naming the line, never crash or hang; whatever they accept
// must be consistent (a label on every example, a tag for every token, BIO checks that either pass
// or name a line).
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "peft/data/readers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the reader and its options; the rest is the file.
  const std::uint8_t mode = data[0];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  std::istringstream in(text);
  try {
    if (mode & 4) {
      const auto sentences = peft::data::read_conll(in, "fuzz.conll", 4096);
      for (const auto& s : sentences)
        if (s.tokens.size() != s.tags.size() || s.tokens.empty()) __builtin_trap();
      try {
        peft::data::require_bio_tags(sentences, "fuzz.conll");
      } catch (const peft::data::data_error&) {
      }
    } else {
      peft::data::table_options o;
      o.delimiter = mode & 1 ? ',' : '\t';
      o.header = (mode & 2) != 0;
      o.max_line_bytes = 4096;
      if (mode & 8) o.label_column = std::size_t(mode >> 5);
      if (mode & 16) o.text_column = "text";
      for (const auto& ex : peft::data::read_classification(in, "fuzz.tsv", o))
        if (ex.label.empty() || ex.line == 0) __builtin_trap();
    }
  } catch (const peft::data::data_error&) {
  }
  return 0;
}
