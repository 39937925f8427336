// peft-train: fine-tune a BERT-family checkpoint with full fine-tuning, LoRA, BitFit or bottleneck
// adapters (and their combinations) on a sentence-classification or token-tagging file, then
// evaluate, label new text and merge, from the command line (docs/tutorial.md); and run a
// Llama-family decoder from a GGUF file: generate, chat, score (docs/decoder.md).

#include <omp.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <iostream>

#include <peft/backend/bf16_gemm.hpp>
#include <peft/backend/cpu_features.hpp>
#include <peft/core/error.hpp>
#include <peft/data/readers.hpp>
#include <peft/io/atomic_file.hpp>
#include <peft/text/wordpiece.hpp>

#include "common.hpp"
#include "decoder.hpp"
#include "options.hpp"
#include "plans.hpp"

using namespace peft_train;

namespace {

void set_threads(int threads) {
  if (threads < 0) throw peft::config_error("--threads must be 0 (all cores) or positive");
  // Far more threads than CPUs only slows a run down, and tens of thousands crash the OpenMP runtime.
  if (const int cores = omp_get_num_procs(); threads > 4 * cores)
    throw peft::config_error(peft::detail::concat("--threads ", threads, " is more than 4 x the ", cores, " CPUs available"));
  if (threads > 0) {
    omp_set_num_threads(threads);
    Eigen::setNbThreads(threads);
  }
}

char delimiter_of(const std::string& d) {
  if (d.empty()) return 0;
  if (d == "tab" || d == "\\t") return '\t';
  if (d == "comma" || d == ",") return ',';
  throw peft::config_error("--delimiter must be tab or comma");
}

/// The layout options of a sequence data file, on `cmd`; `delimiter` receives --delimiter's text.
void add_format_options(CLI::App* cmd, data_format& f, std::string& delimiter) {
  cmd->add_option("--delimiter", delimiter, "column separator of a sequence file: tab or comma (default: comma for .csv)");
  cmd->add_flag("--header", f.header, "the sequence file starts with a header line naming its columns");
  cmd->add_option("--text-column", f.text_column,
                  "column of the text: a number from 1, or a header name (default: header 'text'/'sentence', else column 1 "
                  "of a two-column file)");
  cmd->add_option("--pair-column", f.pair_column, "column of the second text of a pair (default: header 'sentence2', else none)");
  cmd->add_option("--label-column", f.label_column, "column of the label (default: header 'label', else the last column)");
}

/// The run card of an adapter directory, or of a full model directory when there is no adapter; an
/// adapter that Hugging Face PEFT wrote has none, and its card is derived from its files.
run_card card_for(const fs::path& model_dir, const fs::path& adapter_dir) {
  if (!adapter_dir.empty() && !fs::exists(adapter_dir / "peft_train.json") && fs::exists(adapter_dir / "adapter_config.json")) {
    run_card c = run_card::from_peft_adapter(adapter_dir, model_dir);
    std::string labels;
    for (const auto& l : c.labels) labels += (labels.empty() ? "" : ",") + l;
    std::cerr << "note: " << adapter_dir.string() << " has no peft_train.json; from its PEFT files: task " << c.task
              << ", " << c.describe()
              << ", labels " << labels << "\n";
    return c;
  }
  return run_card::read(adapter_dir.empty() ? model_dir : adapter_dir);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    peft::backend::require_cpu_features();  // an AVX2 build on an older CPU: say so, do not crash
  } catch (const peft::error& ex) {
    std::cerr << "peft-train: error: " << ex.what() << "\n";
    return 1;
  }
  // Under mpirun: one of N processes training together; only the first one speaks.
  process_group::start(argc, argv);
  if (process_group::rank() != 0) process_group::silence();
  CLI::App app{"peft-train: parameter-efficient fine-tuning of BERT-family encoders (LoRA, BitFit, adapters); Llama-family generation from GGUF"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "peft-train 0.1, kernels: " + peft::backend::cpu_kernels() + "; " + peft::backend::bf16_kernels());

  // ---- train -------------------------------------------------------------------------------------
  train_options t;
  std::string method = "lora", task, delimiter, activation;
  auto* train = app.add_subcommand("train", "fine-tune a checkpoint on a labelled file; writes an adapter (or model), metrics, a plot");
  train->add_option("--model", t.model_dir, "checkpoint directory: config.json, model.safetensors, vocab.txt or tokenizer.json")
      ->required();
  train->add_option("--train", t.train_file, "training file: TSV/CSV 'text<TAB>label' (sequence) or CoNLL 'token<TAB>tag' (token)")
      ->required();
  train->add_option("--dev", t.dev_file, "dev file in the same format, evaluated after every epoch");
  train->add_option("--output,-o", t.output_dir, "output directory")->required();
  train->add_option("--task", task, "sequence or token (default: from the file extension, .conll/.bio/.iob = token)")
      ->check(CLI::IsMember({"sequence", "token"}));
  train->add_option("--method", method,
                    "full, lora, adalora, vera, bitfit, ia3, ln_tuning, houlsby, pfeiffer, prompt, prefix, or a combination joined by '+' "
                    "(e.g. lora+bitfit)")
      ->capture_default_str();
  train->add_option("--rank,-r", t.card.methods.get<peft::lora_config>().r, "LoRA rank")->capture_default_str();
  t.card.methods.get<peft::lora_config>().alpha = 16;
  t.card.methods.get<peft::lora_config>().dropout = 0.1;
  train->add_option("--alpha", t.card.methods.get<peft::lora_config>().alpha, "LoRA alpha (scaling alpha/r)")->capture_default_str();
  train->add_option("--lora-dropout", t.card.methods.get<peft::lora_config>().dropout, "dropout on the LoRA input")->capture_default_str();
  train->add_option("--target", t.card.lora_targets,
                    "LoRA roles, comma-separated: query, key, value, attention_output, ffn_in, ffn_out, pooler, or all "
                    "(the six attention and FFN roles)")
      ->capture_default_str();
  train->add_option("--ia3-target", t.card.ia3_targets,
                    "(IA)3 roles, comma-separated (ffn_out scales its input, the others their output); as --target")
      ->capture_default_str();
  auto& ada = t.card.methods.get<peft::adalora_config>();
  train->add_option("--adalora-init-r", ada.init_r, "AdaLoRA: each module's starting rank")->capture_default_str();
  train->add_option("--adalora-target-r", ada.target_r, "AdaLoRA: the average rank the budget ends at")->capture_default_str();
  train->add_option("--adalora-alpha", ada.alpha, "AdaLoRA: lora_alpha (the update is scaled by alpha / init_r)")
      ->capture_default_str();
  train->add_option("--adalora-tinit", ada.tinit, "AdaLoRA: steps before the budget starts to fall")->capture_default_str();
  train->add_option("--adalora-tfinal", ada.tfinal, "AdaLoRA: final steps with the ranks fixed")->capture_default_str();
  train->add_option("--adalora-delta-t", ada.delta_t, "AdaLoRA: steps between two reallocations")->capture_default_str();
  train->add_option("--adalora-orth-reg", ada.orth_reg_weight, "AdaLoRA: weight of the orthogonal regulariser")
      ->capture_default_str();
  train->add_option("--adalora-target", t.card.adalora_targets, "AdaLoRA roles, comma-separated; as --target")
      ->capture_default_str();
  train->add_option("--vera-rank", t.card.methods.get<peft::vera_config>().r,
                    "VeRA: rank of the shared random matrices (PEFT's default 256)")
      ->capture_default_str();
  train->add_option("--vera-target", t.card.vera_targets, "VeRA roles, comma-separated; as --target")->capture_default_str();
  train->add_option("--vera-d-initial", t.card.methods.get<peft::vera_config>().d_initial, "VeRA: initial value of lambda_d")
      ->capture_default_str();
  train->add_option("--vera-dropout", t.card.methods.get<peft::vera_config>().dropout, "VeRA: dropout on its input")
      ->capture_default_str();
  train->add_option("--vera-prng-key", t.card.methods.get<peft::vera_config>().projection_prng_key,
                    "VeRA: seed of the shared random matrices (PEFT's projection_prng_key)")
      ->capture_default_str();
  std::size_t virtual_count = 20;
  std::string prompt_init = "random";
  train->add_option("--virtual-tokens", virtual_count, "prompt and prefix tuning: virtual tokens before every sequence")
      ->capture_default_str();
  train->add_option("--prompt-init", prompt_init,
                    "prompt tuning's start: random (N(0, 1)), text (the embeddings of --prompt-init-text's tokens, repeated or cut), "
                    "sample_vocab (those of random vocabulary entries)")
      ->check(CLI::IsMember({"random", "text", "sample_vocab"}))
      ->capture_default_str();
  train->add_option("--prompt-init-text", t.card.methods.get<peft::prompt_tuning_config>().init_text,
                    "prompt tuning: the text whose embeddings start the virtual tokens (with --prompt-init text)");
  train->add_flag("--prefix-projection", t.card.methods.get<peft::prefix_tuning_config>().prefix_projection,
                  "prefix tuning: train the prefix through a two-layer MLP (the paper's reparametrisation; the adapter holds the "
                  "prefix it computes)");
  train->add_option("--prefix-hidden", t.card.methods.get<peft::prefix_tuning_config>().encoder_hidden_size,
                    "prefix tuning: the MLP's hidden width (0: the hidden size)")
      ->capture_default_str();
  train->add_flag("--rslora", t.card.methods.get<peft::lora_config>().use_rslora, "scale by alpha/sqrt(r) (rsLoRA)");
  train->add_flag("--dora", t.card.methods.get<peft::lora_config>().use_dora,
                  "DoRA: a learned magnitude per output row over the norm of W + sBA (PEFT's use_dora)");
  train->add_option("--adapter-size", t.card.methods.get<peft::adapter_config>().bottleneck,
                    "adapter bottleneck width (0: hidden size / --reduction-factor)")
      ->capture_default_str();
  train->add_option("--reduction-factor", t.card.methods.get<peft::adapter_config>().reduction_factor, "adapter reduction factor")
      ->capture_default_str();
  train->add_option("--adapter-activation", activation,
                    "adapter nonlinearity: relu, gelu, gelu_new, tanh (default: gelu for houlsby, relu for pfeiffer, as "
                    "AdapterHub's swish and relu)");
  train->add_option("--pooling", t.card.pooling,
                    "sentence representation: cls (BERT's pooler, loadable by transformers) or mean (mean of the tokens)")
      ->check(CLI::IsMember({"cls", "mean"}))
      ->capture_default_str();
  train->add_option("--lr", t.lr, "peak learning rate (AdamW)")->capture_default_str();
  train->add_option("--schedule", t.schedule, "learning-rate schedule: constant, linear, cosine")
      ->check(CLI::IsMember({"constant", "linear", "cosine"}))
      ->capture_default_str();
  train->add_option("--warmup", t.warmup_ratio, "fraction of the steps spent warming up")->capture_default_str();
  train->add_option("--epochs", t.epochs)->capture_default_str();
  train->add_option("--batch-size", t.batch_size)->capture_default_str();
  train->add_option("--eval-batch-size", t.eval_batch_size)->capture_default_str();
  train->add_option("--max-length", t.card.max_length,
                    "tokens per sequence incl. [CLS]/[SEP] (0: the model's max_position_embeddings)")
      ->capture_default_str();
  train->add_flag("--truncate", t.card.truncate, "cut longer sequences (default: a longer sequence is an error naming its line)");
  train->add_option("--weight-decay", t.weight_decay, "AdamW weight decay (not on biases and norms)")->capture_default_str();
  train->add_option("--clip", t.clip, "global gradient-norm clipping (0: off)")->capture_default_str();
  train->add_option("--seed", t.seed)->capture_default_str();
  train->add_option("--threads", t.threads, "CPU threads (0: all)")->capture_default_str();
  train->add_option("--frozen-weights", t.frozen_weights, "storage of the frozen base weights: f32, or bf16 (half the memory; AVX512_BF16 products where the CPU has them, activations then rounded to bf16)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  train->add_option("--log-every", t.log_every, "steps between metrics records")->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--save-every", t.save_every, "steps between checkpoints (0: only at epoch ends and on interruption)")
      ->capture_default_str();
  train->add_option("--max-steps", t.max_steps, "stop after this many optimizer steps (0: train all epochs)")->capture_default_str();
  train->add_option("--gradient-accumulation", t.gradient_accumulation, "batches per optimizer step (gradients averaged)")
      ->capture_default_str();
  train->add_option("--early-stopping", t.early_stopping,
                    "stop after this many dev evaluations without improvement (0: off; needs --dev)")
      ->capture_default_str();
  train->add_option("--tensorboard", t.tensorboard_dir, "also write TensorBoard scalars to this directory");
  add_format_options(train, t.format, delimiter);
  train->add_flag("--resume", t.resume, "continue the run saved in the output directory's checkpoint");
  train->add_flag("--overwrite", t.overwrite, "replace a previous run in the output directory");
  train->add_flag("!--no-plot", t.plot, "do not draw training.svg");
  train->add_option("--interrupt-after", t.interrupt_after, "testing aid: behave as if Ctrl-C came after this many steps")
      ->group("");
  train->add_option("--crash-after", t.crash_after, "testing aid: the last of several processes dies after this many steps")
      ->group("");

  // ---- eval ----------------------------------------------------------------------------------------
  eval_options e;
  std::string eval_delimiter;
  auto* eval = app.add_subcommand("eval", "score a labelled file with a base model and an adapter (or a full/merged model)");
  eval->add_option("--model", e.model_dir, "base checkpoint directory (or a full model written by train/merge)")->required();
  eval->add_option("--adapter", e.adapter_dir, "adapter directory written by train");
  eval->add_option("--data", e.data_file, "labelled file in the training format")->required();
  eval->add_option("--predictions", e.predictions_file, "also write each prediction next to its gold label");
  eval->add_option("--batch-size", e.batch_size)->capture_default_str();
  eval->add_option("--threads", e.threads)->capture_default_str();
  eval->add_option("--frozen-weights", e.frozen_weights, "storage of the frozen base weights: f32, or bf16 (half the memory; AVX512_BF16 products where the CPU has them, activations then rounded to bf16)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  add_format_options(eval, e.format, eval_delimiter);

  // ---- predict -------------------------------------------------------------------------------------
  predict_options p;
  auto* predict = app.add_subcommand(
      "predict", "label new text: one text per line (sequence) or one whitespace-tokenised sentence per line (token)");
  predict->add_option("--model", p.model_dir, "base checkpoint directory (or a full model written by train/merge)")->required();
  predict->add_option("--adapter", p.adapter_dir, "adapter directory written by train");
  predict->add_option("--input", p.input_file, "input file ('-' or absent: standard input)");
  predict->add_option("--batch-size", p.batch_size)->capture_default_str();
  predict->add_option("--threads", p.threads)->capture_default_str();
  predict->add_option("--frozen-weights", p.frozen_weights, "storage of the frozen base weights: f32, or bf16 (half the memory; AVX512_BF16 products where the CPU has them, activations then rounded to bf16)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  predict->add_flag("--truncate", p.truncate, "label an over-long line from its first tokens (default: the run card's choice; "
                                              "without either, an over-long line is an error naming it)");

  // ---- merge ---------------------------------------------------------------------------------------
  merge_options g;
  auto* merge = app.add_subcommand("merge", "fold an adapter into the base weights and write a full checkpoint");
  merge->add_option("--model", g.model_dir, "base checkpoint directory")->required();
  merge->add_option("--adapter", g.adapter_dir, "adapter directory written by train (LoRA and/or BitFit)")->required();
  merge->add_option("--output,-o", g.output_dir, "directory for config.json, model.safetensors and the tokenizer")->required();
  merge->add_flag("--overwrite", g.overwrite);

  // ---- generate / chat / score: decoder LLMs from GGUF ------------------------------------------------
  decoder_commands decoder;
  add_decoder_commands(app, decoder);

  CLI11_PARSE(app, argc, argv);
  auto run_command = [&]() -> int {
    if (process_group::size() > 1 && !train->parsed())
      throw peft::config_error("only 'train' runs as several processes (mpirun); run the other commands as one process");
    if (decoder.parsed()) return run_decoder_command(decoder);
    if (train->parsed()) {
      t.card.task = task.empty() ? task_from_extension(t.train_file) : task;
      t.card.method = canonical_method(method);
      t.card.methods.get<peft::lora_config>().target_modules = role_target_regex(t.card.lora_targets, "--target");
      t.card.methods.get<peft::ia3_config>().target_modules = role_target_regex(t.card.ia3_targets, "--ia3-target");
      t.card.methods.get<peft::vera_config>().target_modules = role_target_regex(t.card.vera_targets, "--vera-target");
      t.card.methods.get<peft::adalora_config>().target_modules = role_target_regex(t.card.adalora_targets, "--adalora-target");
      t.card.methods.get<peft::prompt_tuning_config>().num_virtual_tokens = virtual_count;
      t.card.methods.get<peft::prefix_tuning_config>().num_virtual_tokens = virtual_count;
      t.card.methods.get<peft::prompt_tuning_config>().init = prompt_init == "text"           ? peft::prompt_init::text
                                                              : prompt_init == "sample_vocab" ? peft::prompt_init::sample_vocab
                                                                                              : peft::prompt_init::random;
      // Houlsby's adapter after the attention output collapsed with ReLU on WNUT-17 (docs/results.md).
      if (activation.empty()) activation = t.card.method.find("houlsby") != std::string::npos ? "gelu" : "relu";
      t.card.methods.get<peft::adapter_config>().nonlinearity = activation_named(activation);
      t.format.delimiter = delimiter_of(delimiter);
      if (process_group::size() > 1 && t.threads == 0) {  // processes sharing a host share its cores
        std::size_t local = process_group::size();
        for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
          if (const char* s = std::getenv(v)) local = std::max<std::size_t>(1, std::strtoul(s, nullptr, 10));
        t.threads = int(std::max<std::size_t>(1, std::size_t(omp_get_num_procs()) / local));
      }
      set_threads(t.threads);
      return commands_of(t.card.method).train(t);
    }
    if (eval->parsed()) {
      e.format.delimiter = delimiter_of(eval_delimiter);
      set_threads(e.threads);
      const auto card = card_for(e.model_dir, e.adapter_dir);
      return commands_of(card.method).eval(e, card);
    }
    if (predict->parsed()) {
      set_threads(p.threads);
      const auto card = card_for(p.model_dir, p.adapter_dir);
      return commands_of(card.method).predict(p, card);
    }
    if (merge->parsed()) {
      const auto card = card_for(g.model_dir, g.adapter_dir);
      return commands_of(card.method).merge(g, card);
    }
    return 0;
  };
  try {
    const int status = run_command();
    // Output that never arrived (a full disk, a closed pipe) is a failure, not a result.
    std::cout.flush();
    if (std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout)
      throw peft::io::io_error(std::string("writing to standard output failed: ") + std::strerror(errno));
    return status;
  } catch (const std::exception& ex) {
    // Data parallel: the others may be waiting for this process in a collective; stop them all.
    if (process_group::size() > 1)
      process_group::abort("peft-train: error (process " + std::to_string(process_group::rank()) + "): " + ex.what());
    std::cerr << "peft-train: error: " << ex.what() << "\n";
    return 1;
  }
}
