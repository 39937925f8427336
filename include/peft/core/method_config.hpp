#pragma once
/// \file Run-time configuration of the PEFT methods: ranks, scalings, sizes. Which methods apply to
/// which roles is compile-time (`peft::plan`); how big they are is decided here, at run time.

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "peft/core/kernel_args.hpp"

namespace peft {

/// LoRA (Hu et al. 2021): `W x + s * B A dropout(x)` with `s = alpha / r`, or `alpha / sqrt(r)` when
/// `use_rslora` (Kalajdzievski 2023). Requirements: 1 <= r <= min(in, out), alpha > 0,
/// 0 <= dropout < 1. Defaults follow Hugging Face PEFT's `LoraConfig`.
/// Run-time layer selection and per-module overrides follow PEFT's `LoraConfig`:
/// `layers_to_transform` (empty = all) keeps LoRA only on modules whose name contains
/// `layer.<i>.` with i listed; `rank_pattern` / `alpha_pattern` map a regular expression to a rank /
/// alpha for the modules whose name matches `(.*\.)?<key>` in full (first matching key wins);
/// `target_modules` (empty = every module of the plan's LoRA roles) is a regular expression that a
/// module name must match in full, as PEFT's string form of `target_modules`: it narrows the
/// compile-time roles at run time (a command-line tool builds LoRA on all roles and picks here).
struct lora_config {
  std::size_t r = 8;
  double alpha = 8;
  double dropout = 0;
  bool use_rslora = false;
  std::vector<int> layers_to_transform{};
  std::vector<std::pair<std::string, std::size_t>> rank_pattern{};
  std::vector<std::pair<std::string, double>> alpha_pattern{};
  std::string target_modules{};
};

/// Bottleneck adapter (Houlsby et al. 2019): `h + up(act(down(h)))`. The bottleneck is `bottleneck`
/// when non-zero, else `max(1, width / reduction_factor)` (AdapterHub's convention; Pfeiffer uses 16).
struct adapter_config {
  std::size_t bottleneck = 0;
  double reduction_factor = 16;
  activation nonlinearity = activation::relu;
};

/// The run-time part of a plan: one configuration per method family. Methods absent from the plan
/// ignore their entry.
struct method_config {
  lora_config lora{};
  adapter_config adapter{};
};

}  // namespace peft
