#pragma once
/// \file Full fine-tuning as a plan element (every base parameter trains: the baseline the PEFT
/// methods are compared against) and its opposite, `frozen` (nothing trains: inference, generation,
/// a base model kept quantized).

#include <string_view>

#include "peft/core/groups.hpp"

namespace peft::methods {

/// PEFT method that wraps nothing and makes every base group of every role trainable.
struct full {
  static constexpr std::string_view name = "full";
  static constexpr int stage = 0;
  using groups = group_set<>;
  template <class Role>
  static constexpr bool targets = false;
  template <class Role>
  using base_groups = all_base_groups;
  template <class Inner>
  using wrap = Inner;
};

/// PEFT method that wraps nothing and unfreezes nothing: every base parameter is frozen, so frozen
/// matrices may stay packed (quantized) and no gradient buffer exists. For inference and
/// generation with a base model.
struct frozen {
  static constexpr std::string_view name = "frozen";
  static constexpr int stage = 0;
  using groups = group_set<>;
  template <class Role>
  static constexpr bool targets = false;
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = Inner;
};

}  // namespace peft::methods
