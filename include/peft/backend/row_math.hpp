#pragma once
/// \file Per-row math shared by the eigen and CUDA backends: masked and causal softmax, layer norm,
/// RMS norm and rotary position embedding, each written once as a `PEFT_HOST_DEVICE` function over
/// one row. A backend supplies the loop (OpenMP over rows, or one CUDA thread per row) and the shape
/// checks; the formulas live here, so the two backends cannot drift apart. The xtensor reference
/// keeps its own, independent formulas, which the tests compare against. One exception: the eigen
/// backend restates `softmax_row` and `softmax_backward_row` with Eigen arrays (so that exp and the
/// row reductions vectorise); the eigen/xtensor and CUDA/eigen comparisons cover that copy.

#include <cmath>
#include <cstddef>

#include "peft/core/config.hpp"
#include "peft/core/kernel_args.hpp"

namespace peft::row_math {

/// Number of leading keys visible to query row `r` under `m` (causal attention hides the rest), not
/// counting the key mask.
PEFT_HOST_DEVICE std::size_t visible_keys(const softmax_mask& m, std::size_t r, std::size_t cols) {
  if (!m.causal) return cols;
  const std::size_t last = m.query_offset + r % m.query_rows;  // absolute position of this query
  return last + 1 < cols ? last + 1 : cols;
}

/// p = softmax(scale * z) over the visible keys of row `r` (see `softmax_mask`); hidden keys get
/// probability 0, and a row with no visible key is all 0. `key_mask` is the row's key-mask row or null.
template <class T>
PEFT_HOST_DEVICE void softmax_row(const T* z, const T* key_mask, const softmax_mask& m, std::size_t r, std::size_t cols,
                                  T scale, T* p) {
  using std::exp;
  const std::size_t n = visible_keys(m, r, cols);
  T mx = -INFINITY;
  for (std::size_t j = 0; j < n; ++j)
    if (!key_mask || key_mask[j] != T(0)) mx = scale * z[j] > mx ? scale * z[j] : mx;
  T sum = 0;
  for (std::size_t j = 0; j < n; ++j) {
    p[j] = !key_mask || key_mask[j] != T(0) ? exp(scale * z[j] - mx) : T(0);
    sum += p[j];
  }
  for (std::size_t j = n; j < cols; ++j) p[j] = T(0);
  const T inv = sum > T(0) ? T(1) / sum : T(0);
  for (std::size_t j = 0; j < n; ++j) p[j] *= inv;
}

/// ds = scale * p * (dp - sum_j p dp): the softmax Jacobian-vector product for one row.
template <class T>
PEFT_HOST_DEVICE void softmax_backward_row(const T* p, const T* dp, std::size_t cols, T scale, T* ds) {
  T dot = 0;
  for (std::size_t j = 0; j < cols; ++j) dot += p[j] * dp[j];
  for (std::size_t j = 0; j < cols; ++j) ds[j] = scale * p[j] * (dp[j] - dot);
}

/// y = gamma * (x - mean) * rstd + beta; returns mean and rstd = 1 / sqrt(var + eps).
template <class T>
PEFT_HOST_DEVICE void layer_norm_row(const T* x, const T* gamma, const T* beta, std::size_t cols, T eps, T* y, T& mean,
                                     T& rstd) {
  using std::sqrt;
  T mu = 0;
  for (std::size_t j = 0; j < cols; ++j) mu += x[j];
  mu /= T(cols);
  T var = 0;
  for (std::size_t j = 0; j < cols; ++j) var += (x[j] - mu) * (x[j] - mu);
  var /= T(cols);
  const T rs = T(1) / sqrt(var + eps);
  mean = mu;
  rstd = rs;
  for (std::size_t j = 0; j < cols; ++j) y[j] = (x[j] - mu) * rs * gamma[j] + beta[j];
}

/// dx of layer norm for one row, from the saved mean and rstd.
template <class T>
PEFT_HOST_DEVICE void layer_norm_backward_row(const T* x, const T* gamma, T mean, T rstd, const T* dy, std::size_t cols,
                                              T* dx) {
  T m1 = 0, m2 = 0;  // means of dxhat and of dxhat * xhat
  for (std::size_t j = 0; j < cols; ++j) {
    const T dxhat = dy[j] * gamma[j];
    m1 += dxhat;
    m2 += dxhat * (x[j] - mean) * rstd;
  }
  m1 /= T(cols);
  m2 /= T(cols);
  for (std::size_t j = 0; j < cols; ++j) dx[j] = rstd * (dy[j] * gamma[j] - m1 - (x[j] - mean) * rstd * m2);
}

/// RMS norm (Zhang & Sennrich 2019, as Llama uses it): y = gamma * x * rstd with
/// rstd = 1 / sqrt(mean(x^2) + eps); returns rstd.
template <class T>
PEFT_HOST_DEVICE void rms_norm_row(const T* x, const T* gamma, std::size_t cols, T eps, T* y, T& rstd) {
  using std::sqrt;
  T ms = 0;
  for (std::size_t j = 0; j < cols; ++j) ms += x[j] * x[j];
  const T rs = T(1) / sqrt(ms / T(cols) + eps);
  rstd = rs;
  for (std::size_t j = 0; j < cols; ++j) y[j] = gamma[j] * (x[j] * rs);
}

/// dx of RMS norm for one row: dx = rstd * (g - xhat * mean(g * xhat)) with g = dy * gamma and
/// xhat = x * rstd.
template <class T>
PEFT_HOST_DEVICE void rms_norm_backward_row(const T* x, const T* gamma, T rstd, const T* dy, std::size_t cols, T* dx) {
  T dot = 0;
  for (std::size_t j = 0; j < cols; ++j) dot += dy[j] * gamma[j] * x[j] * rstd;
  dot /= T(cols);
  for (std::size_t j = 0; j < cols; ++j) dx[j] = rstd * (dy[j] * gamma[j] - x[j] * rstd * dot);
}

/// Rotation angle of pair `i` at position `pos`, computed in `T` as Hugging Face computes it in
/// float32: inv_freq = 1 / theta^(2i / rotary_dims), angle = pos * inv_freq.
template <class T>
PEFT_HOST_DEVICE T rope_angle(std::size_t pos, std::size_t i, std::size_t rotary_dims, double theta) {
  using std::pow;
  const T inv_freq = T(1) / pow(T(theta), T(2 * i) / T(rotary_dims));
  return T(pos) * inv_freq;
}

/// Rotary embedding of one token row (all heads) at absolute position `pos`: y = R(pos) x, or
/// R(pos)^T x when `a.inverse`. `x` and `y` may be the same row.
template <class T>
PEFT_HOST_DEVICE void rotary_row(const T* x, const rotary_args& a, std::size_t pos, T* y) {
  using std::cos;
  using std::sin;
  const std::size_t half = a.rotary_dims / 2;
  for (std::size_t i = 0; i < half; ++i) {
    const T angle = rope_angle<T>(pos, i, a.rotary_dims, a.theta);
    const T c = cos(angle), s = a.inverse ? -sin(angle) : sin(angle);
    const std::size_t first = a.pairing == rope_pairing::adjacent ? 2 * i : i;
    const std::size_t second = a.pairing == rope_pairing::adjacent ? 2 * i + 1 : i + half;
    for (std::size_t h = 0; h < a.heads; ++h) {
      const std::size_t base = h * a.head_dim;
      const T u = x[base + first], v = x[base + second];
      y[base + first] = u * c - v * s;
      y[base + second] = u * s + v * c;
    }
  }
  if (x != y)
    for (std::size_t h = 0; h < a.heads; ++h)
      for (std::size_t j = a.rotary_dims; j < a.head_dim; ++j) y[h * a.head_dim + j] = x[h * a.head_dim + j];
}

}  // namespace peft::row_math
