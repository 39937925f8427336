// peft-train generate / chat / score: a Llama-family GGUF model with its tokenizer and chat template,
// kept quantized in memory, with an optional PEFT adapter (LoRA, DoRA or LayerNorm tuning).

#include "decoder.hpp"

#include "common.hpp"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include <peft/backend/eigen.hpp>
#include <peft/generate/generator.hpp>
#include <peft/io/gguf_checkpoint.hpp>
#include <peft/io/peft_adapter.hpp>
#include <peft/methods/ln_tuning.hpp>
#include <peft/methods/lora.hpp>
#include <peft/methods/plan.hpp>
#include <peft/methods/prefix_tuning.hpp>
#include <peft/methods/prompt_tuning.hpp>
#include <peft/methods/vera.hpp>
#include <peft/models/llama/model.hpp>
#include <peft/text/gguf_vocabulary.hpp>

namespace peft_train {

namespace {

namespace fs = std::filesystem;
using B = peft::backend::eigen<float>;
// One instantiation for every adapter: LoRA (or DoRA) and VeRA on all seven projections, LayerNorm
// tuning on the RMS norms, prompt and prefix tuning, switched per module at run time by the adapter's type and target_modules (no
// adapter: all off, nothing added).
namespace r = peft::roles;
using lm_plan = peft::plan<peft::methods::lora<r::query, r::key, r::value, r::attention_output, r::ffn_in, r::ffn_out, r::ffn_gate>,
                           peft::methods::vera<r::query, r::key, r::value, r::attention_output, r::ffn_in, r::ffn_out, r::ffn_gate>,
                           peft::methods::ln_tuning, peft::methods::prompt_tuning, peft::methods::prefix_tuning>;
using lm_model = peft::models::llama_for_causal_lm<B, lm_plan>;

/// A model ready to run: weights, tokenizer, chat template.
struct loaded_lm {
  std::unique_ptr<B::context> ctx;
  peft::io::gguf_file file;
  std::unique_ptr<lm_model> model;
  std::unique_ptr<peft::text::bpe_tokenizer> tokenizer;
  bool chatml = false;
  std::optional<std::string> default_system;
  std::vector<std::int32_t> stop_tokens;
};

loaded_lm load(const decoder_options& o) {
  if (o.threads < 0) throw peft::config_error("--threads must be 0 (all cores) or positive");
  if (o.threads > 0) {
    const int cores = omp_get_num_procs();
    if (o.threads > 4 * cores)
      throw peft::config_error(peft::detail::concat("--threads ", o.threads, " is more than 4 x the ", cores, " CPUs available"));
    omp_set_num_threads(o.threads);
    Eigen::setNbThreads(o.threads);
  }
  loaded_lm l;
  l.ctx = std::make_unique<B::context>();
  l.file = peft::io::gguf_file::open(o.model);
  const auto cfg = peft::models::llama_config::from_gguf(l.file);
  peft::method_config methods{peft::lora_config{.enabled = false}, peft::vera_config{.enabled = false},
                              peft::ln_tuning_config{.enabled = false}, peft::prompt_tuning_config{.enabled = false},
                              peft::prefix_tuning_config{.enabled = false}};
  if (!o.adapter.empty()) {
    const auto info = peft::io::read_peft_adapter_config<lm_plan>(o.adapter);
    methods = info.options;  // a method the adapter does not carry builds nothing
    auto carries = [&](const char* m) { return std::find(info.methods.begin(), info.methods.end(), m) != info.methods.end(); };
    methods.get<peft::lora_config>().enabled = carries("lora");
    methods.get<peft::vera_config>().enabled = carries("vera");
    methods.get<peft::ln_tuning_config>().enabled = carries("ln_tuning");
    methods.get<peft::prompt_tuning_config>().enabled = carries("prompt_tuning");
    methods.get<peft::prefix_tuning_config>().enabled = carries("prefix_tuning");
    if (o.merge && (carries("prompt_tuning") || carries("prefix_tuning")))
      throw peft::config_error("--merge: a prompt or prefix tuning adapter adds virtual tokens, which no weight can hold; "
                               "run it unmerged");
  } else if (o.merge) {
    throw peft::config_error("--merge needs --adapter");
  }
  l.model = std::make_unique<lm_model>(*l.ctx, cfg, methods, 0, peft::layers::weight_init::none);  // the file fills it
  const auto r = peft::io::load_gguf(*l.ctx, *l.model, l.file,
                                     o.dense ? peft::io::gguf_storage::dense : peft::io::gguf_storage::keep);
  if (!r.missing.empty()) throw peft::io::io_error("GGUF '" + o.model.string() + "': " + r.str());
  if (!o.adapter.empty()) {
    peft::io::load_peft_adapter(*l.ctx, *l.model, o.adapter);
    if (o.merge) l.model->merge(*l.ctx);
  }
  l.tokenizer = std::make_unique<peft::text::bpe_tokenizer>(peft::text::bpe_tokenizer_from_gguf(l.file));
  if (const auto tmpl = peft::text::chat_template_of(l.file)) {
    l.chatml = peft::text::is_chatml_template(*tmpl);
    l.default_system = peft::text::default_system_prompt_from_template(*tmpl);
  }
  if (const auto eos = l.tokenizer->vocabulary().eos) l.stop_tokens.push_back(*eos);
  if (l.chatml)
    if (const auto end = l.tokenizer->token_id("<|im_end|>"); end && std::find(l.stop_tokens.begin(), l.stop_tokens.end(), *end) == l.stop_tokens.end())
      l.stop_tokens.push_back(*end);
  return l;
}

std::vector<std::int32_t> parse_ids(const std::string& s, std::size_t vocab) {
  std::vector<std::int32_t> ids;
  std::string item;
  std::istringstream in(s);
  while (in >> item) {
    for (auto part = item; !part.empty();) {
      const auto comma = part.find(',');
      const std::string tok = part.substr(0, comma);
      part = comma == std::string::npos ? "" : part.substr(comma + 1);
      if (tok.empty()) continue;
      std::size_t used = 0;
      long long v = -1;
      try {
        v = std::stoll(tok, &used);
      } catch (const std::exception&) {
      }
      if (used != tok.size() || v < 0 || std::size_t(v) >= vocab)
        throw peft::config_error(peft::detail::concat("--ids: '", tok, "' is not a token id in [0, ", vocab, ")"));
      ids.push_back(std::int32_t(v));
    }
  }
  if (ids.empty()) throw peft::config_error("--ids: no token ids given");
  return ids;
}

std::string read_all(const fs::path& p) {
  if (p == "-") {
    std::ostringstream s;
    s << std::cin.rdbuf();
    return s.str();
  }
  std::ifstream in(p, std::ios::binary);
  if (!in) throw peft::io::io_error("cannot open '" + p.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The prompt texts of `generate`: --prompt (repeatable), else --prompt-file (whole, or a line each),
/// else standard input.
std::vector<std::string> prompt_texts(const decoder_options& o) {
  if (!o.prompts.empty()) return o.prompts;
  const std::string all = read_all(o.prompt_file.empty() ? fs::path("-") : o.prompt_file);
  if (!o.lines) {
    if (all.find_first_not_of(" \t\r\n") == std::string::npos) throw peft::config_error("the prompt is empty");
    return {all};
  }
  std::vector<std::string> out;
  std::istringstream in(all);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) out.push_back(line);
  }
  if (out.empty()) throw peft::config_error("the prompt file has no non-empty line");
  return out;
}

std::vector<std::int32_t> encode_prompt(const loaded_lm& l, const decoder_options& o, const std::string& text) {
  if (o.raw || !l.chatml) return l.tokenizer->encode(text);
  std::optional<std::string> system = l.default_system;
  if (!o.system.empty()) system = o.system;
  if (o.no_system) system.reset();
  std::vector<peft::text::chat_message> chat;
  if (system && !o.no_system) chat.push_back({"system", *system});
  chat.push_back({"user", text});
  return l.tokenizer->encode(peft::text::apply_chatml(chat, std::nullopt));
}

peft::generate::generation_options generation_of(const loaded_lm& l, const decoder_options& o) {
  return {.max_new_tokens = o.max_new_tokens, .sampling = o.sampling,
          .stop_tokens = o.ignore_eos ? std::vector<std::int32_t>{} : l.stop_tokens, .stop_strings = o.stop,
          .pad_token = l.tokenizer->vocabulary().pad.value_or(0)};
}

int run_generate(const decoder_options& o) {
  o.sampling.validate();
  loaded_lm l = load(o);
  std::vector<std::vector<std::int32_t>> prompts;
  if (!o.ids.empty()) prompts.push_back(parse_ids(o.ids, l.model->config().vocab_size));
  else
    for (const auto& t : prompt_texts(o)) prompts.push_back(encode_prompt(l, o, t));
  const bool stream = !o.no_stream && !o.json && prompts.size() == 1;
  auto decode = [&](std::span<const std::int32_t> ids) { return l.tokenizer->decode(ids, true); };
  peft::generate::generation_stats stats;
  const auto out = peft::generate::generate(*l.ctx, *l.model, std::span(prompts), generation_of(l, o), decode,
                                            stream ? std::function<void(std::size_t, std::string_view)>(
                                                         [](std::size_t, std::string_view piece) { std::cout << piece << std::flush; })
                                                   : nullptr,
                                            &stats);
  std::size_t generated = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    generated += out[i].tokens.size();
    if (o.json) {
      std::cout << nlohmann::json{{"prompt_ids", prompts[i]}, {"ids", out[i].tokens}, {"text", out[i].text},
                                  {"finish_reason", peft::generate::to_string(out[i].reason)}}
                       .dump()
                << "\n";
    } else if (stream) {
      std::cout << std::endl;
    } else {
      if (out.size() > 1) std::cout << "== " << i + 1 << "\n";
      std::cout << out[i].text << "\n";
    }
  }
  std::cerr << "prompt: " << stats.prompt_tokens << " tokens in " << stats.prompt_seconds << " s; generated " << generated
            << " tokens in " << stats.decode_seconds << " s (" << double(stats.decode_steps) / stats.decode_seconds
            << " steps/s)\n";
  if (!o.stats_json.empty())
    peft::io::write_json_file(o.stats_json, {{"prompt_tokens", stats.prompt_tokens}, {"prompt_seconds", stats.prompt_seconds},
                                             {"new_tokens", stats.new_tokens}, {"decode_steps", stats.decode_steps},
                                             {"decode_seconds", stats.decode_seconds}, {"peak_rss_mb", peak_rss_mb()},
                                             {"threads", Eigen::nbThreads()}});
  return 0;
}

int run_chat(const decoder_options& o) {
  o.sampling.validate();
  loaded_lm l = load(o);
  if (!l.chatml) throw peft::config_error("chat needs a model with a ChatML chat template; use generate --raw");
  std::vector<peft::text::chat_message> history;
  std::optional<std::string> system = o.system.empty() ? l.default_system : std::optional(o.system);
  if (system && !o.no_system) history.push_back({"system", *system});
  const std::size_t keep = history.size();
  std::cerr << "chat with " << o.model.filename().string() << " (/reset clears the conversation, /exit or end of input quits)\n";
  auto decode = [&](std::span<const std::int32_t> ids) { return l.tokenizer->decode(ids, true); };
  for (std::string line;;) {
    std::cerr << "> " << std::flush;
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      history.resize(keep);
      continue;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    history.push_back({"user", line});
    std::vector<std::vector<std::int32_t>> prompt{l.tokenizer->encode(peft::text::apply_chatml(history, std::nullopt))};
    const auto out = peft::generate::generate(*l.ctx, *l.model, std::span(prompt), generation_of(l, o), decode,
                                              [](std::size_t, std::string_view piece) { std::cout << piece << std::flush; });
    std::cout << "\n";
    history.push_back({"assistant", out[0].text});
  }
  return 0;
}

/// Perplexity of a text (windows of --window tokens, each scored after its first token), and with
/// --logits-json the last-position logits of --ids or --prompt for comparison with a reference.
int run_score(const decoder_options& o) {
  loaded_lm l = load(o);
  const std::size_t vocab = l.model->config().vocab_size;
  if (!o.logits_json.empty()) {
    const auto ids = !o.ids.empty() ? parse_ids(o.ids, vocab) : encode_prompt(l, o, prompt_texts(o).front());
    const auto& logits = l.model->forward(*l.ctx, {.batch_size = 1, .seq_len = ids.size(), .input_ids = ids, .labels = {}});
    const auto host = B::copy_to_host(*l.ctx, logits);
    const std::vector<float> last(host.end() - std::ptrdiff_t(vocab), host.end());
    peft::io::write_json_file(o.logits_json, {{"ids", ids}, {"logits", last}});
    std::cerr << "wrote the logits of the last of " << ids.size() << " positions to " << o.logits_json.string() << "\n";
    return 0;
  }
  if (o.text_file.empty() && o.ids.empty()) throw peft::config_error("score needs --text-file, --ids or --logits-json");
  const auto ids = !o.ids.empty() ? parse_ids(o.ids, vocab) : l.tokenizer->encode(read_all(o.text_file));
  if (ids.size() < 2) throw peft::config_error("score: the text has fewer than 2 tokens");
  if (o.window < 2) throw peft::config_error("--window must be at least 2");
  double nll = 0;
  std::size_t scored = 0;
  for (std::size_t start = 0; start + 1 < ids.size(); start += o.window - 1) {  // windows overlap by one token
    const std::size_t n = std::min(o.window, ids.size() - start);
    const std::vector<std::int32_t> w(ids.begin() + std::ptrdiff_t(start), ids.begin() + std::ptrdiff_t(start + n));
    const auto host = B::copy_to_host(*l.ctx, l.model->forward(*l.ctx, {.batch_size = 1, .seq_len = n, .input_ids = w, .labels = {}}));
    for (std::size_t t = 0; t + 1 < n; ++t) {
      const float* row = host.data() + t * vocab;
      const double top = *std::max_element(row, row + vocab);
      double sum = 0;
      for (std::size_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - top);
      nll += top + std::log(sum) - double(row[w[t + 1]]);
      ++scored;
    }
  }
  nlohmann::json j{{"tokens", ids.size()}, {"scored", scored}, {"window", o.window}, {"nll", nll / double(scored)},
                   {"perplexity", std::exp(nll / double(scored))}};
  if (o.with_ids) j["ids"] = ids;
  std::cout << j.dump() << "\n";
  return 0;
}

void add_common(CLI::App* c, decoder_options& o) {
  c->add_option("--model", o.model, "a Llama-family GGUF file (e.g. $(scripts/find_smollm2.sh))")->required();
  c->add_option("--adapter", o.adapter, "a PEFT LoRA, DoRA, VERA or LN_TUNING adapter directory (adapter_config.json, adapter_model.safetensors)");
  c->add_flag("--merge", o.merge, "fold the adapter into the weights (those layers are then held in fp32)");
  c->add_flag("--dense", o.dense, "dequantize every weight at load (fp32 in memory) instead of keeping the file's format");
  c->add_option("--threads", o.threads, "CPU threads (0: all)")->capture_default_str();
}
void add_prompt(CLI::App* c, decoder_options& o) {
  c->add_option("--prompt,-p", o.prompts, "prompt text (repeat for a batch)");
  c->add_option("--prompt-file", o.prompt_file, "file holding the prompt ('-': standard input; the default without --prompt)");
  c->add_flag("--lines", o.lines, "each line of the prompt file is a separate prompt (run as one batch)");
  c->add_flag("--raw", o.raw, "give the text to the model as it is (no chat template)");
  c->add_option("--ids", o.ids, "token ids instead of text, e.g. \"1 9690 198\"");
}
void add_sampling(CLI::App* c, decoder_options& o) {
  c->add_option("--system", o.system, "system prompt (default: the chat template's)");
  c->add_flag("--no-system", o.no_system, "no system message");
  c->add_option("--max-new-tokens,-n", o.max_new_tokens)->capture_default_str();
  c->add_option("--temperature", o.sampling.temperature, "0: greedy")->capture_default_str();
  c->add_option("--top-k", o.sampling.top_k, "0: no limit")->capture_default_str();
  c->add_option("--top-p", o.sampling.top_p)->capture_default_str();
  c->add_option("--repetition-penalty", o.sampling.repetition_penalty)->capture_default_str();
  c->add_option("--seed", o.sampling.seed)->capture_default_str();
  c->add_option("--stop", o.stop, "stop before this text (repeatable); the end-of-turn token always stops");
}

}  // namespace

void add_decoder_commands(CLI::App& app, decoder_commands& c) {
  auto& o = c.options;
  c.generate = app.add_subcommand("generate", "continue prompts with a Llama-family GGUF model (chat template applied)");
  add_common(c.generate, o);
  add_prompt(c.generate, o);
  add_sampling(c.generate, o);
  c.generate->add_flag("--no-stream", o.no_stream, "print the answer at the end instead of token by token");
  c.generate->add_flag("--json", o.json, "one JSON object per prompt: prompt_ids, ids, text, finish_reason");
  c.generate->add_flag("--ignore-eos", o.ignore_eos, "do not stop at the end-of-turn token (exactly --max-new-tokens)");
  c.generate->add_option("--stats-json", o.stats_json, "write the prompt and decoding times and the peak memory here");
  c.chat = app.add_subcommand("chat", "talk to a ChatML model: one message per line on standard input");
  add_common(c.chat, o);
  add_sampling(c.chat, o);
  c.score = app.add_subcommand("score", "perplexity of a text, or (--logits-json) the next-token logits of a prompt");
  add_common(c.score, o);
  add_prompt(c.score, o);
  c.score->add_option("--text-file", o.text_file, "text whose perplexity to compute ('-': standard input)");
  c.score->add_option("--window", o.window, "tokens per scored window")->capture_default_str();
  c.score->add_flag("--with-ids", o.with_ids, "also print the text's token ids");
  c.score->add_option("--logits-json", o.logits_json, "write the last position's logits of --ids or --prompt here");
}

int run_decoder_command(const decoder_commands& c) {
  if (c.generate->parsed()) return run_generate(c.options);
  if (c.chat->parsed()) return run_chat(c.options);
  return run_score(c.options);
}

}  // namespace peft_train
