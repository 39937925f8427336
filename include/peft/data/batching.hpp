#pragma once
/// \file Tokenised, padded mini-batches for sentence classification and token tagging, with length
/// bucketing and seeded shuffling.

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "peft/core/random.hpp"
#include "peft/data/readers.hpp"
#include "peft/models/encoder_batch.hpp"
#include "peft/text/wordpiece.hpp"

namespace peft::data {

/// A batch of encoder inputs with labels: one per sequence (classification) or one per token, -100 on
/// special tokens, padding and non-first word pieces (tagging).
struct labeled_batch {
  models::encoder_batch inputs;
  std::vector<std::int32_t> labels;
  std::vector<std::size_t> example_indices;  ///< which examples, in order
};

/// How examples become batches.
struct batch_options {
  std::size_t batch_size = 32;
  std::size_t max_length = 128;  ///< tokens per sequence including [CLS]/[SEP]
  /// What happens to a longer sequence: truncated (counted in `batch_stats::truncated`), or, when
  /// false, a `data_error` naming its file and line.
  bool truncate = true;
  bool shuffle = false;
  std::uint64_t seed = 0;
  /// Sort by length inside windows of `bucket_window` batches, so that batches pad little; 0 turns it
  /// off. The order of batches is shuffled afterwards when `shuffle` is set.
  std::size_t bucket_window = 50;
};

/// What making batches did to the examples.
struct batch_stats {
  std::size_t examples = 0;
  std::size_t truncated = 0;  ///< sequences cut to max_length
  std::size_t tokens = 0;     ///< real (non-padding) tokens
  std::size_t labels = 0;     ///< positions that carry a label (not -100): examples, or tagged words kept
};

namespace detail {
/// Encodes with no limit, then applies `o`'s length policy; `encode(max_length)` makes the encoding.
template <class Encode>
text::encoding encode_checked(Encode&& encode, const batch_options& o, const std::string& where, batch_stats& stats) {
  text::encoding e = encode(std::size_t(0));
  if (o.max_length && e.ids.size() > o.max_length) {
    if (!o.truncate)
      throw data_error(peft::detail::concat(where, ": ", e.ids.size(), " tokens (with [CLS]/[SEP]) exceed the maximum length ",
                                            o.max_length, "; shorten the example or allow truncation"));
    ++stats.truncated;
    e = encode(o.max_length);
  }
  ++stats.examples;
  stats.tokens += e.ids.size();
  return e;
}

/// Fisher-Yates with the library's reproducible generator (std::shuffle is implementation-defined).
template <class T>
void seeded_shuffle(std::vector<T>& v, std::uint64_t seed) {
  init_rng rng(seed);
  for (std::size_t i = v.size(); i > 1; --i) {
    const auto j = std::size_t(rng.uniform(0, double(i)));
    std::swap(v[i - 1], v[std::min(j, i - 1)]);
  }
}

/// Groups encoded sequences into padded batches.
inline std::vector<labeled_batch> pack(const std::vector<text::encoding>& enc, const std::vector<std::vector<std::int32_t>>& token_labels,
                                       const std::vector<std::int32_t>& sequence_labels, std::int32_t pad_id,
                                       const batch_options& o) {
  if (o.batch_size == 0) throw data_error("batch_options: batch_size must be positive");
  std::vector<std::size_t> order(enc.size());
  std::iota(order.begin(), order.end(), 0);
  if (o.shuffle) seeded_shuffle(order, o.seed);
  if (o.bucket_window) {
    const std::size_t window = o.bucket_window * o.batch_size;
    for (std::size_t s = 0; s < order.size(); s += window)
      std::stable_sort(order.begin() + long(s), order.begin() + long(std::min(order.size(), s + window)),
                       [&](std::size_t a, std::size_t b) { return enc[a].ids.size() < enc[b].ids.size(); });
  }
  std::vector<labeled_batch> batches;
  for (std::size_t s = 0; s < order.size(); s += o.batch_size) {
    labeled_batch b;
    const std::size_t n = std::min(o.batch_size, order.size() - s);
    std::size_t len = 0;
    for (std::size_t k = 0; k < n; ++k) len = std::max(len, enc[order[s + k]].ids.size());
    b.inputs.batch_size = n;
    b.inputs.seq_len = len;
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = order[s + k];
      const auto& e = enc[i];
      const std::size_t pad = len - e.ids.size();
      b.inputs.input_ids.insert(b.inputs.input_ids.end(), e.ids.begin(), e.ids.end());
      b.inputs.input_ids.insert(b.inputs.input_ids.end(), pad, pad_id);
      b.inputs.token_type_ids.insert(b.inputs.token_type_ids.end(), e.token_type_ids.begin(), e.token_type_ids.end());
      b.inputs.token_type_ids.insert(b.inputs.token_type_ids.end(), pad, 0);
      b.inputs.attention_mask.insert(b.inputs.attention_mask.end(), e.ids.size(), 1);
      b.inputs.attention_mask.insert(b.inputs.attention_mask.end(), pad, 0);
      if (!token_labels.empty()) {
        b.labels.insert(b.labels.end(), token_labels[i].begin(), token_labels[i].end());
        b.labels.insert(b.labels.end(), pad, -100);
      } else {
        b.labels.push_back(sequence_labels[i]);
      }
      b.example_indices.push_back(i);
    }
    batches.push_back(std::move(b));
  }
  if (o.shuffle && o.bucket_window) seeded_shuffle(batches, derive_seed(o.seed, 1));
  return batches;
}
}  // namespace detail

/// Tokenises sentence-classification examples (pairs when `text_pair` is set) and batches them.
/// `where` names the file in errors (unknown label, over-long sequence); `stats`, when given, receives
/// counts.
inline std::vector<labeled_batch> make_classification_batches(const text::wordpiece_tokenizer& tok,
                                                              const std::vector<labeled_text>& examples, const label_set& labels,
                                                              const batch_options& o, const std::string& where = "data",
                                                              batch_stats* stats = nullptr) {
  std::vector<text::encoding> enc;
  std::vector<std::int32_t> ids;
  batch_stats local;
  enc.reserve(examples.size());
  for (const auto& ex : examples) {
    const std::string at = peft::detail::concat(where, ":", ex.line);
    ids.push_back(labels.id(ex.label, at));
    ++local.labels;
    enc.push_back(detail::encode_checked(
        [&](std::size_t max_length) {
          return ex.text_pair ? tok.encode(ex.text, std::string_view(*ex.text_pair), {.max_length = max_length})
                              : tok.encode(ex.text, std::nullopt, {.max_length = max_length});
        },
        o, at, local));
  }
  if (stats) *stats = local;
  return detail::pack(enc, {}, ids, tok.pad_id(), o);
}

/// Tokenises tagged sentences (tag on each word's first piece, -100 elsewhere) and batches them.
/// A truncated sentence loses the tags of its cut words (`batch_stats::truncated` counts sentences);
/// when no tag is left at all, that is a `data_error`.
inline std::vector<labeled_batch> make_tagging_batches(const text::wordpiece_tokenizer& tok,
                                                       const std::vector<tagged_sentence>& sentences, const label_set& tags,
                                                       const batch_options& o, const std::string& where = "data",
                                                       batch_stats* stats = nullptr) {
  std::vector<text::encoding> enc;
  std::vector<std::vector<std::int32_t>> token_labels;
  batch_stats local;
  for (const auto& s : sentences) {
    std::vector<std::int32_t> word_labels;
    for (std::size_t i = 0; i < s.tags.size(); ++i)
      word_labels.push_back(tags.id(s.tags[i], peft::detail::concat(where, ":", s.first_line + i)));
    enc.push_back(detail::encode_checked(
        [&](std::size_t max_length) { return tok.encode_words(s.tokens, {.max_length = max_length}); }, o,
        peft::detail::concat(where, ":", s.first_line), local));
    token_labels.push_back(text::align_word_labels(enc.back(), word_labels));
    for (auto y : token_labels.back()) local.labels += y != -100;
  }
  // Nothing to learn or score: a loss of exactly 0 would look like success.
  if (!sentences.empty() && local.labels == 0)
    throw data_error(peft::detail::concat(where, ": no tag is left to train or score on: every tagged word was cut away by "
                                          "the maximum length ", o.max_length, " (or has no word pieces)"));
  if (stats) *stats = local;
  return detail::pack(enc, token_labels, {}, tok.pad_id(), o);
}

}  // namespace peft::data
