#pragma once
/// \file Prompt tuning (Lester et al. 2021, arXiv:2104.08691): a learned table of `num_virtual_tokens`
/// embeddings put before every sequence's token embeddings; the model is frozen.
///
/// Hugging Face PEFT's `PROMPT_TUNING`, as its `PeftModelFor*` forwards run it: the virtual tokens
/// come first (before [CLS] in BERT), take positions 0..n-1 (the real tokens' positions shift by n)
/// and token type 0, and the attention mask is extended with ones; a sequence classifier pools the
/// first virtual token. The table starts N(0, 1) (`RANDOM`), as the embeddings of an initialisation
/// text's tokens repeated or cut to n (`TEXT`), or as those of random vocabulary entries
/// (`SAMPLE_VOCAB`); the last two are read from the loaded word embeddings on first use. Not
/// mergeable: the virtual tokens are extra inputs, not a change of any weight.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/parameter.hpp"
#include "peft/core/random.hpp"
#include "peft/io/peft_format.hpp"
#include "peft/layers/linear.hpp"
#include "peft/layers/virtual_tokens.hpp"
#include "peft/methods/prompt_learning.hpp"

namespace peft {

/// How prompt tuning's table starts (PEFT's `PromptTuningInit`).
enum class prompt_init {
  random,        ///< N(0, 1), as torch.nn.Embedding starts
  text,          ///< the embeddings of `init_token_ids`, repeated or cut to num_virtual_tokens
  sample_vocab,  ///< the embeddings of num_virtual_tokens vocabulary entries drawn uniformly
};

/// Prompt tuning's run-time options, as PEFT's `PromptTuningConfig`. Requirements: num_virtual_tokens
/// >= 1; a text initialisation needs `init_token_ids` (the caller tokenizes `init_text` with the
/// model's tokenizer, as PEFT does with special tokens) and, for PEFT to read the file,
/// `tokenizer_name_or_path`.
struct prompt_tuning_config {
  bool enabled = true;  ///< false: no virtual tokens (a plan compiled with it then trains without)
  std::size_t num_virtual_tokens = 20;
  prompt_init init = prompt_init::random;
  std::vector<std::int32_t> init_token_ids{};
  std::string init_text{};               ///< recorded as `prompt_tuning_init_text`
  std::string tokenizer_name_or_path{};  ///< recorded for PEFT (required there with a text initialisation)
};

namespace groups {
/// Prompt tuning's virtual token embeddings.
struct prompt_tuning {
  static constexpr std::string_view name = "prompt_tuning";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

/// Prompt tuning's table (group `prompt_tuning`, trainable): (num_virtual_tokens, hidden), named
/// `prompt_encoder.embedding.weight` at the top of the model. The prompt source of a plan with
/// `methods::prompt_tuning` (see layers/virtual_tokens.hpp); disabled, it has no token and no
/// parameter.
template <Backend B>
class prompt_embedding : public visits_parameters<prompt_embedding<B>> {
  friend visits_parameters<prompt_embedding>;

 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using weight_parameter = parameter<B, groups::prompt_tuning, true>;

  prompt_embedding(typename B::context& ctx, std::size_t vocab, std::size_t hidden, const method_config& cfg, std::uint64_t seed) {
    const prompt_tuning_config& c = cfg.get<prompt_tuning_config>();
    if (!c.enabled) return;
    tokens_ = detail::checked_virtual_tokens(c.num_virtual_tokens, "prompt_tuning");
    hidden_ = hidden;
    weight_.declared = shape{tokens_, hidden};
    init_rng rng(derive_seed(seed, 0x9707));
    switch (c.init) {
      case prompt_init::random:
        layers::detail::init_tensor<B>(ctx, weight_.declared, weight_.value, [&] { return rng.normal(0, 1); });
        break;
      case prompt_init::sample_vocab:
        for (std::size_t i = 0; i < tokens_; ++i)
          init_ids_.push_back(std::int32_t(std::min<double>(rng.uniform(0, double(vocab)), double(vocab - 1))));
        break;
      case prompt_init::text:
        if (c.init_token_ids.empty())
          throw config_error("prompt_tuning: a text initialisation needs the init text's token ids (init_token_ids)");
        for (std::size_t i = 0; i < tokens_; ++i) {  // PEFT's order: the text repeated, then cut
          const std::int32_t id = c.init_token_ids[i % c.init_token_ids.size()];
          if (id < 0 || std::size_t(id) >= vocab)
            throw config_error(peft::detail::concat("prompt_tuning: init token id ", id, " is outside the vocabulary of ", vocab));
          init_ids_.push_back(id);
        }
        break;
    }
    weight_.allocate_grad(ctx);
  }

  [[nodiscard]] std::size_t tokens() const noexcept { return tokens_; }

  /// The (tokens, hidden) table; on first use with a text or vocabulary initialisation (and no value
  /// loaded from an adapter), read from `word`, the model's word embedding layer, as loaded.
  template <class Embedding>
  const tensor& table(typename B::context& ctx, Embedding& word) {
    if (weight_.value.empty()) {
      const auto rows = B::copy_to_host(ctx, word.forward(ctx, init_ids_, shape{1, tokens_, hidden_}));
      B::copy_from_host(ctx, rows, weight_.declared, weight_.value);
    }
    return weight_.value;
  }
  /// Adds the gradient of the table from `d`, the gradient of (batch, tokens + seq, hidden) inputs
  /// whose leading rows were the table.
  void accumulate(typename B::context& ctx, const tensor& d) {
    layers::sum_sequence_rows<B>(ctx, d, tokens_, value_type(1), ones_, weight_.grad);
  }
  weight_parameter& weight() noexcept { return weight_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string&, F& f) {
    if (self.tokens_) f(detail::prompt_table_name, self.weight_);
  }

  std::size_t tokens_ = 0, hidden_ = 0;
  std::vector<std::int32_t> init_ids_;
  weight_parameter weight_;
  tensor ones_;
};

namespace detail {
inline const char* prompt_init_name(prompt_init i) {
  switch (i) {
    case prompt_init::text: return "TEXT";
    case prompt_init::sample_vocab: return "SAMPLE_VOCAB";
    default: return "RANDOM";
  }
}

/// Prompt tuning in Hugging Face PEFT's files: `peft_type` PROMPT_TUNING, `PromptTuningConfig`'s
/// keys, the table as `prompt_embeddings`, the head under `base_model.`.
struct prompt_tuning_peft_format {
  static constexpr std::string_view peft_type = "PROMPT_TUNING";

  static void write_config(nlohmann::json& j, const prompt_tuning_config& c, const io::adapter_contents&) {
    if (c.init == prompt_init::text && c.tokenizer_name_or_path.empty())
      throw config_error("prompt_tuning: a text initialisation is written with tokenizer_name_or_path, which PEFT requires; "
                         "set it to the model's directory");
    write_prompt_learning_common(j, c.num_virtual_tokens);
    j.update({{"prompt_tuning_init", prompt_init_name(c.init)},
              {"prompt_tuning_init_text", c.init == prompt_init::text ? nlohmann::json(c.init_text) : nlohmann::json(nullptr)},
              {"tokenizer_name_or_path", c.tokenizer_name_or_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(c.tokenizer_name_or_path)},
              {"tokenizer_kwargs", nullptr}});
  }

  /// The table in the file replaces any initialisation, so the init keys are kept for the record
  /// only (a text initialisation is not redone).
  static void read_config(const io::json_config& f, prompt_tuning_config& c) {
    read_prompt_learning_common(f, c.num_virtual_tokens);
    c.init = prompt_init::random;
    if (const auto i = f.string("prompt_tuning_init")) {
      if (*i != "RANDOM" && *i != "TEXT" && *i != "SAMPLE_VOCAB")
        f.fail("'prompt_tuning_init' '" + *i + "' is not RANDOM, TEXT or SAMPLE_VOCAB");
    }
    if (const auto t = f.string("prompt_tuning_init_text")) c.init_text = *t;
    if (const auto t = f.string("tokenizer_name_or_path")) c.tokenizer_name_or_path = *t;
  }

  static std::string parameter_name(std::string key) { return prompt_learning_parameter_name(std::move(key)); }
  static void pack_tensors(std::vector<io::tensor_to_write>& tensors) { prompt_learning_keys(tensors); }
};
}  // namespace detail

/// PEFT method: prompt tuning. It wraps no layer; models put its virtual tokens before every
/// sequence (`plan::prompt`). Not mergeable.
struct prompt_tuning {
  static constexpr std::string_view name = "prompt_tuning";
  static constexpr int stage = 0;
  static constexpr bool mergeable = false;
  static constexpr std::string_view not_mergeable_because =
      "its virtual tokens are extra inputs, not a change of any weight; deploy the base model with the adapter";
  using options = prompt_tuning_config;
  using groups = group_set<peft::groups::prompt_tuning>;
  using peft_format = detail::prompt_tuning_peft_format;
  template <class Role>
  static constexpr bool targets = false;
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = Inner;
  template <class B>
  using prompt = prompt_embedding<B>;
};

}  // namespace peft::methods
