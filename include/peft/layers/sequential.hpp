#pragma once
/// \file `peft::layers::sequential`: layers applied in order, like torch.nn.Sequential.

#include <cstddef>
#include <string>
#include <tuple>
#include <utility>

#include "peft/core/layer.hpp"

namespace peft::layers {

/// Composition of layers of one backend, fixed at compile time. Parameter names are prefixed with the
/// child's index (`"0.weight"`, `"2.lora_A.weight"`), as PyTorch names nn.Sequential children.
/// `merge`/`unmerge` reach every `Mergeable` child.
template <Layer... Ls>
  requires(sizeof...(Ls) > 0)
class sequential {
  using first = std::tuple_element_t<0, std::tuple<Ls...>>;
  static_assert((std::is_same_v<typename Ls::backend, typename first::backend> && ...),
                "peft::layers::sequential: all layers must use the same backend");

 public:
  using backend = typename first::backend;
  using tensor = typename backend::tensor;

  explicit sequential(Ls... layers) : layers_(std::move(layers)...) {}

  const tensor& forward(typename backend::context& ctx, const tensor& x) {
    return forward_from<0>(ctx, x);
  }
  const tensor& backward(typename backend::context& ctx, const tensor& dy) {
    return backward_from<sizeof...(Ls)>(ctx, dy);
  }
  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) {
    visit_each(*this, prefix, f, std::index_sequence_for<Ls...>{});
  }
  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) const {
    visit_each(*this, prefix, f, std::index_sequence_for<Ls...>{});
  }
  void merge(typename backend::context& ctx) {
    std::apply([&](auto&... l) { (merge_if_possible(l, ctx), ...); }, layers_);
    merged_ = true;
  }
  void unmerge(typename backend::context& ctx) {
    std::apply([&](auto&... l) { (unmerge_if_possible(l, ctx), ...); }, layers_);
    merged_ = false;
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  template <std::size_t I>
  auto& get() noexcept { return std::get<I>(layers_); }
  template <std::size_t I>
  const auto& get() const noexcept { return std::get<I>(layers_); }

 private:
  template <std::size_t I>
  const tensor& forward_from(typename backend::context& ctx, const tensor& x) {
    if constexpr (I == sizeof...(Ls)) return x;
    else return forward_from<I + 1>(ctx, std::get<I>(layers_).forward(ctx, x));
  }
  template <std::size_t I>
  const tensor& backward_from(typename backend::context& ctx, const tensor& dy) {
    if constexpr (I == 0) return dy;
    else return backward_from<I - 1>(ctx, std::get<I - 1>(layers_).backward(ctx, dy));
  }
  template <class Self, class F, std::size_t... I>
  static void visit_each(Self& self, const std::string& prefix, F& f, std::index_sequence<I...>) {
    (std::get<I>(self.layers_).visit_parameters(prefix + std::to_string(I) + ".", f), ...);
  }

  std::tuple<Ls...> layers_;
  bool merged_ = false;
};

}  // namespace peft::layers
