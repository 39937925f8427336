#pragma once
/// \file Frozen weights kept in a compact storage format after loading (bf16: half the memory, and
/// AVX512_BF16 products where the CPU has them; see backend/bf16_gemm.hpp).

#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "peft/core/backend.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/packed_matrix.hpp"
#include "peft/core/parameter.hpp"

namespace peft {

/// Re-stores every frozen, dense linear weight of `model` (a parameter of group `weight` and rank 2,
/// which only linear layers own) in `format` (F16, BF16 or Q8_0: what `packed_matrix::encode`
/// writes) and frees its dense copy; the layers then multiply with the stored form. Trainable
/// weights, embeddings, norms, biases and heads stay as they are, as do weights already packed.
/// Requires a backend with `PackedProducts` (otherwise layers could not use the stored form).
/// Returns the number of matrices re-stored. Merging an adapter later widens the weights it
/// touches back to dense (`parameter::dense_value`).
template <PackedProducts B, class Model>
std::size_t store_frozen_weights(typename B::context& ctx, Model& model, storage_format format) {
  std::size_t count = 0;
  model.visit_parameters("", [&](const std::string& name, auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    if constexpr (!P::trainable && std::is_same_v<typename P::group, groups::weight>) {
      if (p.is_packed() || p.value.shape().rank() != 2) return;
      const auto host = B::copy_to_host(ctx, p.value);
      const std::vector<float> values(host.begin(), host.end());
      p.packed = packed_matrix::encode(values, p.value.rows(), p.value.cols(), format, name);
      p.value = typename B::tensor{};
      ++count;
    }
  });
  return count;
}

}  // namespace peft
