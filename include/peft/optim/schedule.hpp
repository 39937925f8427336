#pragma once
/// \file Learning-rate schedules: factors applied to a rule's base learning rate, as functions of the
/// number of optimizer steps already taken (the `lr_lambda` of Hugging Face's schedulers).

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>

#include "peft/core/error.hpp"

namespace peft::optim {

/// A schedule maps the count of completed steps (0 for the first update) to a factor in [0, 1].
template <class S>
concept Schedule = std::copy_constructible<S> && requires(const S& s, std::int64_t step) {
  { s(step) } -> std::convertible_to<double>;
};

/// Factor 1 at every step.
struct constant_schedule {
  double operator()(std::int64_t) const noexcept { return 1.0; }
};

/// Linear warm-up from 0 to 1 over `warmup_steps`, then linear decay to 0 at `total_steps`
/// (transformers' get_linear_schedule_with_warmup).
struct linear_schedule {
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  double operator()(std::int64_t step) const {
    if (total_steps <= 0 || warmup_steps < 0 || warmup_steps > total_steps)
      throw config_error(peft::detail::concat("linear_schedule: need 0 <= warmup_steps (", warmup_steps,
                                              ") <= total_steps (", total_steps, ") and total_steps > 0"));
    if (step < warmup_steps) return double(step) / double(std::max<std::int64_t>(1, warmup_steps));
    return std::max(0.0, double(total_steps - step) / double(std::max<std::int64_t>(1, total_steps - warmup_steps)));
  }
};

/// Linear warm-up, then half a cosine from 1 down to `min_ratio` at `total_steps`
/// (transformers' get_cosine_schedule_with_warmup when min_ratio = 0).
struct cosine_schedule {
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  double min_ratio = 0;
  double operator()(std::int64_t step) const {
    if (total_steps <= 0 || warmup_steps < 0 || warmup_steps > total_steps)
      throw config_error(peft::detail::concat("cosine_schedule: need 0 <= warmup_steps (", warmup_steps,
                                              ") <= total_steps (", total_steps, ") and total_steps > 0"));
    if (step < warmup_steps) return double(step) / double(std::max<std::int64_t>(1, warmup_steps));
    const double progress =
        std::min(1.0, double(step - warmup_steps) / double(std::max<std::int64_t>(1, total_steps - warmup_steps)));
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(3.141592653589793 * progress));
  }
};

/// A schedule chosen at run time by name (a command line's `--schedule`): "constant", "linear" or
/// "cosine", with warm-up. One type for all three, so a program instantiates one optimizer.
struct named_schedule {
  enum class kind { constant, linear, cosine };
  kind k = kind::constant;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;

  /// Throws `config_error` for an unknown name.
  static named_schedule from_name(const std::string& name, std::int64_t warmup_steps, std::int64_t total_steps) {
    named_schedule s{kind::constant, warmup_steps, total_steps};
    if (name == "linear") s.k = kind::linear;
    else if (name == "cosine") s.k = kind::cosine;
    else if (name != "constant")
      throw config_error("schedule '" + name + "' is not one of constant, linear, cosine");
    if (s.k != kind::constant) s(0);  // validates the step counts
    return s;
  }
  double operator()(std::int64_t step) const {
    switch (k) {
      case kind::linear: return linear_schedule{warmup_steps, total_steps}(step);
      case kind::cosine: return cosine_schedule{warmup_steps, total_steps}(step);
      default: return step < warmup_steps ? double(step) / double(warmup_steps) : 1.0;
    }
  }
};

}  // namespace peft::optim
