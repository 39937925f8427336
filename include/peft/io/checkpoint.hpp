#pragma once
/// \file Model parameters to and from safetensors by Hugging Face name, for any `Module`.
///
/// Works through `visit_parameters`, so it includes no model header: a user's own model loads and
/// saves checkpoints with no extra code.

#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/io/safetensors.hpp"

namespace peft::io {

/// True for parameters that a PEFT method adds (never present in a base checkpoint).
template <class P>
constexpr bool is_method_parameter(const P&) noexcept {
  return groups::MethodGroup<typename P::group>;
}

/// What `load_checkpoint` matched.
struct load_report {
  std::size_t loaded = 0;
  std::vector<std::string> missing;     ///< base parameters of the model absent from the file
  std::vector<std::string> unexpected;  ///< file tensors that no parameter took
  std::size_t method_parameters = 0;    ///< parameters PEFT methods add (not in base checkpoints)

  [[nodiscard]] std::string str() const {
    std::ostringstream os;
    os << "loaded " << loaded << " tensors";
    if (!missing.empty()) {
      os << "; missing from the file (newly initialised): ";
      for (std::size_t i = 0; i < missing.size(); ++i) os << (i ? ", " : "") << missing[i];
    }
    if (!unexpected.empty()) {
      os << "; unused in the file: ";
      for (std::size_t i = 0; i < unexpected.size(); ++i) os << (i ? ", " : "") << unexpected[i];
    }
    return os.str();
  }
};

/// A model that knows other names its parameters go by in checkpoints (a task head's encoder
/// saved without its prefix, legacy names): `checkpoint_names(name)` lists the candidates, the model's
/// own name first.
template <class M>
concept HasCheckpointNames = requires(const std::string& name) {
  { M::checkpoint_names(name) } -> std::convertible_to<std::vector<std::string>>;
};

namespace detail {
/// Names under which parameter `name` of `M` may appear in a checkpoint.
template <class M>
std::vector<std::string> checkpoint_aliases(const std::string& name) {
  if constexpr (HasCheckpointNames<M>) return M::checkpoint_names(name);
  else return {name};
}
inline std::string shape_str(const std::vector<std::size_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
inline bool same_shape(const shape& a, const std::vector<std::size_t>& b) {
  if (a.rank() != b.size()) return false;
  for (std::size_t i = 0; i < b.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}
/// Throws `numeric_error` naming the file and the tensor when `t` holds NaN or infinite values.
inline void require_finite(const safetensors_file& f, const tensor_info& t) {
  if (const auto bad = f.count_non_finite(t))
    throw numeric_error(peft::detail::concat("'", f.source(), "': tensor '", t.name, "' holds ", bad.count,
                                             " NaN or infinite value(s) (the first at element ", bad.first,
                                             "): the file is damaged or came from a diverged run"));
}
/// Throws `error` naming parameter `name` when it has a declared shape but no value yet: a base
/// weight that was never loaded, or a method parameter that the first forward pass or merge sets from
/// the base (DoRA's magnitude, LayerNorm tuning's copies). Writers call it before writing anything.
template <class P>
void require_value(const std::string& name, const P& p) {
  if (p.value.empty() && !p.is_packed() && p.stored_elements() > 0)
    throw error("parameter '" + name + "' has no value yet (a base weight that was never loaded, or a method "
                "parameter that the first forward pass or merge sets from the base weights); nothing was written");
}
/// Copies file tensor `t` into `v`, which takes shape `s` (the shape the caller validated `t`
/// against: a value not set yet, such as DoRA's magnitude before the first forward, is sized here).
/// F32 goes into float without an intermediate copy.
template <class B>
void assign(typename B::context& ctx, const safetensors_file& f, const tensor_info& t, const shape& s, typename B::tensor& v) {
  using T = typename B::value_type;
  if constexpr (std::is_same_v<T, float>) {
    if (auto view = f.f32_view(t)) {
      B::copy_from_host(ctx, *view, s, v);
      return;
    }
  }
  const auto values = f.read<T>(t);
  B::copy_from_host(ctx, values, s, v);
}
}  // namespace detail

/// Loads every base parameter of `model` found in `file`, by name (see `HasCheckpointNames`). Method parameters
/// (LoRA, BitFit deltas, adapters) are left as initialised. Validates everything first: a tensor whose
/// shape differs from the parameter's throws `shape_error` naming the key and both shapes, one with NaN
/// or infinite values `numeric_error`, and then nothing has been modified.
template <Module M>
load_report load_checkpoint(typename M::backend::context& ctx, M& model, const safetensors_file& file) {
  using B = typename M::backend;
  load_report r;
  std::set<std::string> used;
  std::vector<std::function<void()>> plan;  // run only once every tensor has been validated
  model.visit_parameters("", [&](const std::string& name, auto& p) {
    if (is_method_parameter(p)) {
      ++r.method_parameters;
      return;
    }
    for (const auto& alias : detail::checkpoint_aliases<M>(name))
      if (const tensor_info* t = file.find(alias)) {
        const shape want = p.stored_shape();
        if (!detail::same_shape(want, t->shape))
          throw shape_error(peft::detail::concat("checkpoint '", file.source(), "': tensor '", alias, "' has shape ",
                                                 detail::shape_str(t->shape), " but the model's '", name, "' has shape ",
                                                 want));
        detail::require_finite(file, *t);
        plan.emplace_back([&p, &ctx, &file, t, want] {
          if constexpr (!std::remove_cvref_t<decltype(p)>::trainable) p.packed.reset();  // a dense value replaces it
          detail::assign<B>(ctx, file, *t, want, p.value);
        });
        used.insert(alias);
        return;
      }
    r.missing.push_back(name);
  });
  for (auto& assign : plan) assign();
  r.loaded = plan.size();
  for (const auto& t : file.tensors())
    if (!used.count(t.name)) r.unexpected.push_back(t.name);
  return r;
}

/// Opens `path` and loads it (see the overload taking a file).
template <Module M>
load_report load_checkpoint(typename M::backend::context& ctx, M& model, const std::filesystem::path& path) {
  return load_checkpoint(ctx, model, safetensors_file::open(path));
}

/// The parameters of `model` selected by `keep(name, parameter)` as F32 tensors named `prefix + name`.
template <Module M, class Keep>
std::vector<tensor_to_write> collect_tensors(typename M::backend::context& ctx, const M& model, Keep&& keep,
                                             const std::string& prefix = "") {
  using B = typename M::backend;
  std::vector<tensor_to_write> out;
  model.visit_parameters("", [&](const std::string& name, const auto& p) {
    if (!keep(name, p)) return;
    detail::require_value(name, p);
    const auto host = p.host_values(ctx);  // packed values are dequantized
    const peft::shape stored = p.stored_shape();
    std::vector<std::size_t> shape;
    for (std::size_t i = 0; i < stored.rank(); ++i) shape.push_back(stored[i]);
    out.push_back(tensor_to_write::f32<typename B::value_type>(prefix + name, shape, host));
  });
  return out;
}

/// Writes every parameter of `model` (base and method parameters) to `path` as F32, atomically, with
/// metadata {"format": "pt"}.
template <Module M>
void save_checkpoint(typename M::backend::context& ctx, const M& model, const std::filesystem::path& path) {
  write_safetensors(path, collect_tensors(ctx, model, [](const std::string&, const auto&) { return true; }),
                    {{"format", "pt"}});
}

}  // namespace peft::io
