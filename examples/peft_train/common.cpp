#include "common.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <peft/io/atomic_file.hpp>
#include <peft/models/bert/config.hpp>
#include <peft/io/safetensors.hpp>

#if PEFT_TRAIN_MPI
#include <peft/train/mpi_communicator.hpp>
#endif

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
  // The other sizes of config.json against the checkpoint, before they size any allocation.
  const std::string config_file = (dir / "config.json").string(), weights_file = (dir / "model.safetensors").string();
  auto disagree = [&](const std::string& key, std::size_t said, const peft::io::tensor_info& t) {
    std::string shape;
    for (auto d : t.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    throw io_error(peft::detail::concat(config_file, ": ", key, " is ", said, " but ", weights_file, "'s '", t.name,
                                        "' has shape [", shape, "]: the config does not belong to these weights"));
  };
  if (emb->shape[1] != config.hidden_size) disagree("hidden_size", config.hidden_size, *emb);
  const std::string prefix = emb->name.substr(0, emb->name.find("embeddings."));
  if (const auto* pos = weights.find(prefix + "embeddings.position_embeddings.weight");
      pos && (pos->shape.size() != 2 || pos->shape[0] != config.max_position_embeddings))
    disagree("max_position_embeddings", config.max_position_embeddings, *pos);
  if (const auto* ffn = weights.find(prefix + "encoder.layer.0.intermediate.dense.weight");
      ffn && (ffn->shape.size() != 2 || ffn->shape[0] != config.intermediate_size))
    disagree("intermediate_size", config.intermediate_size, *ffn);
  std::size_t layers = 0;  // 1 + the highest encoder.layer.<i> in the file
  const std::string layer_key = prefix + "encoder.layer.";
  for (const auto& t : weights.tensors())
    if (t.name.rfind(layer_key, 0) == 0) {
      const auto digits = t.name.substr(layer_key.size(), t.name.find('.', layer_key.size()) - layer_key.size());
      if (!digits.empty() && digits.size() < 6 && digits.find_first_not_of("0123456789") == std::string::npos)
        layers = std::max(layers, std::size_t(std::stoul(digits)) + 1);
    }
  if (layers != config.num_hidden_layers)
    throw io_error(peft::detail::concat(config_file, ": num_hidden_layers is ", config.num_hidden_layers, " but ", weights_file,
                                        " has ", layers, " encoder layers (", layer_key, "0 to ", layers ? layers - 1 : 0,
                                        "): the config does not belong to these weights"));
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

namespace {
/// "3" is the third column, anything else a header name.
peft::data::column column_of(const std::string& spec, const char* option) {
  if (spec.empty()) return {};
  if (spec.find_first_not_of("0123456789") != std::string::npos) return spec;
  const auto n = std::stoull(spec.size() > 9 ? std::string("0") : spec);
  if (n == 0) throw peft::config_error(peft::detail::concat(option, " ", spec, ": columns are numbered from 1 (or give a header name)"));
  return std::size_t(n - 1);
}
}  // namespace

dataset read_dataset(const fs::path& path, const std::string& task, const data_format& f) {
  dataset d{path, {}, {}};
  if (task == "token") {
    d.sentences = peft::data::read_conll(path);
    peft::data::require_bio_tags(d.sentences, path.string());
  } else {
    peft::data::table_options o;
    o.delimiter = f.delimiter ? f.delimiter : (path.extension() == ".csv" ? ',' : '\t');
    o.header = f.header;
    o.text_column = column_of(f.text_column, "--text-column");
    o.pair_column = column_of(f.pair_column, "--pair-column");
    o.label_column = column_of(f.label_column, "--label-column");
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

double current_rss_mb() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return double(resident) * double(sysconf(_SC_PAGESIZE)) / 1048576.0;
}

void refuse_output_over_input(const fs::path& output, const fs::path& input, const char* option) {
  std::error_code ec;
  if (!input.empty() && fs::exists(output, ec) && fs::exists(input, ec) && fs::equivalent(output, input, ec))
    throw peft::config_error("the output directory '" + output.string() + "' is the " + option +
                             " directory this command reads; write the result somewhere else");
}

output_directory::output_directory(const fs::path& dir) : dir_(dir) {
  std::error_code ec;
  if (!fs::exists(dir_, ec)) {
    fs::create_directories(dir_, ec);
    if (ec) throw io_error("cannot create the output directory '" + dir_.string() + "': " + ec.message());
    created_ = true;
  } else if (!fs::is_directory(dir_, ec)) {
    throw io_error("the output '" + dir_.string() + "' exists and is not a directory");
  }
  try {
    lock_ = std::make_unique<peft::io::directory_lock>(dir_, "another peft-train run");
  } catch (...) {
    if (created_) fs::remove(dir_, ec);
    throw;
  }
  // Temporary files of writes that a kill interrupted: no one else writes here while we hold the lock.
  peft::io::remove_stale_temporaries(dir_);
  peft::io::remove_stale_temporaries(partial());
}

output_directory::~output_directory() {
  if (committed_) return;
  std::error_code ec;
  if (!fs::exists(partial() / "checkpoint.safetensors", ec)) fs::remove_all(partial(), ec);
  if (created_ && fs::is_empty(dir_, ec)) fs::remove(dir_, ec);
}

void output_directory::discard_partial() { fs::remove_all(partial()); }

void output_directory::create_partial() { fs::create_directories(partial()); }

void output_directory::commit(std::initializer_list<std::string> names) {
  for (const auto& name : names) {
    std::error_code ec;
    if (fs::exists(fs::symlink_status(partial() / name, ec))) peft::io::replace_with(partial() / name, dir_ / name);
    else fs::remove_all(dir_ / name, ec);
  }
  fs::remove_all(partial());
  committed_ = true;
}

std::uintmax_t size_on_disk(const fs::path& p) {
  if (fs::is_regular_file(p)) return fs::file_size(p);
  std::uintmax_t n = 0;
  if (fs::is_directory(p))
    for (const auto& e : fs::recursive_directory_iterator(p))
      if (e.is_regular_file()) n += e.file_size();
  return n;
}

namespace {
#if PEFT_TRAIN_MPI
std::optional<peft::train::mpi_session> mpi_started;
std::optional<peft::train::mpi_communicator> world;
#endif
}  // namespace

bool process_group::start([[maybe_unused]] int& argc, [[maybe_unused]] char**& argv) {
#if PEFT_TRAIN_MPI
  // Launched by mpirun / mpiexec / srun: their environment says so. A plain run does not start MPI.
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) {
      mpi_started.emplace(argc, argv);
      world.emplace();
      return true;
    }
#endif
  return false;
}
std::size_t process_group::rank() noexcept {
#if PEFT_TRAIN_MPI
  if (world) return world->rank();
#endif
  return 0;
}
std::size_t process_group::size() noexcept {
#if PEFT_TRAIN_MPI
  if (world) return world->size();
#endif
  return 1;
}
void process_group::sum([[maybe_unused]] std::span<double> values) {
#if PEFT_TRAIN_MPI
  if (world) world->sum(values);
#endif
}
void process_group::max([[maybe_unused]] std::span<double> values) {
#if PEFT_TRAIN_MPI
  if (world) world->max(values);
#endif
}
void process_group::broadcast([[maybe_unused]] std::string& text, [[maybe_unused]] std::size_t root) {
#if PEFT_TRAIN_MPI
  if (world) world->broadcast(text, root);
#endif
}
namespace {
int error_fd = 2;  // where `abort` writes: the original standard error, also once silenced
}  // namespace

void process_group::silence() {
  error_fd = ::dup(2);
  if (error_fd < 0) error_fd = 2;
  std::fflush(stdout), std::fflush(stderr);
  if (!std::freopen("/dev/null", "w", stdout) || !std::freopen("/dev/null", "w", stderr)) return;
}

void process_group::abort(const std::string& message) {
  const std::string line = message + "\n";
  if (::write(error_fd, line.data(), line.size()) < 0) {
  }
#if PEFT_TRAIN_MPI
  if (world) {
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
#endif
  std::exit(1);
}

}  // namespace peft_train
