#pragma once
/// \file Hugging Face PEFT adapter directories (`adapter_config.json` + `adapter_model.safetensors`),
/// both ways, and merged full checkpoints for deployment.
///
/// Generic over models and methods: tensors are the methods' parameters under their own names
/// (`base_model.model.<parameter name>`, no adapter name), the trainable head (`modules_to_save`)
/// under `base_model.model.<module>.<param>`, metadata {"format": "pt"}, and a sorted JSON config.
/// Each method of the model's plan says how it is spelt (`peft_format`, io/peft_format.hpp): a LoRA
/// adapter comes out exactly as PEFT's `save_pretrained` writes it. Methods without a PEFT equivalent
/// (BitFit deltas, bottleneck adapters) go in the same file pair, and the config then says
/// `peft_type` "PEFT_CPP" and lists the methods (see docs/formats.md).

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/json_config.hpp"
#include "peft/io/peft_format.hpp"

namespace peft::io {

inline constexpr const char* peft_key_prefix = "base_model.model.";

/// What goes into `adapter_config.json` besides what the model itself tells.
struct adapter_save_options {
  std::string base_model_name_or_path;
  std::string task_type = "SEQ_CLS";  ///< PEFT's task type: "SEQ_CLS", "TOKEN_CLS", "CAUSAL_LM", ...
  method_config methods{};            ///< the options the model was built with
  /// Modules that train fully and are saved whole (PEFT's `modules_to_save`), by their last name
  /// component or full name. Any other trainable base parameter means full fine-tuning: an error.
  std::vector<std::string> modules_to_save{"classifier"};
};

/// An adapter directory's configuration as read back: the common keys, each method's options (read
/// by the methods of the plan it was read for), and the whole JSON for anything else.
struct adapter_config_info {
  std::string peft_type;
  std::string task_type;
  std::string base_model_name_or_path;
  std::vector<std::string> modules_to_save;
  std::vector<std::string> methods;  ///< the plan methods the file carries
  method_config options{};
  nlohmann::json json;
};

/// A model type that names its plan (`using plan = ...`), as the models of this library do; adapter
/// files need the plan's methods to know how each one is spelt.
template <class M>
concept PlannedModule = Module<M> && requires { typename M::plan::methods; };

namespace detail {
template <class M>
concept has_peft_format = requires { typename M::peft_format; };
template <class M>
constexpr bool is_mergeable() {
  if constexpr (requires { M::mergeable; }) return M::mergeable;
  else return true;
}
/// Calls `f(type_identity<Method>)` for each method of `Plan`.
template <class Plan, class F>
void for_each_method(F&& f) {
  std::apply([&](auto... m) { (f(std::type_identity<decltype(m)>{}), ...); }, typename Plan::methods{});
}
/// The name of the method of `Plan` that owns parameter type `P` (empty for base parameters).
template <class Plan, class P>
std::string_view owner_of() {
  std::string_view owner;
  for_each_method<Plan>([&](auto m) {
    using Me = typename decltype(m)::type;
    if (Me::groups::template contains<typename P::group>) owner = Me::name;
  });
  return owner;
}
inline std::string module_of(const std::string& parameter) {
  const auto dot = parameter.rfind('.');
  return dot == std::string::npos ? parameter : parameter.substr(0, dot);
}
}  // namespace detail

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (both atomically) for the
/// trainable parameters of `model`: the methods' parameters and the `modules_to_save`. A file that
/// carries exactly one method with a PEFT type (LoRA) is Hugging Face PEFT's own format; anything
/// else says `peft_type` "PEFT_CPP" and lists its methods under `peft_cpp` (docs/formats.md). Each
/// method with a `peft_format` writes its keys. Throws `config_error` when the model trains base
/// weights outside `modules_to_save` (that is full fine-tuning: save a full checkpoint).
template <PlannedModule M>
void save_peft_adapter(typename M::backend::context& ctx, const M& model, const std::filesystem::path& dir,
                       const adapter_save_options& opts) {
  using Plan = typename M::plan;
  std::map<std::string_view, adapter_contents> by_method;
  std::set<std::string> linears, norms, head_modules;
  model.visit_parameters("", [&](const std::string& name, const auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    const std::string module = detail::module_of(name);
    if (is_method_parameter(p)) {
      auto& contents = by_method[detail::owner_of<Plan, P>()];
      contents.parameters.push_back(name);
      contents.shapes[name] = p.stored_shape();
      return;
    }
    if (p.stored_shape().rank() == 2 && std::string_view(P::group::name) == groups::weight::name) linears.insert(module);
    if (std::string_view(P::group::name) == groups::norm::name) norms.insert(module);
    if constexpr (P::trainable) {
      const std::string last = module.substr(module.rfind('.') == std::string::npos ? 0 : module.rfind('.') + 1);
      if (std::find(opts.modules_to_save.begin(), opts.modules_to_save.end(), last) == opts.modules_to_save.end() &&
          std::find(opts.modules_to_save.begin(), opts.modules_to_save.end(), module) == opts.modules_to_save.end())
        throw config_error("save_peft_adapter: the model trains base weights ('" + module +
                           "') outside modules_to_save; this is full fine-tuning, save a full checkpoint with save_checkpoint");
      head_modules.insert(module);
    }
  });
  // modules_to_save by their last component ("classifier"), as PEFT names them.
  std::set<std::string> to_save;
  for (const auto& m : head_modules) to_save.insert(m.substr(m.rfind('.') == std::string::npos ? 0 : m.rfind('.') + 1));

  std::vector<std::string> present;
  std::string_view single_type;
  detail::for_each_method<Plan>([&](auto m) {
    using Me = typename decltype(m)::type;
    if (!by_method.count(Me::name)) return;
    present.emplace_back(Me::name);
    if constexpr (detail::has_peft_format<Me>) single_type = Me::peft_format::peft_type;
  });
  const bool native = present.size() == 1 && !single_type.empty();
  nlohmann::json cfg = {
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", opts.base_model_name_or_path},
      {"inference_mode", true},
      {"modules_to_save", to_save.empty() ? nlohmann::json(nullptr) : nlohmann::json(std::vector<std::string>(to_save.begin(), to_save.end()))},
      {"peft_type", native ? std::string(single_type) : std::string("PEFT_CPP")},
      {"revision", nullptr},
      {"task_type", opts.task_type}};
  if (!native)
    cfg["peft_cpp"] = {{"methods", present},
                       {"layout", "each method's tensors under its parameter names, next to each other; see docs/formats.md"}};
  auto tensors = collect_tensors(
      ctx, model,
      [&](const std::string& name, const auto& p) { return is_method_parameter(p) || head_modules.count(detail::module_of(name)); },
      peft_key_prefix);
  // A file of one PEFT type has that type's keys at the top, as PEFT writes them; in a combined file
  // each method's keys go under peft_cpp.<method>, so that two methods cannot collide. A format may
  // also rewrite its tensors (`pack_tensors`): VeRA writes its shared matrices once, AdaLoRA keeps
  // the triplets its allocator kept and says which in the config.
  detail::for_each_method<Plan>([&](auto m) {
    using Me = typename decltype(m)::type;
    if constexpr (detail::has_peft_format<Me>) {
      auto it = by_method.find(Me::name);
      if (it == by_method.end()) return;
      it->second.linear_modules = linears;
      it->second.norm_modules = norms;
      nlohmann::json& target = native ? cfg : (cfg["peft_cpp"][std::string(Me::name)] = nlohmann::json::object());
      Me::peft_format::write_config(target, opts.methods.get<typename Me::options>(), it->second);
      if constexpr (requires { Me::peft_format::pack_tensors(tensors, target); }) Me::peft_format::pack_tensors(tensors, target);
      else if constexpr (requires { Me::peft_format::pack_tensors(tensors); }) Me::peft_format::pack_tensors(tensors);
    }
  });
  std::filesystem::create_directories(dir);
  write_safetensors(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_text_atomically(dir / "adapter_config.json", cfg.dump(2) + "\n");
}

/// Parses an `adapter_config.json` for a model of `Plan`: the common keys, then each of the plan's
/// methods that the file carries reads its options (with its `peft_format`). The file's `peft_type`
/// must be one of the plan's methods' PEFT types or PEFT_CPP; wrong JSON types are errors naming the
/// key.
template <class Plan>
adapter_config_info parse_peft_adapter_config(const json_config& f) {
  const auto& j = f.json();
  adapter_config_info info;
  info.json = j;
  if (!j.contains("peft_type") || !j["peft_type"].is_string())
    f.fail("'peft_type' must be a string, got " + (j.contains("peft_type") ? j["peft_type"].dump() : std::string("nothing")));
  info.peft_type = j["peft_type"].get<std::string>();
  if (const auto t = f.string("task_type")) info.task_type = *t;
  if (const auto b = f.string("base_model_name_or_path")) info.base_model_name_or_path = *b;
  if (j.contains("modules_to_save") && j["modules_to_save"].is_array())
    for (const auto& m : j["modules_to_save"])
      if (m.is_string()) info.modules_to_save.push_back(m.get<std::string>());
  // Which methods the file carries: PEFT's own type names one; PEFT_CPP lists them (files written
  // before the list existed carry every method of the plan).
  std::vector<std::string> listed;
  bool every = false;
  if (info.peft_type == "PEFT_CPP") {
    if (j.contains("peft_cpp") && j["peft_cpp"].is_object() && j["peft_cpp"].contains("methods")) {
      if (!j["peft_cpp"]["methods"].is_array()) f.fail("'peft_cpp.methods' must be a list of method names");
      for (const auto& m : j["peft_cpp"]["methods"])
        if (m.is_string()) listed.push_back(m.get<std::string>());
    } else {
      every = true;
    }
  }
  std::string supported = "PEFT_CPP";
  bool known = info.peft_type == "PEFT_CPP";
  detail::for_each_method<Plan>([&](auto m) {
    using Me = typename decltype(m)::type;
    bool carried = every || std::find(listed.begin(), listed.end(), std::string(Me::name)) != listed.end();
    if constexpr (detail::has_peft_format<Me>) {
      supported += ", " + std::string(Me::peft_format::peft_type);
      if (info.peft_type == Me::peft_format::peft_type) carried = known = true;
      if (carried) {
        // Combined files keep each method's keys under peft_cpp.<method>; files written before that
        // (and PEFT's own) have them at the top.
        const bool nested = info.peft_type == "PEFT_CPP" && j.contains("peft_cpp") && j["peft_cpp"].is_object() &&
                            j["peft_cpp"].contains(std::string(Me::name));
        if (nested)
          Me::peft_format::read_config(
              json_config::from_json(j["peft_cpp"][std::string(Me::name)], f.source() + ": peft_cpp." + std::string(Me::name)),
              info.options.template get<typename Me::options>());
        else
          Me::peft_format::read_config(f, info.options.template get<typename Me::options>());
      }
    }
    if (carried) info.methods.emplace_back(Me::name);
  });
  if (!known) f.fail("peft_type '" + info.peft_type + "' is not supported (" + supported + ")");
  return info;
}

/// Reads and parses `dir/adapter_config.json` (see `parse_peft_adapter_config`).
template <class Plan>
adapter_config_info read_peft_adapter_config(const std::filesystem::path& dir) {
  return parse_peft_adapter_config<Plan>(json_config::read(dir / "adapter_config.json"));
}

/// Loads `dir/adapter_model.safetensors` into the trainable parameters of `model`, which must have been
/// built with the directory's configuration (see `read_peft_adapter_config`). Every tensor must find
/// its parameter and every method parameter must be in the file; shapes must match (the message names
/// the key and both shapes) and values finite. Nothing is modified unless all checks pass.
template <PlannedModule M>
load_report load_peft_adapter(typename M::backend::context& ctx, M& model, const std::filesystem::path& dir) {
  using B = typename M::backend;
  const auto file = safetensors_file::open(dir / "adapter_model.safetensors");
  std::map<std::string, const tensor_info*> by_name;
  const std::string prefix = peft_key_prefix;
  for (const auto& t : file.tensors()) {
    std::string name = t.name;
    if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
    bool ignored = false;
    detail::for_each_method<typename M::plan>([&](auto m) {
      using Me = typename decltype(m)::type;
      if constexpr (detail::has_peft_format<Me>) {
        if constexpr (requires { Me::peft_format::parameter_name(name); }) name = Me::peft_format::parameter_name(name);
        // A format may declare tensors that stand for nothing here (AdaLoRA's fully pruned modules).
        if constexpr (requires { Me::peft_format::ignores(t); }) ignored = ignored || Me::peft_format::ignores(t);
      }
    });
    if (!ignored) by_name[name] = &t;
  }
  load_report r;
  struct assignment {
    typename B::tensor* value;
    const tensor_info* tensor;  // null: the value is `host`, cut from a shared tensor
    peft::shape shape;          // validated against the file; a value not set yet is sized to it
    std::vector<typename B::value_type> host{};
  };
  std::vector<assignment> plan;
  std::set<std::string> used;
  model.visit_parameters("", [&](const std::string& name, auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    if constexpr (!P::trainable) {
      // A frozen method parameter (VeRA's slices) comes from the file when its method's format
      // says how: shared tensors, cut to this layer's shape.
      if (!is_method_parameter(p)) return;
      detail::for_each_method<typename M::plan>([&](auto m) {
        using Me = typename decltype(m)::type;
        if constexpr (detail::has_peft_format<Me>)
          if constexpr (requires { Me::peft_format::template frozen_value<typename B::value_type>(file, name, p.stored_shape()); })
            if (Me::groups::template contains<typename P::group>) {
              plan.push_back({&p.value, nullptr, p.stored_shape(),
                              Me::peft_format::template frozen_value<typename B::value_type>(file, name, p.stored_shape())});
              for (const auto key : Me::peft_format::shared_tensors) used.insert(std::string(key));
            }
      });
    } else {
      const auto it = by_name.find(name);
      if (it == by_name.end()) {
        if (is_method_parameter(p))
          throw io_error("adapter '" + dir.string() + "': parameter '" + name +
                         "' is not in adapter_model.safetensors (was the model built with the adapter's configuration?)");
        r.missing.push_back(name);
        return;
      }
      if (!detail::same_shape(p.stored_shape(), it->second->shape))
        throw shape_error(peft::detail::concat("adapter '", dir.string(), "': tensor '", it->second->name, "' has shape ",
                                               detail::shape_str(it->second->shape), " but the model's '", name,
                                               "' has shape ", p.stored_shape()));
      detail::require_finite(file, *it->second);
      plan.push_back({&p.value, it->second, p.stored_shape()});
      used.insert(name);
    }
  });
  for (const auto& [name, t] : by_name)
    if (!used.count(name))
      throw io_error("adapter '" + dir.string() + "': tensor '" + t->name +
                     "' matches no trainable parameter of the model (does the plan target this module?)");
  for (auto& a : plan) {
    if (a.tensor) detail::assign<B>(ctx, file, *a.tensor, a.shape, *a.value);
    else B::copy_from_host(ctx, a.host, a.shape, *a.value);
  }
  r.loaded = plan.size();
  return r;
}

/// Writes a full merged checkpoint `dir/model.safetensors` + `dir/config.json` (`config_json`, the
/// model's own `config.json`, e.g. `bert_config::to_json("BertForSequenceClassification", labels)`),
/// which then loads as that plain model: the mergeable methods are folded into the base weights for
/// the write and taken out again afterwards, so `model` is unchanged. A method that cannot be merged
/// (bottleneck adapters are nonlinear) with parameters in the model is an error, and nothing is
/// written.
template <PlannedModule M>
void save_merged_checkpoint(typename M::backend::context& ctx, M& model, const std::filesystem::path& dir,
                            const nlohmann::json& config_json) {
  std::string unmergeable;
  model.visit_parameters("", [&](const std::string&, const auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    detail::for_each_method<typename M::plan>([&](auto m) {
      using Me = typename decltype(m)::type;
      if constexpr (!detail::is_mergeable<Me>())
        if (Me::groups::template contains<typename P::group>) {
          unmergeable = "method '" + std::string(Me::name) + "' cannot be merged into the base weights";
          if constexpr (requires { Me::not_mergeable_because; })
            unmergeable += " (" + std::string(Me::not_mergeable_because) + ")";
        }
    });
  });
  if (!unmergeable.empty())
    throw config_error("save_merged_checkpoint: " + unmergeable);
  model.merge(ctx);
  try {
    std::filesystem::create_directories(dir);
    write_safetensors(dir / "model.safetensors",
                      collect_tensors(ctx, model, [](const std::string&, const auto& p) { return !is_method_parameter(p); }),
                      {{"format", "pt"}});
    write_json_file(dir / "config.json", config_json);
  } catch (...) {
    model.unmerge(ctx);
    throw;
  }
  model.unmerge(ctx);
}

}  // namespace peft::io
