#pragma once
/// \file Full fine-tuning as a plan element: every base parameter trains. Useful as the baseline the
/// PEFT methods are compared against.

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

}  // namespace peft::methods
