#pragma once
/// \file `peft::layers::feed_forward`: the position-wise feed-forward sublayer, plain
/// (out(act(in(x))), BERT) or gated (down(act(gate(x)) * up(x)), SwiGLU in Llama; Shazeer 2020,
/// arXiv:2002.05202). Residuals and norms belong to the model's block.

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/activation.hpp"
#include "peft/layers/linear.hpp"

namespace peft::layers {

/// Construction options of `feed_forward`. `module_names` are the model's names under `name` of the
/// input (up), output (down) and gate projections (BERT: intermediate.dense, output.dense, unused;
/// Llama: up_proj, down_proj, gate_proj).
struct feed_forward_options {
  std::size_t hidden = 0;
  std::size_t intermediate = 0;
  activation act = activation::gelu;
  bool gated = false;
  bool bias = true;
  weight_init init = weight_init::normal;
  double init_std = 0.02;
  std::string name = "mlp";
  std::array<std::string, 3> module_names{"up", "down", "gate"};
  std::uint64_t seed = 0;
};

/// Plain: y = out(act(in(x))). Gated: y = out(act(gate(x)) * in(x)). The projections are the plan's
/// layers for roles ffn_in, ffn_out and ffn_gate, so every method reaches them.
template <Backend B, class Plan>
class feed_forward : public visits_parameters<feed_forward<B, Plan>> {
  friend visits_parameters<feed_forward>;

 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using in_layer = typename Plan::template linear<roles::ffn_in, B>;
  using out_layer = typename Plan::template linear<roles::ffn_out, B>;
  using gate_layer = typename Plan::template linear<roles::ffn_gate, B>;

  feed_forward(typename B::context& ctx, const feed_forward_options& o, const method_config& cfg)
      : opts_(validated(o)),
        in_(ctx, projection(opts_, 0, opts_.hidden, opts_.intermediate), cfg),
        act_(opts_.act),
        out_(ctx, projection(opts_, 1, opts_.intermediate, opts_.hidden), cfg) {
    if (opts_.gated) gate_.emplace(ctx, projection(opts_, 2, opts_.hidden, opts_.intermediate), cfg);
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor& up = in_.forward(ctx, x);
    if (!gate_) return out_.forward(ctx, act_.forward(ctx, up));
    up_ = &up;
    activated_ = &act_.forward(ctx, gate_->forward(ctx, x));
    B::multiply(ctx, *activated_, up, hidden_);
    return out_.forward(ctx, hidden_);
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    const tensor& dh = out_.backward(ctx, dy);
    if (!gate_) return in_.backward(ctx, act_.backward(ctx, dh));
    tensor &dup = block_buffer<B>(ctx, dup_), &dact = block_buffer<B>(ctx, dact_), &dx = block_buffer<B>(ctx, dx_);
    B::multiply(ctx, dh, *activated_, dup);  // d up = dh * act(gate)
    B::multiply(ctx, dh, *up_, dact);        // d act(gate) = dh * up
    B::copy(ctx, gate_->backward(ctx, act_.backward(ctx, dact)), dx);
    B::axpy(ctx, value_type(1), in_.backward(ctx, dup), dx);
    return dx;
  }

  void merge(typename B::context& ctx) {
    merge_if_possible(in_, ctx), merge_if_possible(out_, ctx);
    if (gate_) merge_if_possible(*gate_, ctx);
  }
  void unmerge(typename B::context& ctx) {
    unmerge_if_possible(in_, ctx), unmerge_if_possible(out_, ctx);
    if (gate_) unmerge_if_possible(*gate_, ctx);
  }

  [[nodiscard]] const feed_forward_options& options() const noexcept { return opts_; }
  in_layer& input() noexcept { return in_; }
  out_layer& output() noexcept { return out_; }
  gate_layer& gate() { return gate_.value(); }

 private:
  static feed_forward_options validated(const feed_forward_options& o) {
    if (o.hidden == 0 || o.intermediate == 0)
      throw config_error(peft::detail::concat("feed_forward '", o.name, "': hidden (", o.hidden, ") and intermediate (",
                                              o.intermediate, ") sizes must be positive"));
    return o;
  }
  static linear_options projection(const feed_forward_options& o, std::size_t which, std::size_t in, std::size_t out) {
    return {.in_features = in, .out_features = out, .bias = o.bias, .name = o.name + "." + o.module_names[which],
            .seed = derive_seed(o.seed, which + 1), .init = o.init, .init_std = o.init_std};
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const auto& n = self.opts_.module_names;
    if (self.gate_) self.gate_->visit_parameters(prefix + n[2] + ".", f);
    self.in_.visit_parameters(prefix + n[0] + ".", f);
    self.out_.visit_parameters(prefix + n[1] + ".", f);
  }

  feed_forward_options opts_;
  in_layer in_;
  activation_layer<B> act_;
  out_layer out_;
  std::optional<gate_layer> gate_;
  const tensor *up_ = nullptr, *activated_ = nullptr;
  tensor hidden_, dup_, dact_, dx_;
};

}  // namespace peft::layers
