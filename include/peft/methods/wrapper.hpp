#pragma once
/// \file `peft::methods::linear_wrapper`: what every method layer that wraps a linear layer shares.

#include <regex>
#include <string>
#include <string_view>

#include "peft/core/error.hpp"

#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/layers/linear.hpp"

namespace peft::methods {

namespace detail {
/// Whether a method switched on or off at run time (`enabled`) and narrowed by a regular expression
/// (`target_modules`, matched in full; empty = every module its roles reach) applies to module `name`.
inline bool run_time_selects(bool enabled, const std::string& target_modules, const std::string& name,
                             std::string_view method) {
  if (!enabled) return false;
  if (target_modules.empty()) return true;
  try {
    return std::regex_match(name, std::regex(target_modules));
  } catch (const std::regex_error& e) {
    throw config_error(peft::detail::concat(method, ": target_modules '", target_modules,
                                            "' is not a valid regular expression: ", e.what()));
  }
}
}  // namespace detail

/// Base of the method layers (LoRA, BitFit, adapter): owns the wrapped layer, built from the same
/// options and configuration, and forwards its sizes, name and innermost `base_linear()`.
template <class Inner>
class linear_wrapper {
 public:
  using backend = typename Inner::backend;

  [[nodiscard]] std::size_t in_features() const noexcept { return inner_.in_features(); }
  [[nodiscard]] std::size_t out_features() const noexcept { return inner_.out_features(); }
  [[nodiscard]] const std::string& name() const noexcept { return inner_.name(); }
  auto& base_linear() noexcept { return inner_.base_linear(); }
  const auto& base_linear() const noexcept { return inner_.base_linear(); }
  Inner& inner() noexcept { return inner_; }
  const Inner& inner() const noexcept { return inner_; }
  /// The inner layer's shared backward buffers; a wrapper that takes some of its own says so.
  static std::uint64_t backward_elements(const layers::linear_site& s) { return layers::backward_elements_of<Inner>(s); }

 protected:
  linear_wrapper(typename backend::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : inner_(ctx, o, cfg) {}

  Inner inner_;
};

}  // namespace peft::methods
