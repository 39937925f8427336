#pragma once
/// \file Softmax cross-entropy over the rows of a logits tensor, with an ignore index.

#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "peft/core/backend.hpp"
#include "peft/core/error.hpp"

namespace peft::loss {

/// Mean of -log softmax(z_r)[y_r] over rows r whose label y_r is not `ignore_index` (-100, as PyTorch
/// and Hugging Face use for padding and non-first word pieces). `forward` validates labels on the host,
/// returns the loss and keeps d loss / d logits for `gradient()`. A batch where every row is ignored
/// has loss 0 and zero gradient.
template <Backend B>
class softmax_cross_entropy {
 public:
  using tensor = typename B::tensor;

  explicit softmax_cross_entropy(std::int32_t ignore_index = -100) : ignore_index_(ignore_index) {}

  double forward(typename B::context& ctx, const tensor& logits, std::span<const std::int32_t> labels) {
    if (labels.size() != logits.rows())
      throw shape_error(peft::detail::concat("softmax_cross_entropy: ", labels.size(), " labels for logits of shape ",
                                             logits.shape(), " (", logits.rows(), " rows)"));
    const auto classes = static_cast<std::int64_t>(logits.cols());
    for (std::size_t r = 0; r < labels.size(); ++r)
      if (labels[r] != ignore_index_ && (labels[r] < 0 || labels[r] >= classes))
        throw config_error(peft::detail::concat("softmax_cross_entropy: label ", labels[r], " at row ", r,
                                                " is outside [0, ", classes, ") and is not the ignore index ",
                                                ignore_index_));
    B::copy_labels(ctx, labels, labels_);
    const double loss = B::softmax_cross_entropy(ctx, logits, labels_, ignore_index_, grad_);
    if (!std::isfinite(loss))
      throw numeric_error(peft::detail::concat("softmax_cross_entropy: loss is not finite (", loss,
                                               ") for logits of shape ", logits.shape()));
    return loss;
  }
  /// d loss / d logits of the last `forward`.
  [[nodiscard]] const tensor& gradient() const noexcept { return grad_; }

 private:
  std::int32_t ignore_index_;
  typename B::index_tensor labels_;
  tensor grad_;
};

}  // namespace peft::loss
