#pragma once
/// \file Copying parameters between models by name: start a PEFT model from a pretrained one.

#include <map>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"

namespace peft {

/// What `copy_parameters` matched and what it did not.
struct transfer_report {
  std::size_t copied = 0;
  std::vector<std::string> missing;     ///< in the destination, absent from the source
  std::vector<std::string> unexpected;  ///< in the source, absent from the destination
};

/// Copies every parameter value of `src` into the parameter of `dst` with the same name (gradients and
/// optimizer state are untouched). Both models use backend `B`. A name present in both with different
/// shapes throws `shape_error` naming the parameter and both shapes, before anything is copied.
template <class B, class Src, class Dst>
transfer_report copy_parameters(typename B::context& ctx, const Src& src, Dst& dst) {
  std::map<std::string, const typename B::tensor*> by_name;
  src.visit_parameters("", [&](const std::string& name, const auto& p) { by_name[name] = &p.value; });
  transfer_report r;
  dst.visit_parameters("", [&](const std::string& name, auto& p) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) return r.missing.push_back(name);
    // An empty source value is one not set yet (DoRA's magnitude before the first forward): it is
    // copied as it is, and the destination then sets its own at first use.
    if (!it->second->empty() && !(it->second->shape() == p.stored_shape()))
      throw shape_error(peft::detail::concat("copy_parameters: '", name, "' has shape ", it->second->shape(),
                                             " in the source and ", p.stored_shape(), " in the destination"));
  });
  dst.visit_parameters("", [&](const std::string& name, auto& p) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) return;
    B::copy(ctx, *it->second, p.value);
    ++r.copied;
    by_name.erase(it);
  });
  for (const auto& kv : by_name) r.unexpected.push_back(kv.first);
  return r;
}

}  // namespace peft
