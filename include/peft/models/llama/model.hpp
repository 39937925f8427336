#pragma once
/// \file Llama-family decoder built from a plan (Hugging Face's `LlamaForCausalLM`, with the same
/// parameter names), assembled from the generic blocks of `layers/`: pre-norm blocks of causal
/// grouped-query attention with rotary embeddings and a gated (SwiGLU) feed-forward, RMS norms, and
/// a language-model head that may share the token embedding. Training runs forward and backward
/// over whole sequences; generation runs `forward_cached` over a KV cache.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/attention.hpp"
#include "peft/layers/embedding.hpp"
#include "peft/layers/feed_forward.hpp"
#include "peft/layers/linear.hpp"
#include "peft/layers/rms_norm.hpp"
#include "peft/layers/virtual_tokens.hpp"
#include "peft/methods/plan.hpp"
#include "peft/models/llama/config.hpp"

namespace peft::models {

/// Token ids of `batch_size` sequences of `seq_len` (row-major), for a causal LM. `labels` (same
/// layout, or empty for no loss) are the tokens to predict at each position *before* shifting, as
/// Hugging Face takes them: position t's logits are scored against labels[t + 1]; -100 is ignored
/// (prompt and padding). Sequences are right-padded; the causal mask keeps real tokens from ever
/// seeing the padding after them.
struct decoder_batch {
  std::size_t batch_size = 0, seq_len = 0;
  std::vector<std::int32_t> input_ids;
  std::vector<std::int32_t> labels;
};

/// The target of each position for next-token cross entropy, row-major like the logits: position t
/// of a sequence is scored against labels[t + 1] (input_ids when `labels` is empty), and the last
/// position of each sequence against nothing (-100, the ignore index).
inline std::vector<std::int32_t> next_token_targets(const decoder_batch& b) {
  const auto& labels = b.labels.empty() ? b.input_ids : b.labels;
  if (labels.size() != b.batch_size * b.seq_len)
    throw shape_error(peft::detail::concat("next_token_targets: ", labels.size(), " labels for ", b.batch_size, " x ", b.seq_len));
  std::vector<std::int32_t> t(labels.size(), -100);
  for (std::size_t s = 0; s < b.batch_size; ++s)
    for (std::size_t i = 0; i + 1 < b.seq_len; ++i) t[s * b.seq_len + i] = labels[s * b.seq_len + i + 1];
  return t;
}

/// One decoder block: h = x + attn(norm1(x)); y = h + mlp(norm2(h)). Names under the block prefix:
/// `input_layernorm`, `self_attn.{q,k,v,o}_proj`, `post_attention_layernorm`,
/// `mlp.{gate,up,down}_proj`.
template <Backend B, class Plan>
class llama_block : public visits_parameters<llama_block<B, Plan>> {
  friend visits_parameters<llama_block>;

 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using norm_layer = typename Plan::template rms_norm<B>;

  llama_block(typename B::context& ctx, const llama_config& c, const method_config& cfg, const std::string& prefix,
              std::uint64_t seed, layers::weight_init init = layers::weight_init::normal)
      : norm1_(ctx, c.hidden_size, c.rms_norm_eps, prefix + "input_layernorm", cfg),
        attn_(ctx,
              layers::attention_options{
                  .hidden = c.hidden_size, .heads = c.num_attention_heads, .kv_heads = c.num_key_value_heads,
                  .head_dim = c.head_size(), .causal = true, .qkv_bias = c.attention_bias, .output_bias = c.attention_bias,
                  .dropout = 0, .rope = layers::rotary_options{.pairing = c.pairing, .theta = c.rope_theta, .rotary_dims = c.rope_dims},
                  .init = init, .init_std = c.initializer_range, .name = prefix + "self_attn",
                  .module_names = {"q_proj", "k_proj", "v_proj", "o_proj"}, .seed = derive_seed(seed, 1)},
              cfg),
        norm2_(ctx, c.hidden_size, c.rms_norm_eps, prefix + "post_attention_layernorm", cfg),
        mlp_(ctx,
             layers::feed_forward_options{.hidden = c.hidden_size, .intermediate = c.intermediate_size,
                                          .act = activation::silu, .gated = true, .bias = c.mlp_bias,
                                          .init = init, .init_std = c.initializer_range, .name = prefix + "mlp", .module_names = {"up_proj", "down_proj", "gate_proj"},
                                          .seed = derive_seed(seed, 2)},
             cfg) {}

  /// `in`: the attention's per-call inputs (prefix tuning's prefix and the position it shifts to).
  const tensor& forward(typename B::context& ctx, const tensor& x, const layers::attention_inputs<tensor>& in = {}) {
    B::copy(ctx, x, h_);
    B::axpy(ctx, value_type(1), attn_.forward(ctx, norm1_.forward(ctx, x), in), h_);
    B::copy(ctx, h_, y_);
    B::axpy(ctx, value_type(1), mlp_.forward(ctx, norm2_.forward(ctx, h_)), y_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    tensor &dh = block_buffer<B>(ctx, dh_), &dx = block_buffer<B>(ctx, dx_);
    B::copy(ctx, dy, dh);
    B::axpy(ctx, value_type(1), norm2_.backward(ctx, mlp_.backward(ctx, dy)), dh);
    B::copy(ctx, dh, dx);
    B::axpy(ctx, value_type(1), norm1_.backward(ctx, attn_.backward(ctx, dh)), dx);
    return dx;
  }
  /// The next tokens of each sequence against this block's KV cache (no backward).
  const tensor& forward_cached(typename B::context& ctx, const tensor& x, layers::kv_cache<B>& cache, const tensor* key_mask) {
    B::copy(ctx, x, h_);
    B::axpy(ctx, value_type(1), attn_.forward_cached(ctx, norm1_.forward(ctx, x), cache, key_mask), h_);
    B::copy(ctx, h_, y_);
    B::axpy(ctx, value_type(1), mlp_.forward(ctx, norm2_.forward(ctx, h_)), y_);
    return y_;
  }

  void merge(typename B::context& ctx) {
    merge_if_possible(norm1_, ctx), attn_.merge(ctx), merge_if_possible(norm2_, ctx), mlp_.merge(ctx);
  }
  void unmerge(typename B::context& ctx) {
    unmerge_if_possible(norm1_, ctx), attn_.unmerge(ctx), unmerge_if_possible(norm2_, ctx), mlp_.unmerge(ctx);
  }
  layers::multi_head_attention<B, Plan>& attention() noexcept { return attn_; }
  layers::feed_forward<B, Plan>& mlp() noexcept { return mlp_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.norm1_.visit_parameters(prefix + "input_layernorm.", f);
    self.attn_.visit_parameters(prefix + "self_attn.", f);
    self.norm2_.visit_parameters(prefix + "post_attention_layernorm.", f);
    self.mlp_.visit_parameters(prefix + "mlp.", f);
  }

  norm_layer norm1_;
  layers::multi_head_attention<B, Plan> attn_;
  norm_layer norm2_;
  layers::feed_forward<B, Plan> mlp_;
  tensor h_, y_, dh_, dx_;
};

/// Hugging Face's `LlamaForCausalLM`: `model.embed_tokens`, `model.layers.N.*`, `model.norm`, and
/// `lm_head` (absent when tied to the embedding, as SmolLM2 is). The plan's prompt and prefix sources
/// (prompt and prefix tuning, `prompt_encoder.*`, one of them at a time) work as PEFT runs them: the
/// virtual tokens come first at positions 0..n-1, or every layer's keys and values start with the
/// prefix and the tokens' positions after it; logits are returned for the sequence's own tokens
/// only, and generation starts its caches with them. The token embedding and an untied
/// head train only under full fine-tuning (role `embeddings`); frozen ones may stay packed
/// (quantized) when the backend has `PackedProducts`.
template <Backend B, class Plan>
class llama_for_causal_lm : public visits_parameters<llama_for_causal_lm<B, Plan>> {
  friend visits_parameters<llama_for_causal_lm>;

 public:
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using embedding_layer = typename Plan::template embedding<B>;
  using head_layer = layers::linear<B, typename Plan::template trainable_groups<roles::embeddings>>;
  using block = llama_block<B, Plan>;

  /// Weights drawn as Hugging Face initialises them (N(0, initializer_range)), or with `init` none
  /// left unallocated for a checkpoint loader (`io::load_gguf`) to fill; method parameters (LoRA)
  /// are initialised either way.
  llama_for_causal_lm(typename B::context& ctx, const llama_config& c, const method_config& cfg = {}, std::uint64_t seed = 0,
                      layers::weight_init init = layers::weight_init::normal)
      : config_(checked(c)),
        embed_(ctx, c.vocab_size, c.hidden_size, "model.embed_tokens", derive_seed(seed, 1), c.initializer_range, init),
        norm_(ctx, c.hidden_size, c.rms_norm_eps, "model.norm", cfg),
        prompt_(ctx, c.vocab_size, c.hidden_size, cfg, derive_seed(seed, 3)),
        prefix_(ctx, c.num_hidden_layers, c.num_key_value_heads, c.head_size(), cfg, derive_seed(seed, 4)) {
    if (prompt_.tokens() && prefix_.tokens())
      throw config_error("llama: prompt tuning and prefix tuning cannot run together (PEFT gives a model one prompt encoder)");
    layers_.reserve(c.num_hidden_layers);
    for (std::size_t i = 0; i < c.num_hidden_layers; ++i)
      layers_.emplace_back(ctx, c, cfg, "model.layers." + std::to_string(i) + ".", derive_seed(seed, 100 + i), init);
    if (!c.tie_word_embeddings)
      head_.emplace(ctx, layers::linear_options{.in_features = c.hidden_size, .out_features = c.vocab_size, .bias = false,
                                                .name = "lm_head", .seed = derive_seed(seed, 2),
                                                .init = init, .init_std = c.initializer_range});
    prepare_methods<Plan>(ctx, *this, cfg);
  }

  /// Logits (batch, seq, vocab) of every position of the sequence's own tokens.
  const tensor& forward(typename B::context& ctx, const decoder_batch& batch) {
    check_batch(batch.batch_size, batch.seq_len, batch.input_ids.size(), virtual_tokens());
    const std::size_t virt = prompt_.tokens(), pre = prefix_.tokens();
    const tensor* table = virt ? &prompt_.table(ctx, embed_) : nullptr;  // first: it may read the embedding
    const tensor* h = &embed_.forward(ctx, batch.input_ids, shape{batch.batch_size, batch.seq_len, config_.hidden_size});
    if (virt) h = &with_prompt(ctx, *table, *h);
    prefix_.forward(ctx);
    for (std::size_t i = 0; i < layers_.size(); ++i) h = &layers_[i].forward(ctx, *h, {.position_offset = pre, .prefix = prefix_.layer(i)});
    if (virt) {  // the virtual positions predict nothing
      own_.resize(shape{batch.batch_size, batch.seq_len, config_.hidden_size});
      layers::copy_sequence_rows<B>(ctx, *h, virt, own_, 0, batch.seq_len);
      h = &own_;
    }
    return head_forward(ctx, norm_.forward(ctx, *h));
  }
  /// Backward from the logits' gradient; accumulates into the trainable parameters.
  void backward(typename B::context& ctx, const tensor& dlogits) {
    const tensor* d = &norm_.backward(ctx, head_backward(ctx, dlogits));
    const std::size_t virt = prompt_.tokens();
    if (virt) {
      dall_.resize(shape{d->shape()[0], virt + d->shape()[1], d->cols()});
      B::fill(ctx, dall_, value_type(0));
      layers::copy_sequence_rows<B>(ctx, *d, 0, dall_, virt, d->shape()[1]);
      d = &dall_;
    }
    for (std::size_t i = layers_.size(); i-- > 0;) {
      const auto block = open_block<B>(ctx, i);
      d = &layers_[i].backward(ctx, *d);
    }
    prefix_.backward(ctx);
    if (virt) {
      prompt_.accumulate(ctx, *d);
      if constexpr (embedding_layer::weight_parameter::trainable) {
        dwords_.resize(shape{d->shape()[0], d->shape()[1] - virt, d->cols()});
        layers::copy_sequence_rows<B>(ctx, *d, virt, dwords_, 0, dwords_.shape()[1]);
        embed_.backward(ctx, dwords_);
      }
    } else {
      embed_.backward(ctx, *d);
    }
  }
  /// Virtual tokens before every sequence (prompt tuning) and prefix tokens every attention layer
  /// sees first (prefix tuning): each takes that many positions of the context.
  [[nodiscard]] std::size_t virtual_tokens() const noexcept { return prompt_.tokens() + prefix_.tokens(); }

  /// KV caches of every block, for `forward_cached`.
  struct cache_state {
    std::vector<layers::kv_cache<B>> layers;
    [[nodiscard]] std::size_t length() const noexcept { return layers.empty() ? 0 : layers.front().length; }
  };
  /// Empty caches for `batch` sequences of up to `max_tokens` tokens (prompt and generated), with
  /// room for the virtual tokens besides.
  cache_state make_cache(std::size_t batch, std::size_t max_tokens) const {
    if (max_tokens + virtual_tokens() > config_.max_position_embeddings)
      throw config_error(peft::detail::concat("llama: ", max_tokens, " tokens (and ", virtual_tokens(),
                                              " virtual) exceed the context length ", config_.max_position_embeddings));
    cache_state s;
    s.layers.resize(layers_.size());
    for (auto& c : s.layers) c.reserve(batch, max_tokens + virtual_tokens(), config_.num_key_value_heads * config_.head_size());
    return s;
  }
  /// The next `new_tokens` tokens of each of the cache's sequences (ids row-major, batch x new):
  /// returns the logits (batch, vocab) at each sequence's last new position. `key_mask` (batch,
  /// tokens given so far + new, 1 token / 0 padding) hides left padding of batched prompts; null
  /// means none. The first call on an empty cache puts the virtual tokens (or the prefix) in it
  /// first; the mask never covers them, they are always seen.
  const tensor& forward_cached(typename B::context& ctx, std::span<const std::int32_t> ids, std::size_t new_tokens,
                               cache_state& cache, const tensor* key_mask = nullptr) {
    if (cache.layers.size() != layers_.size() || cache.layers.empty())
      throw config_error("llama: forward_cached needs a cache from make_cache");
    const std::size_t batch = cache.layers.front().batch, virt = virtual_tokens();
    check_batch(batch, new_tokens, ids.size());
    const bool first = cache.length() == 0;
    const tensor* table = first && prompt_.tokens() ? &prompt_.table(ctx, embed_) : nullptr;  // before the embedding runs
    const tensor* h = &embed_.forward(ctx, ids, shape{batch, new_tokens, config_.hidden_size});
    if (first && prefix_.tokens()) {  // the prefix as already cached keys and values
      prefix_.forward(ctx);
      for (std::size_t i = 0; i < layers_.size(); ++i) {
        auto& c = cache.layers[i];
        const auto p = prefix_.layer(i);
        layers::broadcast_sequence_rows<B>(ctx, *p.keys, c.keys);
        layers::broadcast_sequence_rows<B>(ctx, *p.values, c.values);
        c.length = prefix_.tokens();
      }
    }
    if (first && prompt_.tokens()) {
      h = &with_prompt(ctx, *table, *h);
      new_tokens += prompt_.tokens();
    }
    if (key_mask && virt) {  // the mask from the caller covers its own tokens; the virtual ones are seen
      const auto given = B::copy_to_host(ctx, *key_mask);
      const std::size_t cols = key_mask->cols();
      mask_host_.assign(batch * (virt + cols), value_type(1));
      for (std::size_t b = 0; b < batch; ++b)
        std::copy_n(given.begin() + std::ptrdiff_t(b * cols), cols, mask_host_.begin() + std::ptrdiff_t(b * (virt + cols) + virt));
      B::copy_from_host(ctx, mask_host_, shape{batch, virt + cols}, mask_);
      key_mask = &mask_;
    }
    for (std::size_t i = 0; i < layers_.size(); ++i) h = &layers_[i].forward_cached(ctx, *h, cache.layers[i], key_mask);
    // Only the last position of each sequence is scored.
    last_.resize(shape{batch, config_.hidden_size});
    using cptr = const value_type*;
    const std::size_t w = config_.hidden_size;
    B::copy_batched(ctx, 1, w, matrix_batch<cptr>{h->data() + (new_tokens - 1) * w, w, 0, new_tokens * w},
                    matrix_batch<value_type*>{last_.data(), w, 0, w}, batch, 1);
    return head_forward(ctx, norm_.forward(ctx, last_));
  }

  void merge(typename B::context& ctx) {
    for (auto& l : layers_) l.merge(ctx);
    merge_if_possible(norm_, ctx);
  }
  void unmerge(typename B::context& ctx) {
    for (auto& l : layers_) l.unmerge(ctx);
    unmerge_if_possible(norm_, ctx);
  }

  [[nodiscard]] const llama_config& config() const noexcept { return config_; }
  std::vector<block>& layers() noexcept { return layers_; }
  embedding_layer& embedding() noexcept { return embed_; }

  /// For Q and K projections of a model whose rotary pairing is half-split (Hugging Face's), the
  /// GGUF row of each of its rows: GGUF converters reorder every head's rows so that rotary pairs
  /// are adjacent (row 2i + j of a head holds Hugging Face's row j * head_dim / 2 + i). Loading
  /// through this order gives exactly Hugging Face's weights. Nullopt for every other parameter, and
  /// for a model that pairs adjacent dimensions itself.
  [[nodiscard]] std::optional<std::vector<std::size_t>> gguf_row_order(const std::string& name) const {
    if (config_.pairing != rope_pairing::half_split) return std::nullopt;
    const bool q = name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias");
    const bool k = name.ends_with("self_attn.k_proj.weight") || name.ends_with("self_attn.k_proj.bias");
    if (!q && !k) return std::nullopt;
    const std::size_t d = config_.head_size(), heads = q ? config_.num_attention_heads : config_.num_key_value_heads;
    std::vector<std::size_t> order(heads * d);
    for (std::size_t h = 0; h < heads; ++h)
      for (std::size_t i = 0; i < d / 2; ++i)
        for (std::size_t j = 0; j < 2; ++j) order[h * d + j * (d / 2) + i] = h * d + 2 * i + j;
    return order;
  }

  /// GGUF's name of a parameter ("model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"),
  /// or nullopt for parameters that GGUF files do not hold (method parameters).
  static std::optional<std::string> gguf_name(const std::string& name) {
    static const std::pair<const char*, const char*> block_names[] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"}, {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},       {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.bias", "attn_output.bias"},  {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},    {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"}};
    if (name == "model.embed_tokens.weight") return "token_embd.weight";
    if (name == "model.norm.weight") return "output_norm.weight";
    if (name == "lm_head.weight") return "output.weight";
    const std::string layers = "model.layers.";
    if (name.rfind(layers, 0) != 0) return std::nullopt;
    const std::size_t dot = name.find('.', layers.size());
    if (dot == std::string::npos) return std::nullopt;
    const std::string index = name.substr(layers.size(), dot - layers.size()), rest = name.substr(dot + 1);
    for (const auto& [hf, gguf] : block_names)
      if (rest == hf) return "blk." + index + "." + gguf;
    return std::nullopt;
  }

 private:
  static llama_config checked(const llama_config& c) {
    c.validate();
    return c;
  }
  void check_batch(std::size_t batch, std::size_t seq, std::size_t ids, std::size_t virt = 0) const {
    if (batch == 0 || seq == 0 || ids != batch * seq)
      throw shape_error(peft::detail::concat("llama: ", ids, " token ids for ", batch, " sequences of ", seq));
    if (seq + virt > config_.max_position_embeddings)
      throw shape_error(peft::detail::concat("llama: sequence length ", seq, " (and ", virt, " virtual tokens) exceeds the context length ",
                                             config_.max_position_embeddings));
  }
  /// x (batch, seq, hidden) with prompt tuning's table before every sequence.
  const tensor& with_prompt(typename B::context& ctx, const tensor& table, const tensor& x) {
    const std::size_t virt = table.rows();
    prompted_.resize(shape{x.shape()[0], virt + x.shape()[1], x.cols()});
    layers::broadcast_sequence_rows<B>(ctx, table, prompted_);
    layers::copy_sequence_rows<B>(ctx, x, 0, prompted_, virt, x.shape()[1]);
    return prompted_;
  }
  /// logits = h E^T (tied) or the untied head.
  const tensor& head_forward(typename B::context& ctx, const tensor& h) {
    if (head_) return head_->forward(ctx, h);
    hidden_ = &h;
    logits_.resize(h.shape().with_cols(config_.vocab_size));
    const auto& table = embed_.weight();
    if (const packed_matrix* w = packed(table)) {
      if constexpr (PackedProducts<B>) B::gemm_packed(ctx, op::t, value_type(1), h, *w, value_type(0), logits_);
    } else {
      B::gemm(ctx, op::n, op::t, value_type(1), h, table.value, value_type(0), logits_);
    }
    return logits_;
  }
  const tensor& head_backward(typename B::context& ctx, const tensor& dlogits) {
    if (head_) return head_->backward(ctx, dlogits);
    auto& table = embed_.weight();
    if constexpr (embedding_layer::weight_parameter::trainable)
      B::gemm(ctx, op::t, op::n, value_type(1), dlogits, *hidden_, value_type(1), table.grad);
    dhidden_.resize(hidden_->shape());
    if (const packed_matrix* w = packed(table)) {
      if constexpr (PackedProducts<B>) B::gemm_packed(ctx, op::n, value_type(1), dlogits, *w, value_type(0), dhidden_);
    } else {
      B::gemm(ctx, op::n, op::n, value_type(1), dlogits, table.value, value_type(0), dhidden_);
    }
    return dhidden_;
  }
  template <class P>
  static const packed_matrix* packed(const P& p) {
    if constexpr (P::trainable) return nullptr;
    else return p.packed ? &*p.packed : nullptr;
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.embed_.visit_parameters(prefix + "model.embed_tokens.", f);
    for (std::size_t i = 0; i < self.layers_.size(); ++i)
      self.layers_[i].visit_parameters(prefix + "model.layers." + std::to_string(i) + ".", f);
    self.norm_.visit_parameters(prefix + "model.norm.", f);
    if (self.head_) self.head_->visit_parameters(prefix + "lm_head.", f);
    self.prompt_.visit_parameters("", f);  // named at the top of the model
    self.prefix_.visit_parameters("", f);
  }

  llama_config config_;
  embedding_layer embed_;
  std::vector<block> layers_;
  typename Plan::template rms_norm<B> norm_;
  std::optional<head_layer> head_;
  typename Plan::template prompt<B> prompt_;
  typename Plan::template prefix<B> prefix_;
  const tensor* hidden_ = nullptr;
  tensor logits_, dhidden_, last_, own_, dall_, dwords_, prompted_, mask_;
  std::vector<value_type> mask_host_;
};

}  // namespace peft::models
