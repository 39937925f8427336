#pragma once
/// \file `peft::parameter`: a named tensor with a group tag and compile-time trainability.

#include <cstddef>

#include "peft/core/backend.hpp"
#include "peft/core/groups.hpp"

namespace peft {

namespace detail {
/// Stand-in for the gradient of a frozen parameter: no storage, no members.
struct no_gradient {};
}  // namespace detail

/// A parameter of backend `B` in group `G`.
/// Guarantees: a frozen parameter (`Trainable == false`) has no gradient buffer at all (its `grad`
/// is an empty type, so code that touches it does not compile) and therefore never gets optimizer
/// state; a trainable one has `grad` with the shape of `value` once `allocate_grad` ran.
template <Backend B, groups::Group G, bool Trainable>
struct parameter {
  using backend = B;
  using group = G;
  static constexpr bool trainable = Trainable;

  typename B::tensor value;
  [[no_unique_address]] std::conditional_t<Trainable, typename B::tensor, detail::no_gradient> grad{};

  /// Sizes `grad` like `value` and zeroes it (no-op when frozen).
  void allocate_grad(typename B::context& ctx) {
    if constexpr (Trainable) {
      grad.resize(value.shape());
      B::fill(ctx, grad, typename B::value_type(0));
    }
  }
};

/// True for specialisations of `parameter`.
template <class P>
concept Parameter = requires {
  typename P::backend;
  typename P::group;
  { P::trainable } -> std::convertible_to<bool>;
} && std::same_as<P, parameter<typename P::backend, typename P::group, P::trainable>>;

}  // namespace peft
