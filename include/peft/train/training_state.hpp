#pragma once
/// \file A resumable training checkpoint in one file: the trainable parameters, the optimizer's state
/// and step count, and the caller's progress record (JSON), written atomically as safetensors.
///
/// Layout: tensors `param/<name>` (every trainable parameter, and every frozen method parameter:
/// VeRA's slices, AdaLoRA's allocation state) and `optim/<name>.<key>` (every state tensor, see
/// `optimizer::visit_state`); metadata `format` = "pt", `peft_training_state` = the JSON record,
/// `optimizer_steps` = the step count. Frozen base weights are not stored: they come from the base
/// checkpoint, which the record should identify.

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "peft/io/checkpoint.hpp"
#include "peft/io/safetensors.hpp"

namespace peft::train {

/// Writes `path` atomically: a kill at any moment leaves either the previous file or the new one.
template <Module M, class Optimizer>
void save_training_state(typename M::backend::context& ctx, const M& model, Optimizer& opt, const nlohmann::json& record,
                         const std::filesystem::path& path) {
  using B = typename M::backend;
  std::vector<io::tensor_to_write> tensors;
  auto add = [&](const std::string& name, const typename B::tensor& t) {
    const auto host = B::copy_to_host(ctx, t);
    std::vector<std::size_t> shape;
    for (std::size_t i = 0; i < t.shape().rank(); ++i) shape.push_back(t.shape()[i]);
    tensors.push_back(io::tensor_to_write::f32<typename B::value_type>(name, shape, host));
  };
  model.visit_parameters("", [&](const std::string& name, const auto& p) {
    if (std::remove_cvref_t<decltype(p)>::trainable || io::is_method_parameter(p)) {
      io::detail::require_value(name, p);
      add("param/" + name, p.value);
    }
  });
  opt.visit_state([&](const std::string& name, const typename B::tensor& t) { add("optim/" + name, t); });
  io::write_safetensors(path, tensors,
                        {{"format", "pt"},
                         {"peft_training_state", record.dump()},
                         {"optimizer_steps", std::to_string(opt.steps_taken())}});
}

/// Restores what `save_training_state` wrote into `model` (built the same way) and `opt`, and returns
/// the record. Every trainable parameter and state tensor must be present with its shape, and nothing
/// else may be in the file; otherwise `io::io_error` names the file and the tensor, and nothing is
/// modified.
template <Module M, class Optimizer>
nlohmann::json load_training_state(typename M::backend::context& ctx, M& model, Optimizer& opt, const std::filesystem::path& path) {
  using B = typename M::backend;
  const auto file = io::safetensors_file::open(path);
  const auto& meta = file.metadata();
  const auto rec = meta.find("peft_training_state");
  const auto steps = meta.find("optimizer_steps");
  if (rec == meta.end() || steps == meta.end())
    throw io::io_error("'" + path.string() + "' is not a training checkpoint (no peft_training_state metadata)");
  nlohmann::json record;
  std::int64_t step_count = 0;
  try {
    record = nlohmann::json::parse(rec->second);
    step_count = std::stoll(steps->second);
  } catch (const std::exception& e) {
    throw io::io_error("'" + path.string() + "': unreadable training record: " + e.what());
  }
  opt.init_state(ctx);
  struct assignment {
    typename B::tensor* tensor;
    const io::tensor_info* info;
    peft::shape shape;
  };
  std::vector<assignment> plan;
  std::size_t expected = 0;
  // `want`: the shape the tensor must have (a parameter's value may still be empty: DoRA's magnitude
  // before the first forward takes the saved one).
  auto match = [&](const std::string& key, typename B::tensor& t, const peft::shape& want) {
    ++expected;
    const io::tensor_info* info = file.find(key);
    if (!info) throw io::io_error("'" + path.string() + "': tensor '" + key + "' is missing (was it saved from the same model and method?)");
    if (!io::detail::same_shape(want, info->shape))
      throw io::io_error(peft::detail::concat("'", path.string(), "': tensor '", key, "' has shape ",
                                              io::detail::shape_str(info->shape), ", the model needs ", want));
    plan.push_back({&t, info, want});
  };
  model.visit_parameters("", [&](const std::string& name, auto& p) {
    if (std::remove_cvref_t<decltype(p)>::trainable || io::is_method_parameter(p)) match("param/" + name, p.value, p.stored_shape());
  });
  opt.visit_state([&](const std::string& name, typename B::tensor& t) { match("optim/" + name, t, t.shape()); });
  if (file.tensors().size() != expected)
    throw io::io_error(peft::detail::concat("'", path.string(), "' holds ", file.tensors().size(), " tensors, the model and optimizer need ",
                                            expected, " (was it saved from another method or model?)"));
  for (auto& a : plan) io::detail::assign<B>(ctx, file, *a.info, a.shape, *a.tensor);
  opt.set_steps_taken(step_count);
  return record;
}

}  // namespace peft::train
