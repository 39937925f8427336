#pragma once
/// \file Memory report for a BERT model, plan and batch shape: weights, gradients, optimizer state
/// and activations, predicted without running a step.
///
/// Weights and gradients are counted exactly from the model's parameters (frozen parameters have no
/// gradient). Activations are the buffers the layers keep between forward and backward and reuse
/// across steps: each layer type the plan produces reports its own (`activation_elements`), so a new
/// method brings its contribution with it. Of those, the buffers a layer's backward takes from
/// `block_buffers` (`backward_elements`) exist twice for the whole encoder, not once per block; a
/// method layer that does not report its own (adapters, (IA)3, VeRA, AdaLoRA) has them counted per
/// block, a slight overestimate. Prompt and prefix tuning's virtual tokens lengthen the sequences the
/// layers see; they are not counted here. The figures follow the implementation and are checked
/// against measured peak resident memory by `benchmarks/bench_bert_step.cpp`.

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <string>

#include "peft/models/bert/model.hpp"
#include "peft/train/report.hpp"

namespace peft::models {

/// Bytes by category; `total()` is their sum.
struct memory_report {
  std::uint64_t weights = 0;
  std::uint64_t gradients = 0;
  std::uint64_t optimizer_state = 0;
  std::uint64_t activations = 0;
  std::uint64_t shared_backward = 0;  ///< part of `activations`: the two sets of backward buffers the blocks share
  [[nodiscard]] std::uint64_t total() const noexcept { return weights + gradients + optimizer_state + activations; }
};

namespace detail {
template <class B>
std::uint64_t dropout_elements(double p, std::uint64_t n, bool training) {
  return layers::dropout<B>::activation_elements(n, training && p > 0);
}

/// A linear layer's buffers, as its type reports them (every method layer declares its own).
template <class L>
std::uint64_t layer_elements(std::size_t rows, std::size_t in, std::size_t out, const std::string& name,
                             const method_config& cfg, bool training) {
  static_assert(requires(const layers::linear_site& s) { { L::activation_elements(s) } -> std::convertible_to<std::uint64_t>; },
                "estimate_memory: a method's layer lacks `static std::uint64_t activation_elements(const layers::linear_site&)` "
                "(see docs/adding-a-method.md)");
  return L::activation_elements(layers::linear_site{rows, in, out, true, name, cfg, training});
}
template <class N>
std::uint64_t norm_elements(std::uint64_t rows, std::uint64_t width, const std::string& name, const method_config& cfg) {
  return N::activation_elements(rows, width, name, cfg);
}
}  // namespace detail

/// Memory of training `bert_for_sequence_classification<B, Plan>` on batches of `batch x seq` with an
/// update rule keeping `state_tensors_per_parameter` tensors per trainable parameter (AdamW: 2,
/// SGD with momentum: 1). `shared_backward_buffers`: whether the blocks share their backward
/// buffers (`ctx.block_scratch.shared`, the default).
template <class B, class Plan>
memory_report estimate_memory(const bert_for_sequence_classification<B, Plan>& model, const method_config& cfg,
                              std::size_t batch, std::size_t seq, unsigned state_tensors_per_parameter = 2,
                              bool training = true, bool shared_backward_buffers = true) {
  using T = typename B::value_type;
  const bert_config& c = model.encoder().config();
  const auto counts = count_parameters(model);
  memory_report r;
  r.weights = counts.total * sizeof(T);
  r.gradients = counts.trainable * sizeof(T);
  r.optimizer_state = std::uint64_t(state_tensors_per_parameter) * counts.trainable * sizeof(T);

  const std::uint64_t rows = std::uint64_t(batch) * seq, H = c.hidden_size, I = c.intermediate_size;
  const std::uint64_t attn = std::uint64_t(batch) * c.num_attention_heads * seq * seq;
  std::uint64_t e = 0;
  // Embeddings: three lookups (+ ids), their sum, layer norm, dropout; the key mask.
  using norm_t = typename Plan::template norm<B>;
  e += 3 * rows * H + 3 * rows + rows * H + detail::norm_elements<norm_t>(rows, H, "bert.embeddings.LayerNorm", cfg) +
       detail::dropout_elements<B>(c.hidden_dropout_prob, rows * H, training) + rows;
  // Each block keeps its forward buffers; the buffers its backward takes (`block_buffers`) are
  // shared: blocks of one parity reuse one set, so two sets in all (exact when the blocks are alike).
  std::uint64_t backward_sets[2] = {0, 0};
  const bool pruned = model.options().pool == pooling::first_token && model.options().prune_last_block;
  for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string pre = "bert.encoder.layer." + std::to_string(i);
    using att = typename bert_attention<B, Plan>::attention_layer;
    using ffn = bert_ffn<B, Plan>;
    // Rows whose outputs the block computes: all, or the first of each sequence (a pruned last block,
    // whose keys and values still cover every row).
    const std::uint64_t q = pruned && i + 1 == c.num_hidden_layers ? batch : rows;
    std::uint64_t all = 0, bw = 0;
    auto linear = [&]<class L>(std::type_identity<L>, std::uint64_t n, std::size_t in, std::size_t out, const std::string& name) {
      all += detail::layer_elements<L>(n, in, out, name, cfg, training);
      bw += layers::backward_elements_of<L>(layers::linear_site{n, in, out, true, name, cfg, training});
    };
    auto norm = [&](std::uint64_t n, const std::string& name) {
      all += detail::norm_elements<norm_t>(n, H, name, cfg);
      bw += layers::norm_backward_elements_of<norm_t>(n, H, name, cfg);
    };
    auto dropout = [&](double p, std::uint64_t n) {  // output (and mask) kept, input gradient taken
      all += detail::dropout_elements<B>(p, n, training);
      if (training && p > 0) bw += n;
    };
    linear(std::type_identity<typename att::query_layer>{}, q, H, H, pre + ".attention.self.query");
    linear(std::type_identity<typename att::key_layer>{}, rows, H, H, pre + ".attention.self.key");
    linear(std::type_identity<typename att::value_layer>{}, rows, H, H, pre + ".attention.self.value");
    linear(std::type_identity<typename att::output_layer>{}, q, H, H, pre + ".attention.output.dense");
    // scores (which backward reuses for dP and, behind an active dropout, dS) and probs, kept; dS's
    // own buffer when the dropout is off, taken; the dropout's buffers
    const std::uint64_t scores = attn / rows * q;
    const bool ds_in_scores = training && c.attention_probs_dropout_prob > 0;
    all += 2 * scores;
    if (!ds_in_scores) all += scores, bw += scores;
    dropout(c.attention_probs_dropout_prob, scores);
    // context and the sublayer's residual, kept; dq, dk, dv and dx of the attention and dx of the
    // sublayer, taken; a pruned block also keeps its first rows
    all += 3 * q * H + 4 * rows * H, bw += q * H + 4 * rows * H;
    if (q != rows) all += q * H;
    dropout(c.hidden_dropout_prob, q * H);
    norm(q, pre + ".attention.output.LayerNorm");
    linear(std::type_identity<typename ffn::in_layer>{}, q, H, I, pre + ".intermediate.dense");
    all += 2 * q * I, bw += q * I;  // activation output, kept, and gradient, taken
    linear(std::type_identity<typename ffn::out_layer>{}, q, I, H, pre + ".output.dense");
    all += 2 * q * H, bw += q * H;  // residual, kept; dx, taken
    dropout(c.hidden_dropout_prob, q * H);
    norm(q, pre + ".output.LayerNorm");
    if (!shared_backward_buffers) bw = 0;  // every layer keeps its own
    e += all - bw;
    backward_sets[i % 2] = std::max(backward_sets[i % 2], bw);
  }
  e += backward_sets[0] + backward_sets[1];
  r.shared_backward = (backward_sets[0] + backward_sets[1]) * sizeof(T);
  // Head: pooling (first token or weights), pooler, dropout, classifier, loss gradient, dhidden.
  const std::uint64_t L = model.options().num_labels;
  e += batch * H + rows + (pruned ? batch : rows) * H + detail::dropout_elements<B>(c.hidden_dropout_prob, batch * H, training) +
       detail::layer_elements<typename bert_for_sequence_classification<B, Plan>::classifier_layer>(batch, H, L, "classifier",
                                                                                                 cfg, training) +
       batch * L;
  if (model.options().pool == pooling::first_token)
    e += detail::layer_elements<typename bert_for_sequence_classification<B, Plan>::pooler_layer>(batch, H, H, "bert.pooler.dense",
                                                                                               cfg, training) +
         2 * batch * H;
  r.activations = e * sizeof(T);
  return r;
}

}  // namespace peft::models
