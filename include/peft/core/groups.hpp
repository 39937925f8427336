#pragma once
/// \file Parameter groups: tag types that classify every parameter (weight, bias, a method's own
/// groups, ...).
///
/// A plan decides at compile time which groups of a layer are trainable (`group_set`); the optimizer
/// applies run-time per-group options (learning-rate multiplier, weight decay) by group name.

#include <concepts>
#include <string_view>
#include <type_traits>

namespace peft::groups {

/// Requirements of a group tag: an empty type with a `static constexpr std::string_view name`.
template <class G>
concept Group = std::is_empty_v<G> && requires {
  { G::name } -> std::convertible_to<std::string_view>;
};

struct weight { static constexpr std::string_view name = "weight"; };          ///< base weight matrices
struct bias { static constexpr std::string_view name = "bias"; };              ///< base biases
struct embedding { static constexpr std::string_view name = "embedding"; };    ///< embedding tables
struct norm { static constexpr std::string_view name = "norm"; };              ///< norm scales and shifts
struct head { static constexpr std::string_view name = "head"; };              ///< task head (classifier)

/// A group whose parameters a PEFT method adds (never present in a base checkpoint): its tag also
/// declares `static constexpr bool method_group = true`. Methods define their groups in their own
/// headers (`lora_a` and `lora_b` in methods/lora.hpp, ...), so this header names none of them.
template <class G>
concept MethodGroup = Group<G> && requires {
  requires G::method_group;
};

}  // namespace peft::groups

namespace peft {

/// A compile-time set of group tags: the groups of a layer that train.
template <groups::Group... Gs>
struct group_set {
  template <class G>
  static constexpr bool contains = (std::is_same_v<G, Gs> || ...);
};

/// Set of all base-model groups: what full fine-tuning trains.
using all_base_groups = group_set<groups::weight, groups::bias, groups::embedding, groups::norm, groups::head>;

namespace detail {
template <class A, class B>
struct group_union;
template <class... As, class... Bs>
struct group_union<group_set<As...>, group_set<Bs...>> {
  using type = group_set<As..., Bs...>;  // duplicates are harmless for `contains`
};
}  // namespace detail

/// Union of two group sets.
template <class A, class B>
using group_union_t = typename detail::group_union<A, B>::type;

}  // namespace peft
