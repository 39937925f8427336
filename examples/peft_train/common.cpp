#include "common.hpp"

#include <sys/resource.h>

#include <csignal>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <peft/io/atomic_file.hpp>
#include <peft/models/bert/config.hpp>
#include <peft/io/safetensors.hpp>

namespace peft_train {

using peft::io::io_error;

model_dir open_model_dir(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw io_error("model directory '" + dir.string() + "' does not exist or is not a directory");
  for (const char* f : {"config.json", "model.safetensors"})
    if (!fs::is_regular_file(dir / f))
      throw io_error("model directory '" + dir.string() + "' has no " + f +
                     " (a BERT checkpoint directory needs config.json, model.safetensors, and vocab.txt or tokenizer.json)");
  auto config = peft::models::bert_config::read(dir / "config.json");
  std::optional<peft::text::wordpiece_tokenizer> tok;
  std::string tok_file;
  if (fs::is_regular_file(dir / "tokenizer.json")) {
    tok_file = (dir / "tokenizer.json").string();
    tok.emplace(peft::text::wordpiece_tokenizer::from_tokenizer_json(dir / "tokenizer.json"));
  } else if (fs::is_regular_file(dir / "vocab.txt")) {
    tok_file = (dir / "vocab.txt").string();
    bool lowercase = true;  // BERT's default (do_lower_case); tokenizer_config.json may say otherwise
    if (std::ifstream tc(dir / "tokenizer_config.json"); tc) {
      try {
        const auto j = nlohmann::json::parse(tc);
        if (j.contains("do_lower_case") && j["do_lower_case"].is_boolean()) lowercase = j["do_lower_case"].get<bool>();
      } catch (const nlohmann::json::exception& e) {
        throw io_error((dir / "tokenizer_config.json").string() + ": not valid JSON: " + e.what());
      }
    }
    tok.emplace(peft::text::wordpiece_tokenizer::from_vocab_file(dir / "vocab.txt", lowercase));
  } else {
    throw io_error("model directory '" + dir.string() + "' has neither vocab.txt nor tokenizer.json");
  }
  const auto weights = peft::io::safetensors_file::open(dir / "model.safetensors");
  const peft::io::tensor_info* emb = nullptr;
  for (const char* name : {"bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"})
    if (!emb) emb = weights.find(name);
  if (!emb)
    throw io_error((dir / "model.safetensors").string() + ": no embeddings.word_embeddings.weight tensor (is this a BERT checkpoint?)");
  if (emb->shape.size() != 2 || emb->shape[0] != config.vocab_size)
    throw io_error(peft::detail::concat((dir / "model.safetensors").string(), ": '", emb->name, "' has ",
                                        emb->shape.empty() ? 0 : emb->shape[0], " rows but config.json says vocab_size ",
                                        config.vocab_size));
  if (tok->vocab_size() != config.vocab_size)
    throw io_error(peft::detail::concat(tok_file, " has ", tok->vocab_size(), " tokens but the model's embedding table has ",
                                        config.vocab_size, " rows (", (dir / "config.json").string(),
                                        "): the vocabulary does not belong to this model"));
  return {dir, dir / "model.safetensors", config, std::move(*tok), tok_file};
}

void copy_tokenizer_files(const fs::path& from, const fs::path& to) {
  for (const char* f : {"vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    if (fs::is_regular_file(from / f)) {
      std::ifstream in(from / f, std::ios::binary);
      std::ostringstream bytes;
      bytes << in.rdbuf();
      peft::io::write_text_atomically(to / f, bytes.str());
    }
}

std::string task_from_extension(const fs::path& file) {
  const auto ext = file.extension().string();
  return ext == ".conll" || ext == ".bio" || ext == ".iob" || ext == ".conllu" ? "token" : "sequence";
}

dataset read_dataset(const fs::path& path, const std::string& task, char delimiter, bool header) {
  dataset d{path, {}, {}};
  if (task == "token") {
    d.sentences = peft::data::read_conll(path);
  } else {
    peft::data::table_options o;
    o.delimiter = delimiter ? delimiter : (path.extension() == ".csv" ? ',' : '\t');
    o.header = header;
    d.texts = peft::data::read_classification_file(path, o);
  }
  return d;
}

std::vector<std::string> labels_of(const dataset& d) {
  std::set<std::string> s;
  for (const auto& t : d.texts) s.insert(t.label);
  for (const auto& sent : d.sentences) s.insert(sent.tags.begin(), sent.tags.end());
  return {s.begin(), s.end()};
}

std::vector<peft::data::labeled_batch> make_batches(const peft::text::wordpiece_tokenizer& tok, const dataset& d,
                                                    const run_card& card, const peft::data::batch_options& o,
                                                    peft::data::batch_stats* stats) {
  const peft::data::label_set labels(card.labels);
  return card.task == "token" ? peft::data::make_tagging_batches(tok, d.sentences, labels, o, d.path.string(), stats)
                              : peft::data::make_classification_batches(tok, d.texts, labels, o, d.path.string(), stats);
}

std::atomic<bool> interrupted{false};

namespace {
extern "C" void on_signal(int sig) {
  interrupted.store(true);
  std::signal(sig, SIG_DFL);  // a second signal ends the process at once
}
}  // namespace

void install_interrupt_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

std::uintmax_t size_on_disk(const fs::path& p) {
  if (fs::is_regular_file(p)) return fs::file_size(p);
  std::uintmax_t n = 0;
  if (fs::is_directory(p))
    for (const auto& e : fs::recursive_directory_iterator(p))
      if (e.is_regular_file()) n += e.file_size();
  return n;
}

}  // namespace peft_train
