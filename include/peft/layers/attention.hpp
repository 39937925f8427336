#pragma once
/// \file `peft::layers::multi_head_attention`: the attention sublayer of every transformer family
/// here: bidirectional with a key-padding mask (BERT) or causal (Llama), grouped-query heads, optional
/// rotary position embedding in either pairing, optional biases. It owns the four projections and
/// returns O(attention(Q x, K x, V x)); the residual connection and the norms belong to the model's
/// block, since families place them differently.

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/linear.hpp"
#include "peft/layers/virtual_tokens.hpp"

namespace peft::layers {

/// Rotary position embedding settings (RoPE, Su et al. 2021, arXiv:2104.09864).
struct rotary_options {
  rope_pairing pairing = rope_pairing::half_split;
  double theta = 10000;
  std::size_t rotary_dims = 0;  ///< dimensions rotated per head; 0 = the whole head
};

/// Construction options of `multi_head_attention`. Sizes are run-time values; `module_names` are the
/// model's names of the four projections under `name` (BERT: self.query, self.key, self.value,
/// output.dense; Llama: q_proj, k_proj, v_proj, o_proj).
struct attention_options {
  std::size_t hidden = 0;    ///< model width: input and output features
  std::size_t heads = 0;     ///< query heads
  std::size_t kv_heads = 0;  ///< key/value heads, dividing `heads` (grouped-query attention); 0 = heads
  std::size_t head_dim = 0;  ///< 0 = hidden / heads
  bool causal = false;       ///< query i sees keys 0..i only (decoders)
  bool qkv_bias = true;
  bool output_bias = true;
  double dropout = 0;        ///< on the attention probabilities
  std::optional<rotary_options> rope{};
  weight_init init = weight_init::normal;
  double init_std = 0.02;
  std::string name = "attention";  ///< module path of the sublayer
  std::array<std::string, 4> module_names{"query", "key", "value", "output"};
  std::uint64_t seed = 0;
};

/// Per-call inputs of the attention: an optional key mask of 1 (token) / 0 (padding), (batch, seq),
/// or (batch, prefix tokens + seq) with a prefix; the absolute position of the first token, which
/// sets the rotary angles (a KV cache passes the number of cached tokens, prefix tuning its number
/// of prefix tokens); and an optional learned prefix of keys and values (prefix tuning).
template <class Tensor>
struct attention_inputs {
  const Tensor* key_mask = nullptr;
  std::size_t position_offset = 0;
  attention_prefix<Tensor> prefix{};
  /// The input of the query rows, (batch, rows, hidden), when only some rows' outputs are wanted
  /// (BERT's last block under first-token pooling); null: every row of x. Bidirectional attention
  /// without rotary embedding only (the rows' positions are not known). The key and value
  /// projections run with `ctx.dropout_row_spacing` 1; the rest with the caller's.
  const Tensor* queries = nullptr;
};

/// The keys and values an attention layer has seen, for incremental decoding: (batch, capacity,
/// kv_heads * head_dim) each, keys already rotated. `reserve` sizes it for a batch and a maximum
/// length; every `forward_cached` call appends its tokens and advances `length`.
template <Backend B>
struct kv_cache {
  typename B::tensor keys, values;
  std::size_t batch = 0, capacity = 0, length = 0;

  void reserve(std::size_t batch_size, std::size_t max_tokens, std::size_t width) {
    keys.resize(shape{batch_size, max_tokens, width});
    values.resize(shape{batch_size, max_tokens, width});
    batch = batch_size, capacity = max_tokens, length = 0;
  }
  void clear() noexcept { length = 0; }
};

/// out = O(concat_h softmax(mask(Q_h K_{g(h)}^T / sqrt(d))) V_{g(h)}), with query head h reading
/// key/value head g(h) = h / (heads / kv_heads), as Hugging Face's `repeat_kv` pairs them. Q and K are
/// rotated first when `rope` is set. With a prefix (prefix tuning), K and V are the prefix's rows
/// followed by the sequence's own, and query i (causal) sees the whole prefix and keys 0..i of the
/// sequence. The projections are the plan's layers for roles query, key,
/// value and attention_output, so every method reaches them. Scores and context are two-level
/// batched GEMMs on the (batch, seq, heads * d) layout, one call per query head of a group: no
/// per-head loop over tokens and no transpose.
/// Requirements: heads divisible by kv_heads; with rope, an even rotary_dims <= head_dim.
template <Backend B, class Plan>
class multi_head_attention : public visits_parameters<multi_head_attention<B, Plan>> {
  friend visits_parameters<multi_head_attention>;

 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using query_layer = typename Plan::template linear<roles::query, B>;
  using key_layer = typename Plan::template linear<roles::key, B>;
  using value_layer = typename Plan::template linear<roles::value, B>;
  using output_layer = typename Plan::template linear<roles::attention_output, B>;

  multi_head_attention(typename B::context& ctx, const attention_options& o, const method_config& cfg)
      : opts_(validated(o)),
        q_(ctx, projection(opts_, 0, opts_.hidden, opts_.heads * opts_.head_dim, opts_.qkv_bias), cfg),
        k_(ctx, projection(opts_, 1, opts_.hidden, opts_.kv_heads * opts_.head_dim, opts_.qkv_bias), cfg),
        v_(ctx, projection(opts_, 2, opts_.hidden, opts_.kv_heads * opts_.head_dim, opts_.qkv_bias), cfg),
        drop_(opts_.dropout, opts_.name + ".dropout"),
        o_(ctx, projection(opts_, 3, opts_.heads * opts_.head_dim, opts_.hidden, opts_.output_bias), cfg) {}

  /// x: (batch, seq, hidden). Returns (batch, seq, hidden).
  const tensor& forward(typename B::context& ctx, const tensor& x, const attention_inputs<tensor>& in = {}) {
    if (x.shape().rank() != 3 || x.cols() != opts_.hidden)
      throw shape_error(peft::detail::concat("attention '", opts_.name, "': input shape ", x.shape(), " is not (batch, seq, ",
                                             opts_.hidden, ")"));
    batch_ = x.shape()[0];
    kv_seq_ = x.shape()[1];
    separate_queries_ = in.queries != nullptr;
    const tensor& qx = separate_queries_ ? *in.queries : x;
    if (separate_queries_) {
      if (qx.shape().rank() != 3 || qx.shape()[0] != batch_ || qx.cols() != opts_.hidden)
        throw shape_error(peft::detail::concat("attention '", opts_.name, "': query rows ", qx.shape(), " are not (", batch_,
                                               ", rows, ", opts_.hidden, ")"));
      if (opts_.causal || opts_.rope)
        throw config_error(peft::detail::concat("attention '", opts_.name, "': separate query rows need a bidirectional "
                                                "attention without rotary embedding"));
    }
    seq_ = qx.shape()[1];
    prefix_ = in.prefix;
    prefix_len_ = prefix_.tokens();
    keys_ = prefix_len_ + kv_seq_;
    if (prefix_len_ && (!prefix_.values || !(prefix_.keys->shape() == shape{prefix_len_, kv_width()}) ||
                        !(prefix_.values->shape() == shape{prefix_len_, kv_width()})))
      throw shape_error(peft::detail::concat("attention '", opts_.name, "': prefix keys ", prefix_.keys->shape(), " and values ",
                                             prefix_.values ? prefix_.values->shape() : shape{}, " are not (tokens, ",
                                             kv_width(), ") each"));
    if (in.key_mask && !(in.key_mask->shape() == shape{batch_, keys_}))
      throw shape_error(peft::detail::concat("attention '", opts_.name, "': mask shape ", in.key_mask->shape(),
                                             " differs from (batch, prefix + seq) = [", batch_, ", ", keys_, "]"));
    offset_ = in.position_offset;
    const tensor* q = &q_.forward(ctx, qx);
    const tensor *k, *v;
    {  // every row of x: its dropouts draw every row's masks even while the caller keeps a few rows
      const dropout_row_spacing_scope all_rows(ctx, separate_queries_ ? 1 : ctx.dropout_row_spacing);
      k = &k_.forward(ctx, x);
      v = &v_.forward(ctx, x);
    }
    if (opts_.rope) {
      B::rotary(ctx, *q, rotary(opts_.heads, false), q_rot_);
      B::rotary(ctx, *k, rotary(opts_.kv_heads, false), k_rot_);
      q = &q_rot_, k = &k_rot_;
    }
    if (prefix_len_) {  // the prefix's rows, then the sequence's own
      k = &after_prefix(ctx, *prefix_.keys, *k, k_all_);
      v = &after_prefix(ctx, *prefix_.values, *v, v_all_);
    }
    q_out_ = q, k_out_ = k, v_out_ = v;
    // The members themselves in training, where backward reads them; shared within a block otherwise.
    tensor &scores = block_buffer<B>(ctx, scores_), &probs = block_buffer<B>(ctx, probs_),
           &context = block_buffer<B>(ctx, context_);
    scores.resize(shape{batch_, opts_.heads, seq_, keys_});
    for (std::size_t g = 0; g < group(); ++g)  // scores[b, h] = Q[b, :, h] K[b, :, g(h)]^T
      B::gemm_batched(ctx, op::n, op::t, seq_, keys_, d(), value_type(1), query_view(*q, g), kv_view(*k), value_type(0),
                      scores_view(scores, g), batch_, opts_.kv_heads);
    // The keys are the prefix and this call's own tokens, so query i sees keys 0..prefix + i.
    const softmax_mask mask{.query_rows = seq_, .blocks_per_mask_row = opts_.heads, .causal = opts_.causal,
                            .query_offset = prefix_len_};
    B::masked_softmax(ctx, scores, in.key_mask, mask, scale(), probs);
    probs_out_ = &probs;
    dropped_probs_ = &drop_.forward(ctx, probs);
    context.resize(shape{batch_, seq_, opts_.heads * d()});
    for (std::size_t g = 0; g < group(); ++g)  // context[b, :, h] = P[b, h] V[b, :, g(h)]
      B::gemm_batched(ctx, op::n, op::n, seq_, d(), keys_, value_type(1), scores_view(*dropped_probs_, g), kv_view(*v_out_),
                      value_type(0), query_view(context, g), batch_, opts_.kv_heads);
    return o_.forward(ctx, context);
  }

  /// dout: (batch, seq, hidden). Returns the gradient with respect to x.
  const tensor& backward(typename B::context& ctx, const tensor& dout) {
    if (!q_out_) throw error(peft::detail::concat("attention '", opts_.name, "': backward called before forward"));
    const tensor& dcontext = o_.backward(ctx, dout);
    // The scores are dead once the softmax has run, so their storage takes dP and then dS: two fewer
    // batch x heads x seq x seq tensors per layer. dS gets a buffer of its own only when the dropout
    // is off and so hands dP back unchanged (no kernel is asked to work in place).
    tensor& dprobs = scores_;
    tensor& dv_all = block_buffer<B>(ctx, dv_);
    dv_all.resize(v_out_->shape());
    for (std::size_t g = 0; g < group(); ++g) {
      // dP = dContext V^T ; dV = sum over the group of P^T dContext
      B::gemm_batched(ctx, op::n, op::t, seq_, keys_, d(), value_type(1), query_view(dcontext, g), kv_view(*v_out_),
                      value_type(0), scores_view(dprobs, g), batch_, opts_.kv_heads);
      B::gemm_batched(ctx, op::t, op::n, keys_, d(), seq_, value_type(1), scores_view(*dropped_probs_, g),
                      query_view(dcontext, g), value_type(g ? 1 : 0), kv_view(dv_all), batch_, opts_.kv_heads);
    }
    const tensor& dprobs_kept = drop_.backward(ctx, dprobs);
    tensor& dscores = &dprobs_kept == &dprobs ? block_buffer<B>(ctx, dscores_) : scores_;
    B::softmax_backward(ctx, probs_, dprobs_kept, scale(), dscores);
    tensor &dq = block_buffer<B>(ctx, dq_), &dk_all = block_buffer<B>(ctx, dk_);
    dq.resize(q_out_->shape());
    dk_all.resize(k_out_->shape());
    for (std::size_t g = 0; g < group(); ++g) {
      // dQ = dS K ; dK = sum over the group of dS^T Q
      B::gemm_batched(ctx, op::n, op::n, seq_, d(), keys_, value_type(1), scores_view(dscores, g), kv_view(*k_out_),
                      value_type(0), query_view(dq, g), batch_, opts_.kv_heads);
      B::gemm_batched(ctx, op::t, op::n, keys_, d(), seq_, value_type(1), scores_view(dscores, g), query_view(*q_out_, g),
                      value_type(g ? 1 : 0), kv_view(dk_all), batch_, opts_.kv_heads);
    }
    tensor* dk = &dk_all;
    tensor* dv = &dv_all;
    if (prefix_len_) {  // the prefix's rows, summed over the batch, to the prefix; the rest to K and V
      dk = &split_prefix(ctx, dk_all, prefix_.key_grad, block_buffer<B>(ctx, dk_own_));
      dv = &split_prefix(ctx, dv_all, prefix_.value_grad, block_buffer<B>(ctx, dv_own_));
    }
    if (opts_.rope) {  // the rotation is orthogonal: its backward turns the other way
      B::rotary(ctx, dq, rotary(opts_.heads, true), dq);
      B::rotary(ctx, *dk, rotary(opts_.kv_heads, true), *dk);
    }
    tensor& dx = block_buffer<B>(ctx, dx_);
    if (separate_queries_) {
      dqueries_ = &q_.backward(ctx, dq);
      B::copy(ctx, k_.backward(ctx, *dk), dx);
    } else {
      B::copy(ctx, q_.backward(ctx, dq), dx);
      B::axpy(ctx, value_type(1), k_.backward(ctx, *dk), dx);
    }
    B::axpy(ctx, value_type(1), v_.backward(ctx, *dv), dx);
    return dx;
  }
  /// After a backward of a forward with separate query rows (`attention_inputs::queries`), which
  /// then returned the gradient through the keys and values only: the gradient with respect to the
  /// query rows. Valid as long as that return value.
  const tensor& query_input_gradient() const {
    if (!separate_queries_ || !dqueries_)
      throw error(peft::detail::concat("attention '", opts_.name, "': no query-row gradient (the last forward had no "
                                       "separate query rows, or no backward followed it)"));
    return *dqueries_;
  }

  /// Inference with a KV cache: x (batch, new, hidden) are the next `new` tokens of each sequence,
  /// at positions cache.length, cache.length + 1, ...; their keys and values are appended to
  /// `cache`, and each query attends to every cached key up to its own position (and to none that
  /// `key_mask`, (batch, cache.length + new) of 1/0, marks as padding). No backward follows.
  const tensor& forward_cached(typename B::context& ctx, const tensor& x, kv_cache<B>& cache, const tensor* key_mask = nullptr) {
    if (x.shape().rank() != 3 || x.cols() != opts_.hidden)
      throw shape_error(peft::detail::concat("attention '", opts_.name, "': input shape ", x.shape(), " is not (batch, new, ",
                                             opts_.hidden, ")"));
    batch_ = x.shape()[0];
    seq_ = kv_seq_ = x.shape()[1];
    separate_queries_ = false;
    const std::size_t past = cache.length, total = past + seq_, width = opts_.kv_heads * d();
    if (cache.batch != batch_ || total > cache.capacity || !(cache.keys.shape() == shape{cache.batch, cache.capacity, width}))
      throw shape_error(peft::detail::concat("attention '", opts_.name, "': KV cache for ", cache.batch, " sequences of ",
                                             cache.capacity, " tokens cannot take ", seq_, " more tokens of ", batch_,
                                             " sequences after ", past));
    if (key_mask && !(key_mask->shape() == shape{batch_, total}))
      throw shape_error(peft::detail::concat("attention '", opts_.name, "': mask shape ", key_mask->shape(),
                                             " differs from (batch, cached + new) = [", batch_, ", ", total, "]"));
    offset_ = past;
    const tensor* q = &q_.forward(ctx, x);
    const tensor* k = &k_.forward(ctx, x);
    const tensor& v = v_.forward(ctx, x);
    if (opts_.rope) {
      B::rotary(ctx, *q, rotary(opts_.heads, false), q_rot_);
      B::rotary(ctx, *k, rotary(opts_.kv_heads, false), k_rot_);
      q = &q_rot_, k = &k_rot_;
    }
    using cptr = const value_type*;
    const matrix_batch<value_type*> keys_at{cache.keys.data() + past * width, width, 0, cache.capacity * width};
    const matrix_batch<value_type*> values_at{cache.values.data() + past * width, width, 0, cache.capacity * width};
    B::copy_batched(ctx, seq_, width, matrix_batch<cptr>{k->data(), width, 0, seq_ * width}, keys_at, batch_, 1);
    B::copy_batched(ctx, seq_, width, matrix_batch<cptr>{v.data(), width, 0, seq_ * width}, values_at, batch_, 1);
    cache.length = total;
    // Head j of sequence b in the cache, and score matrix (b, h = j * group + g) of seq_ x total.
    auto cached = [&](const tensor& t) { return matrix_batch<cptr>{t.data(), width, d(), cache.capacity * width}; };
    auto scores_at = [&](auto& t, std::size_t g) {
      using P = decltype(t.data());
      return matrix_batch<P>{t.data() + g * seq_ * total, total, group() * seq_ * total, opts_.heads * seq_ * total};
    };
    scores_.resize(shape{batch_, opts_.heads, seq_, total});
    for (std::size_t g = 0; g < group(); ++g)
      B::gemm_batched(ctx, op::n, op::t, seq_, total, d(), value_type(1), query_view(*q, g), cached(cache.keys), value_type(0),
                      scores_at(scores_, g), batch_, opts_.kv_heads);
    const softmax_mask mask{.query_rows = seq_, .blocks_per_mask_row = opts_.heads, .causal = opts_.causal, .query_offset = past};
    B::masked_softmax(ctx, scores_, key_mask, mask, scale(), probs_);
    probs_out_ = &probs_;
    context_.resize(shape{batch_, seq_, opts_.heads * d()});
    for (std::size_t g = 0; g < group(); ++g)
      B::gemm_batched(ctx, op::n, op::n, seq_, d(), total, value_type(1), scores_at(std::as_const(probs_), g),
                      cached(cache.values), value_type(0), query_view(context_, g), batch_, opts_.kv_heads);
    q_out_ = nullptr;  // no backward through a cached step
    return o_.forward(ctx, context_);
  }
  /// Width of one cached token: kv_heads * head_dim.
  [[nodiscard]] std::size_t kv_width() const noexcept { return opts_.kv_heads * opts_.head_dim; }

  void merge(typename B::context& ctx) {
    merge_if_possible(q_, ctx), merge_if_possible(k_, ctx), merge_if_possible(v_, ctx), merge_if_possible(o_, ctx);
  }
  void unmerge(typename B::context& ctx) {
    unmerge_if_possible(q_, ctx), unmerge_if_possible(k_, ctx), unmerge_if_possible(v_, ctx), unmerge_if_possible(o_, ctx);
  }

  [[nodiscard]] const attention_options& options() const noexcept { return opts_; }
  /// The (batch, heads, seq, seq) attention probabilities of the last forward (before dropout); in
  /// a model's block without backward, a shared buffer that the block after next overwrites.
  [[nodiscard]] const tensor& probabilities() const noexcept { return probs_out_ ? *probs_out_ : probs_; }
  query_layer& query() noexcept { return q_; }
  key_layer& key() noexcept { return k_; }
  value_layer& value() noexcept { return v_; }
  output_layer& output() noexcept { return o_; }

 private:
  static attention_options validated(attention_options o) {
    if (o.kv_heads == 0) o.kv_heads = o.heads;
    if (o.hidden == 0 || o.heads == 0)
      throw config_error(peft::detail::concat("attention '", o.name, "': hidden (", o.hidden, ") and heads (", o.heads,
                                              ") must be positive"));
    if (o.head_dim == 0) {
      if (o.hidden % o.heads != 0)
        throw config_error(peft::detail::concat("attention '", o.name, "': hidden ", o.hidden,
                                                " is not a multiple of the number of heads ", o.heads));
      o.head_dim = o.hidden / o.heads;
    }
    if (o.heads % o.kv_heads != 0)
      throw config_error(peft::detail::concat("attention '", o.name, "': ", o.heads, " query heads are not a multiple of ",
                                              o.kv_heads, " key/value heads"));
    if (o.rope) {
      if (o.rope->rotary_dims == 0) o.rope->rotary_dims = o.head_dim;
      if (o.rope->rotary_dims % 2 != 0 || o.rope->rotary_dims > o.head_dim || !(o.rope->theta > 0))
        throw config_error(peft::detail::concat("attention '", o.name, "': rotary_dims ", o.rope->rotary_dims,
                                                " must be even and at most head_dim ", o.head_dim, ", theta positive"));
    }
    return o;
  }
  static linear_options projection(const attention_options& o, std::size_t which, std::size_t in, std::size_t out, bool bias) {
    return {.in_features = in, .out_features = out, .bias = bias, .name = o.name + "." + o.module_names[which],
            .seed = derive_seed(o.seed, which + 1), .init = o.init, .init_std = o.init_std};
  }
  // all = [prefix ; own] for every sequence.
  const tensor& after_prefix(typename B::context& ctx, const tensor& prefix, const tensor& own, tensor& all) const {
    all.resize(shape{batch_, keys_, kv_width()});
    broadcast_sequence_rows<B>(ctx, prefix, all);
    copy_sequence_rows<B>(ctx, own, 0, all, prefix_len_, kv_seq_);
    return all;
  }
  // The gradient of `after_prefix`: the prefix's rows summed over the batch into `prefix_grad` (when
  // set), the sequence's own rows into `own`.
  tensor& split_prefix(typename B::context& ctx, const tensor& all, tensor* prefix_grad, tensor& own) {
    if (prefix_grad) {
      prefix_grad->resize(shape{prefix_len_, kv_width()});
      sum_sequence_rows<B>(ctx, all, prefix_len_, value_type(0), ones_, *prefix_grad);
    }
    own.resize(shape{batch_, kv_seq_, kv_width()});
    copy_sequence_rows<B>(ctx, all, prefix_len_, own, 0, kv_seq_);
    return own;
  }
  [[nodiscard]] std::size_t d() const noexcept { return opts_.head_dim; }
  [[nodiscard]] std::size_t group() const noexcept { return opts_.heads / opts_.kv_heads; }
  [[nodiscard]] value_type scale() const noexcept { return value_type(1 / std::sqrt(double(opts_.head_dim))); }
  [[nodiscard]] rotary_args rotary(std::size_t heads, bool inverse) const {
    return {.heads = heads, .head_dim = d(), .rotary_dims = opts_.rope->rotary_dims, .seq_len = seq_,
            .position_offset = offset_, .theta = opts_.rope->theta, .pairing = opts_.rope->pairing, .inverse = inverse};
  }
  // Query head h = j * group + g of sequence b inside a (batch, seq, heads * d) tensor, as matrix
  // (b, j) of batch g: one call covers the g-th head of every group.
  template <class Tn>
  auto query_view(Tn& t, std::size_t g) const {
    using P = decltype(t.data());
    return matrix_batch<P>{t.data() + g * d(), opts_.heads * d(), group() * d(), seq_ * opts_.heads * d()};
  }
  // Key/value head j of sequence b inside a (batch, keys, kv_heads * d) tensor (keys = prefix + seq).
  template <class Tn>
  auto kv_view(Tn& t) const {
    using P = decltype(t.data());
    return matrix_batch<P>{t.data(), opts_.kv_heads * d(), d(), keys_ * opts_.kv_heads * d()};
  }
  // Score matrix (b, h = j * group + g) of a (batch, heads, seq, keys) tensor, as matrix (b, j) of batch g.
  template <class Tn>
  auto scores_view(Tn& t, std::size_t g) const {
    using P = decltype(t.data());
    return matrix_batch<P>{t.data() + g * seq_ * keys_, keys_, group() * seq_ * keys_, opts_.heads * seq_ * keys_};
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const auto& n = self.opts_.module_names;
    self.q_.visit_parameters(prefix + n[0] + ".", f);
    self.k_.visit_parameters(prefix + n[1] + ".", f);
    self.v_.visit_parameters(prefix + n[2] + ".", f);
    self.o_.visit_parameters(prefix + n[3] + ".", f);
  }

  attention_options opts_;
  std::size_t batch_ = 0, seq_ = 0, kv_seq_ = 0, offset_ = 0, prefix_len_ = 0, keys_ = 0;  // seq_: query rows
  bool separate_queries_ = false;
  attention_prefix<tensor> prefix_{};
  query_layer q_;
  key_layer k_;
  value_layer v_;
  dropout<B> drop_;
  output_layer o_;
  const tensor *q_out_ = nullptr, *k_out_ = nullptr, *v_out_ = nullptr, *dropped_probs_ = nullptr, *dqueries_ = nullptr,
               *probs_out_ = nullptr;
  tensor q_rot_, k_rot_, scores_, probs_, context_, dscores_, dq_, dk_, dv_, dx_;  // scores_ also holds dP, dS
  tensor k_all_, v_all_, dk_own_, dv_own_, ones_;  // with a prefix only
};

}  // namespace peft::layers
