#pragma once
/// \file Virtual tokens: rows that a model puts before every sequence's own tokens (prompt tuning's
/// learned embeddings) or keys and values that its attention layers see before the sequence's
/// (prefix tuning). Here: the row kernels that place a shared table in front of every sequence and
/// take its gradient back, what a plan's prompt and prefix sources must offer, and the empty sources
/// of a plan without such a method (no tokens, no parameters, no work).

#include <cstddef>
#include <cstdint>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"

namespace peft::layers {

/// Rows [src_first, src_first + count) of every sequence of `src` (batch, n, width) to rows
/// [dst_first, dst_first + count) of the same sequence of `dst` (batch, m, width), which must be sized.
template <Backend B>
void copy_sequence_rows(typename B::context& ctx, const typename B::tensor& src, std::size_t src_first, typename B::tensor& dst,
                        std::size_t dst_first, std::size_t count) {
  const shape& s = src.shape();
  const shape& d = dst.shape();
  if (s.rank() != 3 || d.rank() != 3 || s[0] != d[0] || s[2] != d[2] || src_first + count > s[1] || dst_first + count > d[1])
    throw shape_error(peft::detail::concat("copy_sequence_rows: rows ", src_first, "+", count, " of ", s, " to rows ", dst_first,
                                           " of ", d));
  if (count == 0 || s[0] == 0) return;
  using T = typename B::value_type;
  const std::size_t w = s[2];
  B::copy_batched(ctx, count, w, matrix_batch<const T*>{src.data() + src_first * w, w, 0, s[1] * w},
                  matrix_batch<T*>{dst.data() + dst_first * w, w, 0, d[1] * w}, s[0], 1);
}

/// `table` (count, width) into rows [0, count) of every sequence of `dst` (batch, m, width), which
/// must be sized.
template <Backend B>
void broadcast_sequence_rows(typename B::context& ctx, const typename B::tensor& table, typename B::tensor& dst) {
  const shape& d = dst.shape();
  if (table.shape().rank() != 2 || d.rank() != 3 || table.cols() != d[2] || table.rows() > d[1])
    throw shape_error(peft::detail::concat("broadcast_sequence_rows: table ", table.shape(), " in front of ", d));
  if (table.rows() == 0 || d[0] == 0) return;
  using T = typename B::value_type;
  const std::size_t w = d[2];
  B::copy_batched(ctx, table.rows(), w, matrix_batch<const T*>{table.data(), w, 0, 0},
                  matrix_batch<T*>{dst.data(), w, 0, d[1] * w}, d[0], 1);
}

/// The gradient of `broadcast_sequence_rows`: grad (count, width) = beta * grad + the sum over the
/// sequences of rows [0, count) of `src` (batch, m, width), summed in sequence order. `ones` is
/// scratch (a row of `batch` ones, kept between calls).
template <Backend B>
void sum_sequence_rows(typename B::context& ctx, const typename B::tensor& src, std::size_t count, typename B::value_type beta,
                       typename B::tensor& ones, typename B::tensor& grad) {
  const shape& s = src.shape();
  if (s.rank() != 3 || count > s[1] || !(grad.shape() == shape{count, s[2]}))
    throw shape_error(peft::detail::concat("sum_sequence_rows: ", count, " leading rows of ", src.shape(), " into ", grad.shape()));
  using T = typename B::value_type;
  if (count == 0) return;
  if (ones.size() != s[0]) {
    ones.resize(shape{1, s[0]});
    B::fill(ctx, ones, T(1));
  }
  const std::size_t w = s[2];
  // Row p of grad = ones (1 x batch) times the (batch x width) matrix of row p of every sequence.
  B::gemm_batched(ctx, op::n, op::n, 1, w, s[0], T(1), matrix_batch<const T*>{ones.data(), s[0], 0, 0},
                  matrix_batch<const T*>{src.data(), s[1] * w, w, 0}, beta, matrix_batch<T*>{grad.data(), w, w, 0}, 1, count);
}

/// Keys and values that an attention layer sees before the sequence's own (prefix tuning): one
/// (tokens, kv_width) pair shared by every sequence of the batch, seen by every query, used as given
/// (never rotated: they play the part of an already rotated KV cache). When the gradient pointers are
/// set, `backward` writes (does not add) the gradients with respect to keys and values there.
template <class Tensor>
struct attention_prefix {
  const Tensor* keys = nullptr;
  const Tensor* values = nullptr;
  Tensor* key_grad = nullptr;
  Tensor* value_grad = nullptr;
  [[nodiscard]] std::size_t tokens() const noexcept { return keys ? keys->rows() : 0; }
};

/// The prompt source of a plan without prompt tuning: no virtual tokens, no parameters.
/// A prompt source (methods/prompt_tuning.hpp) offers: construction from `(ctx, vocab, hidden,
/// method_config, seed)`; `tokens()`; `table(ctx, word_embedding_layer)`, the (tokens, hidden)
/// embeddings put in front of every sequence; `accumulate(ctx, d)`, which adds the gradient of the
/// leading rows of a (batch, tokens + seq, hidden) gradient; and `visit_parameters`.
template <Backend B>
class no_prompt : public visits_parameters<no_prompt<B>> {
  friend visits_parameters<no_prompt>;

 public:
  using backend = B;
  no_prompt(typename B::context&, std::size_t, std::size_t, const method_config&, std::uint64_t) {}
  [[nodiscard]] static constexpr std::size_t tokens() noexcept { return 0; }
  template <class Embedding>
  const typename B::tensor& table(typename B::context&, Embedding&) {
    throw error("no_prompt: the plan has no prompt tuning");
  }
  void accumulate(typename B::context&, const typename B::tensor&) {}

 private:
  template <class Self, class F>
  static void visit(Self&, const std::string&, F&) {}
};

/// The prefix source of a plan without prefix tuning: no prefix, no parameters.
/// A prefix source (methods/prefix_tuning.hpp) offers: construction from `(ctx, layers, kv_heads,
/// head_dim, method_config, seed)`; `tokens()`; `forward(ctx)`, run once per model forward before
/// the layers; `layer(i)`, the `attention_prefix` of layer i (with gradient buffers); `backward(ctx)`,
/// run once after every layer's backward; and `visit_parameters`.
template <Backend B>
class no_prefix : public visits_parameters<no_prefix<B>> {
  friend visits_parameters<no_prefix>;

 public:
  using backend = B;
  no_prefix(typename B::context&, std::size_t, std::size_t, std::size_t, const method_config&, std::uint64_t) {}
  [[nodiscard]] static constexpr std::size_t tokens() noexcept { return 0; }
  void forward(typename B::context&) {}
  [[nodiscard]] attention_prefix<typename B::tensor> layer(std::size_t) noexcept { return {}; }
  void backward(typename B::context&) {}

 private:
  template <class Self, class F>
  static void visit(Self&, const std::string&, F&) {}
};

}  // namespace peft::layers
