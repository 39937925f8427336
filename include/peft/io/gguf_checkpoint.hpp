#pragma once
/// \file Model parameters from a GGUF file, for any `Module` that names its parameters' GGUF
/// spellings (`HasGgufNames`). Frozen matrices stored quantized (or fp16/bf16) stay in that form
/// when the backend multiplies packed matrices (`PackedProducts`): the model then takes about the
/// file's size in memory, and its products dequantize tiles on the fly. Everything else (norms,
/// trainable weights, backends without packed products) is dequantized into dense tensors.

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "peft/core/backend.hpp"
#include "peft/core/layer.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/gguf.hpp"

namespace peft::io {

/// A model whose parameters have GGUF names: `gguf_name(name)` gives the tensor name, or nullopt
/// for parameters a GGUF file never holds.
template <class M>
concept HasGgufNames = requires(const std::string& name) {
  { M::gguf_name(name) } -> std::convertible_to<std::optional<std::string>>;
};

/// A model that stores some matrices with their rows in another order than GGUF files do:
/// `gguf_row_order(name)` gives, for each of the model's rows, the file's row (or nullopt to keep
/// the file's order). Llama's Q and K projections are the case: GGUF converters interleave each
/// head's rotary halves, and the model keeps Hugging Face's order so that its adapters and merged
/// checkpoints are Hugging Face's.
template <class M>
concept HasGgufRowOrder = requires(const M& m, const std::string& name) {
  { m.gguf_row_order(name) } -> std::convertible_to<std::optional<std::vector<std::size_t>>>;
};

/// How `load_gguf` keeps frozen matrices.
enum class gguf_storage {
  keep,   ///< packed in the file's format when the backend can multiply it (the default)
  dense,  ///< always dequantized into the compute type
};

/// Loads every base parameter of `model` from `file`. Validates all shapes first: a tensor whose
/// shape differs from the parameter's throws `shape_error` naming both, and nothing has changed.
/// Base parameters absent from the file are reported in `missing` (and keep their initial values).
/// A tensor that is or dequantizes to NaN or infinity throws `numeric_error` naming it, likewise
/// before anything has changed.
template <Module M>
  requires HasGgufNames<M>
load_report load_gguf(typename M::backend::context& ctx, M& model, const gguf_file& file,
                      gguf_storage storage = gguf_storage::keep) {
  using B = typename M::backend;
  using T = typename B::value_type;
  load_report r;
  std::set<std::string> used;
  std::vector<std::function<void()>> plan;  // run only once every tensor has been validated
  model.visit_parameters("", [&](const std::string& name, auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    if (is_method_parameter(p)) {
      ++r.method_parameters;
      return;
    }
    const auto gguf = M::gguf_name(name);
    const gguf_tensor_info* t = gguf ? file.find_tensor(*gguf) : nullptr;
    if (!t) {
      r.missing.push_back(name);
      return;
    }
    const shape want = p.stored_shape();
    if (!detail::same_shape(want, t->shape))
      throw shape_error(peft::detail::concat("GGUF '", file.source(), "': tensor '", *gguf, "' has shape ",
                                             detail::shape_str(t->shape), " but the model's '", name, "' has shape ", want));
    if (const auto bad = file.count_non_finite(*t))
      throw numeric_error(peft::detail::concat("GGUF '", file.source(), "': tensor '", *gguf, "' holds ", bad.count,
                                               " NaN or infinite value(s) (the first at element ", bad.first,
                                               "): the file is damaged or came from a diverged run"));
    used.insert(*gguf);
    std::optional<std::vector<std::size_t>> order;
    if constexpr (HasGgufRowOrder<M>) order = model.gguf_row_order(name);
    plan.emplace_back([&p, &ctx, &file, t, want, storage, order = std::move(order)] {
      if constexpr (!P::trainable && PackedProducts<B>) {
        if (storage == gguf_storage::keep && t->format != storage_format::f32 && t->shape.size() == 2) {
          p.packed = order ? file.matrix(*t).with_rows(*order) : file.matrix(*t);
          p.value = typename B::tensor{};
          return;
        }
      }
      if constexpr (!P::trainable) p.packed.reset();
      auto values = file.dequantize<T>(*t);
      if (order) {
        const std::size_t cols = t->cols();
        std::vector<T> permuted(values.size());
        for (std::size_t r = 0; r < order->size(); ++r)
          std::copy_n(values.data() + (*order)[r] * cols, cols, permuted.data() + r * cols);
        values.swap(permuted);
      }
      B::copy_from_host(ctx, values, want, p.value);
    });
  });
  for (auto& assign : plan) assign();
  r.loaded = plan.size();
  for (const auto& t : file.tensors())
    if (!used.count(t.name)) r.unexpected.push_back(t.name);
  return r;
}

}  // namespace peft::io
