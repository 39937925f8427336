#pragma once
// peft-train's decoder subcommands: `generate` (a continuation of prompts given as arguments, a file
// or standard input), `chat` (an interactive ChatML conversation) and `score` (perplexity of a text,
// and the logits of prompts for comparison with a reference), on a Llama-family GGUF model, with an
// optional PEFT adapter (LoRA, DoRA, LayerNorm tuning), applied unmerged or merged.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <peft/generate/sampler.hpp>

namespace peft_train {

/// Options shared by the decoder subcommands.
struct decoder_options {
  std::filesystem::path model;    ///< a GGUF file
  std::filesystem::path adapter;  ///< a PEFT LoRA, DoRA, VERA or LN_TUNING adapter directory (optional)
  bool merge = false;             ///< fold the adapter into the (then dequantized) weights
  bool dense = false;             ///< dequantize every weight at load (default: keep them quantized)
  int threads = 0;
  // generate / chat
  std::vector<std::string> prompts;
  std::filesystem::path prompt_file;  ///< "-" = standard input
  bool lines = false;                 ///< each line of the prompt file is a prompt of its own (a batch)
  bool raw = false;                   ///< no chat template: the prompt text is the model's input as it is
  std::string system;                 ///< system prompt (default: the template's)
  bool no_system = false;
  std::size_t max_new_tokens = 256;
  peft::generate::sampling_options sampling;
  std::vector<std::string> stop;
  bool no_stream = false;
  bool json = false;  ///< one JSON object per prompt (ids, text, finish reason)
  bool ignore_eos = false;           ///< generate exactly --max-new-tokens (benchmarks)
  std::filesystem::path stats_json;  ///< timings and peak memory of the run
  std::string ids;    ///< token ids instead of text (space- or comma-separated)
  // score
  std::filesystem::path text_file;
  std::filesystem::path logits_json;
  std::size_t window = 512;
  bool with_ids = false;  ///< score: also print the text's token ids
};

/// The decoder subcommands registered on `app`.
struct decoder_commands {
  decoder_options options;
  CLI::App* generate = nullptr;
  CLI::App* chat = nullptr;
  CLI::App* score = nullptr;
  [[nodiscard]] bool parsed() const { return generate->parsed() || chat->parsed() || score->parsed(); }
};

void add_decoder_commands(CLI::App& app, decoder_commands& c);
/// Runs whichever decoder subcommand was parsed; returns the exit status.
int run_decoder_command(const decoder_commands& c);

}  // namespace peft_train
