#pragma once
/// \file BERT-family encoder and task heads, built from a plan (Hugging Face's `BertModel`,
/// `BertForSequenceClassification`, `BertForTokenClassification`, with the same parameter names), and
/// assembled from the generic blocks of `layers/`: multi-head attention (bidirectional, key-padding
/// mask) and a plain feed-forward, each followed by dropout, the residual and a post-layer-norm.

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/activation.hpp"
#include "peft/layers/attention.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/embedding.hpp"
#include "peft/layers/feed_forward.hpp"
#include "peft/layers/linear.hpp"
#include "peft/layers/virtual_tokens.hpp"
#include "peft/methods/plan.hpp"
#include "peft/models/bert/config.hpp"
#include "peft/models/encoder_batch.hpp"

namespace peft::models {

/// Word + position + token-type embeddings, LayerNorm, dropout (HF `BertEmbeddings`). With virtual
/// tokens (prompt tuning) their table comes first in every sequence, with token type 0, and positions
/// count from them; a position offset (prefix tuning's prefix length, as Hugging Face counts a KV
/// cache) shifts every position.
template <Backend B, class Plan>
class bert_embeddings : public visits_parameters<bert_embeddings<B, Plan>> {
  friend visits_parameters<bert_embeddings>;
 public:
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;
  using embedding_layer = typename Plan::template embedding<B>;
  using norm_layer = typename Plan::template norm<B>;

  /// `prefix` starts every module name (e.g. "bert.").
  bert_embeddings(typename B::context& ctx, const bert_config& c, const method_config& cfg, std::uint64_t seed,
                  const std::string& prefix = "")
      : word_(ctx, c.vocab_size, c.hidden_size, prefix + "embeddings.word_embeddings", derive_seed(seed, 1), c.initializer_range),
        position_(ctx, c.max_position_embeddings, c.hidden_size, prefix + "embeddings.position_embeddings", derive_seed(seed, 2),
                  c.initializer_range),
        token_type_(ctx, c.type_vocab_size, c.hidden_size, prefix + "embeddings.token_type_embeddings", derive_seed(seed, 3),
                    c.initializer_range),
        norm_(ctx, c.hidden_size, c.layer_norm_eps, prefix + "embeddings.LayerNorm", cfg),
        drop_(c.hidden_dropout_prob, prefix + "embeddings.dropout") {}

  /// `prompt`: the (virtual tokens, hidden) table put before every sequence, or null.
  const tensor& forward(typename B::context& ctx, const encoder_batch& batch, const tensor* prompt = nullptr,
                        std::size_t position_offset = 0) {
    virtual_ = prompt ? prompt->rows() : 0;
    const std::size_t len = virtual_ + batch.seq_len, n = batch.batch_size * len;
    if (position_offset + len > position_.num_embeddings())
      throw shape_error(peft::detail::concat("bert: sequence length ", batch.seq_len, " (with ", virtual_ + position_offset,
                                             " virtual tokens) exceeds max_position_embeddings ", position_.num_embeddings()));
    const shape out{batch.batch_size, len, word_.dim()};
    positions_.resize(n);
    for (std::size_t i = 0; i < n; ++i) positions_[i] = std::int32_t(position_offset + i % len);
    types_.assign(n, 0);
    if (!batch.token_type_ids.empty())
      for (std::size_t b = 0; b < batch.batch_size; ++b)
        std::copy_n(batch.token_type_ids.begin() + std::ptrdiff_t(b * batch.seq_len), batch.seq_len,
                    types_.begin() + std::ptrdiff_t(b * len + virtual_));
    const tensor& words = word_.forward(ctx, batch.input_ids, shape{batch.batch_size, batch.seq_len, word_.dim()});
    if (virtual_) {
      sum_.resize(out);
      layers::broadcast_sequence_rows<B>(ctx, *prompt, sum_);
      layers::copy_sequence_rows<B>(ctx, words, 0, sum_, virtual_, batch.seq_len);
    } else {
      B::copy(ctx, words, sum_);
    }
    B::axpy(ctx, typename B::value_type(1), position_.forward(ctx, positions_, out), sum_);
    B::axpy(ctx, typename B::value_type(1), token_type_.forward(ctx, types_, out), sum_);
    return drop_.forward(ctx, norm_.forward(ctx, sum_));
  }
  /// Returns the gradient with respect to the summed embeddings, (batch, virtual + seq, hidden):
  /// its leading rows are the prompt's.
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    const tensor& d = norm_.backward(ctx, drop_.backward(ctx, dy));
    if constexpr (embedding_layer::weight_parameter::trainable) {
      if (virtual_) {
        dwords_.resize(shape{d.shape()[0], d.shape()[1] - virtual_, d.cols()});
        layers::copy_sequence_rows<B>(ctx, d, virtual_, dwords_, 0, dwords_.shape()[1]);
        word_.backward(ctx, dwords_);
      } else {
        word_.backward(ctx, d);
      }
    }
    position_.backward(ctx, d);
    token_type_.backward(ctx, d);
    return d;
  }
  embedding_layer& word_embeddings() noexcept { return word_; }
  void merge(typename B::context& ctx) { merge_if_possible(norm_, ctx); }
  void unmerge(typename B::context& ctx) { unmerge_if_possible(norm_, ctx); }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.word_.visit_parameters(prefix + "word_embeddings.", f);
    self.position_.visit_parameters(prefix + "position_embeddings.", f);
    self.token_type_.visit_parameters(prefix + "token_type_embeddings.", f);
    self.norm_.visit_parameters(prefix + "LayerNorm.", f);
  }

  embedding_layer word_, position_, token_type_;
  norm_layer norm_;
  layers::dropout<B> drop_;
  std::vector<std::int32_t> positions_, types_;
  std::size_t virtual_ = 0;
  tensor sum_, dwords_;
};

/// Names under which a BERT parameter may appear in a checkpoint: as is, with or without the `bert.`
/// prefix (BertModel vs BertFor* checkpoints), and the legacy LayerNorm `gamma`/`beta`. The models of
/// this header give it to `io::load_checkpoint` as their `checkpoint_names`.
inline std::vector<std::string> bert_checkpoint_names(const std::string& name) {
  std::vector<std::string> out{name};
  const std::string prefix = "bert.";
  if (name.rfind(prefix, 0) == 0) out.push_back(name.substr(prefix.size()));
  else out.push_back(prefix + name);
  const std::size_t n = out.size();
  for (std::size_t i = 0; i < n; ++i) {
    const std::string a = out[i];  // a copy: push_back below may reallocate
    auto ends = [&](const std::string& s) { return a.size() >= s.size() && a.compare(a.size() - s.size(), s.size(), s) == 0; };
    if (ends("LayerNorm.weight")) out.push_back(a.substr(0, a.size() - 6) + "gamma");
    if (ends("LayerNorm.bias")) out.push_back(a.substr(0, a.size() - 4) + "beta");
  }
  return out;
}

/// Options of a BERT linear layer: bias, N(0, initializer_range) weights and zero bias, as
/// transformers initialises BERT.
inline layers::linear_options bert_linear(const bert_config& c, std::size_t in, std::size_t out, std::string name,
                                          std::uint64_t seed) {
  return {.in_features = in, .out_features = out, .bias = true, .name = std::move(name), .seed = seed,
          .init = layers::weight_init::normal, .init_std = c.initializer_range};
}

/// LayerNorm(x + dropout(y)): the residual and post-layer-norm that end both BERT sublayers (HF
/// `BertSelfOutput` and `BertOutput` after their dense layer). Name: `output.LayerNorm.*`.
template <Backend B, class Plan>
class bert_residual_norm : public visits_parameters<bert_residual_norm<B, Plan>> {
  friend visits_parameters<bert_residual_norm>;

 public:
  using backend = B;
  using tensor = typename B::tensor;
  using norm_layer = typename Plan::template norm<B>;

  /// `name` is the sublayer's module path.
  bert_residual_norm(typename B::context& ctx, const bert_config& c, const method_config& cfg, const std::string& name)
      : drop_(c.hidden_dropout_prob, name + ".output.dropout"),
        norm_(ctx, c.hidden_size, c.layer_norm_eps, name + ".output.LayerNorm", cfg) {}

  /// x: the sublayer's input; y: its output.
  const tensor& forward(typename B::context& ctx, const tensor& x, const tensor& y) {
    tensor& residual = block_buffer<B>(ctx, residual_);  // the norm's input: its own in training
    B::copy(ctx, drop_.forward(ctx, y), residual);
    B::axpy(ctx, typename B::value_type(1), x, residual);
    return norm_.forward(ctx, residual);
  }
  /// The gradient with respect to y; `input_gradient` then adds the residual path.
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    dres_ = &norm_.backward(ctx, dy);
    return drop_.backward(ctx, *dres_);
  }
  /// The gradient reaching x through the residual path (after `backward`).
  const tensor& residual_gradient() const noexcept { return *dres_; }
  /// d x = (gradient through the sublayer) + (residual path).
  const tensor& input_gradient(typename B::context& ctx, const tensor& through_sublayer) {
    tensor& dx = block_buffer<B>(ctx, dx_);
    B::copy(ctx, through_sublayer, dx);
    B::axpy(ctx, typename B::value_type(1), *dres_, dx);
    return dx;
  }
  void merge(typename B::context& ctx) { merge_if_possible(norm_, ctx); }
  void unmerge(typename B::context& ctx) { unmerge_if_possible(norm_, ctx); }
  norm_layer& norm() noexcept { return norm_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.norm_.visit_parameters(prefix + "output.LayerNorm.", f);
  }

  layers::dropout<B> drop_;
  norm_layer norm_;
  const tensor* dres_ = nullptr;
  tensor residual_, dx_;
};

/// Attention sublayer (HF `BertAttention`): LayerNorm(x + dropout(attention(x))), bidirectional with
/// a key-padding mask. Names: `self.query.*`, `self.key.*`, `self.value.*`, `output.dense.*`,
/// `output.LayerNorm.*`.
template <Backend B, class Plan>
class bert_attention : public visits_parameters<bert_attention<B, Plan>> {
  friend visits_parameters<bert_attention>;

 public:
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;
  using attention_layer = layers::multi_head_attention<B, Plan>;
  using norm_layer = typename Plan::template norm<B>;

  /// `name` is the sublayer's module path (e.g. "bert.encoder.layer.0.attention").
  bert_attention(typename B::context& ctx, const bert_config& c, const method_config& cfg, const std::string& name,
                 std::uint64_t seed)
      : attention_(ctx, options(c, name, seed), cfg), post_(ctx, c, cfg, name) {}

  /// x: (batch, seq, hidden); key_mask: (batch, prefix + seq) of 1 (token) / 0 (padding); `prefix`:
  /// prefix tuning's keys and values for this layer, or none. `first_row_only`: compute the output
  /// of row 0 of every sequence only, (batch, 1, hidden), attending to every row as before.
  const tensor& forward(typename B::context& ctx, const tensor& x, const tensor& key_mask,
                        layers::attention_prefix<tensor> prefix = {}, bool first_row_only = false) {
    first_row_only_ = first_row_only;
    if (!first_row_only) return post_.forward(ctx, x, attention_.forward(ctx, x, {.key_mask = &key_mask, .prefix = prefix}));
    const std::size_t batch = x.shape()[0], seq = x.shape()[1];
    first_host_.resize(batch);
    for (std::size_t b = 0; b < batch; ++b) first_host_[b] = std::int32_t(b * seq);
    B::copy_labels(ctx, first_host_, first_ids_);
    tensor& x_first = block_buffer<B>(ctx, x_first_);  // the query's input: its own in training
    x_first.resize(shape{batch, 1, x.cols()});
    B::gather_rows(ctx, x, first_ids_, x_first);
    return post_.forward(ctx, x_first, attention_.forward(ctx, x, {.key_mask = &key_mask, .prefix = prefix, .queries = &x_first}));
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!first_row_only_) return post_.input_gradient(ctx, attention_.backward(ctx, post_.backward(ctx, dy)));
    // Every row reaches the output through the keys and values; row 0 also through its query and
    // the residual.
    const tensor& through_keys_values = attention_.backward(ctx, post_.backward(ctx, dy));
    tensor& dx = block_buffer<B>(ctx, dx_);
    B::copy(ctx, through_keys_values, dx);
    B::scatter_add_rows(ctx, attention_.query_input_gradient(), first_ids_, dx);
    B::scatter_add_rows(ctx, post_.residual_gradient(), first_ids_, dx);
    return dx;
  }
  void merge(typename B::context& ctx) { attention_.merge(ctx), post_.merge(ctx); }
  void unmerge(typename B::context& ctx) { attention_.unmerge(ctx), post_.unmerge(ctx); }

  attention_layer& attention() noexcept { return attention_; }
  typename attention_layer::query_layer& query() noexcept { return attention_.query(); }
  typename attention_layer::key_layer& key() noexcept { return attention_.key(); }
  typename attention_layer::value_layer& value() noexcept { return attention_.value(); }
  typename attention_layer::output_layer& output() noexcept { return attention_.output(); }
  norm_layer& norm() noexcept { return post_.norm(); }

  /// The generic attention's options for BERT: bidirectional, biases, no rotary embedding.
  static layers::attention_options options(const bert_config& c, const std::string& name, std::uint64_t seed) {
    return {.hidden = c.hidden_size, .heads = c.num_attention_heads, .dropout = c.attention_probs_dropout_prob,
            .init = layers::weight_init::normal, .init_std = c.initializer_range, .name = name,
            .module_names = {"self.query", "self.key", "self.value", "output.dense"}, .seed = seed};
  }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.attention_.visit_parameters(prefix, f);
    self.post_.visit_parameters(prefix, f);
  }

  attention_layer attention_;
  bert_residual_norm<B, Plan> post_;
  bool first_row_only_ = false;
  std::vector<std::int32_t> first_host_;
  typename B::index_tensor first_ids_;
  tensor x_first_, dx_;
};

/// Feed-forward sublayer: LayerNorm(x + dropout(Out(act(In(x))))) (HF `BertIntermediate` +
/// `BertOutput`). Names: `intermediate.dense.*`, `output.dense.*`, `output.LayerNorm.*`.
template <Backend B, class Plan>
class bert_ffn : public visits_parameters<bert_ffn<B, Plan>> {
  friend visits_parameters<bert_ffn>;

 public:
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;
  using ffn_layer = layers::feed_forward<B, Plan>;
  using in_layer = typename ffn_layer::in_layer;
  using out_layer = typename ffn_layer::out_layer;
  using norm_layer = typename Plan::template norm<B>;

  bert_ffn(typename B::context& ctx, const bert_config& c, const method_config& cfg, const std::string& name,
           std::uint64_t seed)
      : ffn_(ctx, options(c, name, seed), cfg), post_(ctx, c, cfg, name) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) { return post_.forward(ctx, x, ffn_.forward(ctx, x)); }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    return post_.input_gradient(ctx, ffn_.backward(ctx, post_.backward(ctx, dy)));
  }
  void merge(typename B::context& ctx) { ffn_.merge(ctx), post_.merge(ctx); }
  void unmerge(typename B::context& ctx) { ffn_.unmerge(ctx), post_.unmerge(ctx); }
  in_layer& intermediate() noexcept { return ffn_.input(); }
  out_layer& output() noexcept { return ffn_.output(); }

  /// The generic feed-forward's options for BERT: plain (not gated), biases, `hidden_act`.
  static layers::feed_forward_options options(const bert_config& c, const std::string& name, std::uint64_t seed) {
    return {.hidden = c.hidden_size, .intermediate = c.intermediate_size, .act = c.hidden_act, .gated = false, .bias = true,
            .init = layers::weight_init::normal, .init_std = c.initializer_range, .name = name,
            .module_names = {"intermediate.dense", "output.dense", "gate"}, .seed = seed};
  }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.ffn_.visit_parameters(prefix, f);
    self.post_.visit_parameters(prefix, f);
  }

  ffn_layer ffn_;
  bert_residual_norm<B, Plan> post_;
};

/// One post-LN encoder block (HF `BertLayer`): attention sublayer, then feed-forward sublayer.
template <Backend B, class Plan>
class bert_layer : public visits_parameters<bert_layer<B, Plan>> {
  friend visits_parameters<bert_layer>;
 public:
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;

  bert_layer(typename B::context& ctx, const bert_config& c, const method_config& cfg, std::size_t index, std::uint64_t seed,
             const std::string& prefix = "")
      : attention_(ctx, c, cfg, prefix + "encoder.layer." + std::to_string(index) + ".attention", derive_seed(seed, 1)),
        ffn_(ctx, c, cfg, prefix + "encoder.layer." + std::to_string(index), derive_seed(seed, 2)) {}

  /// `first_row_only`: the output of row 0 of every sequence only, (batch, 1, hidden).
  const tensor& forward(typename B::context& ctx, const tensor& x, const tensor& key_mask,
                        layers::attention_prefix<tensor> prefix = {}, bool first_row_only = false) {
    if (!first_row_only) return ffn_.forward(ctx, attention_.forward(ctx, x, key_mask, prefix));
    // Dropout draws the masks the full block would give row 0, and reserves the rest.
    const dropout_row_spacing_scope rows(ctx, x.shape()[1]);
    return ffn_.forward(ctx, attention_.forward(ctx, x, key_mask, prefix, true));
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    return attention_.backward(ctx, ffn_.backward(ctx, dy));
  }
  void merge(typename B::context& ctx) { attention_.merge(ctx), ffn_.merge(ctx); }
  void unmerge(typename B::context& ctx) { attention_.unmerge(ctx), ffn_.unmerge(ctx); }
  bert_attention<B, Plan>& attention() noexcept { return attention_; }
  bert_ffn<B, Plan>& ffn() noexcept { return ffn_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.attention_.visit_parameters(prefix + "attention.", f);
    self.ffn_.visit_parameters(prefix, f);
  }

  bert_attention<B, Plan> attention_;
  bert_ffn<B, Plan> ffn_;
};

/// The encoder (HF `BertModel` without pooler): embeddings and `num_hidden_layers` blocks of one type
/// (a run-time count, not a nested type). Output: last hidden state (batch, virtual + seq, hidden),
/// where `virtual_tokens()` leading rows are prompt tuning's (none without it). Names:
/// `embeddings.*`, `encoder.layer.<i>.*`. Modules are built with their full names (`prefix` + these,
/// "bert." inside the task heads), which is what `lora_config` patterns and errors see. The plan's
/// prompt and prefix sources (prompt and prefix tuning) live here too, named at the top of the
/// model (`prompt_encoder.*`), as PEFT's prompt encoder sits beside the base model; the two cannot
/// be active together.
template <Backend B, class Plan>
class bert_encoder : public visits_parameters<bert_encoder<B, Plan>> {
  friend visits_parameters<bert_encoder>;
 public:
  static std::vector<std::string> checkpoint_names(const std::string& name) { return bert_checkpoint_names(name); }
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;

  bert_encoder(typename B::context& ctx, const bert_config& c, const method_config& cfg = {}, std::uint64_t seed = 0,
               const std::string& prefix = "")
      : config_((c.validate(), c)), embeddings_(ctx, c, cfg, derive_seed(seed, 100), prefix),
        prompt_(ctx, c.vocab_size, c.hidden_size, cfg, derive_seed(seed, 300)),
        prefix_(ctx, c.num_hidden_layers, c.num_attention_heads, c.hidden_size / c.num_attention_heads, cfg, derive_seed(seed, 301)) {
    if (prompt_.tokens() && prefix_.tokens())
      throw config_error("bert: prompt tuning and prefix tuning cannot run together (PEFT gives a model one prompt encoder)");
    layers_.reserve(c.num_hidden_layers);
    for (std::size_t i = 0; i < c.num_hidden_layers; ++i)
      layers_.emplace_back(ctx, c, cfg, i, derive_seed(seed, 200 + i), prefix);
    prepare_methods<Plan>(ctx, *this, cfg);
  }

  /// The last hidden state, (batch, virtual + seq, hidden); with `first_row_only`, (batch, 1,
  /// hidden): the last block computes row 0 of every sequence only (what first-token pooling reads;
  /// the other rows' outputs would never be read), the same values as row 0 of the full output.
  const tensor& forward(typename B::context& ctx, const encoder_batch& batch, bool first_row_only = false) {
    batch.validate();
    // Keys: the prefix, the virtual tokens, then the sequence; all but the sequence's padding are seen.
    const std::size_t virt = prompt_.tokens(), pre = prefix_.tokens(), len = virt + batch.seq_len;
    mask_host_.assign(batch.batch_size * (pre + len), value_type(1));
    for (std::size_t b = 0; b < batch.batch_size; ++b)
      for (std::size_t s = 0; s < batch.seq_len && !batch.attention_mask.empty(); ++s)
        mask_host_[b * (pre + len) + pre + virt + s] = value_type(batch.attention_mask[b * batch.seq_len + s]);
    B::copy_from_host(ctx, mask_host_, shape{batch.batch_size, pre + len}, mask_);
    prefix_.forward(ctx);
    const tensor* h = &embeddings_.forward(ctx, batch, virt ? &prompt_.table(ctx, embeddings_.word_embeddings()) : nullptr, pre);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const bool pruned = first_row_only && i + 1 == layers_.size();
      if (!ctx.forward_only) {
        h = &layers_[i].forward(ctx, *h, mask_, prefix_.layer(i), pruned);
        continue;
      }
      const auto block = open_block<B>(ctx, i);  // no backward follows: the blocks share their buffers
      h = &layers_[i].forward(ctx, *h, mask_, prefix_.layer(i), pruned);
    }
    return *h;
  }
  void backward(typename B::context& ctx, const tensor& dy) {
    const tensor* d = &dy;
    for (std::size_t i = layers_.size(); i-- > 0;) {
      const auto block = open_block<B>(ctx, i);
      d = &layers_[i].backward(ctx, *d);
    }
    const tensor& dembeddings = embeddings_.backward(ctx, *d);
    if (prompt_.tokens()) prompt_.accumulate(ctx, dembeddings);
    prefix_.backward(ctx);
  }
  void merge(typename B::context& ctx) {
    embeddings_.merge(ctx);
    for (auto& l : layers_) l.merge(ctx);
  }
  void unmerge(typename B::context& ctx) {
    embeddings_.unmerge(ctx);
    for (auto& l : layers_) l.unmerge(ctx);
  }

  [[nodiscard]] const bert_config& config() const noexcept { return config_; }
  /// The key mask of the last forward, (batch, prefix + virtual + seq) of 1 / 0, on the device and
  /// on the host.
  [[nodiscard]] const tensor& mask() const noexcept { return mask_; }
  [[nodiscard]] std::span<const value_type> mask_host() const noexcept { return mask_host_; }
  /// How many leading rows of the output are virtual tokens (prompt tuning), and how many prefix
  /// tokens every attention layer sees first (prefix tuning).
  [[nodiscard]] std::size_t virtual_tokens() const noexcept { return prompt_.tokens(); }
  [[nodiscard]] std::size_t prefix_tokens() const noexcept { return prefix_.tokens(); }
  bert_layer<B, Plan>& layer(std::size_t i) { return layers_.at(i); }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.embeddings_.visit_parameters(prefix + "embeddings.", f);
    for (std::size_t i = 0; i < self.layers_.size(); ++i)
      self.layers_[i].visit_parameters(prefix + "encoder.layer." + std::to_string(i) + ".", f);
    self.prompt_.visit_parameters("", f);  // named at the top of the model
    self.prefix_.visit_parameters("", f);
  }

  bert_config config_;
  bert_embeddings<B, Plan> embeddings_;
  typename Plan::template prompt<B> prompt_;
  typename Plan::template prefix<B> prefix_;
  std::vector<bert_layer<B, Plan>> layers_;
  std::vector<value_type> mask_host_;
  tensor mask_;
};

/// How a sequence classifier summarises the tokens.
enum class pooling {
  first_token,  ///< HF's pooler: tanh(dense(h[:, 0])); PEFT-loadable as BertForSequenceClassification
  masked_mean,  ///< mean over non-padding tokens (no pooler); not a Hugging Face head
};

/// Options of the task heads.
struct head_options {
  std::size_t num_labels = 2;
  pooling pool = pooling::first_token;
  std::uint64_t seed = 0;
  /// With first-token pooling, let the last block compute the first row of every sequence only: the
  /// pooler reads nothing else, so the logits and every gradient are those of the full computation
  /// (up to summation order, and dropout draws fewer masks). Off: every row, as Hugging Face does.
  bool prune_last_block = true;
};

/// `BertForSequenceClassification`: encoder, pooling, dropout, classifier. Names: `bert.*` for the
/// encoder and pooler (`bert.pooler.dense.*`), `classifier.*` for the head (trained by every plan).
/// Output: logits (batch, num_labels).
template <Backend B, class Plan>
class bert_for_sequence_classification : public visits_parameters<bert_for_sequence_classification<B, Plan>> {
  friend visits_parameters<bert_for_sequence_classification>;
 public:
  static std::vector<std::string> checkpoint_names(const std::string& name) { return bert_checkpoint_names(name); }
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using pooler_layer = typename Plan::template linear<roles::pooler, B>;
  using classifier_layer = typename Plan::template linear<roles::classifier, B>;

  bert_for_sequence_classification(typename B::context& ctx, const bert_config& c, const head_options& h,
                                   const method_config& cfg = {})
      : options_(h),
        encoder_(ctx, c, cfg, derive_seed(h.seed, 1), "bert."),
        pooler_(ctx, bert_linear(c, c.hidden_size, c.hidden_size, "bert.pooler.dense", derive_seed(h.seed, 2)), cfg),
        pool_act_(activation::tanh),
        drop_(c.hidden_dropout_prob, "dropout"),
        classifier_(ctx, bert_linear(c, c.hidden_size, h.num_labels, "classifier", derive_seed(h.seed, 3)), cfg) {
    prepare_methods<Plan>(ctx, *this, cfg);  // again over the whole model: the pooler may be adapted too
  }

  const tensor& forward(typename B::context& ctx, const encoder_batch& batch) {
    const bool first = options_.pool == pooling::first_token;
    const tensor& hs = encoder_.forward(ctx, batch, first && options_.prune_last_block);
    batch_ = batch.batch_size;
    seq_ = hs.shape()[1];  // with prompt tuning, its virtual tokens first (the pooler reads the first); 1 when pruned
    const std::size_t hidden = hs.cols();
    pooled_.resize(shape{batch_, hidden});
    if (first) {
      first_.resize(batch_);
      for (std::size_t b = 0; b < batch_; ++b) first_[b] = std::int32_t(b * seq_);
      B::copy_labels(ctx, first_, first_ids_);
      B::gather_rows(ctx, hs, first_ids_, pooled_);
      return classifier_.forward(ctx, drop_.forward(ctx, pool_act_.forward(ctx, pooler_.forward(ctx, pooled_))));
    }
    // Masked mean as a batched product: pooled[b] = w[b] H[b], w[b, s] = mask[b, s] / count[b], over
    // the rows the encoder returned (virtual tokens included; a prefix is not a row).
    weights_host_.assign(batch_ * seq_, value_type(0));
    const auto mask = encoder_.mask_host();
    const std::size_t keys = mask.size() / batch_, skip = keys - seq_;
    for (std::size_t b = 0; b < batch_; ++b) {
      std::size_t count = 0;
      for (std::size_t s = 0; s < seq_; ++s) count += mask[b * keys + skip + s] != value_type(0);
      for (std::size_t s = 0; s < seq_; ++s)
        if (mask[b * keys + skip + s] != value_type(0)) weights_host_[b * seq_ + s] = value_type(1) / value_type(count);
    }
    B::copy_from_host(ctx, weights_host_, shape{batch_, seq_}, weights_);
    B::gemm_batched(ctx, op::n, op::n, 1, hidden, seq_, value_type(1), {weights_.data(), seq_, 0, seq_},
                    {hs.data(), hidden, 0, seq_ * hidden}, value_type(0), {pooled_.data(), hidden, 0, hidden}, batch_, 1);
    return classifier_.forward(ctx, drop_.forward(ctx, pooled_));
  }

  void backward(typename B::context& ctx, const tensor& dlogits) {
    const tensor& dhead = drop_.backward(ctx, classifier_.backward(ctx, dlogits));
    const std::size_t hidden = dhead.cols();
    dhidden_.resize(shape{batch_, seq_, hidden});
    if (options_.pool == pooling::first_token) {
      const tensor& dpooled = pooler_.backward(ctx, pool_act_.backward(ctx, dhead));
      B::fill(ctx, dhidden_, value_type(0));
      B::scatter_add_rows(ctx, dpooled, first_ids_, dhidden_);
    } else {
      // dH[b] = w[b]^T dpooled[b]
      B::gemm_batched(ctx, op::t, op::n, seq_, hidden, 1, value_type(1), {weights_.data(), seq_, 0, seq_},
                      {dhead.data(), hidden, 0, hidden}, value_type(0), {dhidden_.data(), hidden, 0, seq_ * hidden}, batch_, 1);
    }
    encoder_.backward(ctx, dhidden_);
  }

  void merge(typename B::context& ctx) {
    encoder_.merge(ctx);
    merge_if_possible(pooler_, ctx);
  }
  void unmerge(typename B::context& ctx) {
    encoder_.unmerge(ctx);
    unmerge_if_possible(pooler_, ctx);
  }

  bert_encoder<B, Plan>& encoder() noexcept { return encoder_; }
  const bert_encoder<B, Plan>& encoder() const noexcept { return encoder_; }
  classifier_layer& classifier() noexcept { return classifier_; }
  [[nodiscard]] const head_options& options() const noexcept { return options_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.encoder_.visit_parameters(prefix + "bert.", f);
    if (self.options_.pool == pooling::first_token) self.pooler_.visit_parameters(prefix + "bert.pooler.dense.", f);
    self.classifier_.visit_parameters(prefix + "classifier.", f);
  }

  head_options options_;
  bert_encoder<B, Plan> encoder_;
  pooler_layer pooler_;
  layers::activation_layer<B> pool_act_;
  layers::dropout<B> drop_;
  classifier_layer classifier_;
  std::size_t batch_ = 0, seq_ = 0;
  std::vector<std::int32_t> first_;
  std::vector<value_type> weights_host_;
  typename B::index_tensor first_ids_;
  tensor pooled_, weights_, dhidden_;
};

/// `BertForTokenClassification`: encoder, dropout, classifier on every token. Output: logits
/// (batch, seq, num_labels); pair it with labels -100 on padding and non-first word pieces.
template <Backend B, class Plan>
class bert_for_token_classification : public visits_parameters<bert_for_token_classification<B, Plan>> {
  friend visits_parameters<bert_for_token_classification>;
 public:
  static std::vector<std::string> checkpoint_names(const std::string& name) { return bert_checkpoint_names(name); }
  using backend = B;
  using plan = Plan;
  using tensor = typename B::tensor;
  using classifier_layer = typename Plan::template linear<roles::classifier, B>;

  bert_for_token_classification(typename B::context& ctx, const bert_config& c, const head_options& h,
                                const method_config& cfg = {})
      : encoder_(ctx, c, cfg, derive_seed(h.seed, 1), "bert."),
        drop_(c.hidden_dropout_prob, "dropout"),
        classifier_(ctx, bert_linear(c, c.hidden_size, h.num_labels, "classifier", derive_seed(h.seed, 3)), cfg) {
    prepare_methods<Plan>(ctx, *this, cfg);
  }

  /// Logits of the sequence's own tokens: prompt tuning's virtual rows are left out (PEFT's token
  /// classifier also returns logits for them).
  const tensor& forward(typename B::context& ctx, const encoder_batch& batch) {
    const tensor& hs = encoder_.forward(ctx, batch);
    const std::size_t virt = encoder_.virtual_tokens();
    if (!virt) return classifier_.forward(ctx, drop_.forward(ctx, hs));
    own_.resize(shape{batch.batch_size, batch.seq_len, hs.cols()});
    layers::copy_sequence_rows<B>(ctx, hs, virt, own_, 0, batch.seq_len);
    return classifier_.forward(ctx, drop_.forward(ctx, own_));
  }
  void backward(typename B::context& ctx, const tensor& dlogits) {
    const tensor& d = drop_.backward(ctx, classifier_.backward(ctx, dlogits));
    const std::size_t virt = encoder_.virtual_tokens();
    if (!virt) return encoder_.backward(ctx, d);
    dall_.resize(shape{d.shape()[0], virt + d.shape()[1], d.cols()});
    B::fill(ctx, dall_, typename B::value_type(0));
    layers::copy_sequence_rows<B>(ctx, d, 0, dall_, virt, d.shape()[1]);
    encoder_.backward(ctx, dall_);
  }
  void merge(typename B::context& ctx) { encoder_.merge(ctx); }
  void unmerge(typename B::context& ctx) { encoder_.unmerge(ctx); }
  bert_encoder<B, Plan>& encoder() noexcept { return encoder_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.encoder_.visit_parameters(prefix + "bert.", f);
    self.classifier_.visit_parameters(prefix + "classifier.", f);
  }

  bert_encoder<B, Plan> encoder_;
  layers::dropout<B> drop_;
  classifier_layer classifier_;
  tensor own_, dall_;
};

}  // namespace peft::models
