#pragma once
/// \file `peft::layers::linear`: y = x W^T + b, with W stored (out x in) as Hugging Face does.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/parameter.hpp"
#include "peft/core/random.hpp"

namespace peft::layers {

/// How a linear layer's weight starts.
enum class weight_init {
  kaiming_uniform,  ///< PyTorch's nn.Linear default: U(-1/sqrt(in), 1/sqrt(in)) (kaiming a = sqrt(5))
  zeros,            ///< all zeros (LoRA B, adapter up-projection)
  normal,           ///< N(0, init_std) weights and zero bias, as BERT initialises (initializer_range)
  none,             ///< nothing drawn or allocated: a checkpoint loader fills every weight (large models)
};

/// Construction options of a linear layer. `name` is the module path used in error messages.
struct linear_options {
  std::size_t in_features = 0;
  std::size_t out_features = 0;
  bool bias = true;
  std::string name = "linear";
  std::uint64_t seed = 0;
  weight_init init = weight_init::kaiming_uniform;
  double init_std = 0.02;  ///< for weight_init::normal
};

/// The work of one linear layer in a step, for memory estimates: rows of input, its sizes and bias,
/// its module name, the run-time method options, and whether dropout is active. Every layer a plan
/// builds for a linear role reports `static std::uint64_t activation_elements(const linear_site&)`:
/// the elements of the buffers it keeps between forward and backward and reuses across steps.
struct linear_site {
  std::size_t rows, in, out;
  bool bias;
  const std::string& name;
  const method_config& cfg;
  bool training;
};

/// Elements of the buffers a layer's backward takes from `block_buffers` (core/block_buffers.hpp),
/// which the blocks of a stack share: the layer's `static backward_elements(site)`, or 0 for a layer
/// that reports none (its buffers then count as its own, inside `activation_elements`). Part of
/// `activation_elements`, not in addition to it.
template <class L>
std::uint64_t backward_elements_of(const linear_site& s) {
  if constexpr (requires { { L::backward_elements(s) } -> std::convertible_to<std::uint64_t>; }) return L::backward_elements(s);
  else return 0;
}

/// The same for a norm layer (`static backward_elements(rows, width, name, cfg)`).
template <class N>
std::uint64_t norm_backward_elements_of(std::uint64_t rows, std::uint64_t width, const std::string& name,
                                        const method_config& cfg) {
  if constexpr (requires { { N::backward_elements(rows, width, name, cfg) } -> std::convertible_to<std::uint64_t>; })
    return N::backward_elements(rows, width, name, cfg);
  else return 0;
}

namespace detail {
/// Uploads `n` values drawn by `draw()` as a tensor of shape `s`.
template <class B, class Draw>
void init_tensor(typename B::context& ctx, const shape& s, typename B::tensor& t, Draw&& draw) {
  std::vector<typename B::value_type> host(s.size());
  for (auto& v : host) v = typename B::value_type(draw());
  B::copy_from_host(ctx, host, s, t);
}
}  // namespace detail

/// Fully connected layer. `Trainable` (a `group_set`) decides at compile time whether the weight group
/// `WG` and bias group `BG` train; a frozen weight has no gradient buffer, and backward then does
/// not read the input (only its recorded shape). Input: any rank, last extent `in_features`; output:
/// same leading extents, last extent `out_features`.
template <Backend B, class Trainable = group_set<>, groups::Group WG = groups::weight,
          groups::Group BG = groups::bias>
class linear : public visits_parameters<linear<B, Trainable, WG, BG>> {
  friend visits_parameters<linear>;
 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using weight_parameter = parameter<B, WG, Trainable::template contains<WG>>;
  using bias_parameter = parameter<B, BG, Trainable::template contains<BG>>;

  linear(typename B::context& ctx, const linear_options& o) : opts_(o) {
    if (o.in_features == 0 || o.out_features == 0)
      throw config_error(peft::detail::concat("linear '", o.name, "': in_features (", o.in_features,
                                              ") and out_features (", o.out_features, ") must be positive"));
    init_rng rng(o.seed);
    const double bound = 1.0 / std::sqrt(double(o.in_features));
    const shape ws{o.out_features, o.in_features};
    weight_.declared = ws;
    bias_.declared = shape{o.out_features};
    switch (o.init) {
      case weight_init::none: break;
      case weight_init::zeros: detail::init_tensor<B>(ctx, ws, weight_.value, [] { return 0.0; }); break;
      case weight_init::normal: detail::init_tensor<B>(ctx, ws, weight_.value, [&] { return rng.normal(0, o.init_std); }); break;
      case weight_init::kaiming_uniform:
        detail::init_tensor<B>(ctx, ws, weight_.value, [&] { return rng.uniform(-bound, bound); });
        break;
    }
    weight_.allocate_grad(ctx);
    if (o.bias && o.init != weight_init::none) {
      if (o.init == weight_init::kaiming_uniform)
        detail::init_tensor<B>(ctx, shape{o.out_features}, bias_.value, [&] { return rng.uniform(-bound, bound); });
      else detail::init_tensor<B>(ctx, shape{o.out_features}, bias_.value, [] { return 0.0; });
    }
    if (o.bias) bias_.allocate_grad(ctx);
  }
  /// Constructor used by plans: a plain linear ignores the method configuration.
  linear(typename B::context& ctx, const linear_options& o, const method_config&) : linear(ctx, o) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    if (x.cols() != in_features() || x.shape().rank() == 0)
      throw shape_error(peft::detail::concat("linear '", opts_.name, "': input shape ", x.shape(),
                                             " does not end in in_features = ", in_features()));
    input_ = &x;
    input_shape_ = x.shape();
    tensor& y = block_buffer<B>(ctx, y_);
    y.resize(x.shape().with_cols(out_features()));
    if (const packed_matrix* w = packed_weight()) {
      if constexpr (PackedProducts<B>) B::gemm_packed(ctx, op::t, value_type(1), x, *w, value_type(0), y);
    } else {
      B::gemm(ctx, op::n, op::t, value_type(1), x, weight_.value, value_type(0), y);
    }
    if (has_bias()) B::add_row_vector(ctx, y, bias_.value);
    return y;
  }

  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!input_) throw error(peft::detail::concat("linear '", opts_.name, "': backward called before forward"));
    if (!(dy.shape() == input_shape_.with_cols(out_features())))
      throw shape_error(peft::detail::concat("linear '", opts_.name, "': output gradient shape ", dy.shape(),
                                             " differs from output shape ", input_shape_.with_cols(out_features())));
    if constexpr (weight_parameter::trainable)
      B::gemm(ctx, op::t, op::n, value_type(1), dy, *input_, value_type(1), weight_.grad);
    if constexpr (bias_parameter::trainable)
      if (has_bias()) B::sum_rows(ctx, dy, value_type(1), bias_.grad);
    tensor& dx = block_buffer<B>(ctx, dx_);
    dx.resize(input_shape_);
    if (const packed_matrix* w = packed_weight()) {
      if constexpr (PackedProducts<B>) B::gemm_packed(ctx, op::n, value_type(1), dy, *w, value_type(0), dx);
    } else {
      B::gemm(ctx, op::n, op::n, value_type(1), dy, weight_.value, value_type(0), dx);
    }
    return dx;
  }

  /// Sets the weight from its storage form (a checkpoint's fp16, bf16 or quantized matrix). A frozen
  /// weight on a backend with `PackedProducts` stays packed: products dequantize tiles on the fly and
  /// no fp32 copy is made. Otherwise (a trainable weight, or a backend without packed products) it is
  /// dequantized into the dense weight. Throws `shape_error` unless `w` is out_features x in_features.
  void set_weight(typename B::context& ctx, packed_matrix w) {
    if (w.rows() != out_features() || w.cols() != in_features())
      throw shape_error(peft::detail::concat("linear '", opts_.name, "': weight '", w.name(), "' is ", w.shape(), ", not ",
                                             shape{out_features(), in_features()}));
    if constexpr (!weight_parameter::trainable && PackedProducts<B>) {
      weight_.packed = std::move(w);
      weight_.value = tensor{};
    } else {
      const auto host = w.template dequantize<value_type>();
      B::copy_from_host(ctx, host, w.shape(), weight_.value);
    }
  }
  /// The packed weight, when the weight is kept packed; null otherwise.
  [[nodiscard]] const packed_matrix* packed_weight() const noexcept {
    if constexpr (weight_parameter::trainable) return nullptr;
    else return weight_.packed ? &*weight_.packed : nullptr;
  }


  [[nodiscard]] std::size_t in_features() const noexcept { return opts_.in_features; }
  [[nodiscard]] std::size_t out_features() const noexcept { return opts_.out_features; }
  [[nodiscard]] bool has_bias() const noexcept { return opts_.bias; }
  [[nodiscard]] const std::string& name() const noexcept { return opts_.name; }
  [[nodiscard]] const linear_options& options() const noexcept { return opts_; }
  weight_parameter& weight() noexcept { return weight_; }
  const weight_parameter& weight() const noexcept { return weight_; }
  bias_parameter& bias() noexcept { return bias_; }
  const bias_parameter& bias() const noexcept { return bias_; }
  /// Output and input gradient.
  static std::uint64_t activation_elements(const linear_site& s) { return std::uint64_t(s.rows) * (s.in + s.out); }
  /// The input gradient, taken from the shared backward buffers.
  static std::uint64_t backward_elements(const linear_site& s) { return std::uint64_t(s.rows) * s.in; }
  /// The innermost plain linear layer (this one); wrappers forward to it.
  linear& base_linear() noexcept { return *this; }
  const linear& base_linear() const noexcept { return *this; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    f(prefix + "weight", self.weight_);
    if (self.has_bias()) f(prefix + "bias", self.bias_);
  }

  linear_options opts_;
  weight_parameter weight_;
  bias_parameter bias_;
  const tensor* input_ = nullptr;  // read by backward only when the weight trains
  shape input_shape_;
  tensor y_, dx_;
};

}  // namespace peft::layers
