#pragma once
/// \file `peft::layers::embedding`: a lookup table indexed by token ids.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/parameter.hpp"
#include "peft/core/random.hpp"
#include "peft/layers/linear.hpp"

namespace peft::layers {

/// out[i, :] = weight[ids[i], :], weight (num_embeddings x dim) initialised N(0, init_std) as BERT does.
/// The gradient (when group `embedding` trains) is a scatter-add of the output gradient. Ids are
/// validated on the host before upload, and an id outside the table is an error naming the position.
template <Backend B, class Trainable = group_set<>>
class embedding {
 public:
  using backend = B;
  using tensor = typename B::tensor;
  using weight_parameter = parameter<B, groups::embedding, Trainable::template contains<groups::embedding>>;

  /// A table of N(0, init_std) rows, or (`init` none) nothing allocated until a loader fills it.
  embedding(typename B::context& ctx, std::size_t num_embeddings, std::size_t dim, std::string name, std::uint64_t seed,
            double init_std = 0.02, weight_init init = weight_init::normal)
      : name_(std::move(name)) {
    if (num_embeddings == 0 || dim == 0)
      throw config_error(peft::detail::concat("embedding '", name_, "': sizes ", num_embeddings, " x ", dim, " must be positive"));
    weight_.declared = shape{num_embeddings, dim};
    init_rng rng(seed);
    if (init != weight_init::none)
      detail::init_tensor<B>(ctx, shape{num_embeddings, dim}, weight_.value, [&] { return rng.normal(0, init_std); });
    weight_.allocate_grad(ctx);
  }

  /// Looks up `ids` (validated here) into an output of shape `out_shape` (its rows must equal ids.size()).
  const tensor& forward(typename B::context& ctx, std::span<const std::int32_t> ids, const shape& out_shape) {
    const auto n = static_cast<std::int64_t>(num_embeddings());
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= n)
        throw config_error(peft::detail::concat("embedding '", name_, "': id ", ids[i], " at position ", i,
                                                " is outside [0, ", n, ")"));
    B::copy_labels(ctx, ids, ids_);
    y_.resize(out_shape);
    if (weight_.is_packed()) {  // a frozen table kept in its storage format: dequantize the rows looked up
      if constexpr (!weight_parameter::trainable) {
        const packed_matrix& table = *weight_.packed;
        if (y_.rows() != ids.size() || y_.cols() != table.cols())
          throw shape_error(peft::detail::concat("embedding '", name_, "': output ", y_.shape(), " for ", ids.size(), " rows"));
        host_rows_.resize(ids.size() * table.cols());
        for (std::size_t i = 0; i < ids.size(); ++i)
          table.dequantize_rows(std::size_t(ids[i]), std::size_t(ids[i]) + 1, host_rows_.data() + i * table.cols());
        B::copy_from_host(ctx, host_rows_, out_shape, y_);
      }
      return y_;
    }
    B::gather_rows(ctx, weight_.value, ids_, y_);
    return y_;
  }
  /// Accumulates the table gradient (when trainable). Embeddings are inputs: there is no dx.
  void backward(typename B::context& ctx, const tensor& dy) {
    if constexpr (weight_parameter::trainable) B::scatter_add_rows(ctx, dy, ids_, weight_.grad);
  }

  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) {
    f(prefix + "weight", weight_);
  }
  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) const {
    f(prefix + "weight", weight_);
  }

  [[nodiscard]] std::size_t num_embeddings() const { return weight_.stored_shape().rows(); }
  [[nodiscard]] std::size_t dim() const { return weight_.stored_shape().cols(); }
  const weight_parameter& weight() const noexcept { return weight_; }
  weight_parameter& weight() noexcept { return weight_; }

 private:
  std::string name_;
  weight_parameter weight_;
  typename B::index_tensor ids_;
  tensor y_;
  std::vector<typename B::value_type> host_rows_;  // rows of a packed table
};

}  // namespace peft::layers
