#pragma once
/// \file Choosing the next token from logits: greedy, or sampling with temperature, top-k and
/// top-p (nucleus), after a repetition penalty, as Hugging Face's `generate` applies them (penalty,
/// temperature, top-k, top-p, in that order). Seeded, so a run repeats exactly.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::generate {

/// How the next token is chosen. `temperature` 0 means greedy (the other sampling settings are then
/// unused, the penalty still applies).
struct sampling_options {
  double temperature = 0;
  std::size_t top_k = 0;          ///< keep the k most likely tokens (0: all)
  double top_p = 1;               ///< keep the smallest set whose probability reaches top_p
  double repetition_penalty = 1;  ///< > 1 discourages tokens already in the sequence (CTRL's rule)
  std::uint64_t seed = 0;

  /// Throws `config_error` naming the first setting out of range.
  void validate() const {
    if (!(temperature >= 0) || !std::isfinite(temperature))
      throw config_error(detail::concat("sampling: temperature ", temperature, " must be 0 (greedy) or positive"));
    if (!(top_p > 0 && top_p <= 1)) throw config_error(detail::concat("sampling: top_p ", top_p, " must be in (0, 1]"));
    if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty))
      throw config_error(detail::concat("sampling: repetition_penalty ", repetition_penalty, " must be positive"));
  }
};

/// Picks tokens for one sequence. Not thread-safe (it owns a random engine and scratch buffers).
class sampler {
 public:
  explicit sampler(const sampling_options& o) : opts_(o), rng_(o.seed) { o.validate(); }

  /// The next token given `logits` (one per vocabulary entry) and the tokens of the sequence so far
  /// (prompt and generated), which the repetition penalty looks at. Throws `numeric_error` when the
  /// logits hold NaN or are all -infinity.
  template <class T>
  std::int32_t next(std::span<const T> logits, std::span<const std::int32_t> history) {
    if (logits.empty()) throw config_error("sampling: empty logits");
    scores_.assign(logits.begin(), logits.end());
    for (double v : scores_)
      if (std::isnan(v)) throw numeric_error("sampling: the model produced NaN logits");
    if (opts_.repetition_penalty != 1) {
      seen_.assign(scores_.size(), false);
      for (auto t : history)
        if (t >= 0 && std::size_t(t) < scores_.size() && !seen_[std::size_t(t)]) {
          seen_[std::size_t(t)] = true;
          double& s = scores_[std::size_t(t)];
          s = s > 0 ? s / opts_.repetition_penalty : s * opts_.repetition_penalty;
        }
    }
    const auto best = std::size_t(std::max_element(scores_.begin(), scores_.end()) - scores_.begin());
    if (scores_[best] == -std::numeric_limits<double>::infinity()) throw numeric_error("sampling: every logit is -infinity");
    if (opts_.temperature == 0) return std::int32_t(best);

    // Candidates by descending score, cut by top-k, then by top-p over their softmax.
    order_.resize(scores_.size());
    std::iota(order_.begin(), order_.end(), std::int32_t(0));
    const std::size_t k = opts_.top_k ? std::min(opts_.top_k, order_.size()) : order_.size();
    auto by_score = [&](std::int32_t a, std::int32_t b) {
      return scores_[std::size_t(a)] > scores_[std::size_t(b)] || (scores_[std::size_t(a)] == scores_[std::size_t(b)] && a < b);
    };
    std::partial_sort(order_.begin(), order_.begin() + std::ptrdiff_t(k), order_.end(), by_score);
    order_.resize(k);
    probs_.resize(k);
    const double top = double(scores_[std::size_t(order_[0])]) / opts_.temperature;
    double total = 0;
    for (std::size_t i = 0; i < k; ++i) total += probs_[i] = std::exp(double(scores_[std::size_t(order_[i])]) / opts_.temperature - top);
    std::size_t keep = k;
    if (opts_.top_p < 1) {
      double mass = 0;
      for (std::size_t i = 0; i < k; ++i) {
        mass += probs_[i] / total;
        if (mass >= opts_.top_p) {
          keep = i + 1;
          break;
        }
      }
    }
    std::discrete_distribution<std::size_t> pick(probs_.begin(), probs_.begin() + std::ptrdiff_t(keep));
    return order_[pick(rng_)];
  }

 private:
  sampling_options opts_;
  std::mt19937_64 rng_;
  std::vector<double> scores_;
  std::vector<bool> seen_;
  std::vector<std::int32_t> order_;
  std::vector<double> probs_;
};

}  // namespace peft::generate
