#pragma once
/// \file The `UpdateRule` concept: an optimisation algorithm as a small configuration object with a
/// per-parameter state made lazily, for trainable parameters only (after ensmallen's update policies).

#include <concepts>
#include <cstdint>

#include "peft/core/backend.hpp"

namespace peft::optim {

/// What the optimizer passes to a rule for one parameter at one step: `lr` = rule.lr * lr_scale,
/// where `lr_scale` is the schedule's factor times the group's multiplier (rules that compute their
/// own step size, such as Adafactor's relative step, multiply it by `lr_scale`), the group's weight
/// decay, and the 1-based step number.
struct update_context {
  double lr;
  double lr_scale;
  double weight_decay;
  std::int64_t step;
};

namespace detail {
template <class R, class B>
concept has_state = requires { typename R::template state<B>; };
template <class R, class B>
concept has_make_state = has_state<R, B> && requires(const R& r, typename B::context& ctx, const typename B::tensor& w) {
  { r.template make_state<B>(ctx, w) } -> std::same_as<typename R::template state<B>>;
};
template <class R, class B>
concept has_apply = has_state<R, B> && requires(const R& r, typename B::context& ctx, typename B::tensor& w,
                                                const typename B::tensor& g, typename R::template state<B>& s,
                                                const update_context& u) {
  r.template apply<B>(ctx, w, g, s, u);
};
template <class R>
concept has_hyper = requires(const R& r) {
  { r.lr } -> std::convertible_to<double>;
  { r.weight_decay } -> std::convertible_to<double>;
};
}  // namespace detail

/// Requirements (docs/concepts.md#updaterule): public `lr` and `weight_decay`; a nested
/// `template <Backend B> struct state`; `make_state<B>(ctx, w)` returning the initial state for a
/// parameter shaped like `w`; `apply<B>(ctx, w, g, state, update_context)` updating `w` in place.
template <class R, class B>
concept UpdateRule = Backend<B> && detail::has_state<R, B> && detail::has_make_state<R, B> &&
                     detail::has_apply<R, B> && detail::has_hyper<R>;

namespace detail {
/// One readable `static_assert` per missing member; used by `optimizer`.
template <class R, class B>
constexpr bool check_update_rule() {
  static_assert(has_hyper<R>, "peft::optim::optimizer: the update rule lacks public `lr` and `weight_decay` members (see docs/concepts.md#updaterule)");
  static_assert(has_state<R, B>, "peft::optim::optimizer: the update rule lacks `template <class B> struct state` (see docs/concepts.md#updaterule)");
  static_assert(has_make_state<R, B>, "peft::optim::optimizer: the update rule lacks `make_state<B>(ctx, w)` returning state<B> (see docs/concepts.md#updaterule)");
  static_assert(has_apply<R, B>, "peft::optim::optimizer: the update rule lacks `apply<B>(ctx, w, g, state, update_context)` (see docs/concepts.md#updaterule)");
  return UpdateRule<R, B>;
}
}  // namespace detail

}  // namespace peft::optim
