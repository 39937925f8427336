#pragma once
/// \file The `PeftMethod` concept and readable diagnostics for types that fail it.

#include <concepts>
#include <string_view>
#include <type_traits>

#include "peft/core/groups.hpp"

namespace peft {

namespace detail {
struct probe_role {
  static constexpr std::string_view name = "probe";
};
struct probe_layer {};
template <class M>
concept has_method_name = requires {
  { M::name } -> std::convertible_to<std::string_view>;
};
template <class M>
concept has_method_stage = requires {
  { M::stage } -> std::convertible_to<int>;
};
template <class M>
concept has_method_targets = requires {
  { M::template targets<probe_role> } -> std::convertible_to<bool>;
};
template <class M>
concept has_method_base_groups = requires { typename M::template base_groups<probe_role>; };
template <class M>
concept has_method_wrap = requires { typename M::template wrap<probe_layer>; };
template <class M>
concept has_method_groups = requires { typename M::groups; };
}  // namespace detail

/// A PEFT method: a compile-time description of which roles it targets and how it changes them.
/// Requirements (docs/concepts.md#peftmethod):
/// - `static constexpr std::string_view name`;
/// - `static constexpr int stage` >= 0: wrapping order, 0 innermost (weight updates such as LoRA),
///   then 1 (bias deltas), 2 (output adapters), and any later stage a new method needs;
/// - `using groups`: a `group_set` of the parameter groups the method adds (each a `MethodGroup`);
/// - `template <class Role> static constexpr bool targets`: whether layers of `Role` are wrapped;
/// - `template <class Role> using base_groups`: a `group_set` of base groups the method unfreezes;
/// - `template <class Inner> using wrap`: the layer type that wraps `Inner`, constructible from
///   `(context&, const layers::linear_options&, const method_config&)`.
/// Optional: `using options` (its run-time options type, read from `method_config`);
/// `template <class Role, class Inner> using wrap_role` (a layer that depends on the role; the plan
/// then uses it instead of `wrap`);
/// `template <class Inner> using wrap_norm` (it also wraps layer norms), `template <class Inner> using
/// wrap_rms_norm` (it also wraps RMS norms); a `peft_format` member
/// (how Hugging Face PEFT's adapter files spell it, see io/peft_adapter.hpp).
template <class M>
concept PeftMethod = detail::has_method_name<M> && detail::has_method_stage<M> && detail::has_method_targets<M> &&
                     detail::has_method_base_groups<M> && detail::has_method_wrap<M> && detail::has_method_groups<M>;

namespace detail {
/// One readable `static_assert` per missing member; instantiated by `plan` for each argument.
template <class M>
constexpr bool check_peft_method() {
  static_assert(has_method_name<M>,
                "peft::plan: a method lacks `static constexpr std::string_view name` (see docs/concepts.md#peftmethod)");
  static_assert(has_method_stage<M>,
                "peft::plan: a method lacks `static constexpr int stage` (see docs/concepts.md#peftmethod)");
  static_assert(has_method_targets<M>,
                "peft::plan: a method lacks `template <class Role> static constexpr bool targets` (see docs/concepts.md#peftmethod)");
  static_assert(has_method_base_groups<M>,
                "peft::plan: a method lacks `template <class Role> using base_groups` (see docs/concepts.md#peftmethod)");
  static_assert(has_method_wrap<M>,
                "peft::plan: a method lacks `template <class Inner> using wrap` (see docs/concepts.md#peftmethod)");
  static_assert(has_method_groups<M>,
                "peft::plan: a method lacks `using groups = group_set<...>`, the groups it adds (see docs/concepts.md#peftmethod)");
  if constexpr (has_method_stage<M>)
    static_assert(M::stage >= 0, "peft::plan: a method's `stage` must be 0 or more (see docs/concepts.md#peftmethod)");
  return PeftMethod<M>;
}
}  // namespace detail

}  // namespace peft
