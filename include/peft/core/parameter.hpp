#pragma once
/// \file `peft::parameter`: a named tensor with a group tag and compile-time trainability.

#include <cstddef>
#include <optional>
#include <vector>

#include "peft/core/backend.hpp"
#include "peft/core/groups.hpp"

namespace peft {

namespace detail {
/// Stand-in for the gradient of a frozen parameter: no storage, no members.
struct no_gradient {};
/// Stand-in for the packed storage of a trainable parameter (trainable values are always dense).
struct no_packed_storage {};
}  // namespace detail

/// A parameter of backend `B` in group `G`.
/// Guarantees: a frozen parameter (`Trainable == false`) has no gradient buffer at all (its `grad`
/// is an empty type, so code that touches it does not compile) and therefore never gets optimizer
/// state; a trainable one has `grad` with the shape of `value` once `allocate_grad` ran.
/// A frozen parameter may instead keep its value in a storage format (`packed`: fp16, bf16,
/// block-quantized; see `packed_matrix`), and then `value` is empty; `stored_shape()` and
/// `stored_elements()` answer for either form.
template <Backend B, groups::Group G, bool Trainable>
struct parameter {
  using backend = B;
  using group = G;
  static constexpr bool trainable = Trainable;

  typename B::tensor value;
  [[no_unique_address]] std::conditional_t<Trainable, typename B::tensor, detail::no_gradient> grad{};
  [[no_unique_address]] std::conditional_t<Trainable, detail::no_packed_storage, std::optional<packed_matrix>> packed{};
  /// The shape its layer gives the parameter. The value may stay empty until a loader fills it (a
  /// layer built with `weight_init::none`, which draws and allocates nothing).
  peft::shape declared{};

  /// Whether the value is kept packed (never for a trainable parameter).
  [[nodiscard]] bool is_packed() const noexcept {
    if constexpr (Trainable) return false;
    else return packed.has_value();
  }
  /// The shape of the value, dense or packed.
  [[nodiscard]] shape stored_shape() const {
    if constexpr (!Trainable)
      if (packed) return packed->shape();
    return value.empty() && declared.rank() ? declared : value.shape();
  }
  [[nodiscard]] std::size_t stored_elements() const { return stored_shape().size(); }
  /// The value as host floats in row-major order, dense or packed (checkpoints, reports).
  [[nodiscard]] std::vector<typename B::value_type> host_values(typename B::context& ctx) const {
    if constexpr (!Trainable)
      if (packed) return packed->template dequantize<typename B::value_type>();
    return B::copy_to_host(ctx, value);
  }
  /// Makes the value dense (dequantizing a packed one) and returns it, for code that writes into the
  /// weight (merging an adapter).
  typename B::tensor& dense_value(typename B::context& ctx) {
    if constexpr (!Trainable)
      if (packed) {
        const auto host = packed->template dequantize<typename B::value_type>();
        B::copy_from_host(ctx, host, packed->shape(), value);
        packed.reset();
      }
    return value;
  }

  /// Sizes `grad` like `value` and zeroes it (no-op when frozen).
  void allocate_grad(typename B::context& ctx) {
    if constexpr (Trainable) {
      grad.resize(stored_shape());
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
