#pragma once
// Test bodies written once against the Backend concept. Each runs a scenario on backend B from
// deterministic host inputs and returns everything observable as host numbers, so that the CPU suite
// can compare eigen with xtensor and the CUDA suite can compare cuda with eigen.

#include <cstdint>
#include <string>
#include <vector>

#include "peft/core/layer.hpp"
#include "peft/layers/activation.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/linear.hpp"
#include "peft/loss/cross_entropy.hpp"
#include "peft/loss/mse.hpp"
#include "peft/methods/adapter.hpp"
#include "peft/methods/bitfit.hpp"
#include "peft/methods/full.hpp"
#include "peft/methods/ia3.hpp"
#include "peft/methods/lora.hpp"
#include "peft/methods/plan.hpp"
#include "peft/methods/prefix_tuning.hpp"
#include "peft/methods/prompt_tuning.hpp"
#include "peft/methods/vera.hpp"
#include "peft/models/bert/model.hpp"
#include "peft/models/llama/model.hpp"
#include "peft/models/mlp.hpp"
#include "peft/optim/adafactor.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/optim/sgd.hpp"
#include "support/fixtures.hpp"
#include "support/results.hpp"

namespace peft::test {

/// Records every trainable gradient of `l` as "grad:<name>" and every parameter as "param:<name>".
template <class L>
void record_parameters(results& r, typename L::backend::context& ctx, const L& l, bool values, bool grads) {
  using B = typename L::backend;
  l.visit_parameters("", [&](const std::string& name, const auto& p) {
    if (values) record<B>(r, "param:" + name, ctx, p.value);
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
      if (grads) record<B>(r, "grad:" + name, ctx, p.grad);
  });
}

/// Fully trainable linear layer on a rank-3 input, with and without bias.
template <class B>
results linear_scenario() {
  typename B::context ctx;
  results r;
  for (bool bias : {true, false}) {
    layers::linear<B, group_set<groups::weight, groups::bias>> l(
        ctx, {.in_features = 7, .out_features = 5, .bias = bias, .name = "lin", .seed = 3});
    const auto x = random_tensor<B>(ctx, {3, 4, 7}, 11);
    const auto dy = random_tensor<B>(ctx, {3, 4, 5}, 12);
    const std::string tag = bias ? "bias:" : "nobias:";
    record<B>(r, tag + "y", ctx, l.forward(ctx, x));
    record<B>(r, tag + "dx", ctx, l.backward(ctx, dy));
    results p;
    record_parameters(p, ctx, l, true, true);
    for (auto& [k, v] : p) r[tag + k] = v;
  }
  return r;
}

/// Every activation, forward and backward.
template <class B>
results activation_scenario() {
  typename B::context ctx;
  results r;
  const auto x = random_tensor<B>(ctx, {4, 6}, 21, 3.0);
  const auto dy = random_tensor<B>(ctx, {4, 6}, 22);
  for (activation a : {activation::identity, activation::relu, activation::gelu, activation::gelu_tanh, activation::tanh}) {
    layers::activation_layer<B> l(a);
    const std::string tag(to_string(a));
    record<B>(r, tag + ":y", ctx, l.forward(ctx, x));
    record<B>(r, tag + ":dx", ctx, l.backward(ctx, dy));
  }
  return r;
}

/// Dropout in training mode (same counter-based masks on every backend) and evaluation mode.
template <class B>
results dropout_scenario() {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 99;
  results r;
  layers::dropout<B> d(0.3);
  const auto x = random_tensor<B>(ctx, {8, 16}, 31);
  record<B>(r, "train:y", ctx, d.forward(ctx, x));
  record<B>(r, "train:dx", ctx, d.backward(ctx, x));
  ctx.training = false;
  record<B>(r, "eval:y", ctx, d.forward(ctx, x));
  return r;
}

using lora_bitfit_plan = plan<methods::lora<roles::hidden>, methods::bitfit>;
using lora_adapter_plan = plan<methods::lora<roles::hidden>, methods::adapter<roles::hidden>>;
/// (IA)3 over LoRA and BitFit: the vector scales what both compute.
using lora_bitfit_ia3_plan = plan<methods::lora<roles::hidden>, methods::bitfit, methods::ia3<roles::hidden>>;

inline method_config scenario_methods() {
  return method_config{lora_config{.r = 3, .alpha = 6, .dropout = 0.2}, adapter_config{.bottleneck = 4}};
}
/// The scenario's options with (IA)3 scaling the input (`feedforward`) or the output, started away
/// from the identity.
inline method_config scenario_ia3_methods(bool feedforward) {
  method_config m = scenario_methods();
  m.get<ia3_config>() = ia3_config{.feedforward_modules = feedforward ? "h" : "", .init_ia3_weights = false};
  return m;
}
/// The scenario's options with DoRA on the LoRA layer, with or without its dropout.
inline method_config scenario_dora_methods(bool dropout) {
  method_config m = scenario_ia3_methods(false);
  m.get<lora_config>().use_dora = true;
  if (!dropout) m.get<lora_config>().dropout = 0;
  return m;
}

/// VeRA over LoRA (both additive, stage 0) with BitFit, and its options: rank 7 (above the layer's
/// 6 out features), dropout, started away from the identity.
using lora_vera_bitfit_plan = plan<methods::lora<roles::hidden>, methods::vera<roles::hidden>, methods::bitfit>;
inline method_config scenario_vera_methods() {
  method_config m = scenario_methods();
  m.get<vera_config>() = vera_config{.r = 7, .dropout = 0.2, .init_weights = false};
  return m;
}

/// A method plan on one linear layer with random (non-zero) parameters and LoRA dropout: forward,
/// backward, then merge (evaluation output) and unmerge (base weight).
template <class B, class Plan = lora_bitfit_plan>
results method_scenario(const method_config& cfg = scenario_methods()) {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 5;
  results r;
  using layer_t = typename Plan::template linear<roles::hidden, B>;
  layer_t l(ctx, {.in_features = 9, .out_features = 6, .bias = true, .name = "h", .seed = 7}, cfg);
  randomize_parameters(ctx, l, 8);
  const auto x = random_tensor<B>(ctx, {5, 9}, 41);
  const auto dy = random_tensor<B>(ctx, {5, 6}, 42);
  record<B>(r, "train:y", ctx, l.forward(ctx, x));
  record<B>(r, "train:dx", ctx, l.backward(ctx, dy));
  record_parameters(r, ctx, l, false, true);
  ctx.training = false;
  record<B>(r, "eval:y", ctx, l.forward(ctx, x));
  l.merge(ctx);
  record<B>(r, "merged:y", ctx, l.forward(ctx, x));
  record<B>(r, "merged:weight", ctx, l.base_linear().weight().value);
  l.unmerge(ctx);
  record<B>(r, "unmerged:weight", ctx, l.base_linear().weight().value);
  return r;
}

/// Cross-entropy with ignored rows, and MSE.
template <class B>
results loss_scenario() {
  typename B::context ctx;
  results r;
  const auto logits = random_tensor<B>(ctx, {6, 4}, 51, 4.0);
  loss::softmax_cross_entropy<B> ce;
  const std::vector<std::int32_t> labels{0, 3, -100, 2, 1, -100};
  r["ce:loss"] = {ce.forward(ctx, logits, labels)};
  record<B>(r, "ce:grad", ctx, ce.gradient());
  loss::mse<B> m;
  const auto target = random_tensor<B>(ctx, {6, 4}, 52);
  r["mse:loss"] = {m.forward(ctx, logits, target)};
  record<B>(r, "mse:grad", ctx, m.gradient());
  return r;
}

/// Trains a small MLP classifier for `steps` steps with `Rule` and `Plan`; records the losses and the
/// final trainable parameters.
template <class B, class Plan, class Rule>
results training_scenario(Rule rule, int steps = 6) {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 1;
  results r;
  models::mlp_classifier<B, Plan> m(ctx, {.input_dim = 10, .hidden = {12, 8}, .num_labels = 3, .dropout = 0.1, .seed = 2},
                                    {lora_config{.r = 2, .alpha = 4}, adapter_config{.bottleneck = 3}});
  optim::optimizer opt(m, rule, optim::linear_schedule{.warmup_steps = 2, .total_steps = steps + 2});
  opt.template set_group_options<groups::lora_b>({.lr_multiplier = 4});
  const auto x = random_tensor<B>(ctx, {16, 10}, 61);
  std::vector<std::int32_t> labels(16);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = std::int32_t((i * 7) % 3);
  loss::softmax_cross_entropy<B> ce;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad(ctx);
    r["loss"].push_back(ce.forward(ctx, m.forward(ctx, x), labels));
    m.backward(ctx, ce.gradient());
    r["grad_norm"].push_back(opt.clip_grad_norm(ctx, 5.0));
    opt.step(ctx);
  }
  m.visit_parameters("", [&](const std::string& name, const auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable) record<B>(r, "param:" + name, ctx, p.value);
  });
  return r;
}

/// A tiny BERT (2 layers, hidden 16, 2 heads) used by the transformer tests on every backend.
inline models::bert_config tiny_bert_config() {
  return {.vocab_size = 30, .hidden_size = 16, .num_hidden_layers = 2, .num_attention_heads = 2,
          .intermediate_size = 24, .max_position_embeddings = 10, .type_vocab_size = 2};
}
/// Two sequences of length 6, the second padded after 4 tokens.
inline models::encoder_batch tiny_batch() {
  return {.batch_size = 2, .seq_len = 6, .input_ids = {2, 7, 11, 5, 9, 3, 2, 13, 4, 3, 0, 0},
          .token_type_ids = {0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0}, .attention_mask = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}};
}
using bert_lora_bitfit_houlsby = plan<methods::lora<roles::query, roles::value>, methods::bitfit, methods::houlsby_adapter>;

/// Sequence classification with LoRA + BitFit + Houlsby adapters, dropout on: forward, backward,
/// three AdamW steps, then merged evaluation.
template <class B, class Plan = bert_lora_bitfit_houlsby>
results bert_scenario(models::pooling pool = models::pooling::first_token) {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 11;
  results r;
  models::bert_for_sequence_classification<B, Plan> m(ctx, tiny_bert_config(), {.num_labels = 3, .pool = pool, .seed = 4},
                                                      {lora_config{.r = 4, .alpha = 8, .dropout = 0.1},
                                                       adapter_config{.bottleneck = 4, .nonlinearity = activation::gelu}});
  randomize_parameters(ctx, m, 5, 0.3);
  const auto batch = tiny_batch();
  const std::vector<std::int32_t> labels{2, 0};
  loss::softmax_cross_entropy<B> ce;
  optim::optimizer opt(m, optim::adamw{.lr = 1e-2});
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad(ctx);
    r["loss"].push_back(ce.forward(ctx, m.forward(ctx, batch), labels));
    m.backward(ctx, ce.gradient());
    if (step == 0) record_parameters(r, ctx, m, false, true);
    opt.step(ctx);
  }
  ctx.training = false;
  record<B>(r, "eval:logits", ctx, m.forward(ctx, batch));
  m.merge(ctx);
  record<B>(r, "merged:logits", ctx, m.forward(ctx, batch));
  return r;
}

/// A Llama decoder (2 blocks, 4 query / 2 key-value heads) with LoRA on all seven projections:
/// next-token cross entropy, three AdamW steps, then the logits of a full forward, of KV-cached
/// steps and of the merged model.
template <class B>
results llama_scenario() {
  typename B::context ctx;
  results r;
  models::llama_config c;
  c.vocab_size = 13, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 16, c.rope_theta = 10000;
  using lora_all = methods::lora<roles::query, roles::key, roles::value, roles::attention_output, roles::ffn_in,
                                 roles::ffn_out, roles::ffn_gate>;
  models::llama_for_causal_lm<B, plan<lora_all>> m(ctx, c, {lora_config{.r = 2, .alpha = 4}}, 3);
  randomize_parameters(ctx, m, 6, 0.3);
  const models::decoder_batch batch{.batch_size = 2, .seq_len = 5, .input_ids = {1, 5, 9, 2, 7, 3, 3, 8, 12, 0}, .labels = {}};
  const auto targets = models::next_token_targets(batch);
  loss::softmax_cross_entropy<B> ce;
  optim::optimizer opt(m, optim::adamw{.lr = 1e-2});
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad(ctx);
    r["loss"].push_back(ce.forward(ctx, m.forward(ctx, batch), targets));
    m.backward(ctx, ce.gradient());
    if (step == 0) record_parameters(r, ctx, m, false, true);
    opt.step(ctx);
  }
  record<B>(r, "eval:logits", ctx, m.forward(ctx, batch));
  auto cache = m.make_cache(2, 8);
  record<B>(r, "cached:prompt", ctx, m.forward_cached(ctx, batch.input_ids, 5, cache));
  const std::vector<std::int32_t> next{4, 6};
  record<B>(r, "cached:step", ctx, m.forward_cached(ctx, next, 1, cache));
  m.merge(ctx);
  record<B>(r, "merged:logits", ctx, m.forward(ctx, batch));
  return r;
}

/// Prompt and prefix tuning: a BERT sequence classifier with a prefix trained through its MLP
/// (dropout on), a BERT token classifier with a prompt, and Llama decoders with each, three AdamW
/// steps apiece, then evaluation logits and, for the decoders, KV-cached steps.
template <class B>
results virtual_tokens_scenario() {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 13;
  results r;
  loss::softmax_cross_entropy<B> ce;
  auto bert = tiny_bert_config();
  bert.max_position_embeddings = 12;
  const auto batch = tiny_batch();
  auto train = [&](const std::string& tag, auto& m, const auto& input, const std::vector<std::int32_t>& labels) {
    test::randomize_trainable(ctx, m, 21, 0.4);
    optim::optimizer opt(m, optim::adamw{.lr = 1e-2});
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad(ctx);
      r[tag + ":loss"].push_back(ce.forward(ctx, m.forward(ctx, input), labels));
      m.backward(ctx, ce.gradient());
      if (step == 0) record_parameters(r, ctx, m, false, true);
      opt.step(ctx);
    }
    ctx.training = false;
    record<B>(r, tag + ":eval", ctx, m.forward(ctx, input));
    ctx.training = true;
  };
  models::bert_for_sequence_classification<B, plan<methods::prefix_tuning>> seq(
      ctx, bert, {.num_labels = 3, .seed = 4},
      {prefix_tuning_config{.num_virtual_tokens = 2, .prefix_projection = true, .encoder_hidden_size = 6}});
  train("bert prefix", seq, batch, {2, 0});
  models::bert_for_token_classification<B, plan<methods::prompt_tuning>> tok(ctx, bert, {.num_labels = 3, .seed = 5},
                                                                               {prompt_tuning_config{.num_virtual_tokens = 3}});
  train("bert prompt", tok, batch, {0, 1, 2, 1, -100, 0, 2, 2, 1, 0, -100, -100});
  models::llama_config c;
  c.vocab_size = 13, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 16, c.rope_theta = 10000;
  const models::decoder_batch lm{.batch_size = 2, .seq_len = 5, .input_ids = {1, 5, 9, 2, 7, 3, 3, 8, 12, 0}, .labels = {}};
  auto decode = [&](const std::string& tag, auto& m) {
    train(tag, m, lm, models::next_token_targets(lm));
    auto cache = m.make_cache(2, 8);
    record<B>(r, tag + ":cached prompt", ctx, m.forward_cached(ctx, lm.input_ids, 5, cache));
    const std::vector<std::int32_t> next{4, 6};
    record<B>(r, tag + ":cached step", ctx, m.forward_cached(ctx, next, 1, cache));
  };
  models::llama_for_causal_lm<B, plan<methods::prompt_tuning>> prompted(ctx, c, {prompt_tuning_config{.num_virtual_tokens = 3}}, 6);
  decode("llama prompt", prompted);
  models::llama_for_causal_lm<B, plan<methods::prefix_tuning>> prefixed(ctx, c, {prefix_tuning_config{.num_virtual_tokens = 2}}, 7);
  decode("llama prefix", prefixed);
  return r;
}

}  // namespace peft::test
