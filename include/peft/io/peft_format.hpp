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

#include <regex>
#include <set>
#include <string>
#include <vector>

#include "peft/io/json_config.hpp"

namespace peft::io {

/// The model as one method's serialisation sees it: that method's parameter names, and every module
/// with a two-dimensional base `weight` (the linear layers a `target_modules` list must tell apart).
struct adapter_contents {
  std::vector<std::string> parameters;
  std::set<std::string> linear_modules;
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
}  // namespace detail

}  // namespace peft::io
