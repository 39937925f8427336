#pragma once
/// \file The `Layer` concept and the optional `Mergeable` capability.

#include <concepts>
#include <string>

#include "peft/core/backend.hpp"
#include "peft/core/block_buffers.hpp"
#include "peft/core/parameter.hpp"

namespace peft {

namespace detail {
/// Visitor used only to check `visit_parameters` in concepts.
struct parameter_probe {
  template <class P>
  void operator()(const std::string&, P&) const {}
};
}  // namespace detail

/// Mixin that gives `Derived` both `visit_parameters` overloads (const and non-const) from one
/// `static void visit(Self& self, const std::string& prefix, F& f)` template in `Derived`, which may be
/// private if `Derived` befriends this mixin.
template <class Derived>
struct visits_parameters {
  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) {
    Derived::visit(static_cast<Derived&>(*this), prefix, f);
  }
  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) const {
    Derived::visit(static_cast<const Derived&>(*this), prefix, f);
  }
};

/// Anything that owns named parameters on one backend: layers, and models whose input is not a
/// tensor (a BERT classifier takes token ids). Requirements: `backend` names a `Backend`, and
/// `visit_parameters(prefix, f)` works on const and non-const objects. Optimizers, reports and
/// parameter transfer need only this.
template <class M>
concept Module = Backend<typename M::backend> &&
                 requires(M& m, const M& cm, const std::string& prefix, detail::parameter_probe probe) {
                   m.visit_parameters(prefix, probe);
                   cm.visit_parameters(prefix, probe);
                 };

/// A differentiable layer over backend `L::backend`. Requirements (docs/concepts.md#layer):
/// - `forward(ctx, x)` returns a reference to the output, owned by the layer (or `x` itself for an
///   identity) and valid until the next `forward`. `x` must stay alive and unchanged until the matching
///   `backward`: layers keep a pointer to their input instead of a copy, and only when they need it.
/// - `backward(ctx, dy)` accumulates (+=) into the gradients of trainable parameters and returns the
///   gradient with respect to the input of the last `forward`.
/// - `visit_parameters(prefix, f)` calls `f(name, parameter)` for every parameter, with names that
///   follow Hugging Face module paths (`prefix + "weight"`), on const and non-const layers.
template <class L>
concept Layer = Module<L> &&
                requires(L& l, const L& cl, typename L::backend::context& ctx, const typename L::backend::tensor& x,
                         const std::string& prefix, detail::parameter_probe probe) {
                  { l.forward(ctx, x) } -> std::same_as<const typename L::backend::tensor&>;
                  { l.backward(ctx, x) } -> std::same_as<const typename L::backend::tensor&>;
                  l.visit_parameters(prefix, probe);
                  cl.visit_parameters(prefix, probe);
                };

/// A layer whose PEFT update can be folded into the base weights and taken out again.
/// Guarantees: after `merge`, `forward` gives the same output (to rounding) with the extra path
/// switched off; `unmerge` restores the base weights (to rounding) and switches it back on.
template <class L>
concept Mergeable = requires(L& l, const L& cl, typename L::backend::context& ctx) {
  l.merge(ctx);
  l.unmerge(ctx);
  { cl.merged() } -> std::convertible_to<bool>;
};

/// Merges `l` if it is `Mergeable`; a no-op otherwise. Containers use it on their children.
template <class L>
void merge_if_possible(L& l, typename L::backend::context& ctx) {
  if constexpr (Mergeable<L>) l.merge(ctx);
}
/// Unmerges `l` if it is `Mergeable`; a no-op otherwise.
template <class L>
void unmerge_if_possible(L& l, typename L::backend::context& ctx) {
  if constexpr (Mergeable<L>) l.unmerge(ctx);
}

}  // namespace peft
