// Writes what the peft-train tests need into one directory: a tiny randomly initialised BERT
// checkpoint (model/: config.json, model.safetensors, vocab.txt) and small synthetic data sets that
// such a model can learn: sentiment (sst_*.tsv: the label follows the polar words of the sentence) and
// tagging (ner_*.conll: names and places from fixed lists, in BIO tags).
//
//   make_tiny_model <dir>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include <peft/peft.hpp>

namespace fs = std::filesystem;
using B = peft::backend::eigen<float>;

namespace {
const std::vector<std::string> positive = {"good", "great", "fine", "lovely", "superb", "charming", "moving", "funny"};
const std::vector<std::string> negative = {"bad", "dull", "awful", "boring", "tedious", "clumsy", "flat", "weak"};
const std::vector<std::string> filler = {"the", "film", "was", "a", "story", "and", "its", "cast", "plot", "is", "quite", "really",
                                         "with", "of", "this", "movie", "acting", "ending", "script", "very"};
const std::vector<std::string> people = {"alice", "bob", "carol", "dave", "erin", "frank"};
const std::vector<std::string> surnames = {"smith", "jones", "brown"};
const std::vector<std::string> places = {"paris", "london", "berlin", "madrid", "rome"};

std::string pick(const std::vector<std::string>& v, peft::init_rng& rng) {
  return v[std::min(v.size() - 1, std::size_t(rng.uniform(0, double(v.size()))))];
}

void write_sentiment(const fs::path& path, std::size_t n, std::uint64_t seed) {
  peft::init_rng rng(seed);
  std::ofstream out(path);
  for (std::size_t i = 0; i < n; ++i) {
    const bool pos = rng.uniform(0, 1) < 0.5;
    std::string text;
    const auto words = 4 + std::size_t(rng.uniform(0, 8));
    const auto where = std::size_t(rng.uniform(0, double(words)));
    for (std::size_t w = 0; w < words; ++w) {
      text += (w ? " " : "") + pick(filler, rng);
      if (w == where) text += " " + pick(pos ? positive : negative, rng);
    }
    out << text << '\t' << (pos ? 1 : 0) << '\n';
  }
}

void write_tagging(const fs::path& path, std::size_t n, std::uint64_t seed) {
  peft::init_rng rng(seed);
  std::ofstream out(path);
  for (std::size_t i = 0; i < n; ++i) {
    const auto words = 3 + std::size_t(rng.uniform(0, 6));
    for (std::size_t w = 0; w < words; ++w) {
      const double r = rng.uniform(0, 1);
      if (r < 0.2) {
        out << pick(people, rng) << "\tB-person\n";
        if (rng.uniform(0, 1) < 0.5) out << pick(surnames, rng) << "\tI-person\n";
      } else if (r < 0.35) {
        out << pick(places, rng) << "\tB-location\n";
      } else {
        out << pick(filler, rng) << "\tO\n";
      }
    }
    out << '\n';
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_tiny_model <dir>\n";
    return 2;
  }
  const fs::path dir = argv[1];
  fs::create_directories(dir / "model");
  write_sentiment(dir / "sst_train.tsv", 240, 1);
  write_sentiment(dir / "sst_dev.tsv", 80, 2);
  write_tagging(dir / "ner_train.conll", 160, 3);
  write_tagging(dir / "ner_dev.conll", 60, 4);

  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (const auto* list : {&positive, &negative, &filler, &people, &surnames, &places}) vocab.insert(vocab.end(), list->begin(), list->end());
  for (const char* piece : {"##s", "##ing", "##ed", "the", "."}) vocab.emplace_back(piece);
  std::ofstream v(dir / "model" / "vocab.txt");
  std::size_t count = 0;
  std::set<std::string> seen;
  for (const auto& t : vocab)
    if (seen.insert(t).second) v << t << '\n', ++count;
  v.close();

  peft::models::bert_config c{.vocab_size = count, .hidden_size = 32, .num_hidden_layers = 2, .num_attention_heads = 4,
                              .intermediate_size = 64, .max_position_embeddings = 40};
  c.hidden_dropout_prob = 0.1;
  c.attention_probs_dropout_prob = 0.1;
  B::context ctx;
  // Encoder and pooler under BERT's own names ("bert.*"), without a classifier: a pretrained checkpoint.
  peft::models::bert_for_sequence_classification<B, peft::plan<peft::methods::full>> model(ctx, c, {.num_labels = 2, .seed = 2024});
  peft::io::write_safetensors(dir / "model" / "model.safetensors",
                              peft::io::collect_tensors(ctx, model, [](const std::string& name, const auto&) {
                                return name.rfind("bert.", 0) == 0;
                              }),
                              {{"format", "pt"}});
  peft::io::write_json_file(dir / "model" / "config.json", c.to_json("BertModel"));
  std::cout << "tiny model (" << count << " tokens, hidden 32, 2 layers) and data in " << dir.string() << "\n";
  return 0;
}
