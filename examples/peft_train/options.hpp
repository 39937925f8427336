#pragma once
// peft-train: the options of each subcommand, the methods it offers, and the run card that travels
// with every adapter or model it writes (peft_train.json), so that eval / predict / merge rebuild the
// same model without being told again.

#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include <peft/core/error.hpp>
#include <peft/core/method_config.hpp>
#include <peft/methods/adalora.hpp>
#include <peft/methods/adapter.hpp>
#include <peft/methods/bitfit.hpp>
#include <peft/methods/ia3.hpp>
#include <peft/methods/ln_tuning.hpp>
#include <peft/methods/lora.hpp>
#include <peft/methods/prefix_tuning.hpp>
#include <peft/methods/prompt_tuning.hpp>
#include <peft/methods/vera.hpp>

namespace peft_train {

namespace fs = std::filesystem;

/// The methods `--method` combines with '+', in canonical order ("full" stands alone; one of houlsby
/// and pfeiffer at most; one of prompt_tuning and prefix_tuning at most).
inline constexpr std::array<std::string_view, 11> method_components = {
    "full", "lora", "adalora", "vera", "bitfit", "ia3", "ln_tuning", "houlsby", "pfeiffer", "prompt_tuning", "prefix_tuning"};

/// A user's method string in canonical form: its components in `method_components` order
/// ("bitfit+lora" is "lora+bitfit"; "adapter" is "houlsby"). Throws `config_error` naming what is
/// wrong and the choices.
std::string canonical_method(const std::string& method);

/// Whether canonical method `method` has component `component` ("lora+bitfit" has "bitfit").
bool has_component(const std::string& method, std::string_view component);

/// What a subcommand needs to know about the task and the model it builds: the run card.
struct run_card {
  std::string method = "lora";
  std::string task = "sequence";  ///< "sequence" (one label per text) or "token" (one tag per word)
  std::vector<std::string> labels;
  std::string pooling = "cls";    ///< "cls" (HF's pooler, loadable by transformers) or "mean"
  std::size_t max_length = 0;     ///< tokens per sequence incl. [CLS]/[SEP]; 0 = the model's positions
  bool truncate = false;
  peft::method_config methods{};
  std::string lora_targets = "query,value";  ///< roles, as given (also encoded in methods.lora.target_modules)
  std::string ia3_targets = "key,value,ffn_out";  ///< (IA)3 roles, as given (also in methods.ia3.target_modules)
  std::string vera_targets = "query,value";       ///< VeRA roles, as given (also in methods.vera.target_modules)
  std::string adalora_targets = "query,value";    ///< AdaLoRA roles, as given (also in methods.adalora.target_modules)
  std::string base_model;         ///< where the base checkpoint was (informational)

  /// The method and its settings in words, for logs and reports ("lora (r=8, alpha=16, ...)").
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] nlohmann::json to_json() const;
  static run_card from_json(const nlohmann::json& j, const std::string& source);
  static run_card read(const fs::path& dir);  ///< dir/peft_train.json
  /// The card of a LoRA, ADALORA, VERA, IA3 or LN_TUNING adapter that Hugging Face PEFT wrote (no peft_train.json): task from
  /// `task_type` (SEQ_CLS, TOKEN_CLS), LoRA settings from adapter_config.json, the number of labels
  /// from the head saved in `modules_to_save`, their names from the base model's `id2label` when it
  /// has that many (else "0", "1", ...), `cls` pooling as transformers' heads use. Throws `io_error`
  /// naming the file when the adapter does not say what the tool needs.
  static run_card from_peft_adapter(const fs::path& adapter_dir, const fs::path& model_dir);
  void write(const fs::path& dir) const;      ///< atomically
};

/// How a sequence data file is laid out: separator, header line, and which columns hold what
/// (a 1-based number, or a header name; empty: the reader's defaults, see `peft::data::table_options`).
struct data_format {
  char delimiter = 0;  ///< 0: from the file extension (.csv ',', else tab)
  bool header = false;
  std::string text_column, pair_column, label_column;
  [[nodiscard]] nlohmann::json to_json() const;
};

/// `train` options (also recorded in the checkpoint, so that `--resume` can refuse a changed run).
struct train_options {
  fs::path model_dir, train_file, dev_file, output_dir;
  run_card card;
  double lr = 5e-4, weight_decay = 0.01, warmup_ratio = 0.06, clip = 1.0;
  std::string schedule = "linear";
  std::size_t epochs = 3, batch_size = 16, eval_batch_size = 64;
  std::uint64_t seed = 42;
  int threads = 0;
  std::size_t log_every = 20, save_every = 200;
  std::size_t max_steps = 0;        ///< stop (as if finished) after this many steps; 0 = all epochs
  std::size_t gradient_accumulation = 1;  ///< batches per optimizer step
  std::size_t early_stopping = 0;   ///< stop after this many evaluations without improvement; 0 = off
  fs::path tensorboard_dir;         ///< TensorBoard event files (empty: none)
  std::size_t interrupt_after = 0;  ///< testing aid: raise SIGINT after this many steps
  std::size_t crash_after = 0;      ///< testing aid: the last of several processes dies after this many steps
  bool resume = false, overwrite = false, plot = true;
  std::string frozen_weights = "f32";  ///< storage of the frozen base weights: f32 or bf16
  data_format format;

  /// Everything that must not change between a run and its resumption.
  [[nodiscard]] nlohmann::json identity() const;
};

struct eval_options {
  fs::path model_dir, adapter_dir, data_file, predictions_file;
  std::size_t batch_size = 64;
  int threads = 0;
  std::string frozen_weights = "f32";
  data_format format;
};

struct predict_options {
  fs::path model_dir, adapter_dir, input_file;  ///< input "-" or empty: stdin
  std::size_t batch_size = 64;
  int threads = 0;
  std::string frozen_weights = "f32";
  bool truncate = false;                        ///< cut over-long lines instead of stopping
  std::size_t max_line_bytes = 1 << 20;
};

struct merge_options {
  fs::path model_dir, adapter_dir, output_dir;
  bool overwrite = false;
};

/// The card's method options with each method of the run-time plan switched on or off by
/// `card.method` (LoRA, BitFit, (IA)3, Houlsby adapters after attention and FFN output, Pfeiffer
/// adapters after the FFN output only).
peft::method_config run_time_methods(const run_card& card);

/// Positions the card's method takes before every sequence (prompt or prefix tuning's virtual
/// tokens; 0 for the other methods): the text gets the model's positions less these.
std::size_t virtual_tokens(const run_card& card);

/// An activation by its Hugging Face name (relu, gelu, gelu_new, tanh, linear); `config_error` otherwise.
peft::activation activation_named(const std::string& name);

/// The non-empty pieces of `s` between `sep` characters.
std::vector<std::string> split_nonempty(const std::string& s, char sep);

/// Target roles of BertModel ("query,value", "all", ...) as PEFT's regular-expression
/// `target_modules`; `option` names the command-line option in errors.
std::string role_target_regex(const std::string& roles, const std::string& option);

}  // namespace peft_train
