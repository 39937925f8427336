#pragma once
/// \file `peft::plan<Methods...>`: compile-time composition of PEFT methods.
///
/// A model asks its plan for the type of each linear layer by role:
/// `typename Plan::template linear<roles::query, B>`. The plan starts from a plain
/// `layers::linear` whose trainable groups are the union of what the methods unfreeze (everything for
/// the classifier, PEFT's `modules_to_save`), then wraps it with each targeting method, stage by stage
/// (LoRA, then BitFit, then adapters), whatever order the methods were listed in.

#include <tuple>
#include <type_traits>

#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/embedding.hpp"
#include "peft/layers/layer_norm.hpp"
#include "peft/layers/linear.hpp"
#include "peft/layers/rms_norm.hpp"
#include "peft/layers/virtual_tokens.hpp"
#include "peft/methods/method.hpp"

namespace peft {

namespace detail {
/// The layer method `M` makes of `Inner` for `Role`: `M::wrap_role<Role, Inner>` when the method
/// declares it (a method whose layers differ by role, as (IA)3's scale the FFN output's input),
/// else `M::wrap<Inner>`.
template <class M, class Role, class Inner>
struct method_wrap {
  using type = typename M::template wrap<Inner>;
};
template <class M, class Role, class Inner>
  requires requires { typename M::template wrap_role<Role, Inner>; }
struct method_wrap<M, Role, Inner> {
  using type = typename M::template wrap_role<Role, Inner>;
};

/// Wraps `L` with every method of stage `Stage` that targets `Role`, in the order listed.
template <class L, class Role, int Stage, class... Ms>
struct apply_stage {
  using type = L;
};
template <class L, class Role, int Stage, class M, class... Ms>
struct apply_stage<L, Role, Stage, M, Ms...> {
  using wrapped = typename std::conditional_t<(M::stage == Stage && M::template targets<Role>),
                                              typename method_wrap<M, Role, L>::type, L>;
  using type = typename apply_stage<wrapped, Role, Stage, Ms...>::type;
};
/// Applies stages `Stage`, `Stage + 1`, ..., `Last` (as a type_identity).
template <class L, class Role, int Stage, int Last, class... Ms>
auto apply_stages() {
  if constexpr (Stage > Last) return std::type_identity<L>{};
  else return apply_stages<typename apply_stage<L, Role, Stage, Ms...>::type, Role, Stage + 1, Last, Ms...>();
}

/// A method that wraps layer norms declares `template <class Inner> using wrap_norm`; one that wraps
/// RMS norms, `template <class Inner> using wrap_rms_norm`.
template <class M>
concept wraps_norms = requires { typename M::template wrap_norm<probe_layer>; };
template <class M>
concept wraps_rms_norms = requires { typename M::template wrap_rms_norm<probe_layer>; };

/// The two kinds of norm a plan wraps: which methods wrap them, and how.
struct layer_norm_kind {
  template <class M>
  static constexpr bool wrapped_by = wraps_norms<M>;
  template <class M, class X>
  using wrap = typename M::template wrap_norm<X>;
};
struct rms_norm_kind {
  template <class M>
  static constexpr bool wrapped_by = wraps_rms_norms<M>;
  template <class M, class X>
  using wrap = typename M::template wrap_rms_norm<X>;
};

/// Wraps norm `L` of `Kind` with every method of stage `Stage` that wraps that kind, in the order listed.
template <class L, class Kind, int Stage, class... Ms>
struct apply_norm_stage {
  using type = L;
};
template <class L, class Kind, int Stage, class M, class... Ms>
struct apply_norm_stage<L, Kind, Stage, M, Ms...> {
  template <class X, bool Wrap>
  struct pick {
    using type = X;
  };
  template <class X>
  struct pick<X, true> {
    using type = typename Kind::template wrap<M, X>;
  };
  using wrapped = typename pick<L, (Kind::template wrapped_by<M> && M::stage == Stage)>::type;
  using type = typename apply_norm_stage<wrapped, Kind, Stage, Ms...>::type;
};
template <class L, class Kind, int Stage, int Last, class... Ms>
auto apply_norm_stages() {
  if constexpr (Stage > Last) return std::type_identity<L>{};
  else return apply_norm_stages<typename apply_norm_stage<L, Kind, Stage, Ms...>::type, Kind, Stage + 1, Last, Ms...>();
}

/// `L`, when it is a `Layer`; otherwise a readable error instead of one deep inside a model.
template <class L>
struct checked_layer {
  static_assert(Layer<L>,
                "peft::plan: a method's `wrap<Inner>` did not give a Layer (forward, backward, visit_parameters; "
                "see docs/concepts.md#peftmethod)");
  using type = L;
};

template <class Role, class... Ms>
struct trainable_base_groups {
  using type = group_set<>;
};
template <class Role, class M, class... Ms>
struct trainable_base_groups<Role, M, Ms...> {
  using type = group_union_t<typename M::template base_groups<Role>, typename trainable_base_groups<Role, Ms...>::type>;
};

template <class... Ms>
constexpr int last_stage() {
  int last = 0;
  ((last = Ms::stage > last ? Ms::stage : last), ...);
  return last;
}

/// A method that puts virtual tokens before every sequence declares `template <Backend B> using
/// prompt` (prompt tuning); one that gives the attention layers a learned prefix of keys and
/// values, `template <Backend B> using prefix` (prefix tuning).
/// (Checked without instantiating: the alias is matched as a one-parameter template.)
template <template <class> class>
struct template_probe {};
template <class M>
concept adds_prompt = requires { typename template_probe<M::template prompt>; };
template <class M>
concept adds_prefix = requires { typename template_probe<M::template prefix>; };

/// The prompt (or prefix) source of the first method that declares one, else `Default`.
template <template <class> class Default, bool Prefix, class B, class... Ms>
struct virtual_source {
  using type = Default<B>;
};
template <template <class> class Default, bool Prefix, class B, class M, class... Ms>
struct virtual_source<Default, Prefix, B, M, Ms...> {
  static auto pick() {
    if constexpr (!Prefix && adds_prompt<M>) return std::type_identity<typename M::template prompt<B>>{};
    else if constexpr (Prefix && adds_prefix<M>) return std::type_identity<typename M::template prefix<B>>{};
    else return std::type_identity<typename virtual_source<Default, Prefix, B, Ms...>::type>{};
  }
  using type = typename decltype(pick())::type;
};

template <class... Ms>
constexpr bool unique_method_names() {
  constexpr std::string_view names[] = {Ms::name...};
  for (std::size_t i = 0; i < sizeof...(Ms); ++i)
    for (std::size_t j = i + 1; j < sizeof...(Ms); ++j)
      if (names[i] == names[j]) return false;
  return true;
}
}  // namespace detail

/// A tuning plan: the PEFT methods applied to a model, fixed at compile time.
/// Requirements: every argument satisfies `PeftMethod`, at least one is given, and no method family
/// appears twice (list all roles in one `lora<...>`). Any number of stages works; a method's
/// `wrap<Inner>` must make a `Layer` from every layer it can receive, or the plan does not compile.
/// Guarantees: `linear<Role, B>` is a `Layer`;
/// the classifier role trains fully and is never wrapped; an empty plan is a compile error.
template <class... Methods>
struct plan {
  static_assert(sizeof...(Methods) > 0,
                "peft::plan<>: name at least one method, e.g. plan<methods::lora<roles::query>> or plan<methods::full>");
  static_assert((detail::check_peft_method<Methods>() && ...), "peft::plan: every argument must satisfy PeftMethod");
  static_assert((int(detail::adds_prompt<Methods>) + ... + 0) <= 1, "peft::plan: at most one method may add a prompt");
  static_assert((int(detail::adds_prefix<Methods>) + ... + 0) <= 1, "peft::plan: at most one method may add a prefix");
  static_assert(detail::unique_method_names<Methods...>(),
                "peft::plan: a method family appears twice; list all its roles in one entry, e.g. lora<roles::query, roles::value>");

  /// Base groups that train for layers of `Role`.
  template <roles::Role Role>
  using trainable_groups =
      std::conditional_t<std::is_same_v<Role, roles::classifier>, all_base_groups,
                         typename detail::trainable_base_groups<Role, Methods...>::type>;

  /// The layer type of a linear layer of `Role` on backend `B`: a plain linear wrapped by the
  /// targeting methods, stage by stage (0 innermost), in the listed order within a stage.
  template <roles::Role Role, Backend B>
  using linear = std::conditional_t<
      std::is_same_v<Role, roles::classifier>, layers::linear<B, trainable_groups<Role>>,
      typename detail::checked_layer<typename decltype(detail::apply_stages<layers::linear<B, trainable_groups<Role>>, Role,
                                                                            0, detail::last_stage<Methods...>(),
                                                                            Methods...>())::type>::type>;

  /// The layer norm type on backend `B`: trains when a method unfreezes group `norm` for role
  /// `layer_norm` (full fine-tuning), wrapped by the methods that declare `wrap_norm` (LayerNorm
  /// tuning, BitFit).
  template <Backend B>
  using norm = typename decltype(detail::apply_norm_stages<layers::layer_norm<B, trainable_groups<roles::layer_norm>>,
                                                           detail::layer_norm_kind, 0, detail::last_stage<Methods...>(),
                                                           Methods...>())::type;

  /// The RMS norm type on backend `B`: trains when a method unfreezes group `norm` for role
  /// `layer_norm` (full fine-tuning), wrapped by the methods that declare `wrap_rms_norm` (LayerNorm
  /// tuning). It has no bias, so bias-delta methods leave it alone.
  template <Backend B>
  using rms_norm = typename decltype(detail::apply_norm_stages<layers::rms_norm<B, trainable_groups<roles::layer_norm>>,
                                                               detail::rms_norm_kind, 0, detail::last_stage<Methods...>(),
                                                               Methods...>())::type;

  /// The embedding table type on backend `B`: trains only when a method unfreezes group `embedding`.
  template <Backend B>
  using embedding = layers::embedding<B, trainable_groups<roles::embeddings>>;

  /// The virtual tokens put before every sequence on backend `B` (prompt tuning's embeddings): the
  /// method's prompt source, else `layers::no_prompt` (none). See layers/virtual_tokens.hpp.
  template <Backend B>
  using prompt = typename detail::virtual_source<layers::no_prompt, false, B, Methods...>::type;

  /// The learned keys and values every attention layer sees first on backend `B` (prefix tuning):
  /// the method's prefix source, else `layers::no_prefix` (none).
  template <Backend B>
  using prefix = typename detail::virtual_source<layers::no_prefix, true, B, Methods...>::type;

  /// The methods, as a type list, for code that serialises or reports them.
  using methods = std::tuple<Methods...>;

  /// Whether any method of the plan is `M`'s family.
  template <class M>
  static constexpr bool has = ((Methods::name == M::name) || ...);
};

/// Runs the model-wide preparation of each method of `Plan` that has one, in the listed order: a
/// method whose layers share state (VeRA's random matrices, sized by the largest adapted layer)
/// declares `template <Module M> static void prepare(context&, M& model, const method_config&)`.
/// Models call this at the end of their constructor (a model that contains another calls it again
/// over the whole, which must then give the same result); a user's own model must do the same.
template <class Plan, Module M>
void prepare_methods(typename M::backend::context& ctx, M& model, const method_config& cfg) {
  std::apply(
      [&](auto... m) {
        auto one = [&]<class Me>(std::type_identity<Me>) {
          if constexpr (requires { Me::prepare(ctx, model, cfg); }) Me::prepare(ctx, model, cfg);
        };
        (one(std::type_identity<decltype(m)>{}), ...);
      },
      typename Plan::methods{});
}

}  // namespace peft
