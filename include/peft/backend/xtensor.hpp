#pragma once
/// \file `peft::backend::xtensor<T>`: the CPU reference backend.
///
/// Plain and obviously right rather than fast: xtensor expressions over adapted host memory, triple
/// loops for GEMM with accumulation in double, its own activation formulas. Tests run every layer on
/// this backend in double precision and compare the fast backends against it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>
#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xview.hpp>
#include <xtensor/xindex_view.hpp>
#include <xtensor/xsort.hpp>

#include "peft/core/backend.hpp"
#include "peft/core/block_buffers.hpp"
#include "peft/core/host_tensor.hpp"
#include "peft/backend/host_memory.hpp"
#include "peft/core/random.hpp"

namespace peft::backend {

/// xtensor reference policy. `T` is float or double (tests use double).
template <std::floating_point T>
struct xtensor : detail::host_memory<T> {
  using value_type = T;
  using tensor = host_tensor<T>;
  using index_tensor = host_tensor<std::int32_t>;
  static constexpr const char* name = "xtensor";

  struct context : context_base {
    /// Buffers shared between the blocks of a stack (core/block_buffers.hpp).
    block_buffers<tensor> block_scratch;
  };

  /// Matrix view (rows x cols) of a tensor's memory.
  template <class Tn>
  static auto view(Tn& t) {
    using shape_type = std::array<std::size_t, 2>;
    return xt::adapt(t.data(), t.size(), xt::no_ownership(), shape_type{t.rows(), t.cols()});
  }
  /// Flat view of a tensor's memory.
  template <class Tn>
  static auto flat(Tn& t) {
    using shape_type = std::array<std::size_t, 1>;
    return xt::adapt(t.data(), t.size(), xt::no_ownership(), shape_type{t.size()});
  }

  static void fill(context&, tensor& t, T v) { flat(t).fill(v); }
  static void copy(context&, const tensor& src, tensor& dst) {
    dst.resize(src.shape());
    flat(dst) = flat(src);
  }
  static void axpy(context&, T alpha, const tensor& x, tensor& y) {
    peft::detail::require_same_shape("xtensor::axpy", x.shape(), y.shape());
    auto yv = flat(y);
    yv = yv + alpha * flat(x);
  }
  static void scale(context&, T alpha, tensor& x) {
    auto xv = flat(x);
    xv = alpha * xv;
  }
  static void multiply(context&, const tensor& a, const tensor& b, tensor& out) {
    peft::detail::require_same_shape("xtensor::multiply", a.shape(), b.shape());
    out.resize(a.shape());
    flat(out) = flat(a) * flat(b);
  }
  static void divide(context&, const tensor& a, const tensor& b, tensor& out) {
    peft::detail::require_same_shape("xtensor::divide", a.shape(), b.shape());
    out.resize(a.shape());
    flat(out) = flat(a) / flat(b);
  }
  static void sqrt(context&, const tensor& a, tensor& out) {
    out.resize(a.shape());
    flat(out) = xt::sqrt(flat(a));
  }

  static void activation_forward(context&, activation a, const tensor& x, tensor& y) {
    y.resize(x.shape());
    auto X = flat(x);
    auto Y = flat(y);
    switch (a) {
      case activation::identity: Y = X; break;
      case activation::relu: Y = xt::maximum(X, T(0)); break;
      case activation::gelu: Y = T(0.5) * X * (T(1) + xt::erf(X / std::sqrt(T(2)))); break;
      case activation::gelu_tanh:
        Y = T(0.5) * X * (T(1) + xt::tanh(std::sqrt(T(2) / T(M_PI)) * (X + T(0.044715) * xt::pow(X, 3))));
        break;
      case activation::tanh: Y = xt::tanh(X); break;
      case activation::silu: Y = X / (T(1) + xt::exp(-X)); break;
    }
  }
  static void activation_backward(context&, activation a, const tensor& x, const tensor& y, const tensor& dy,
                                  tensor& dx) {
    peft::detail::require_same_shape("xtensor::activation_backward (x vs dy)", x.shape(), dy.shape());
    peft::detail::require_same_shape("xtensor::activation_backward (x vs y)", x.shape(), y.shape());
    dx.resize(x.shape());
    auto X = flat(x);
    auto Y = flat(y);
    auto DY = flat(dy);
    auto DX = flat(dx);
    switch (a) {
      case activation::identity: DX = DY; break;
      case activation::relu: DX = xt::where(X > T(0), DY, T(0)); break;
      case activation::gelu: {
        // d/dx [x Phi(x)] = Phi(x) + x phi(x)
        auto Phi = T(0.5) * (T(1) + xt::erf(X / std::sqrt(T(2))));
        auto phi = xt::exp(-X * X / T(2)) / std::sqrt(T(2) * T(M_PI));
        DX = DY * (Phi + X * phi);
        break;
      }
      case activation::gelu_tanh: {
        const T c = std::sqrt(T(2) / T(M_PI));
        auto t = xt::tanh(c * (X + T(0.044715) * xt::pow(X, 3)));
        DX = DY * (T(0.5) * (T(1) + t) + T(0.5) * X * (T(1) - t * t) * c * (T(1) + T(3) * T(0.044715) * X * X));
        break;
      }
      case activation::tanh: DX = DY * (T(1) - Y * Y); break;
      case activation::silu: {
        // d/dx [x sigma(x)] = sigma(x) + x sigma(x) (1 - sigma(x))
        auto sig = xt::eval(T(1) / (T(1) + xt::exp(-X)));
        DX = DY * (sig + X * sig * (T(1) - sig));
        break;
      }
    }
  }
  /// y = x * the mask `dropout_mask` writes, drawn on the fly; with `row_spacing` s, row r of x takes
  /// the mask of row r * s of a tensor s times as tall.
  static void dropout_apply(context&, T p, std::uint64_t seed, std::uint64_t offset, const tensor& x, tensor& y,
                            std::size_t row_spacing = 1) {
    y.resize(x.shape());
    const std::size_t cols = x.cols();
    for (std::size_t i = 0; i < x.size(); ++i) {
      const std::uint64_t index = offset + i / cols * row_spacing * cols + i % cols;
      y[i] = x[i] * (counter_uniform(seed, index) >= double(p) ? T(1) / (T(1) - p) : T(0));
    }
  }
  static void dropout_mask(context&, T p, std::uint64_t seed, std::uint64_t offset, tensor& mask) {
    for (std::size_t i = 0; i < mask.size(); ++i)
      mask[i] = counter_uniform(seed, offset + i) >= double(p) ? T(1) / (T(1) - p) : T(0);
  }

  /// c = alpha * op(a) * op(b) + beta * c by the definition, accumulating in double.
  static void gemm(context&, op ta, op tb, T alpha, const tensor& a, const tensor& b, T beta, tensor& c) {
    const std::size_t m = ta == op::n ? a.rows() : a.cols(), k = ta == op::n ? a.cols() : a.rows();
    const std::size_t kb = tb == op::n ? b.rows() : b.cols(), n = tb == op::n ? b.cols() : b.rows();
    if (k != kb || c.rows() != m || c.cols() != n)
      throw shape_error(peft::detail::concat("xtensor::gemm: op(a) is ", m, "x", k, " (a ", a.shape(), "), op(b) is ",
                                             kb, "x", n, " (b ", b.shape(), "), c is ", c.shape()));
    auto A = view(a);
    auto Bm = view(b);
    auto C = view(c);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        double s = 0;
        for (std::size_t q = 0; q < k; ++q)
          s += double(ta == op::n ? A(i, q) : A(q, i)) * double(tb == op::n ? Bm(q, j) : Bm(j, q));
        C(i, j) = T(double(alpha) * s + (beta == T(0) ? 0.0 : double(beta) * double(C(i, j))));
      }
  }
  /// dst = src, matrix by matrix and element by element.
  static void copy_batched(context&, std::size_t rows, std::size_t cols, matrix_batch<const T*> src, matrix_batch<T*> dst,
                           std::size_t outer_count, std::size_t inner_count) {
    for (std::size_t o = 0; o < outer_count; ++o)
      for (std::size_t i = 0; i < inner_count; ++i)
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t c = 0; c < cols; ++c)
            dst.data[o * dst.outer + i * dst.inner + r * dst.ld + c] = src.data[o * src.outer + i * src.inner + r * src.ld + c];
  }
  /// c = alpha a op(W) + beta c for a packed W, by the definition over W dequantized as a whole (the
  /// reference for eigen's tiled product).
  static void gemm_packed(context& ctx, op tw, T alpha, const tensor& a, const packed_matrix& w, T beta, tensor& c) {
    peft::detail::check_packed_shapes("xtensor::gemm_packed", tw, a.shape(), w, c.shape());
    tensor dense(shape{w.rows(), w.cols()});
    w.dequantize_rows(0, w.rows(), dense.data());
    gemm(ctx, op::n, tw, alpha, a, dense, beta, c);
  }
  /// Batched c = alpha op(a) op(b) + beta c by the definition, matrix by matrix.
  static void gemm_batched(context&, op ta, op tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
                           matrix_batch<const T*> a, matrix_batch<const T*> b, T beta, matrix_batch<T*> c,
                           std::size_t outer_count, std::size_t inner_count) {
    for (std::size_t o = 0; o < outer_count; ++o)
      for (std::size_t i = 0; i < inner_count; ++i) {
        const T* A = a.data + o * a.outer + i * a.inner;
        const T* Bm = b.data + o * b.outer + i * b.inner;
        T* C = c.data + o * c.outer + i * c.inner;
        for (std::size_t r = 0; r < m; ++r)
          for (std::size_t col = 0; col < n; ++col) {
            double s = 0;
            for (std::size_t q = 0; q < k; ++q)
              s += double(ta == op::n ? A[r * a.ld + q] : A[q * a.ld + r]) *
                   double(tb == op::n ? Bm[q * b.ld + col] : Bm[col * b.ld + q]);
            T& out = C[r * c.ld + col];
            out = T(double(alpha) * s + (beta == T(0) ? 0.0 : double(beta) * double(out)));
          }
      }
  }
  static void add_row_vector(context&, tensor& y, const tensor& b) {
    if (b.size() != y.cols())
      throw shape_error(peft::detail::concat("xtensor::add_row_vector: vector ", b.shape(), " vs rows of ", y.shape()));
    auto Y = view(y);
    Y = Y + xt::view(flat(b), xt::newaxis(), xt::all());
  }
  static void multiply_row_vector(context&, tensor& y, const tensor& v) {
    if (v.size() != y.cols())
      throw shape_error(peft::detail::concat("xtensor::multiply_row_vector: vector ", v.shape(), " vs rows of ", y.shape()));
    auto Y = view(y);
    Y = Y * xt::view(flat(v), xt::newaxis(), xt::all());
  }
  static void sum_rows(context&, const tensor& x, T beta, tensor& out) {
    if (out.size() != x.cols())
      throw shape_error(peft::detail::concat("xtensor::sum_rows: output ", out.shape(), " vs columns of ", x.shape()));
    auto O = flat(out);
    if (beta == T(0)) O = xt::sum(view(x), {0});
    else O = beta * O + xt::sum(view(x), {0});
  }

  /// Softmax over the keys each row may see, by the definition: a boolean visibility row from the
  /// key mask and the causal rule, then exp(z - max) / sum over the visible keys.
  static void masked_softmax(context&, const tensor& scores, const tensor* key_mask, const softmax_mask& mask, T scale,
                             tensor& probs) {
    peft::detail::check_softmax_shapes("xtensor::masked_softmax", scores.shape(), key_mask ? &key_mask->shape() : nullptr, mask);
    probs.resize(scores.shape());
    auto S = view(scores);
    auto P = view(probs);
    const std::size_t cols = scores.cols();
    for (std::size_t r = 0; r < scores.rows(); ++r) {
      xt::xtensor<bool, 1> keep = xt::ones<bool>({cols});
      if (key_mask) {
        auto M = view(*key_mask);
        keep = xt::not_equal(xt::view(M, r / (mask.query_rows * mask.blocks_per_mask_row), xt::all()), T(0));
      }
      if (mask.causal) {
        const std::size_t query_position = mask.query_offset + r % mask.query_rows;
        for (std::size_t j = query_position + 1; j < cols; ++j) keep(j) = false;
      }
      auto z = xt::eval(scale * xt::view(S, r, xt::all()));
      auto p = xt::view(P, r, xt::all());
      if (!xt::any(keep)) {
        p.fill(T(0));
        continue;
      }
      const T mx = xt::amax(xt::filter(z, keep))();
      auto e = xt::eval(xt::where(keep, xt::exp(z - mx), T(0)));
      p = e / xt::sum(e)();
    }
  }
  static void softmax_backward(context&, const tensor& probs, const tensor& dprobs, T scale, tensor& dscores) {
    peft::detail::require_same_shape("xtensor::softmax_backward", probs.shape(), dprobs.shape());
    dscores.resize(probs.shape());
    auto P = view(probs);
    auto DP = view(dprobs);
    auto DS = view(dscores);
    auto dot = xt::eval(xt::sum(P * DP, {1}));
    DS = scale * P * (DP - xt::view(dot, xt::all(), xt::newaxis()));
  }
  static void layer_norm_forward(context&, const tensor& x, const tensor& gamma, const tensor& beta, T eps, tensor& y,
                                 tensor& mean, tensor& rstd) {
    if (gamma.size() != x.cols() || beta.size() != x.cols())
      throw shape_error(peft::detail::concat("xtensor::layer_norm_forward: input ", x.shape(), " vs gamma ",
                                             gamma.shape(), " and beta ", beta.shape()));
    y.resize(x.shape());
    mean.resize(shape{x.rows()});
    rstd.resize(shape{x.rows()});
    auto X = view(x);
    auto mu = xt::eval(xt::mean(X, {1}));
    auto centered = xt::eval(X - xt::view(mu, xt::all(), xt::newaxis()));
    auto rs = xt::eval(T(1) / xt::sqrt(xt::mean(centered * centered, {1}) + eps));
    flat(mean) = mu;
    flat(rstd) = rs;
    view(y) = centered * xt::view(rs, xt::all(), xt::newaxis()) * xt::view(flat(gamma), xt::newaxis(), xt::all()) +
              xt::view(flat(beta), xt::newaxis(), xt::all());
  }
  static void layer_norm_backward(context&, const tensor& x, const tensor& gamma, const tensor& mean, const tensor& rstd,
                                  const tensor& dy, tensor& dx, tensor* dgamma, tensor* dbeta) {
    peft::detail::require_same_shape("xtensor::layer_norm_backward", x.shape(), dy.shape());
    dx.resize(x.shape());
    auto rs = xt::view(flat(rstd), xt::all(), xt::newaxis());
    auto xhat = xt::eval((view(x) - xt::view(flat(mean), xt::all(), xt::newaxis())) * rs);
    auto DY = view(dy);
    auto dxhat = xt::eval(DY * xt::view(flat(gamma), xt::newaxis(), xt::all()));
    auto m1 = xt::eval(xt::mean(dxhat, {1}));
    auto m2 = xt::eval(xt::mean(dxhat * xhat, {1}));
    view(dx) = rs * (dxhat - xt::view(m1, xt::all(), xt::newaxis()) - xhat * xt::view(m2, xt::all(), xt::newaxis()));
    if (dgamma) {
      auto G = flat(*dgamma);
      G = G + xt::sum(DY * xhat, {0});
    }
    if (dbeta) {
      auto Bt = flat(*dbeta);
      Bt = Bt + xt::sum(DY, {0});
    }
  }
  static void rms_norm_forward(context&, const tensor& x, const tensor& gamma, T eps, tensor& y, tensor& rstd) {
    if (gamma.size() != x.cols())
      throw shape_error(peft::detail::concat("xtensor::rms_norm_forward: input ", x.shape(), " vs gamma ", gamma.shape()));
    y.resize(x.shape());
    rstd.resize(shape{x.rows()});
    auto X = view(x);
    auto rs = xt::eval(T(1) / xt::sqrt(xt::mean(X * X, {1}) + eps));
    flat(rstd) = rs;
    view(y) = X * xt::view(rs, xt::all(), xt::newaxis()) * xt::view(flat(gamma), xt::newaxis(), xt::all());
  }
  static void rms_norm_backward(context&, const tensor& x, const tensor& gamma, const tensor& rstd, const tensor& dy,
                                tensor& dx, tensor* dgamma) {
    peft::detail::require_same_shape("xtensor::rms_norm_backward", x.shape(), dy.shape());
    dx.resize(x.shape());
    auto rs = xt::view(flat(rstd), xt::all(), xt::newaxis());
    auto xhat = xt::eval(view(x) * rs);
    auto DY = view(dy);
    auto g = xt::eval(DY * xt::view(flat(gamma), xt::newaxis(), xt::all()));
    auto m = xt::eval(xt::mean(g * xhat, {1}));
    view(dx) = rs * (g - xhat * xt::view(m, xt::all(), xt::newaxis()));
    if (dgamma) {
      auto G = flat(*dgamma);
      G = G + xt::sum(DY * xhat, {0});
    }
  }
  /// Rotary embedding by the definition: for each token, head and pair, a 2x2 rotation.
  static void rotary(context&, const tensor& x, const rotary_args& a, tensor& y) {
    peft::detail::check_rotary_shapes("xtensor::rotary", x.shape(), a);
    const tensor in = x;  // y may be x
    y.resize(x.shape());
    const std::size_t half = a.rotary_dims / 2, cols = x.cols();
    for (std::size_t r = 0; r < x.rows(); ++r) {
      const std::size_t pos = a.position_offset + r % a.seq_len;
      for (std::size_t h = 0; h < a.heads; ++h) {
        const T* u = in.data() + r * cols + h * a.head_dim;
        T* v = y.data() + r * cols + h * a.head_dim;
        for (std::size_t j = a.rotary_dims; j < a.head_dim; ++j) v[j] = u[j];
        for (std::size_t i = 0; i < half; ++i) {
          const T inv_freq = T(1) / std::pow(T(a.theta), T(2 * i) / T(a.rotary_dims));
          const T angle = (a.inverse ? T(-1) : T(1)) * T(pos) * inv_freq;
          const std::size_t p = a.pairing == rope_pairing::adjacent ? 2 * i : i;
          const std::size_t q = a.pairing == rope_pairing::adjacent ? 2 * i + 1 : i + half;
          v[p] = u[p] * std::cos(angle) - u[q] * std::sin(angle);
          v[q] = u[p] * std::sin(angle) + u[q] * std::cos(angle);
        }
      }
    }
  }
  static void gather_rows(context&, const tensor& table, const index_tensor& ids, tensor& out) {
    if (out.rows() != ids.size() || out.cols() != table.cols())
      throw shape_error(peft::detail::concat("xtensor::gather_rows: output ", out.shape(), " for ", ids.size(),
                                             " rows of table ", table.shape()));
    auto O = view(out);
    auto Tb = view(table);
    for (std::size_t i = 0; i < ids.size(); ++i) xt::view(O, i, xt::all()) = xt::view(Tb, std::size_t(ids[i]), xt::all());
  }
  static void scatter_add_rows(context&, const tensor& dout, const index_tensor& ids, tensor& dtable) {
    if (dout.rows() != ids.size() || dout.cols() != dtable.cols())
      throw shape_error(peft::detail::concat("xtensor::scatter_add_rows: gradient ", dout.shape(), " for ", ids.size(),
                                             " rows of table ", dtable.shape()));
    auto D = view(dout);
    auto Tb = view(dtable);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto row = xt::view(Tb, std::size_t(ids[i]), xt::all());
      row = row + xt::view(D, i, xt::all());
    }
  }

  static double sum_squares(context&, const tensor& t) {
    double s = 0;
    for (std::size_t i = 0; i < t.size(); ++i) s += double(t[i]) * double(t[i]);
    return s;
  }
  static void row_squared_norms(context&, const tensor& a, tensor& out) {
    const std::size_t rows = a.rows(), cols = a.cols();
    out.resize(shape{rows});
    for (std::size_t r = 0; r < rows; ++r) {
      double s = 0;
      for (std::size_t c = 0; c < cols; ++c) s += double(a[r * cols + c]) * double(a[r * cols + c]);
      out[r] = T(s);
    }
  }
  static double softmax_cross_entropy(context&, const tensor& logits, const index_tensor& labels,
                                      std::int32_t ignore_index, tensor& dlogits) {
    if (labels.size() != logits.rows())
      throw shape_error(peft::detail::concat("xtensor::softmax_cross_entropy: ", labels.size(), " labels for logits ",
                                             logits.shape()));
    dlogits.resize(logits.shape());
    auto Z = view(logits);
    auto D = view(dlogits);
    std::size_t count = 0;
    for (std::size_t r = 0; r < labels.size(); ++r) count += labels[r] != ignore_index;
    double total = 0;
    for (std::size_t r = 0; r < logits.rows(); ++r) {
      auto z = xt::view(Z, r, xt::all());
      auto d = xt::view(D, r, xt::all());
      if (labels[r] == ignore_index || count == 0) {
        d.fill(T(0));
        continue;
      }
      const T mx = xt::amax(z)();
      auto e = xt::eval(xt::exp(z - mx));
      const T sum = xt::sum(e)();
      total += double(std::log(sum) + mx - z(labels[r]));
      d = e / sum;
      d(labels[r]) -= T(1);
      d = d / T(count);
    }
    return count ? total / double(count) : 0.0;
  }
  static double mse(context&, const tensor& pred, const tensor& target, tensor& dpred) {
    peft::detail::require_same_shape("xtensor::mse", pred.shape(), target.shape());
    dpred.resize(pred.shape());
    auto diff = xt::eval(flat(pred) - flat(target));
    flat(dpred) = diff * T(2) / T(pred.size());
    return double(xt::sum(diff * diff)()) / double(pred.size());
  }

  static void sgd_update(context&, tensor& w, const tensor& g, tensor& velocity, const sgd_args& a) {
    auto W = flat(w);
    auto gd = xt::eval(flat(g) + T(a.weight_decay) * W);
    if (a.momentum == 0) {
      W = W - T(a.lr) * gd;
      return;
    }
    auto V = flat(velocity);
    V = a.first_step ? xt::eval(gd) : xt::eval(T(a.momentum) * V + T(1 - a.dampening) * gd);
    W = a.nesterov ? xt::eval(W - T(a.lr) * (gd + T(a.momentum) * V)) : xt::eval(W - T(a.lr) * V);
  }
  static void adamw_update(context&, tensor& w, const tensor& g, tensor& m, tensor& v, const adamw_args& a) {
    auto W = flat(w);
    auto G = flat(g);
    auto M = flat(m);
    auto V = flat(v);
    W = W - T(a.lr * a.weight_decay) * W;
    M = T(a.beta1) * M + T(1 - a.beta1) * G;
    V = T(a.beta2) * V + T(1 - a.beta2) * G * G;
    const T bc1 = T(1 - std::pow(a.beta1, double(a.step))), bc2 = T(1 - std::pow(a.beta2, double(a.step)));
    W = W - T(a.lr) * (M / bc1) / (xt::sqrt(V / bc2) + T(a.eps));
  }
  static void adafactor_update(context&, tensor& w, const tensor& g, tensor& row, tensor& col, tensor& v, tensor& m,
                               const adafactor_args& a) {
    const T b = T(a.beta2t);
    auto G = view(g);
    auto sq = xt::eval(G * G + T(a.eps1));
    xt::xtensor<T, 2> update;
    if (a.factored) {
      auto R = flat(row);
      auto C = flat(col);
      R = b * R + (T(1) - b) * xt::mean(sq, {1});
      C = b * C + (T(1) - b) * xt::mean(sq, {0});
      auto r_factor = xt::eval(T(1) / xt::sqrt(R / xt::mean(R)()));
      auto c_factor = xt::eval(T(1) / xt::sqrt(C));
      update = xt::view(r_factor, xt::all(), xt::newaxis()) * xt::view(c_factor, xt::newaxis(), xt::all()) * G;
    } else {
      auto V = view(v);
      V = b * V + (T(1) - b) * sq;
      update = G / xt::sqrt(V);
    }
    const T rms = std::sqrt(xt::mean(update * update)());
    update = update * (T(a.lr) / std::max(T(1), rms / T(a.clip_threshold)));
    if (a.beta1 > 0) {
      auto M = view(m);
      M = T(a.beta1) * M + T(1 - a.beta1) * update;
      update = M;
    }
    auto W = view(w);
    W = W - T(a.weight_decay * a.lr) * W;
    W = W - update;
  }
};

}  // namespace peft::backend
