#pragma once
/// \file The `Backend` concept: a policy type naming a value type, tensor types in its memory space,
/// a context, and the kernel set that layers, losses and update rules are written against.
///
/// Layers never name Eigen, xtensor or CUDA; they call `B::gemm(ctx, ...)` and friends. The backend
/// is chosen at compile time (a template argument), never by a run-time switch.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/core/kernel_args.hpp"
#include "peft/core/packed_matrix.hpp"
#include "peft/core/shape.hpp"

namespace peft {

/// Rows [first, first + rows) of a batch of `total` rows: the part of each batch one process of a
/// data-parallel run holds (`total` 0: the whole batch).
struct batch_shard {
  std::size_t first = 0, rows = 0, total = 0;
};

/// State shared by the kernels of a backend call sequence. Backends derive their context from it.
/// `training` switches dropout on; `seed` and `random_offset` drive the counter-based dropout stream,
/// so a run with the same seed draws the same masks on every backend. `shard`, set by a data-parallel
/// trainer, makes a process that holds some rows of each batch draw the indices the whole batch
/// would give those rows, so that N processes draw the masks one process would.
struct context_base {
  bool training = false;
  /// The forward passes that follow have no backward (evaluation, prediction): a model may then
  /// share its blocks' forward buffers between blocks (core/block_buffers.hpp). Off by default, so a
  /// backward after a forward in evaluation mode (an input gradient without dropout) stays valid.
  bool forward_only = false;
  std::uint64_t seed = 0;
  std::uint64_t random_offset = 0;
  batch_shard shard{};
  /// s > 1 while a computation keeps only rows 0, s, 2s, ... of what it would compute (BERT's pruned
  /// last block): a dropout then draws the masks of those rows of the whole, and reserves the whole's
  /// indices, so the run draws what the full computation would (`FusedDropout` backends; others draw
  /// their own). Set it with `dropout_row_spacing_scope`.
  std::size_t dropout_row_spacing = 1;

  /// Reserves the random indices of a tensor of `n` values whose leading extent is `rows`, and
  /// returns the first: `n` consecutive ones, or, under a shard whose rows it has, its rows' part of
  /// the whole batch's (the offset then moves past the whole batch's).
  std::uint64_t take_random(std::uint64_t n, std::size_t rows = 0) noexcept {
    if (shard.total && rows && rows == shard.rows && n % rows == 0) {
      const std::uint64_t per_row = n / rows, first = random_offset + shard.first * per_row;
      random_offset += shard.total * per_row;
      return first;
    }
    const std::uint64_t first = random_offset;
    random_offset += n;
    return first;
  }
};

/// Sets `ctx.dropout_row_spacing` for the lifetime of this object.
class dropout_row_spacing_scope {
 public:
  dropout_row_spacing_scope(context_base& ctx, std::size_t spacing) noexcept : ctx_(ctx), saved_(ctx.dropout_row_spacing) {
    ctx.dropout_row_spacing = spacing;
  }
  dropout_row_spacing_scope(const dropout_row_spacing_scope&) = delete;
  dropout_row_spacing_scope& operator=(const dropout_row_spacing_scope&) = delete;
  ~dropout_row_spacing_scope() { ctx_.dropout_row_spacing = saved_; }

 private:
  context_base& ctx_;
  std::size_t saved_;
};

/// A dense row-major tensor of a backend: shape queries, raw data and a capacity-keeping `resize`.
template <class Tn>
concept DenseTensor = std::default_initializable<Tn> && std::movable<Tn> &&
                      requires(Tn& t, const Tn& ct, const shape& s) {
                        typename Tn::value_type;
                        t.resize(s);
                        { ct.shape() } -> std::convertible_to<const shape&>;
                        { ct.size() } -> std::convertible_to<std::size_t>;
                        { ct.rows() } -> std::convertible_to<std::size_t>;
                        { ct.cols() } -> std::convertible_to<std::size_t>;
                        { ct.empty() } -> std::convertible_to<bool>;
                        { t.data() } -> std::same_as<typename Tn::value_type*>;
                      };

/// Backend policy. Requirements (see docs/concepts.md#backend):
/// - `value_type` (float or double), `tensor` and `index_tensor` (int32 labels) satisfying
///   `DenseTensor`, and `context` derived from `context_base`;
/// - `name` (a string literal) for reports;
/// - host transfer: `copy_from_host`, `copy_to_host`, `copy_labels`;
/// - element-wise: `fill`, `copy`, `axpy`, `scale`, `multiply`, `divide`, `sqrt`,
///   `activation_forward/backward`, `dropout_mask`;
/// - matrix: `gemm` (transposes, alpha, beta), `gemm_batched` (two-level strided batches),
///   `copy_batched` (the same addressing, a copy: KV caches),
///   `add_row_vector` (bias add), `multiply_row_vector` (per-column scales), `sum_rows` (bias grad);
/// - transformer kernels: `masked_softmax` (key-padding and causal masks, `softmax_mask`) and
///   `softmax_backward` (attention), `layer_norm_forward/backward`, `rms_norm_forward/backward`,
///   `rotary` (rotary position embedding, `rotary_args`), `gather_rows` and `scatter_add_rows`
///   (embeddings, pooling);
/// - reductions and losses: `sum_squares`, `row_squared_norms` (per row), `softmax_cross_entropy`, `mse`;
/// - fused update rules: `sgd_update`, `adamw_update`, `adafactor_update`.
/// Guarantees expected of an implementation: shapes are checked and a mismatch throws
/// `peft::shape_error` naming the kernel and both shapes; outputs documented as "resized" keep their
/// capacity, so a steady-state step allocates nothing.
template <class B>
concept Backend =
    std::floating_point<typename B::value_type> && DenseTensor<typename B::tensor> &&
    DenseTensor<typename B::index_tensor> && std::derived_from<typename B::context, context_base> &&
    std::same_as<typename B::tensor::value_type, typename B::value_type> &&
    requires(typename B::context& ctx, typename B::tensor& t, const typename B::tensor& c,
             typename B::index_tensor& labels, typename B::value_type a,
             std::span<const typename B::value_type> host, std::span<const std::int32_t> host_labels,
             const shape& s, activation act, const sgd_args& sgd, const adamw_args& adam,
             const adafactor_args& ada) {
      { B::name } -> std::convertible_to<const char*>;
      B::copy_from_host(ctx, host, s, t);
      { B::copy_to_host(ctx, c) } -> std::same_as<std::vector<typename B::value_type>>;
      B::copy_labels(ctx, host_labels, labels);
      B::fill(ctx, t, a);
      B::copy(ctx, c, t);
      B::axpy(ctx, a, c, t);
      B::scale(ctx, a, t);
      B::multiply(ctx, c, c, t);
      B::divide(ctx, c, c, t);
      B::sqrt(ctx, c, t);
      B::gemm(ctx, op::n, op::t, a, c, c, a, t);
      B::gemm_batched(ctx, op::n, op::t, std::size_t{}, std::size_t{}, std::size_t{}, a,
                      matrix_batch<const typename B::value_type*>{}, matrix_batch<const typename B::value_type*>{}, a,
                      matrix_batch<typename B::value_type*>{}, std::size_t{}, std::size_t{});
      B::copy_batched(ctx, std::size_t{}, std::size_t{}, matrix_batch<const typename B::value_type*>{},
                      matrix_batch<typename B::value_type*>{}, std::size_t{}, std::size_t{});
      B::add_row_vector(ctx, t, c);
      B::multiply_row_vector(ctx, t, c);
      B::masked_softmax(ctx, c, &c, softmax_mask{}, a, t);
      B::softmax_backward(ctx, c, c, a, t);
      B::layer_norm_forward(ctx, c, c, c, a, t, t, t);
      B::layer_norm_backward(ctx, c, c, c, c, c, t, &t, &t);
      B::rms_norm_forward(ctx, c, c, a, t, t);
      B::rms_norm_backward(ctx, c, c, c, c, t, &t);
      B::rotary(ctx, c, rotary_args{}, t);
      B::gather_rows(ctx, c, static_cast<const typename B::index_tensor&>(labels), t);
      B::scatter_add_rows(ctx, c, static_cast<const typename B::index_tensor&>(labels), t);
      B::sum_rows(ctx, c, a, t);
      B::activation_forward(ctx, act, c, t);
      B::activation_backward(ctx, act, c, c, c, t);
      B::dropout_mask(ctx, a, std::uint64_t{}, std::uint64_t{}, t);
      { B::sum_squares(ctx, c) } -> std::convertible_to<double>;
      B::row_squared_norms(ctx, c, t);
      { B::softmax_cross_entropy(ctx, c, labels, std::int32_t{}, t) } -> std::convertible_to<double>;
      { B::mse(ctx, c, c, t) } -> std::convertible_to<double>;
      B::sgd_update(ctx, t, c, t, sgd);
      B::adamw_update(ctx, t, c, t, t, adam);
      B::adafactor_update(ctx, t, c, t, t, t, t, ada);
    };

/// A backend that applies a dropout mask without storing it: `dropout_apply(ctx, p, seed, offset, x,
/// y, row_spacing)` writes y = x * (the mask `dropout_mask(ctx, p, seed, offset, ...)` writes), row r
/// of x taking the mask of row r * row_spacing. The dropout layer then keeps no mask and draws it
/// again in backward; other backends store it.
template <class B>
concept FusedDropout = Backend<B> && requires(typename B::context& ctx, typename B::value_type p, std::uint64_t n,
                                              const typename B::tensor& x, typename B::tensor& y) {
  B::dropout_apply(ctx, p, n, n, x, y, std::size_t{1});
};

/// A backend that multiplies with frozen weights kept in their storage format (`packed_matrix`:
/// fp16, bf16, block-quantized) without expanding them: `gemm_packed(ctx, op, alpha, a, w, beta, c)`
/// computes c = alpha a op(W) + beta c (op::t: a W^T, op::n: a W). Layers use it when the backend
/// has it and keep a dense copy otherwise.
template <class B>
concept PackedProducts = Backend<B> && requires(typename B::context& ctx, const typename B::tensor& a,
                                                typename B::tensor& c, const packed_matrix& w, typename B::value_type s) {
  B::gemm_packed(ctx, op::t, s, a, w, s, c);
};

namespace detail {
/// Throws unless `a` and `b` have equal shapes; `what` names the kernel or layer.
inline void require_same_shape(const char* what, const shape& a, const shape& b) {
  if (!(a == b)) throw shape_error(concat(what, ": shapes differ: ", a, " vs ", b));
}
/// The shape rules of `masked_softmax`, in one place for every backend: scores rows come in blocks
/// of `query_rows`, and the key mask (when given) has one row of `cols` per `blocks_per_mask_row`
/// blocks.
inline void check_softmax_shapes(const char* what, const shape& scores, const shape* key_mask, const softmax_mask& m) {
  const std::size_t rows = scores.rows();
  if (m.query_rows == 0 || m.blocks_per_mask_row == 0 || rows % m.query_rows != 0)
    throw shape_error(concat(what, ": scores ", scores, " are not blocks of ", m.query_rows, " query rows"));
  if (key_mask && (key_mask->cols() != scores.cols() || key_mask->rows() * m.query_rows * m.blocks_per_mask_row != rows))
    throw shape_error(concat(what, ": scores ", scores, " vs key mask ", *key_mask, " with ", m.blocks_per_mask_row,
                             " blocks of ", m.query_rows, " rows per mask row"));
}
/// The shape rules of `gemm_packed`: a (m x k) and c (m x n) for op::t with W n x k; a (m x n) and
/// c (m x k) for op::n.
inline void check_packed_shapes(const char* what, op tw, const shape& a, const packed_matrix& w, const shape& c) {
  const std::size_t inner = tw == op::t ? w.cols() : w.rows(), outer = tw == op::t ? w.rows() : w.cols();
  if (a.rank() == 0 || c.rank() == 0 || a.cols() != inner || c.cols() != outer || a.rows() != c.rows())
    throw shape_error(concat(what, ": a ", a, " times ", tw == op::t ? "W^T" : "W", " with W '", w.name(), "' ", w.shape(),
                             " into c ", c));
}
/// The shape rules of `rotary`: rows of heads * head_dim, an even rotary_dims <= head_dim, rows a
/// multiple of seq_len.
inline void check_rotary_shapes(const char* what, const shape& x, const rotary_args& a) {
  const std::size_t cols = x.cols(), rows = x.rows();
  if (a.heads == 0 || a.head_dim == 0 || cols != a.heads * a.head_dim || a.rotary_dims % 2 != 0 ||
      a.rotary_dims > a.head_dim || a.seq_len == 0 || rows % a.seq_len != 0 || !(a.theta > 0))
    throw shape_error(concat(what, ": input ", x, " vs ", a.heads, " heads of ", a.head_dim, " (rotating ", a.rotary_dims,
                             ", sequences of ", a.seq_len, ", theta ", a.theta, ")"));
}
}  // namespace detail

}  // namespace peft
