#pragma once
/// \file Prefix tuning (Li and Liang 2021, arXiv:2101.00190): every attention layer sees
/// `num_virtual_tokens` learned keys and values before the sequence's own; the model is frozen.
///
/// Hugging Face PEFT's `PREFIX_TUNING`, as its forwards run it: one table (num_virtual_tokens,
/// num_layers * 2 * kv_width) whose columns [2l kv_width, (2l+1) kv_width) are layer l's keys and the
/// next block its values (kv_width = key/value heads x head size, so grouped-query models get
/// prefixes of their key/value width), passed as a KV cache of that length: the prefix keys are used
/// as given (not rotated), the real tokens' positions start after them, every query sees the whole
/// prefix, and the attention mask is extended with ones. With `prefix_projection` the table is
/// reparametrised while training as tanh(E W1^T + b1) W2^T + b2 from smaller embeddings E
/// (num_virtual_tokens, kv_width), as the paper does for stability; an adapter file holds the table it
/// computes (PEFT's `prompt_embeddings`), which is what a model built for inference (`inference_mode`)
/// loads. Not mergeable: the prefix is attended to, not added to any weight.

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
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
#include "peft/layers/activation.hpp"
#include "peft/layers/linear.hpp"
#include "peft/layers/virtual_tokens.hpp"
#include "peft/methods/prompt_learning.hpp"

namespace peft {

/// Prefix tuning's run-time options, as PEFT's `PrefixTuningConfig`. Requirements:
/// num_virtual_tokens >= 1. `encoder_hidden_size` is the reparametrisation's hidden width (0: the
/// key/value width, PEFT's default). `init_zero` is PEFT's init_weights "zero": the table (or the
/// reparametrisation's last layer) starts at zeros instead of N(0, 1) (or PyTorch's Linear default).
/// `inference_mode`: the table itself is the parameter even with `prefix_projection`, as adapter
/// files hold it (set when an adapter is read).
struct prefix_tuning_config {
  bool enabled = true;  ///< false: no prefix (a plan compiled with it then trains without)
  std::size_t num_virtual_tokens = 20;
  bool prefix_projection = false;
  std::size_t encoder_hidden_size = 0;
  bool init_zero = false;
  bool inference_mode = false;
};

namespace groups {
/// Prefix tuning's table (or its reparametrisation).
struct prefix_tuning {
  static constexpr std::string_view name = "prefix_tuning";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

/// Prefix tuning's parameters (group `prefix_tuning`, trainable) and the per-layer keys and values
/// they give: the prefix source of a plan with `methods::prefix_tuning` (see
/// layers/virtual_tokens.hpp). Names, at the top of the model: `prompt_encoder.embedding.weight`,
/// and with the reparametrisation `prompt_encoder.transform.0.*` (kv_width -> hidden) and
/// `prompt_encoder.transform.2.*` (hidden -> num_layers * 2 * kv_width). Disabled, it has no token
/// and no parameter.
template <Backend B>
class prefix_encoder : public visits_parameters<prefix_encoder<B>> {
  friend visits_parameters<prefix_encoder>;

 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using weight_parameter = parameter<B, groups::prefix_tuning, true>;
  using transform_layer = layers::linear<B, group_set<groups::prefix_tuning>, groups::prefix_tuning, groups::prefix_tuning>;

  prefix_encoder(typename B::context& ctx, std::size_t num_layers, std::size_t kv_heads, std::size_t head_dim,
                 const method_config& cfg, std::uint64_t seed)
      : act_(activation::tanh) {
    const prefix_tuning_config& c = cfg.get<prefix_tuning_config>();
    if (!c.enabled) return;
    tokens_ = detail::checked_virtual_tokens(c.num_virtual_tokens, "prefix_tuning");
    kv_width_ = kv_heads * head_dim;
    layers_ = num_layers;
    const std::size_t width = layers_ * 2 * kv_width_;
    const bool reparametrised = c.prefix_projection && !c.inference_mode;
    init_rng rng(derive_seed(seed, 0xF1E));
    table_.declared = shape{tokens_, reparametrised ? kv_width_ : width};
    layers::detail::init_tensor<B>(ctx, table_.declared, table_.value,
                                   [&] { return c.init_zero && !reparametrised ? 0.0 : rng.normal(0, 1); });
    table_.allocate_grad(ctx);
    if (reparametrised) {
      const std::size_t hidden = c.encoder_hidden_size ? c.encoder_hidden_size : kv_width_;
      first_.emplace(ctx, layers::linear_options{.in_features = kv_width_, .out_features = hidden, .bias = true,
                                                 .name = "prompt_encoder.transform.0", .seed = derive_seed(seed, 0xF1F)});
      second_.emplace(ctx, layers::linear_options{.in_features = hidden, .out_features = width, .bias = true,
                                                  .name = "prompt_encoder.transform.2", .seed = derive_seed(seed, 0xF20),
                                                  .init = c.init_zero ? layers::weight_init::zeros : layers::weight_init::kaiming_uniform});
    }
    keys_.resize(layers_), values_.resize(layers_), key_grads_.resize(layers_), value_grads_.resize(layers_);
  }

  [[nodiscard]] std::size_t tokens() const noexcept { return tokens_; }
  [[nodiscard]] bool reparametrised() const noexcept { return first_.has_value(); }

  /// Computes the table (through the reparametrisation when there is one) and cuts every layer's
  /// keys and values from it. Run once per model forward, before the layers.
  void forward(typename B::context& ctx) {
    if (!tokens_) return;
    const tensor& table = reparametrised() ? second_->forward(ctx, act_.forward(ctx, first_->forward(ctx, table_.value)))
                                           : table_.value;
    for (std::size_t l = 0; l < layers_; ++l) {
      cut(ctx, table, 2 * l, keys_[l]);
      cut(ctx, table, 2 * l + 1, values_[l]);
    }
  }
  /// Layer `l`'s keys and values (tokens, kv_width), and where its backward puts their gradients.
  [[nodiscard]] layers::attention_prefix<tensor> layer(std::size_t l) {
    if (!tokens_) return {};
    return {&keys_.at(l), &values_.at(l), &key_grads_.at(l), &value_grads_.at(l)};
  }
  /// Gathers every layer's gradients into the table's and, with the reparametrisation, takes them
  /// through it. Run once after every layer's backward.
  void backward(typename B::context& ctx) {
    if (!tokens_) return;
    dtable_.resize(shape{tokens_, layers_ * 2 * kv_width_});
    for (std::size_t l = 0; l < layers_; ++l) {
      paste(ctx, key_grads_[l], 2 * l, dtable_);
      paste(ctx, value_grads_[l], 2 * l + 1, dtable_);
    }
    if (reparametrised()) B::axpy(ctx, value_type(1), first_->backward(ctx, act_.backward(ctx, second_->backward(ctx, dtable_))), table_.grad);
    else B::axpy(ctx, value_type(1), dtable_, table_.grad);
  }
  weight_parameter& table() noexcept { return table_; }

 private:
  // Column block `block` (of kv_width) of `table` -> `out` (tokens, kv_width), and back.
  void cut(typename B::context& ctx, const tensor& table, std::size_t block, tensor& out) {
    out.resize(shape{tokens_, kv_width_});
    B::copy_batched(ctx, tokens_, kv_width_, matrix_batch<const value_type*>{table.data() + block * kv_width_, table.cols(), 0, 0},
                    matrix_batch<value_type*>{out.data(), kv_width_, 0, 0}, 1, 1);
  }
  void paste(typename B::context& ctx, const tensor& part, std::size_t block, tensor& table) {
    if (!(part.shape() == shape{tokens_, kv_width_}))
      throw error("prefix_tuning: a layer's prefix gradient is missing; run every layer's backward before the prefix's");
    B::copy_batched(ctx, tokens_, kv_width_, matrix_batch<const value_type*>{part.data(), kv_width_, 0, 0},
                    matrix_batch<value_type*>{table.data() + block * kv_width_, table.cols(), 0, 0}, 1, 1);
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string&, F& f) {
    if (!self.tokens_) return;
    f(detail::prompt_table_name, self.table_);
    if (self.first_) {
      self.first_->visit_parameters("prompt_encoder.transform.0.", f);
      self.second_->visit_parameters("prompt_encoder.transform.2.", f);
    }
  }

  std::size_t tokens_ = 0, kv_width_ = 0, layers_ = 0;
  weight_parameter table_;
  std::optional<transform_layer> first_, second_;
  layers::activation_layer<B> act_;
  std::vector<tensor> keys_, values_, key_grads_, value_grads_;
  tensor dtable_;
};

namespace detail {
/// Prefix tuning in Hugging Face PEFT's files: `peft_type` PREFIX_TUNING, `PrefixTuningConfig`'s
/// keys, the table as `prompt_embeddings` (computed through the reparametrisation when the model has
/// one, as PEFT saves it), the head under `base_model.`.
struct prefix_tuning_peft_format {
  static constexpr std::string_view peft_type = "PREFIX_TUNING";

  static void write_config(nlohmann::json& j, const prefix_tuning_config& c, const io::adapter_contents&) {
    write_prompt_learning_common(j, c.num_virtual_tokens);
    j.update({{"prefix_projection", c.prefix_projection},
              {"encoder_hidden_size", c.encoder_hidden_size ? nlohmann::json(c.encoder_hidden_size) : nlohmann::json(nullptr)},
              {"init_weights", c.init_zero ? nlohmann::json("zero") : nlohmann::json(nullptr)}});
  }

  /// The file holds the table itself, so the model is built for inference (`inference_mode`).
  static void read_config(const io::json_config& f, prefix_tuning_config& c) {
    read_prompt_learning_common(f, c.num_virtual_tokens);
    f.read("prefix_projection", c.prefix_projection);
    f.read("encoder_hidden_size", c.encoder_hidden_size);
    if (const auto i = f.string("init_weights")) {
      if (*i != "zero") f.fail("'init_weights' '" + *i + "' is not \"zero\" or null");
      c.init_zero = true;
    }
    c.inference_mode = true;
  }

  static std::string parameter_name(std::string key) { return prompt_learning_parameter_name(std::move(key)); }

  /// With the reparametrisation, its embeddings and two layers become the table they compute, in
  /// double precision: tanh(E W1^T + b1) W2^T + b2.
  static void pack_tensors(std::vector<io::tensor_to_write>& tensors) {
    const std::string p = std::string("base_model.model.") + "prompt_encoder.";
    auto find = [&](const std::string& name) -> const io::tensor_to_write* {
      for (const auto& t : tensors)
        if (t.name == p + name) return &t;
      return nullptr;
    };
    const auto *e = find("embedding.weight"), *w1 = find("transform.0.weight"), *b1 = find("transform.0.bias"),
               *w2 = find("transform.2.weight"), *b2 = find("transform.2.bias");
    if (e && w1 && b1 && w2 && b2) {
      const std::size_t tokens = e->shape.at(0), in = e->shape.at(1), hidden = w1->shape.at(0), width = w2->shape.at(0);
      if (w1->shape.at(1) != in || w2->shape.at(1) != hidden || b1->shape.at(0) != hidden || b2->shape.at(0) != width)
        throw error("prefix_tuning: the reparametrisation's shapes do not chain");
      const auto ev = f32_values(*e), w1v = f32_values(*w1), b1v = f32_values(*b1), w2v = f32_values(*w2), b2v = f32_values(*b2);
      std::vector<double> table(tokens * width), h(hidden);
      for (std::size_t t = 0; t < tokens; ++t) {
        for (std::size_t k = 0; k < hidden; ++k) {
          double s = b1v[k];
          for (std::size_t i = 0; i < in; ++i) s += w1v[k * in + i] * ev[t * in + i];
          h[k] = std::tanh(s);
        }
        for (std::size_t o = 0; o < width; ++o) {
          double s = b2v[o];
          for (std::size_t k = 0; k < hidden; ++k) s += w2v[o * hidden + k] * h[k];
          table[t * width + o] = s;
        }
      }
      std::vector<io::tensor_to_write> kept;
      for (auto& t : tensors)
        if (t.name.rfind(p, 0) != 0) kept.push_back(std::move(t));
      kept.push_back(io::tensor_to_write::f32(p + "embedding.weight", {tokens, width}, std::span<const double>(table)));
      tensors = std::move(kept);
    }
    prompt_learning_keys(tensors);
  }
};
}  // namespace detail

/// PEFT method: prefix tuning. It wraps no layer; models give every attention layer its prefix
/// (`plan::prefix`). Not mergeable.
struct prefix_tuning {
  static constexpr std::string_view name = "prefix_tuning";
  static constexpr int stage = 0;
  static constexpr bool mergeable = false;
  static constexpr std::string_view not_mergeable_because =
      "its prefix is attended to, not added to any weight; deploy the base model with the adapter";
  using options = prefix_tuning_config;
  using groups = group_set<peft::groups::prefix_tuning>;
  using peft_format = detail::prefix_tuning_peft_format;
  template <class Role>
  static constexpr bool targets = false;
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = Inner;
  template <class B>
  using prefix = prefix_encoder<B>;
};

}  // namespace peft::methods
