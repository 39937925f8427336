// WordPiece tokenizer against reference ids from Hugging Face's `tokenizers` for a set of hard strings
// (tests/fixtures/tokenizer/make_tokenizer_reference.py), plus truncation, padding, pairs, label
// alignment, tokenizer.json reading and bad input.
#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unistd.h>

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
  BOOST_CHECK_THROW((void)tok.encode("x", std::nullopt, {.max_length = 1}), text::text_error);
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
    (void)tok.encode("ok \xC3\x28 broken");
    BOOST_ERROR("accepted invalid UTF-8");
  } catch (const text::text_error& e) {
    BOOST_TEST(std::string(e.what()).find("invalid UTF-8 at byte 3") != std::string::npos, e.what());
  }
  BOOST_CHECK_THROW((void)tok.encode("\xF0\x9F\x98"), text::text_error);  // truncated sequence
  BOOST_CHECK_THROW(text::wordpiece_tokenizer({"a", "b"}, true), text::text_error);  // no special tokens
  BOOST_CHECK_THROW(text::wordpiece_tokenizer::from_vocab_file(fixtures / "missing.txt", true), text::text_error);
  const auto empty = tok.encode("");
  BOOST_TEST(empty.ids.size() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()

// ---- datasets ---------------------------------------------------------------------------------------
#include "peft/data/batching.hpp"
#include "peft/data/readers.hpp"

namespace {
const fs::path data_dir = fs::path(PEFT_TEST_FIXTURES) / ".." / ".." / "data";

struct temp_file {
  fs::path path;
  explicit temp_file(const std::string& content, const std::string& name = "data.tsv") {
    path = fs::temp_directory_path() / ("peft-data-" + std::to_string(::getpid()) + "-" + name);
    std::ofstream(path, std::ios::binary) << content;
  }
  ~temp_file() { fs::remove(path); }
};

template <class F>
void expect_data_error(F&& f, const std::string& fragment) {
  try {
    f();
    BOOST_ERROR("no error; expected '" << fragment << "'");
  } catch (const data::data_error& e) {
    BOOST_TEST(std::string(e.what()).find(fragment) != std::string::npos, e.what());
  }
}
}  // namespace

BOOST_AUTO_TEST_SUITE(datasets)

BOOST_AUTO_TEST_CASE(reads_the_real_sst2_and_wnut17_files) {
  const auto train = data::read_classification_file(data_dir / "sst2" / "train.tsv");
  const auto dev = data::read_classification_file(data_dir / "sst2" / "dev.tsv");
  BOOST_TEST(train.size() == 6920u);
  BOOST_TEST(dev.size() == 872u);
  const auto labels = data::label_set::from({train[0].label, train[1].label});
  BOOST_TEST((labels.names() == std::vector<std::string>{"0", "1"}));
  const auto wtrain = data::read_conll(data_dir / "wnut17" / "train.conll");
  const auto wdev = data::read_conll(data_dir / "wnut17" / "dev.conll");
  BOOST_TEST(wtrain.size() == 3394u);
  BOOST_TEST(wdev.size() == 1009u);
  BOOST_TEST(wtrain[0].tokens[0] == "@paulwalk");
  std::set<std::string> tags;
  for (const auto& s : wtrain) tags.insert(s.tags.begin(), s.tags.end());
  BOOST_TEST(tags.size() == 13u);  // O + B/I for six entity types
}

BOOST_AUTO_TEST_CASE(bad_data_files_name_the_file_and_line) {
  {
    temp_file f("good sentence\t1\n\nanother\t0\n");
    expect_data_error([&] { data::read_classification_file(f.path); }, ":2: empty line");
  }
  {
    temp_file f("no label column here\n");
    expect_data_error([&] { data::read_classification_file(f.path); }, ":1: 1 column, expected at least 2");
  }
  {
    temp_file f("text\t1\nbad \xff byte\t0\n");
    expect_data_error([&] { data::read_classification_file(f.path); }, ":2: invalid UTF-8");
  }
  {
    temp_file f("x\t1\n" + std::string(2000, 'a') + "\t0\n");
    expect_data_error([&] { data::read_classification_file(f.path, {.max_line_bytes = 1000}); }, ":2: line longer than the limit of 1000 bytes");
  }
  {
    temp_file f("sentence,label\n\"quoted, with comma\",pos\n\"say \"\"hi\"\"\",neg\n", "d.csv");
    const auto ex = data::read_classification_file(f.path, {.delimiter = ',', .header = true});
    BOOST_TEST(ex.size() == 2u);
    BOOST_TEST(ex[0].text == "quoted, with comma");
    BOOST_TEST(ex[1].text == "say \"hi\"");
    BOOST_TEST(ex[1].label == "neg");
    const data::label_set labels({"neg", "pos"});
    expect_data_error([&] { (void)labels.id("neutral", f.path.string() + ":4"); }, ":4: label 'neutral' is not one of {neg, pos}");
  }
  {
    temp_file f("\"open quote,1\n", "q.csv");
    expect_data_error([&] { data::read_classification_file(f.path, {.delimiter = ','}); }, ":1: unterminated quoted field");
  }
  {
    temp_file f("@user\tO\nlonely\n", "x.conll");
    expect_data_error([&] { data::read_conll(f.path); }, ":2: expected 'token<TAB>tag'");
  }
  {
    temp_file f("", "empty.tsv");
    expect_data_error([&] { data::read_classification_file(f.path); }, "has no examples");
  }
  expect_data_error([] { data::read_conll("/nonexistent/file.conll"); }, "cannot open");
}

BOOST_AUTO_TEST_CASE(columns_are_consistent_and_chosen_explicitly) {
  auto read = [](const std::string& text, const data::table_options& o = {}) {
    std::istringstream in(text);
    return data::read_classification(in, "t.tsv", o);
  };
  auto rejected = [](const std::string& text, const data::table_options& o, const std::string& fragment) {
    expect_data_error([&] {
      std::istringstream in(text);
      data::read_classification(in, "t.tsv", o);
    }, fragment);
  };
  // A stray column, or a CSV text with an unquoted comma, is an error at its line, never a shifted field.
  rejected("good film\t1\ngood\tfilm\t1\n", {}, "t.tsv:2: 3 column(s), but line 1 has 2");
  rejected("a,1\nb, c,0\n", {.delimiter = ','}, "t.tsv:2: 3 column(s), but line 1 has 2 (a ',' inside a text must be within double quotes)");
  // Three columns need to be named; by position, or by header name.
  rejected("7\tgood film\t1\n", {}, "t.tsv:1: 3 columns: say which holds the text and which the label");
  const auto by_position = read("7\tgood film\t1\n", {.text_column = std::size_t(1), .label_column = std::size_t(2)});
  BOOST_TEST(by_position[0].text == "good film");
  BOOST_TEST(by_position[0].label == "1");
  const auto by_header = read("id\tsentence\tlabel\n7\tgood film\tpos\n", {.header = true});
  BOOST_TEST(by_header.size() == 1u);
  BOOST_TEST(by_header[0].text == "good film");
  BOOST_TEST(by_header[0].line == 2u);
  const auto pairs = read("sentence1\tsentence2\tlabel\na\tb\t1\n", {.header = true});
  BOOST_TEST(pairs[0].text_pair.value_or("") == "b");
  rejected("id\tsentence\tlabel\n", {.header = true, .label_column = "polarity"},
           "no label column named 'polarity' (the header has 'id', 'sentence', 'label')");
  rejected("a\tb\n", {.label_column = "label"}, "names need a header line");
  rejected("a\tb\n", {.label_column = std::size_t(5)}, "the label column is number 6 but the file has 2 column(s)");
  rejected("a\tb\n", {.text_column = std::size_t(1)}, "must be different columns");
  // A NUL byte is binary data; a long line is refused before it is read whole.
  rejected(std::string("good\0film\t1\n", 12), {}, "t.tsv:1: NUL byte at byte 5");
  rejected("ok\t1\n" + std::string(5000, 'x'), {.max_line_bytes = 100}, "t.tsv:2: line longer than the limit of 100 bytes");
  // CRLF line ends are accepted and do not count against the limit.
  BOOST_TEST(read("abc\t1\r\n", {.max_line_bytes = 5})[0].label == "1");
}

BOOST_AUTO_TEST_CASE(conll_takes_the_first_and_last_fields) {
  auto read = [](const std::string& text) {
    std::istringstream in(text);
    return data::read_conll(in, "t.conll");
  };
  // CoNLL-2003: word POS chunk NER; a document boundary ends a sentence.
  const auto s = read("-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n-DOCSTART- -X- O O\nPeter NNP B-NP B-PER\n");
  BOOST_REQUIRE_EQUAL(s.size(), 2u);
  BOOST_TEST((s[0].tokens == std::vector<std::string>{"EU", "rejects"}));
  BOOST_TEST((s[0].tags == std::vector<std::string>{"B-ORG", "O"}));
  BOOST_TEST(s[0].first_line == 3u);
  BOOST_TEST(s[1].first_line == 6u);
  // Tab-separated tokens may hold spaces; every token line needs the same number of fields.
  BOOST_TEST(read("New York\tB-loc\n")[0].tokens[0] == "New York");
  expect_data_error([&] { read("a\tO\nb\tNN\tO\n"); }, "t.conll:2: 3 fields, but line 1 has 2");
  expect_data_error([&] { read("a\t\tO\n"); }, "t.conll:1: expected 'token<TAB>tag'");
  // BIO: named at its line.
  expect_data_error([&] { data::require_bio_tags(read("a\tO\nb\tB-x\nc\tPER\n"), "t.conll"); },
                    "t.conll:3: tag 'PER' is not O, B-<type> or I-<type>");
  data::require_bio_tags(read("a\tO\nb\tB-x\nc\tI-x\n"), "t.conll");
}

BOOST_AUTO_TEST_CASE(tagging_with_every_tag_cut_away_is_an_error) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fixtures / "vocab_uncased.txt", true);
  std::istringstream in("alice\tB-person\nsmith\tI-person\n");
  const auto s = data::read_conll(in, "t.conll");
  const data::label_set tags({"B-person", "I-person", "O"});
  data::batch_stats stats;
  data::make_tagging_batches(tok, s, tags, {.batch_size = 2, .max_length = 3}, "t.conll", &stats);
  BOOST_TEST(stats.labels == 1u);  // [CLS] alice [SEP]: one tag left
  expect_data_error([&] { data::make_tagging_batches(tok, s, tags, {.batch_size = 2, .max_length = 2}, "t.conll"); },
                    "t.conll: no tag is left to train or score on");
}

BOOST_AUTO_TEST_CASE(classification_batches_pad_bucket_and_shuffle) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fixtures / "vocab_uncased.txt", true);
  const auto dev = data::read_classification_file(data_dir / "sst2" / "dev.tsv");
  const data::label_set labels({"0", "1"});
  const auto batches = data::make_classification_batches(tok, dev, labels, {.batch_size = 32, .max_length = 64});
  std::size_t total = 0, padded = 0, tokens = 0;
  for (const auto& b : batches) {
    b.inputs.validate();
    BOOST_REQUIRE(b.inputs.seq_len <= 64u);
    BOOST_REQUIRE_EQUAL(b.labels.size(), b.inputs.batch_size);
    total += b.inputs.batch_size;
    padded += b.inputs.batch_size * b.inputs.seq_len;
    for (auto m : b.inputs.attention_mask) tokens += std::size_t(m);
    // Every row starts with [CLS]; padding uses [PAD] with mask 0.
    for (std::size_t r = 0; r < b.inputs.batch_size; ++r) BOOST_REQUIRE(b.inputs.input_ids[r * b.inputs.seq_len] == tok.cls_id());
  }
  BOOST_TEST(total == 872u);
  // Bucketing keeps padding low: compare with no bucketing.
  const auto plain = data::make_classification_batches(tok, dev, labels, {.batch_size = 32, .max_length = 64, .bucket_window = 0});
  std::size_t plain_padded = 0;
  for (const auto& b : plain) plain_padded += b.inputs.batch_size * b.inputs.seq_len;
  BOOST_TEST(padded < plain_padded);
  BOOST_TEST_MESSAGE("SST-2 dev: " << tokens << " tokens, " << padded << " slots bucketed vs " << plain_padded << " plain");
  // Shuffling is a pure function of the seed.
  const auto s1 = data::make_classification_batches(tok, dev, labels, {.batch_size = 32, .shuffle = true, .seed = 5});
  const auto s2 = data::make_classification_batches(tok, dev, labels, {.batch_size = 32, .shuffle = true, .seed = 5});
  const auto s3 = data::make_classification_batches(tok, dev, labels, {.batch_size = 32, .shuffle = true, .seed = 6});
  BOOST_TEST(s1.front().example_indices == s2.front().example_indices);
  BOOST_TEST(s1.front().example_indices != s3.front().example_indices);
}

BOOST_AUTO_TEST_CASE(tagging_batches_label_first_pieces) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fixtures / "vocab_uncased.txt", true);
  const std::vector<data::tagged_sentence> sents{{{"Ångström", "visited", "Düsseldorf"}, {"B-person", "O", "B-location"}, 1},
                                                 {{"ok"}, {"O"}, 5}};
  const data::label_set tags({"B-location", "B-person", "O"});
  const auto b = data::make_tagging_batches(tok, sents, tags, {.batch_size = 2, .bucket_window = 0}).front();
  const std::size_t len = b.inputs.seq_len;
  BOOST_TEST(b.labels.size() == 2 * len);
  // Sentence 0: [CLS] ang ##strom visited dusseldorf... labels on first pieces only.
  BOOST_TEST(b.labels[0] == -100);
  BOOST_TEST(b.labels[1] == 1);
  BOOST_TEST(b.labels[2] == -100);
  BOOST_TEST(b.labels[3] == 2);
  BOOST_TEST(b.labels[4] == 0);
  BOOST_TEST(b.labels[len + 1] == 2);         // "ok" -> O
  BOOST_TEST(b.labels[2 * len - 1] == -100);  // padding
  const std::vector<data::tagged_sentence> bad{{{"x"}, {"B-thing"}, 7}};
  expect_data_error([&] { data::make_tagging_batches(tok, bad, tags, {}, "train.conll"); }, "train.conll:7: label 'B-thing'");
}

BOOST_AUTO_TEST_SUITE_END()

// ---- byte-level BPE ---------------------------------------------------------------------------------
// SmolLM2's vocabulary (from the GGUF named by PEFT_SMOLLM2_GGUF) against the ids and pre-tokenizer words
// of Hugging Face's `tokenizers` in tests/fixtures/bpe/smollm2_reference.json (written by
// tests/fixtures/bpe/make_bpe_reference.py); the plain ids and round trip are checked in test_decoder.cpp
// (bpe_matches_hugging_face_on_hard_strings). Small tokenizer.json files need no model.
#include <cstdlib>
#include <thread>

#include "peft/io/gguf.hpp"
#include "peft/text/bpe.hpp"
#include "peft/text/gguf_vocabulary.hpp"

namespace {
std::optional<fs::path> smollm2_gguf() {
  const char* p = std::getenv("PEFT_SMOLLM2_GGUF");
  if (p && fs::is_regular_file(p)) return fs::path(p);
  BOOST_TEST_MESSAGE("PEFT_SMOLLM2_GGUF not set or not a file: skipped");
  return std::nullopt;
}

nlohmann::json bpe_reference() {
  std::ifstream in(fs::path(PEFT_TEST_FIXTURES) / "bpe" / "smollm2_reference.json");
  BOOST_REQUIRE(in);
  return nlohmann::json::parse(in);
}

std::string quoted(const std::string& s) { return nlohmann::json(s).dump(); }

/// A predicate for BOOST_CHECK_EXCEPTION: the message holds every one of `needles`.
auto message_has(std::vector<std::string> needles) {
  return [needles = std::move(needles)](const std::exception& e) {
    const std::string m = e.what();
    for (const auto& n : needles)
      if (m.find(n) == std::string::npos) {
        BOOST_TEST_MESSAGE("message '" << m << "' lacks '" << n << "'");
        return false;
      }
    return true;
  };
}

/// The 256 byte tokens alone (GPT-2's byte-to-unicode forms), with pre-tokenizer `pre`.
text::bpe_vocabulary byte_vocabulary(const std::string& pre = "smollm") {
  text::bpe_vocabulary v;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    text::detail::bpe::append_utf8(s, text::detail::bpe::byte_to_unicode()[std::size_t(b)]);
    v.tokens.push_back(s);
  }
  v.pre_tokenizer = pre;
  v.source = "bytes";
  return v;
}

/// A directory of its own under the temp directory, removed with the object.
struct bpe_temp_dir {
  fs::path path = fs::temp_directory_path() / ("peft_bpe_" + std::to_string(::getpid()));
  bpe_temp_dir() { fs::create_directories(path); }
  ~bpe_temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& name, const nlohmann::json& j) const {
    io::write_text_atomically(path / name, j.dump());
    return path / name;
  }
};

/// A small tokenizer.json: the 256 byte tokens, "ab" (merge "a b") and "<s>" added before every text.
nlohmann::json small_tokenizer_json() {
  nlohmann::json small;
  small["model"] = {{"type", "BPE"}, {"vocab", nlohmann::json::object()}, {"merges", nlohmann::json::array({"a b"})}};
  const auto bytes = byte_vocabulary();
  for (std::size_t b = 0; b < 256; ++b) small["model"]["vocab"][bytes.tokens[b]] = b;
  small["model"]["vocab"]["ab"] = 256;
  small["model"]["vocab"]["<s>"] = 257;
  small["added_tokens"] = {{{"id", 257}, {"content", "<s>"}, {"special", true}}};
  small["normalizer"] = nullptr;
  small["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  small["post_processor"] = {{"type", "TemplateProcessing"},
                             {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                         {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                             {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {257}}, {"tokens", {"<s>"}}}}}}};
  return small;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(bpe)

BOOST_AUTO_TEST_CASE(smollm2_pre_tokenizer_and_special_tokens_match_hugging_face) {
  const auto path = smollm2_gguf();
  if (!path) return;
  const auto tok = text::bpe_tokenizer_from_gguf(io::gguf_file::open(*path));
  BOOST_TEST(tok.vocabulary().pre_tokenizer == "smollm");
  std::size_t checked = 0;
  for (const auto& c : bpe_reference()) {
    const std::string s = c["text"];
    std::vector<std::string> words;
    for (const auto w : tok.pre_tokenize(s)) words.push_back(text::detail::bpe::to_byte_level(w));
    BOOST_TEST(words == c["words"].get<std::vector<std::string>>(),
               "words of " << quoted(s) << ": got " << nlohmann::json(words).dump() << ", want " << c["words"].dump());
    const auto plain = tok.encode(s, true, false);  // special-token texts tokenized as text
    BOOST_TEST(plain == c["ids_no_parse_special"].get<std::vector<std::int32_t>>(),
               "parse_special=false ids of " << quoted(s) << ": got " << nlohmann::json(plain).dump());
    BOOST_TEST(tok.decode(plain) == s, "round trip of the parse_special=false ids of " << quoted(s));
    ++checked;
  }
  BOOST_TEST(checked >= 60u);
}

BOOST_AUTO_TEST_CASE(smollm2_vocabulary_under_other_pre_tokenizers) {
  const auto path = smollm2_gguf();
  if (!path) return;
  const auto vocab = text::bpe_vocabulary_from_gguf(io::gguf_file::open(*path));
  const auto ref = bpe_reference();
  for (const auto& [pre, key] : {std::pair<std::string, std::string>{"gpt2", "gpt2"}, {"llama-bpe", "llama3"}, {"default", "default"}}) {
    auto v = vocab;
    v.pre_tokenizer = pre;
    const text::bpe_tokenizer tok(v);
    BOOST_TEST(tok.ignores_merges() == (pre == "llama-bpe"));
    for (const auto& c : ref) {
      const std::string s = c["text"];
      const auto ids = tok.encode(s);
      BOOST_TEST(ids == c["ids_" + key].get<std::vector<std::int32_t>>(), "pre '" << pre << "': ids of " << quoted(s));
      BOOST_TEST(tok.decode(ids) == s, "pre '" << pre << "': round trip of " << quoted(s));
      std::vector<std::string> words;
      for (const auto w : tok.pre_tokenize(s)) words.push_back(text::detail::bpe::to_byte_level(w));
      BOOST_TEST(words == c["words_" + key].get<std::vector<std::string>>(),
                 "pre '" << pre << "': words of " << quoted(s) << ": got " << nlohmann::json(words).dump());
    }
  }
}

BOOST_AUTO_TEST_CASE(smollm2_decoding_details) {
  const auto path = smollm2_gguf();
  if (!path) return;
  const auto tok = text::bpe_tokenizer_from_gguf(io::gguf_file::open(*path));
  const auto ids = tok.encode("<|im_start|>user\nHi<|im_end|>");
  BOOST_TEST(tok.decode(ids, true) == "user\nHi");  // skip_special drops the control tokens
  BOOST_TEST(tok.token_text(*tok.token_id("Ġthe")) == " the");
  BOOST_TEST((tok.token_id("<|im_end|>") == std::optional<std::int32_t>(2)));
  const auto emoji = tok.encode("😀");
  std::string streamed;
  for (const auto id : emoji) streamed += tok.token_text(id);
  BOOST_TEST(emoji.size() > 1u);
  BOOST_TEST(streamed == "😀");  // streamed pieces rebuild a multi-token character
  BOOST_CHECK_EXCEPTION((void)tok.decode(std::vector<std::int32_t>{49152}), text::text_error, message_has({"49152"}));
}

BOOST_AUTO_TEST_CASE(smollm2_chat_template) {
  const auto path = smollm2_gguf();
  if (!path) return;
  const auto file = io::gguf_file::open(*path);
  const auto tmpl = text::chat_template_of(file);
  BOOST_REQUIRE(tmpl);
  BOOST_TEST(text::is_chatml_template(*tmpl));
  BOOST_TEST(!text::is_chatml_template("{{ bos_token }}[INST]"));
  const auto sys = text::default_system_prompt_from_template(*tmpl);
  BOOST_TEST((sys == std::optional<std::string>("You are a helpful AI assistant named SmolLM, trained by Hugging Face")),
             "default system prompt: " << sys.value_or("(none)"));
  std::size_t chats = 0;
  for (const auto& c : bpe_reference()) {
    if (!c.contains("messages")) continue;
    std::vector<text::chat_message> msgs;
    for (const auto& m : c["messages"]) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    const auto rendered = text::apply_chatml(msgs, sys, c["add_generation_prompt"].get<bool>());
    BOOST_TEST(rendered == c["text"].get<std::string>(), "apply_chatml gave " << quoted(rendered));
    ++chats;
  }
  BOOST_TEST(chats >= 3u);
}

BOOST_AUTO_TEST_CASE(default_system_prompt_of_other_templates) {
  // A template that only renders the given system message has no default one.
  BOOST_TEST(!text::default_system_prompt_from_template(
      "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"));
  // Escapes inside a double-quoted literal are undone.
  BOOST_TEST((text::default_system_prompt_from_template("{{- \"<|im_start|>system\\nYou're Qwen.\\n<|im_end|>\\n\" }}") ==
              std::optional<std::string>("You're Qwen.\n")));
}

BOOST_AUTO_TEST_CASE(smollm2_vocabulary_errors) {
  const auto path = smollm2_gguf();
  if (!path) return;
  const auto vocab = text::bpe_vocabulary_from_gguf(io::gguf_file::open(*path));
  BOOST_REQUIRE(vocab.tokens.size() == 49152u);
  BOOST_TEST(vocab.source == path->string());
  auto v = vocab;
  v.pre_tokenizer = "qwen2";
  BOOST_CHECK_EXCEPTION(text::bpe_tokenizer{v}, text::text_error, message_has({"qwen2", "not supported", "smollm", vocab.source}));
  v = vocab;
  v.merges[10] = "Ġ zzz_not_a_token";
  BOOST_CHECK_EXCEPTION(text::bpe_tokenizer{v}, text::text_error, message_has({"merge 10", "zzz_not_a_token", "unknown token"}));
  v = vocab;
  v.merges[11] = "Ġ";
  BOOST_CHECK_EXCEPTION(text::bpe_tokenizer{v}, text::text_error, message_has({"merge 11", "not two tokens"}));
  v = vocab;
  v.tokens[300] = v.tokens[299];
  BOOST_CHECK_EXCEPTION(text::bpe_tokenizer{v}, text::text_error, message_has({"appears twice", "299", "300"}));
  v = vocab;
  v.eos = 49152;
  BOOST_CHECK_EXCEPTION(text::bpe_tokenizer{v}, text::text_error, message_has({"eos id 49152"}));
}

BOOST_AUTO_TEST_CASE(smollm2_concurrent_encodes_agree) {
  const auto path = smollm2_gguf();
  if (!path) return;
  const auto tok = text::bpe_tokenizer_from_gguf(io::gguf_file::open(*path));
  std::string big;
  const auto ref = bpe_reference();
  for (int r = 0; r < 20; ++r)
    for (const auto& c : ref) big += c["text"].get<std::string>() + "\n";
  std::vector<std::int32_t> a, b;
  std::thread other([&] { a = tok.encode(big); });
  b = tok.encode(big);
  other.join();
  BOOST_TEST(!a.empty());
  BOOST_TEST(a == b);
  BOOST_TEST(tok.decode(a) == big);
}

BOOST_AUTO_TEST_CASE(invalid_utf8_names_the_byte) {
  // Needs no model: the check runs before any vocabulary lookup.
  const text::bpe_tokenizer tok(byte_vocabulary());
  BOOST_CHECK_EXCEPTION((void)tok.encode("ab\xC3("), text::text_error, message_has({"invalid UTF-8 at byte 2"}));  // bad continuation
  BOOST_CHECK_EXCEPTION((void)tok.encode("x\xED\xA0\x80"), text::text_error, message_has({"invalid UTF-8 at byte 1"}));  // surrogate
  BOOST_CHECK_EXCEPTION((void)tok.encode("\xC0\xAF"), text::text_error, message_has({"invalid UTF-8 at byte 0"}));  // overlong
  BOOST_CHECK_EXCEPTION((void)tok.encode("end\xE2\x82"), text::text_error, message_has({"invalid UTF-8 at byte 3"}));  // truncated
  BOOST_CHECK_EXCEPTION((void)tok.pre_tokenize("\xFF"), text::text_error, message_has({"invalid UTF-8 at byte 0"}));
  BOOST_TEST(tok.decode(tok.encode("ok 123 😀")) == "ok 123 😀");
}

BOOST_AUTO_TEST_CASE(small_tokenizer_json_with_bos) {
  const bpe_temp_dir dir;
  const auto t = text::bpe_tokenizer::from_tokenizer_json(dir.write("small.json", small_tokenizer_json()));
  BOOST_TEST(t.vocabulary().pre_tokenizer == "gpt2");
  BOOST_TEST(t.vocabulary().add_bos);
  BOOST_TEST(!t.vocabulary().add_eos);
  BOOST_TEST((t.encode("ab a") == std::vector<std::int32_t>{257, 256, 32, 97}));
  BOOST_TEST((t.encode("ab", false) == std::vector<std::int32_t>{256}));  // add_special=false leaves BOS out
}

BOOST_AUTO_TEST_CASE(unsupported_tokenizer_json) {
  const bpe_temp_dir dir;
  const auto small = small_tokenizer_json();
  auto bad = small;
  bad["model"]["type"] = "WordPiece";
  BOOST_CHECK_EXCEPTION((void)text::bpe_tokenizer::from_tokenizer_json(dir.write("wp.json", bad)), text::text_error,
                        message_has({"WordPiece", "wp.json"}));
  bad = small;
  bad["normalizer"] = {{"type", "NFC"}};
  BOOST_CHECK_EXCEPTION((void)text::bpe_tokenizer::from_tokenizer_json(dir.write("nfc.json", bad)), text::text_error,
                        message_has({"normalizer 'NFC'"}));
  bad = small;
  bad["pre_tokenizer"] = {{"type", "Whitespace"}};
  BOOST_CHECK_EXCEPTION((void)text::bpe_tokenizer::from_tokenizer_json(dir.write("ws.json", bad)), text::text_error,
                        message_has({"'Whitespace'"}));
  bad = small;
  bad["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", false}}, {{"type", "ByteLevel"}}}}};
  BOOST_CHECK_EXCEPTION((void)text::bpe_tokenizer::from_tokenizer_json(dir.write("seq.json", bad)), text::text_error,
                        message_has({"Sequence[Digits, ByteLevel]"}));
  bad = small;
  bad["model"]["merges"] = {"a q_q"};
  BOOST_CHECK_EXCEPTION((void)text::bpe_tokenizer::from_tokenizer_json(dir.write("merge.json", bad)), text::text_error,
                        message_has({"unknown token 'q_q'"}));
}

BOOST_AUTO_TEST_SUITE_END()
