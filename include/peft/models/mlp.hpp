#pragma once
/// \file `peft::models::mlp_classifier`: a multilayer perceptron classifier built from a plan.

#include <cstdint>
#include <string>
#include <vector>

#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/activation.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/linear.hpp"
#include "peft/methods/plan.hpp"

namespace peft::models {

/// Sizes and options of an MLP classifier.
struct mlp_options {
  std::size_t input_dim = 0;
  std::vector<std::size_t> hidden;  ///< widths of the hidden layers (role `hidden`)
  std::size_t num_labels = 2;       ///< width of the classifier (role `classifier`)
  activation nonlinearity = activation::relu;
  double dropout = 0.0;  ///< after each hidden activation, training mode only
  std::uint64_t seed = 0;
};

/// x -> [linear(hidden) -> act -> dropout] x N -> linear(classifier). Hidden layers are
/// `Plan::linear<roles::hidden, B>`, the head `Plan::linear<roles::classifier, B>`. Parameter names:
/// `hidden.<i>.weight`, ..., `classifier.weight`. Base weights depend only on the seed and layer
/// index, so models with different plans start from the same pretrained-like base.
template <Backend B, class Plan>
class mlp_classifier {
 public:
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;
  using hidden_layer = typename Plan::template linear<roles::hidden, B>;
  using classifier_layer = typename Plan::template linear<roles::classifier, B>;

  mlp_classifier(typename B::context& ctx, const mlp_options& o, const method_config& cfg = {})
      : head_(make_head(ctx, o, cfg)) {
    std::size_t in = o.input_dim;
    blocks_.reserve(o.hidden.size());
    for (std::size_t i = 0; i < o.hidden.size(); ++i) {
      blocks_.push_back(block{hidden_layer(ctx,
                                           {.in_features = in,
                                            .out_features = o.hidden[i],
                                            .bias = true,
                                            .name = "hidden." + std::to_string(i),
                                            .seed = derive_seed(o.seed, i)},
                                           cfg),
                              layers::activation_layer<B>(o.nonlinearity),
                              layers::dropout<B>(o.dropout, "hidden." + std::to_string(i) + ".dropout")});
      in = o.hidden[i];
    }
    prepare_methods<Plan>(ctx, *this, cfg);
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor* h = &x;
    for (auto& b : blocks_) h = &b.drop.forward(ctx, b.act.forward(ctx, b.linear.forward(ctx, *h)));
    return head_.forward(ctx, *h);
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    const tensor* d = &head_.backward(ctx, dy);
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it)
      d = &it->linear.backward(ctx, it->act.backward(ctx, it->drop.backward(ctx, *d)));
    return *d;
  }
  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) {
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      blocks_[i].linear.visit_parameters(prefix + "hidden." + std::to_string(i) + ".", f);
    head_.visit_parameters(prefix + "classifier.", f);
  }
  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) const {
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      blocks_[i].linear.visit_parameters(prefix + "hidden." + std::to_string(i) + ".", f);
    head_.visit_parameters(prefix + "classifier.", f);
  }
  /// Folds every mergeable PEFT update into the base weights.
  void merge(typename B::context& ctx) {
    for (auto& b : blocks_) merge_if_possible(b.linear, ctx);
    merged_ = true;
  }
  void unmerge(typename B::context& ctx) {
    for (auto& b : blocks_) unmerge_if_possible(b.linear, ctx);
    merged_ = false;
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  hidden_layer& hidden(std::size_t i) { return blocks_.at(i).linear; }
  classifier_layer& classifier() noexcept { return head_; }
  [[nodiscard]] std::size_t depth() const noexcept { return blocks_.size(); }

 private:
  struct block {
    hidden_layer linear;
    layers::activation_layer<B> act;
    layers::dropout<B> drop;
  };
  static classifier_layer make_head(typename B::context& ctx, const mlp_options& o, const method_config& cfg) {
    const std::size_t in = o.hidden.empty() ? o.input_dim : o.hidden.back();
    return classifier_layer(ctx,
                            {.in_features = in,
                             .out_features = o.num_labels,
                             .bias = true,
                             .name = "classifier",
                             .seed = derive_seed(o.seed, 1000)},
                            cfg);
  }

  classifier_layer head_;
  std::vector<block> blocks_;
  bool merged_ = false;
};

}  // namespace peft::models
