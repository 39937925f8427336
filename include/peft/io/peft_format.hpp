#pragma once
/// \file What a method's Hugging Face PEFT serialisation sees: the vocabulary shared by
/// `io/peft_adapter.hpp` (which writes and reads adapter directories for any plan) and the methods'
/// own `peft_format` declarations (which say how their options are spelt in `adapter_config.json`).
///
/// A method's `peft_format` is a type with:
/// - `static constexpr std::string_view peft_type`: PEFT's name of the method ("LORA", ...); a method
///   without a `peft_format` is written in this library's extension of the layout (`PEFT_CPP`);
/// - `static void write_config(nlohmann::json&, const Options&, const adapter_contents&)`: its keys;
/// - `static void read_config(const json_config&, Options&)`: reads them back, errors naming the key;
/// - optionally `static std::string parameter_name(std::string key)`: maps a tensor key that other
///   writers spell differently to the parameter's name (PEFT's in-memory names carry an adapter name).

#include <algorithm>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/core/shape.hpp"
#include "peft/io/json_config.hpp"

namespace peft::io {

/// The model as one method's serialisation sees it: that method's parameter names and their shapes,
/// every module with a two-dimensional base `weight` (the linear layers a `target_modules` list
/// must tell apart), and every module with base parameters in group `norm` (the layer norms).
struct adapter_contents {
  std::vector<std::string> parameters;
  std::map<std::string, shape> shapes;
  std::set<std::string> linear_modules;
  std::set<std::string> norm_modules;
};

namespace detail {
/// Whether module `name` is `suffix` or ends with "." + `suffix` (PEFT's list form of target_modules).
inline bool ends_with_module(const std::string& name, const std::string& suffix) {
  return name == suffix || (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                            name[name.size() - suffix.size() - 1] == '.');
}
/// `s` with every regular-expression metacharacter escaped.
inline std::string regex_escape(const std::string& s) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(s, special, R"(\$&)");
}
/// `s` without `suffix` at its end (unchanged when it does not end so).
inline std::string strip_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0
             ? s.substr(0, s.size() - suffix.size())
             : s;
}
/// The layer index of a module name as PEFT finds it without a `layers_pattern`: the number of the
/// last `<name>.<i>.` segment (`bert.encoder.layer.3.attention...` and `model.layers.3.mlp...` are
/// both 3), or -1.
inline int layer_index(const std::string& name) {
  static const std::regex pattern(R"(.*\.[^.]*\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(name, m, pattern) ? std::stoi(m[1].str()) : -1;
}
/// PEFT `target_modules` that select exactly the modules `selected` among `linears`: the shortest
/// dotted suffixes when they select nothing else (honouring layers_to_transform, as PEFT does for
/// lists), else a regular expression that PEFT full-matches against each module name.
inline nlohmann::json target_modules_for(const std::set<std::string>& selected, const std::set<std::string>& linears,
                                         const std::vector<int>& layers) {
  auto in_scope = [&](const std::string& m) {
    if (layers.empty()) return true;
    return std::find(layers.begin(), layers.end(), layer_index(m + ".")) != layers.end();
  };
  std::set<std::string> suffixes;
  bool clean = true;
  for (const auto& m : selected) {
    std::string chosen;
    std::size_t pos = m.size();
    while (chosen.empty()) {
      pos = m.rfind('.', pos == m.size() ? std::string::npos : pos - 1);
      const std::string s = pos == std::string::npos ? m : m.substr(pos + 1);
      bool selects_only_these = true;
      for (const auto& other : linears)
        if (!selected.count(other) && in_scope(other) && ends_with_module(other, s)) selects_only_these = false;
      if (selects_only_these) chosen = s;
      if (pos == std::string::npos || pos == 0) break;
    }
    if (chosen.empty()) clean = false;
    else suffixes.insert(chosen);
  }
  if (clean) return nlohmann::json(std::vector<std::string>(suffixes.begin(), suffixes.end()));
  std::string re;
  for (const auto& m : selected) re += (re.empty() ? "" : "|") + regex_escape(m);
  return "(" + re + ")";
}

/// How a list of module names in a PEFT config matches: `dotted` (target_modules: the name is the
/// entry or ends with "." + entry) or `plain` (IA3's feedforward_modules: the name ends with the
/// entry, dot or not).
enum class suffix_match { dotted, plain };

/// Reads PEFT's module selection `key` (a regular expression matched in full, or a non-empty list of
/// name suffixes, matched as `how` says) as one regular expression matched in full; nothing when the
/// key is absent or null. Other JSON is an error naming the key.
inline std::optional<std::string> read_module_selection(const json_config& f, const char* key, suffix_match how) {
  if (!f.has(key)) return std::nullopt;
  const auto& t = f.json()[key];
  if (t.is_string()) return t.get<std::string>();
  if (!t.is_array() || t.empty() || !std::all_of(t.begin(), t.end(), [](const auto& v) { return v.is_string(); }))
    f.fail(std::string("'") + key + "' must be a string or a non-empty list of strings, got " + t.dump());
  std::string alternatives;
  for (const auto& v : t) alternatives += (alternatives.empty() ? "" : "|") + regex_escape(v.get<std::string>());
  return (how == suffix_match::dotted ? "(.*\\.)?(" : ".*(") + alternatives + ")";
}
}  // namespace detail

}  // namespace peft::io
