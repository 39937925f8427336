#pragma once
/// \file `peft::layers::bert_attention`: BERT's multi-head self-attention sublayer with its output
/// projection, dropout, residual connection and post-layer-norm (HF `BertAttention`).

#include <cmath>
#include <cstdint>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/linear.hpp"
#include "peft/models/bert_config.hpp"

namespace peft::layers {

/// Options of a BERT linear layer: bias, N(0, initializer_range) weights and zero bias, as
/// transformers initialises BERT.
inline linear_options bert_linear(const models::bert_config& c, std::size_t in, std::size_t out, std::string name,
                                  std::uint64_t seed) {
  return {.in_features = in, .out_features = out, .bias = true, .name = std::move(name), .seed = seed,
          .init = weight_init::normal, .init_std = c.initializer_range};
}

/// out = LayerNorm(x + dropout(O(attention(Q x, K x, V x)))), with
/// attention = softmax(Q Kᵀ / sqrt(d) + mask) V per head. The four projections are the plan's layers
/// for roles query, key, value and attention_output, so LoRA, BitFit and adapters reach them. Scores
/// and context are computed by two-level batched GEMMs straight on the (batch, seq, heads * d) layout:
/// no per-head loop and no transpose. Keys where `key_mask` is 0 get probability 0.
/// Names (HF): `self.query.*`, `self.key.*`, `self.value.*`, `output.dense.*`, `output.LayerNorm.*`.
template <Backend B, class Plan>
class bert_attention : public visits_parameters<bert_attention<B, Plan>> {
  friend visits_parameters<bert_attention>;
 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using query_layer = typename Plan::template linear<roles::query, B>;
  using key_layer = typename Plan::template linear<roles::key, B>;
  using value_layer = typename Plan::template linear<roles::value, B>;
  using output_layer = typename Plan::template linear<roles::attention_output, B>;
  using norm_layer = typename Plan::template norm<B>;

  bert_attention(typename B::context& ctx, const models::bert_config& c, const method_config& cfg, const std::string& name,
                 std::uint64_t seed)
      : heads_(c.num_attention_heads),
        head_dim_(c.head_dim()),
        q_(ctx, proj(c, name + ".self.query", derive_seed(seed, 1)), cfg),
        k_(ctx, proj(c, name + ".self.key", derive_seed(seed, 2)), cfg),
        v_(ctx, proj(c, name + ".self.value", derive_seed(seed, 3)), cfg),
        attn_drop_(c.attention_probs_dropout_prob, name + ".self.dropout"),
        o_(ctx, proj(c, name + ".output.dense", derive_seed(seed, 4)), cfg),
        hidden_drop_(c.hidden_dropout_prob, name + ".output.dropout"),
        norm_(ctx, c.hidden_size, c.layer_norm_eps, name + ".output.LayerNorm") {}

  /// x: (batch, seq, hidden); key_mask: (batch, seq) of 1 (token) / 0 (padding).
  const tensor& forward(typename B::context& ctx, const tensor& x, const tensor& key_mask) {
    const std::size_t hidden = heads_ * head_dim_;
    if (x.shape().rank() != 3 || x.cols() != hidden)
      throw shape_error(peft::detail::concat("attention: input shape ", x.shape(), " is not (batch, seq, ", hidden, ")"));
    batch_ = x.shape()[0];
    seq_ = x.shape()[1];
    if (!(key_mask.shape() == shape{batch_, seq_}))
      throw shape_error(peft::detail::concat("attention: mask shape ", key_mask.shape(), " differs from (batch, seq) = [",
                                             batch_, ", ", seq_, "]"));
    x_ = &x;
    const tensor& q = q_.forward(ctx, x);
    const tensor& k = k_.forward(ctx, x);
    const tensor& v = v_.forward(ctx, x);
    q_out_ = &q;
    k_out_ = &k;
    v_out_ = &v;
    scores_.resize(shape{batch_, heads_, seq_, seq_});
    // scores[b, h] = Q[b, :, h] K[b, :, h]^T
    B::gemm_batched(ctx, op::n, op::t, seq_, seq_, head_dim_, value_type(1), heads_view(q), heads_view(k), value_type(0),
                    scores_view(scores_), batch_, heads_);
    B::masked_softmax(ctx, scores_, key_mask, heads_ * seq_, value_type(1 / std::sqrt(double(head_dim_))), probs_);
    const tensor& p = attn_drop_.forward(ctx, probs_);
    dropped_probs_ = &p;
    context_.resize(shape{batch_, seq_, hidden});
    // context[b, :, h] = P[b, h] V[b, :, h]
    B::gemm_batched(ctx, op::n, op::n, seq_, head_dim_, seq_, value_type(1), scores_cview(p), heads_view(v), value_type(0),
                    heads_mview(context_), batch_, heads_);
    const tensor& a = hidden_drop_.forward(ctx, o_.forward(ctx, context_));
    B::copy(ctx, a, residual_);
    B::axpy(ctx, value_type(1), x, residual_);
    return norm_.forward(ctx, residual_);
  }

  const tensor& backward(typename B::context& ctx, const tensor& dout) {
    if (!x_) throw error("attention: backward called before forward");
    const tensor& dres = norm_.backward(ctx, dout);
    B::copy(ctx, dres, dx_);  // residual path
    const tensor& dcontext = o_.backward(ctx, hidden_drop_.backward(ctx, dres));
    dprobs_.resize(scores_.shape());
    // dP = dContext V^T ; dV = P^T dContext
    B::gemm_batched(ctx, op::n, op::t, seq_, seq_, head_dim_, value_type(1), heads_view(dcontext), heads_view(*v_out_),
                    value_type(0), scores_view(dprobs_), batch_, heads_);
    dv_.resize(x_->shape());
    B::gemm_batched(ctx, op::t, op::n, seq_, head_dim_, seq_, value_type(1), scores_cview(*dropped_probs_),
                    heads_view(dcontext), value_type(0), heads_mview(dv_), batch_, heads_);
    const tensor& dp = attn_drop_.backward(ctx, dprobs_);
    B::softmax_backward(ctx, probs_, dp, value_type(1 / std::sqrt(double(head_dim_))), dscores_);
    // dQ = dS K ; dK = dS^T Q
    dq_.resize(x_->shape());
    dk_.resize(x_->shape());
    B::gemm_batched(ctx, op::n, op::n, seq_, head_dim_, seq_, value_type(1), scores_cview(dscores_), heads_view(*k_out_),
                    value_type(0), heads_mview(dq_), batch_, heads_);
    B::gemm_batched(ctx, op::t, op::n, seq_, head_dim_, seq_, value_type(1), scores_cview(dscores_), heads_view(*q_out_),
                    value_type(0), heads_mview(dk_), batch_, heads_);
    B::axpy(ctx, value_type(1), q_.backward(ctx, dq_), dx_);
    B::axpy(ctx, value_type(1), k_.backward(ctx, dk_), dx_);
    B::axpy(ctx, value_type(1), v_.backward(ctx, dv_), dx_);
    return dx_;
  }

  void merge(typename B::context& ctx) {
    merge_if_possible(q_, ctx), merge_if_possible(k_, ctx), merge_if_possible(v_, ctx), merge_if_possible(o_, ctx);
    merge_if_possible(norm_, ctx);
  }
  void unmerge(typename B::context& ctx) {
    unmerge_if_possible(q_, ctx), unmerge_if_possible(k_, ctx), unmerge_if_possible(v_, ctx), unmerge_if_possible(o_, ctx);
    unmerge_if_possible(norm_, ctx);
  }

  query_layer& query() noexcept { return q_; }
  key_layer& key() noexcept { return k_; }
  value_layer& value() noexcept { return v_; }
  output_layer& output() noexcept { return o_; }
  norm_layer& norm() noexcept { return norm_; }

 private:
  static linear_options proj(const models::bert_config& c, std::string name, std::uint64_t seed) {
    return bert_linear(c, c.hidden_size, c.hidden_size, std::move(name), seed);
  }
  // Head h of sequence b inside a (batch, seq, heads * d) tensor.
  matrix_batch<const value_type*> heads_view(const tensor& t) const {
    return {t.data(), heads_ * head_dim_, head_dim_, seq_ * heads_ * head_dim_};
  }
  matrix_batch<value_type*> heads_mview(tensor& t) const {
    return {t.data(), heads_ * head_dim_, head_dim_, seq_ * heads_ * head_dim_};
  }
  // Matrix (b, h) of a (batch, heads, seq, seq) tensor.
  matrix_batch<value_type*> scores_view(tensor& t) const { return {t.data(), seq_, seq_ * seq_, heads_ * seq_ * seq_}; }
  matrix_batch<const value_type*> scores_cview(const tensor& t) const {
    return {t.data(), seq_, seq_ * seq_, heads_ * seq_ * seq_};
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.q_.visit_parameters(prefix + "self.query.", f);
    self.k_.visit_parameters(prefix + "self.key.", f);
    self.v_.visit_parameters(prefix + "self.value.", f);
    self.o_.visit_parameters(prefix + "output.dense.", f);
    self.norm_.visit_parameters(prefix + "output.LayerNorm.", f);
  }

  std::size_t heads_, head_dim_, batch_ = 0, seq_ = 0;
  query_layer q_;
  key_layer k_;
  value_layer v_;
  dropout<B> attn_drop_;
  output_layer o_;
  dropout<B> hidden_drop_;
  norm_layer norm_;
  const tensor *x_ = nullptr, *q_out_ = nullptr, *k_out_ = nullptr, *v_out_ = nullptr, *dropped_probs_ = nullptr;
  tensor scores_, probs_, context_, residual_, dprobs_, dscores_, dq_, dk_, dv_, dx_;
};

}  // namespace peft::layers
