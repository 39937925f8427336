#pragma once
#include <span>
// peft-train: the parts that do not depend on the tuning plan: opening a checkpoint directory,
// reading data files, interruption, peak memory.

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <peft/data/batching.hpp>
#include <peft/io/output_dir.hpp>
#include <peft/train/callbacks.hpp>
#include <peft/data/readers.hpp>
#include <peft/models/bert/config.hpp>
#include <peft/text/wordpiece.hpp>

#include "options.hpp"

namespace peft_train {

/// A BERT-family checkpoint directory: config.json, model.safetensors, and vocab.txt or tokenizer.json.
struct model_dir {
  fs::path dir, weights;
  peft::models::bert_config config;
  peft::text::wordpiece_tokenizer tokenizer;
  std::string tokenizer_file;  ///< which file the tokenizer came from
};

/// Opens and checks `dir`: every file present and well-formed, the vocabulary as large as the
/// embedding table. Errors name the file.
model_dir open_model_dir(const fs::path& dir);

/// Copies the tokenizer files of `from` (vocab.txt, tokenizer.json, tokenizer_config.json,
/// special_tokens_map.json, when present) into `to`.
void copy_tokenizer_files(const fs::path& from, const fs::path& to);

/// A labelled data file of either task.
struct dataset {
  fs::path path;
  std::vector<peft::data::labeled_text> texts;         ///< task "sequence"
  std::vector<peft::data::tagged_sentence> sentences;  ///< task "token"
  [[nodiscard]] std::size_t size() const { return texts.empty() ? sentences.size() : texts.size(); }
};

/// "token" for CoNLL-like extensions (.conll, .bio, .iob), "sequence" otherwise.
std::string task_from_extension(const fs::path& file);
/// Reads a data file of `task`; CoNLL tags must be BIO (entity scoring needs them).
dataset read_dataset(const fs::path& path, const std::string& task, const data_format& format);
/// Sorted distinct labels (tags for "token").
std::vector<std::string> labels_of(const dataset& d);
/// Labelled batches of `d` for `card`'s task; `stats` receives counts.
std::vector<peft::data::labeled_batch> make_batches(const peft::text::wordpiece_tokenizer& tok, const dataset& d,
                                                    const run_card& card, const peft::data::batch_options& o,
                                                    peft::data::batch_stats* stats = nullptr);

/// Set by SIGINT / SIGTERM; the training loop saves a checkpoint and stops. A second signal kills.
extern std::atomic<bool> interrupted;
void install_interrupt_handlers();

/// Peak resident memory of this process in MiB.
double peak_rss_mb();
/// Resident memory of this process now, in MiB (0 where /proc is not there).
double current_rss_mb();

/// The training log (metrics.jsonl) with the resident memory at each train record ("rss_mb"), so
/// that a long run shows whether memory grows.
class metrics_log : public peft::train::jsonl_metrics_callback {
 public:
  using jsonl_metrics_callback::jsonl_metrics_callback;
  void on_log(const peft::train::train_state& s, const nlohmann::json& record) override {
    nlohmann::json r = record;
    r["rss_mb"] = current_rss_mb();
    jsonl_metrics_callback::on_log(s, r);
  }
};

/// Throws when `output` is the directory `input` (given as `option`): a command must never write
/// over what it reads.
void refuse_output_over_input(const fs::path& output, const fs::path& input, const char* option);

/// The output directory of `train`, owned by one run at a time (a lock held while this object
/// lives). The run keeps its state in `run.partial/` (checkpoint, metrics log, and at the end the
/// result); `commit` moves the results over the previous ones, each in one atomic step, so that a
/// kill at any moment leaves either the previous complete result or the new one. If the run fails
/// before committing, `run.partial/` is removed unless it holds a checkpoint (then `--resume`
/// continues from it), and the directory itself when this object created it and it is empty.
class output_directory {
 public:
  explicit output_directory(const fs::path& dir);
  output_directory(const output_directory&) = delete;
  output_directory& operator=(const output_directory&) = delete;
  ~output_directory();
  [[nodiscard]] fs::path partial() const { return dir_ / "run.partial"; }
  void discard_partial();  ///< removes an unfinished run's state
  void create_partial();
  /// Moves each of `names` from run.partial/ over the entry of that name in the directory (an entry
  /// the new result lacks is removed), then removes run.partial/.
  void commit(std::initializer_list<std::string> names);

 private:
  fs::path dir_;
  bool created_ = false, committed_ = false;
  std::unique_ptr<peft::io::directory_lock> lock_;
};
/// Size of a file or the sum over a directory's files, in bytes.
std::uintmax_t size_on_disk(const fs::path& p);

/// The processes this run trains with: under `mpirun -np N` (a build with MPI), N processes over
/// MPI_COMM_WORLD; otherwise this one. A `peft::train::Communicator` chosen at run time, so that one
/// instantiation of the training loop serves both.
class process_group {
 public:
  /// Starts MPI when this process was launched by an MPI launcher (and the build has MPI); call once,
  /// first thing in `main`. Returns whether it did.
  static bool start(int& argc, char**& argv);
  [[nodiscard]] static std::size_t rank() noexcept;
  [[nodiscard]] static std::size_t size() noexcept;
  static void sum(std::span<double> values);
  static void max(std::span<double> values);
  static void broadcast(std::string& text, std::size_t root);
  /// Ends every process with `message` (printed by this one, also when silenced) and exit code 1.
  [[noreturn]] static void abort(const std::string& message);
  /// Sends this process's standard output and error to /dev/null (all processes but the first):
  /// only `abort`'s message still reaches the terminal.
  static void silence();
};

}  // namespace peft_train
