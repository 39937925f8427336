// WordPiece tokenizer against reference ids from Hugging Face's `tokenizers` for a set of hard strings
// (tests/fixtures/tokenizer/make_tokenizer_reference.py), plus truncation, padding, pairs, label
// alignment, tokenizer.json reading and bad input.
#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/io/atomic_file.hpp"
#include "peft/text/wordpiece.hpp"

using namespace peft;
namespace fs = std::filesystem;

namespace {
const fs::path fixtures = fs::path(PEFT_TEST_FIXTURES) / "tokenizer";

nlohmann::json reference() {
  std::ifstream in(fixtures / "reference.json");
  return nlohmann::json::parse(in);
}

void check_against_reference(const text::wordpiece_tokenizer& tok, const nlohmann::json& cases) {
  std::size_t checked = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const auto e = c.contains("pair") ? tok.encode(text, c["pair"].get<std::string>(), {.max_length = 0})
                                      : tok.encode(text, std::nullopt, {.max_length = 0});
    const auto want = c["ids"].get<std::vector<std::int32_t>>();
    BOOST_TEST(e.ids == want, "ids differ for '" << text << "': got " << nlohmann::json(e.tokens).dump() << ", want "
                                                  << c["tokens"].dump());
    BOOST_TEST(e.token_type_ids == c["type_ids"].get<std::vector<std::int32_t>>(), "type ids differ for '" << text << "'");
    if (c.contains("offsets") && e.ids == want) {
      const auto offs = c["offsets"].get<std::vector<std::vector<std::size_t>>>();
      for (std::size_t i = 0; i < offs.size(); ++i)
        BOOST_TEST((e.offsets[i] == std::pair<std::size_t, std::size_t>{offs[i][0], offs[i][1]}),
                   "offset " << i << " of '" << text << "' (" << e.tokens[i] << "): got [" << e.offsets[i].first << ", "
                             << e.offsets[i].second << "), want [" << offs[i][0] << ", " << offs[i][1] << ")");
    }
    ++checked;
  }
  BOOST_TEST(checked >= 20u);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(wordpiece)

BOOST_AUTO_TEST_CASE(uncased_matches_hugging_face_on_hard_strings) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fixtures / "vocab_uncased.txt", true);
  BOOST_TEST(tok.vocab_size() == 30522u);
  check_against_reference(tok, reference()["uncased"]["cases"]);
}

BOOST_AUTO_TEST_CASE(cased_matches_hugging_face_on_hard_strings) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fixtures / "vocab_cased.txt", false);
  check_against_reference(tok, reference()["cased"]["cases"]);
}

BOOST_AUTO_TEST_CASE(truncation_padding_and_pairs) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fixtures / "vocab_uncased.txt", true);
  const auto e = tok.encode("the quick brown fox jumps", std::nullopt, {.max_length = 5, .pad_to_max_length = true});
  BOOST_TEST(e.ids.size() == 5u);
  BOOST_TEST(e.tokens.front() == "[CLS]");
  BOOST_TEST(e.tokens.back() == "[SEP]");
  BOOST_TEST(e.tokens[3] == "brown");
  const auto p = tok.encode("hello", std::string_view("world"), {.max_length = 10, .pad_to_max_length = true});
  BOOST_TEST(p.ids.size() == 10u);
  BOOST_TEST((std::vector<std::int32_t>(p.attention_mask.begin(), p.attention_mask.begin() + 6) ==
              std::vector<std::int32_t>{1, 1, 1, 1, 1, 0}));
  BOOST_TEST((std::vector<std::int32_t>(p.token_type_ids.begin(), p.token_type_ids.begin() + 5) ==
              std::vector<std::int32_t>{0, 0, 0, 1, 1}));
  BOOST_TEST(p.ids[5] == tok.pad_id());
  // longest_first: the longer sequence loses tokens first.
  const auto lf = tok.encode("one two three four five six", std::string_view("seven"), {.max_length = 7});
  BOOST_TEST(lf.ids.size() == 7u);
  BOOST_TEST(lf.tokens[4] == "[SEP]");  // [CLS] one two three [SEP] seven [SEP]
  BOOST_CHECK_THROW(tok.encode("x", std::nullopt, {.max_length = 1}), text::text_error);
}

BOOST_AUTO_TEST_CASE(word_labels_go_on_first_pieces) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fixtures / "vocab_uncased.txt", true);
  const auto e = tok.encode("Ångström measured unbelievably");
  // [CLS] ang ##strom measured un ##bel ##ie ##va ##bly [SEP]
  const auto labels = text::align_word_labels(e, {3, 1, 2});
  BOOST_TEST(labels.front() == -100);
  BOOST_TEST(labels[1] == 3);
  BOOST_TEST(labels[2] == -100);
  BOOST_TEST(labels[3] == 1);
  BOOST_TEST(labels[4] == 2);
  BOOST_TEST(labels.back() == -100);
  BOOST_CHECK_THROW(text::align_word_labels(e, {3}), text::text_error);
}

BOOST_AUTO_TEST_CASE(reads_tokenizer_json) {
  const auto dir = fs::temp_directory_path() / "peft-tok-json";
  fs::create_directories(dir);
  io::write_text_atomically(dir / "tokenizer.json", R"({"normalizer": {"type": "BertNormalizer", "lowercase": false,
    "strip_accents": null}, "model": {"type": "WordPiece", "unk_token": "[UNK]", "max_input_chars_per_word": 100,
    "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "Hi": 4, "##!": 5, "!": 6}}})");
  const auto tok = text::wordpiece_tokenizer::from_tokenizer_json(dir / "tokenizer.json");
  BOOST_TEST(!tok.lowercase());
  const auto e = tok.encode("Hi! hi");
  BOOST_TEST((e.ids == std::vector<std::int32_t>{2, 4, 6, 1, 3}));
  io::write_text_atomically(dir / "bad.json", R"({"model": {"type": "BPE"}})");
  BOOST_CHECK_THROW(text::wordpiece_tokenizer::from_tokenizer_json(dir / "bad.json"), text::text_error);
  io::write_text_atomically(dir / "bad2.json", R"({"model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "x": 9}}})");
  BOOST_CHECK_THROW(text::wordpiece_tokenizer::from_tokenizer_json(dir / "bad2.json"), text::text_error);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(bad_input) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fixtures / "vocab_uncased.txt", true);
  try {
    tok.encode("ok \xC3\x28 broken");
    BOOST_ERROR("accepted invalid UTF-8");
  } catch (const text::text_error& e) {
    BOOST_TEST(std::string(e.what()).find("invalid UTF-8 at byte 3") != std::string::npos, e.what());
  }
  BOOST_CHECK_THROW(tok.encode("\xF0\x9F\x98"), text::text_error);  // truncated sequence
  BOOST_CHECK_THROW(text::wordpiece_tokenizer({"a", "b"}, true), text::text_error);  // no special tokens
  BOOST_CHECK_THROW(text::wordpiece_tokenizer::from_vocab_file(fixtures / "missing.txt", true), text::text_error);
  const auto empty = tok.encode("");
  BOOST_TEST(empty.ids.size() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
