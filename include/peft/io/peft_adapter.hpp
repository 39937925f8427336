#pragma once
/// \file Hugging Face PEFT adapter directories (`adapter_config.json` + `adapter_model.safetensors`),
/// both ways, and merged full checkpoints for deployment.
///
/// A LoRA adapter is written exactly as PEFT's `save_pretrained` does: sorted JSON config with
/// `peft_type` "LORA", tensors `base_model.model.<module>.lora_A.weight` (r x in) and `.lora_B.weight`
/// (out x r) with no adapter name, the trainable head (`modules_to_save`) under
/// `base_model.model.<module>.<param>`, and metadata {"format": "pt"}. BitFit deltas and bottleneck
/// adapters have no PEFT equivalent; they go in the same file pair under
/// `base_model.model.<module>.bias_delta` and `base_model.model.<module>.adapter.{down,up}.{weight,bias}`,
/// and the config then says `peft_type` "PEFT_CPP" (see docs/formats.md).

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/json_config.hpp"
#include "peft/methods/lora.hpp"

namespace peft::io {

inline constexpr const char* peft_key_prefix = "base_model.model.";

/// What goes into `adapter_config.json` besides what the model itself tells.
struct adapter_save_options {
  std::string base_model_name_or_path;
  std::string task_type = "SEQ_CLS";  ///< "SEQ_CLS" or "TOKEN_CLS"
  lora_config lora{};                 ///< the configuration the model was built with
};

/// An adapter directory's configuration as read back.
struct adapter_config_info {
  std::string peft_type;
  std::string task_type;
  std::string base_model_name_or_path;
  lora_config lora{};
  nlohmann::json target_modules;
  std::vector<std::string> modules_to_save;
};

namespace detail {
inline std::string strip_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0
             ? s.substr(0, s.size() - suffix.size())
             : s;
}
inline bool ends_with_module(const std::string& name, const std::string& suffix) {
  return name == suffix || (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                            name[name.size() - suffix.size() - 1] == '.');
}
inline std::string regex_escape(const std::string& s) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(s, special, R"(\$&)");
}

/// PEFT `target_modules` that select exactly `lora` among `linears` (module names): the shortest
/// dotted suffixes when they select nothing else (honouring layers_to_transform, as PEFT does for
/// lists), else a regular expression that PEFT full-matches against each module name.
inline nlohmann::json target_modules_for(const std::set<std::string>& lora, const std::set<std::string>& linears,
                                         const std::vector<int>& layers) {
  auto in_scope = [&](const std::string& m) {
    if (layers.empty()) return true;
    const int i = methods::detail::layer_index(m + ".");
    return std::find(layers.begin(), layers.end(), i) != layers.end();
  };
  std::set<std::string> suffixes;
  bool clean = true;
  for (const auto& m : lora) {
    std::string chosen;
    std::size_t pos = m.size();
    while (chosen.empty()) {
      pos = m.rfind('.', pos == m.size() ? std::string::npos : pos - 1);
      const std::string s = pos == std::string::npos ? m : m.substr(pos + 1);
      bool selects_only_lora = true;
      for (const auto& other : linears)
        if (!lora.count(other) && in_scope(other) && ends_with_module(other, s)) selects_only_lora = false;
      if (selects_only_lora) chosen = s;
      if (pos == std::string::npos || pos == 0) break;
    }
    if (chosen.empty()) clean = false;
    else suffixes.insert(chosen);
  }
  if (clean) return nlohmann::json(std::vector<std::string>(suffixes.begin(), suffixes.end()));
  std::string re;
  for (const auto& m : lora) re += (re.empty() ? "" : "|") + regex_escape(m);
  return "(" + re + ")";
}
}  // namespace detail

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (both atomically) for the
/// trainable parameters of `model`: LoRA matrices, the trainable head, BitFit deltas and adapters.
/// Throws `config_error` when the model trains base weights beyond a head (save a full checkpoint).
template <Module M>
void save_peft_adapter(typename M::backend::context& ctx, const M& model, const std::filesystem::path& dir,
                       const adapter_save_options& opts) {
  std::set<std::string> lora_modules, linears, head_modules;
  bool ours = false;
  model.visit_parameters("", [&](const std::string& name, const auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    const std::string_view g = P::group::name;
    const std::string module = name.substr(0, name.rfind('.'));
    if (g == groups::lora_a::name) lora_modules.insert(detail::strip_suffix(module, ".lora_A"));
    if (g == groups::bias_delta::name || g == groups::adapter::name) ours = true;
    if (g == groups::weight::name && p.value.shape().rank() == 2) linears.insert(module);
    if constexpr (P::trainable)
      if (!is_method_group(g)) head_modules.insert(module);
  });
  for (const auto& m : head_modules)
    if (m.find("encoder.layer.") != std::string::npos || m.find("embeddings") != std::string::npos)
      throw config_error("save_peft_adapter: the model trains base weights ('" + m +
                         "'); this is full fine-tuning, save a full checkpoint with save_checkpoint");
  // modules_to_save by their last component ("classifier"), as PEFT names them.
  std::set<std::string> to_save;
  for (const auto& m : head_modules) to_save.insert(m.substr(m.rfind('.') == std::string::npos ? 0 : m.rfind('.') + 1));

  nlohmann::json cfg = {
      {"alpha_pattern", nlohmann::json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", opts.base_model_name_or_path},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"lora_alpha", opts.lora.alpha},
      {"lora_dropout", opts.lora.dropout},
      {"modules_to_save", to_save.empty() ? nlohmann::json(nullptr) : nlohmann::json(std::vector<std::string>(to_save.begin(), to_save.end()))},
      {"peft_type", ours ? "PEFT_CPP" : "LORA"},
      {"r", opts.lora.r},
      {"rank_pattern", nlohmann::json::object()},
      {"revision", nullptr},
      {"target_modules", lora_modules.empty() ? nlohmann::json(nullptr)
                                              : detail::target_modules_for(lora_modules, linears, opts.lora.layers_to_transform)},
      {"task_type", opts.task_type},
      {"use_dora", false},
      {"use_rslora", opts.lora.use_rslora}};
  // lora_alpha is an integer in PEFT's configs when it is one.
  if (opts.lora.alpha == double(std::int64_t(opts.lora.alpha))) cfg["lora_alpha"] = std::int64_t(opts.lora.alpha);
  if (!opts.lora.layers_to_transform.empty() && cfg["target_modules"].is_array())
    cfg["layers_to_transform"] = opts.lora.layers_to_transform;
  for (const auto& [k, r] : opts.lora.rank_pattern) cfg["rank_pattern"][k] = r;
  for (const auto& [k, a] : opts.lora.alpha_pattern) cfg["alpha_pattern"][k] = a;
  if (ours)
    cfg["peft_cpp"] = {{"layout", "bias_delta and adapter.{down,up} tensors next to the LoRA tensors; see docs/formats.md"}};

  const auto tensors = collect_tensors(
      ctx, model,
      [&](const std::string& name, std::string_view g) {
        return is_method_group(g) || head_modules.count(name.substr(0, name.rfind('.')));
      },
      peft_key_prefix);
  std::filesystem::create_directories(dir);
  write_safetensors(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_text_atomically(dir / "adapter_config.json", cfg.dump(2) + "\n");
}

/// Reads `dir/adapter_config.json`. LoRA settings (r, lora_alpha, lora_dropout, use_rslora,
/// layers_to_transform, rank_pattern, alpha_pattern, target_modules) come back as a `lora_config` to
/// build the model with. Wrong JSON types are errors naming the key.
inline adapter_config_info read_peft_adapter_config(const std::filesystem::path& dir) {
  const auto path = dir / "adapter_config.json";
  std::ifstream in(path);
  if (!in) throw io_error("cannot open '" + path.string() + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw io_error(path.string() + ": not valid JSON: " + e.what());
  }
  auto fail = [&](const std::string& key, const char* want) {
    throw io_error(peft::detail::concat(path.string(), ": '", key, "' must be ", want, ", got ", j[key].dump()));
  };
  adapter_config_info info;
  if (!j.is_object()) throw io_error(path.string() + ": not a JSON object");
  if (!j.contains("peft_type") || !j["peft_type"].is_string()) fail("peft_type", "a string");
  info.peft_type = j["peft_type"].get<std::string>();
  if (info.peft_type != "LORA" && info.peft_type != "PEFT_CPP")
    throw io_error(path.string() + ": peft_type '" + info.peft_type + "' is not supported (LORA, PEFT_CPP)");
  if (j.contains("task_type") && j["task_type"].is_string()) info.task_type = j["task_type"].get<std::string>();
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
    info.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  if (!j.contains("r") || !j["r"].is_number_unsigned()) fail("r", "a positive integer");
  info.lora.r = j["r"].get<std::size_t>();
  if (j.contains("lora_alpha")) {
    if (!j["lora_alpha"].is_number()) fail("lora_alpha", "a number");
    info.lora.alpha = j["lora_alpha"].get<double>();
  } else {
    info.lora.alpha = 8;  // PEFT's default
  }
  if (j.contains("lora_dropout")) {
    if (!j["lora_dropout"].is_number()) fail("lora_dropout", "a number");
    info.lora.dropout = j["lora_dropout"].get<double>();
  }
  if (j.contains("use_rslora")) {
    if (!j["use_rslora"].is_boolean()) fail("use_rslora", "a boolean");
    info.lora.use_rslora = j["use_rslora"].get<bool>();
  }
  if (j.contains("use_dora") && j["use_dora"].is_boolean() && j["use_dora"].get<bool>())
    throw io_error(path.string() + ": DoRA adapters (use_dora: true) are not supported yet");
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
    const auto& l = j["layers_to_transform"];
    if (l.is_number_integer()) info.lora.layers_to_transform = {l.get<int>()};
    else if (l.is_array() && std::all_of(l.begin(), l.end(), [](const auto& v) { return v.is_number_integer(); }))
      info.lora.layers_to_transform = l.get<std::vector<int>>();
    else fail("layers_to_transform", "an integer or a list of integers");
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_object()) fail(key, "an object");
    for (auto it = j[key].begin(); it != j[key].end(); ++it) {
      if (std::string(key) == "rank_pattern") {
        if (!it.value().is_number_unsigned()) fail(key, "an object of positive integers");
        info.lora.rank_pattern.emplace_back(it.key(), it.value().get<std::size_t>());
      } else {
        if (!it.value().is_number()) fail(key, "an object of numbers");
        info.lora.alpha_pattern.emplace_back(it.key(), it.value().get<double>());
      }
    }
  }
  if (j.contains("target_modules") && !j["target_modules"].is_null()) {
    // PEFT's two forms: a list of module-name suffixes, or one regular expression (full match).
    const auto& t = j["target_modules"];
    info.target_modules = t;
    if (t.is_string()) {
      info.lora.target_modules = t.get<std::string>();
    } else if (t.is_array() && !t.empty() && std::all_of(t.begin(), t.end(), [](const auto& v) { return v.is_string(); })) {
      std::string alternatives;
      for (const auto& v : t) alternatives += (alternatives.empty() ? "" : "|") + detail::regex_escape(v.get<std::string>());
      info.lora.target_modules = "(.*\\.)?(" + alternatives + ")";
    } else {
      fail("target_modules", "a string or a non-empty list of strings");
    }
  }
  if (j.contains("modules_to_save") && j["modules_to_save"].is_array())
    for (const auto& m : j["modules_to_save"])
      if (m.is_string()) info.modules_to_save.push_back(m.get<std::string>());
  return info;
}

/// Loads `dir/adapter_model.safetensors` into the trainable parameters of `model`, which must have been
/// built with the directory's LoRA configuration (see `read_peft_adapter_config`). Every tensor must
/// find its parameter and every method parameter must be in the file; shapes must match (the message
/// names the key and both shapes). Nothing is modified unless all checks pass.
template <Module M>
load_report load_peft_adapter(typename M::backend::context& ctx, M& model, const std::filesystem::path& dir) {
  using B = typename M::backend;
  const auto file = safetensors_file::open(dir / "adapter_model.safetensors");
  std::map<std::string, const tensor_info*> by_name;
  const std::string prefix = peft_key_prefix;
  for (const auto& t : file.tensors()) {
    std::string name = t.name;
    if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
    // PEFT's in-memory names carry the adapter name ("lora_A.default.weight"); saved files do not,
    // but accept both.
    name = std::regex_replace(name, std::regex(R"(\.(lora_[AB])\.default\.)"), ".$1.");
    by_name[name] = &t;
  }
  load_report r;
  std::vector<std::pair<typename B::tensor*, const tensor_info*>> plan;
  std::set<std::string> used;
  model.visit_parameters("", [&](const std::string& name, auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    if constexpr (P::trainable) {
      const auto it = by_name.find(name);
      if (it == by_name.end()) {
        if (is_method_group(P::group::name))
          throw io_error("adapter '" + dir.string() + "': parameter '" + name +
                         "' is not in adapter_model.safetensors (was the model built with the adapter's configuration?)");
        r.missing.push_back(name);
        return;
      }
      if (!detail::same_shape(p.value.shape(), it->second->shape))
        throw shape_error(peft::detail::concat("adapter '", dir.string(), "': tensor '", it->second->name, "' has shape ",
                                               detail::shape_str(it->second->shape), " but the model's '", name,
                                               "' has shape ", p.value.shape()));
      plan.emplace_back(&p.value, it->second);
      used.insert(name);
    }
  });
  for (const auto& [name, t] : by_name)
    if (!used.count(name))
      throw io_error("adapter '" + dir.string() + "': tensor '" + t->name +
                     "' matches no trainable parameter of the model (does the plan target this module?)");
  for (auto& [value, t] : plan) detail::assign<B>(ctx, file, *t, *value);
  r.loaded = plan.size();
  return r;
}

/// Writes a full merged checkpoint `dir/model.safetensors` + `dir/config.json` (`config_json`, the
/// model's own `config.json`, e.g. `bert_config::to_json("BertForSequenceClassification", labels)`),
/// which then loads as that plain model: LoRA and BitFit are folded into the base
/// weights for the write and taken out again afterwards, so `model` is unchanged. Bottleneck adapters
/// cannot be merged (they are nonlinear): that is an error, and nothing is written.
template <Module M>
void save_merged_checkpoint(typename M::backend::context& ctx, M& model, const std::filesystem::path& dir,
                            const nlohmann::json& config_json) {
  bool adapters = false;
  model.visit_parameters("", [&](const std::string&, const auto& p) {
    adapters = adapters || std::remove_cvref_t<decltype(p)>::group::name == groups::adapter::name;
  });
  if (adapters)
    throw config_error("save_merged_checkpoint: bottleneck adapters are nonlinear and cannot be merged into the base weights");
  model.merge(ctx);
  try {
    std::filesystem::create_directories(dir);
    write_safetensors(dir / "model.safetensors",
                      collect_tensors(ctx, model, [](const std::string&, std::string_view g) { return !is_method_group(g); }),
                      {{"format", "pt"}});
    write_json_file(dir / "config.json", config_json);
  } catch (...) {
    model.unmerge(ctx);
    throw;
  }
  model.unmerge(ctx);
}

}  // namespace peft::io
