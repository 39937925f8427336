#pragma once
// peft-train: the parts that do not depend on the tuning plan: opening a checkpoint directory,
// reading data files, interruption, peak memory.

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <peft/data/batching.hpp>
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
dataset read_dataset(const fs::path& path, const std::string& task, char delimiter, bool header);
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
/// Size of a file or the sum over a directory's files, in bytes.
std::uintmax_t size_on_disk(const fs::path& p);

}  // namespace peft_train
