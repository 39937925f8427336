#pragma once
/// \file `peft::io::json_config`: a JSON configuration file (Hugging Face `config.json`, adapter
/// configs) with typed readers whose errors name the file and the key. It knows no model: each
/// model's config reads itself through it (`models::bert_config::from_json`, ...).

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/kernel_args.hpp"
#include "peft/io/atomic_file.hpp"

namespace peft::io {

/// A parsed JSON object and where it came from. Readers leave their output untouched when the key
/// is absent (so defaults stay, as transformers' config classes do) and throw `io_error` naming the
/// source, the key and the value when the value has the wrong type.
class json_config {
 public:
  /// Parses `text`; `source` names it in errors. Throws `io_error` unless it is a JSON object.
  static json_config parse(const std::string& text, std::string source) {
    json_config c;
    c.source_ = std::move(source);
    try {
      c.j_ = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw io_error(peft::detail::concat(c.source_, ": not valid JSON: ", e.what()));
    }
    if (!c.j_.is_object()) throw io_error(c.source_ + ": not a JSON object");
    return c;
  }
  /// Wraps an already parsed JSON object; `source` names it in errors.
  static json_config from_json(nlohmann::json j, std::string source) {
    json_config c;
    c.source_ = std::move(source);
    if (!j.is_object()) throw io_error(c.source_ + ": not a JSON object");
    c.j_ = std::move(j);
    return c;
  }
  /// Reads and parses a file.
  static json_config read(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) throw io_error(peft::detail::concat("cannot open '", path.string(), "'"));
    std::ostringstream text;
    text << in.rdbuf();
    return parse(text.str(), path.string());
  }

  [[nodiscard]] const nlohmann::json& json() const noexcept { return j_; }
  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  [[nodiscard]] bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  /// A non-negative integer.
  void read(const char* key, std::size_t& out) const {
    if (!has(key)) return;
    if (!j_[key].is_number_unsigned()) wrong_type(key, "a non-negative integer");
    out = j_[key].get<std::size_t>();
  }
  void read(const char* key, double& out) const {
    if (!has(key)) return;
    if (!j_[key].is_number()) wrong_type(key, "a number");
    out = j_[key].get<double>();
  }
  void read(const char* key, bool& out) const {
    if (!has(key)) return;
    if (!j_[key].is_boolean()) wrong_type(key, "a boolean");
    out = j_[key].get<bool>();
  }
  void read(const char* key, std::string& out) const {
    if (!has(key)) return;
    if (!j_[key].is_string()) wrong_type(key, "a string");
    out = j_[key].get<std::string>();
  }
  /// An activation by its Hugging Face name (`hidden_act`).
  void read(const char* key, activation& out) const {
    std::string name;
    read(key, name);
    if (name.empty()) return;
    const auto a = activation_from_name(name);
    if (!a) fail(peft::detail::concat("unsupported ", key, " '", name, "' (", supported_activation_names, ")"));
    out = *a;
  }
  /// The string at `key`, or nothing when absent.
  [[nodiscard]] std::optional<std::string> string(const char* key) const {
    if (!has(key)) return std::nullopt;
    std::string s;
    read(key, s);
    return s;
  }
  /// Throws `io_error` "<source>: <what>".
  [[noreturn]] void fail(const std::string& what) const { throw io_error(source_ + ": " + what); }

 private:
  [[noreturn]] void wrong_type(const char* key, const char* want) const {
    fail(peft::detail::concat("'", key, "' must be ", want, ", got ", j_[key].dump()));
  }

  nlohmann::json j_;
  std::string source_;
};

/// Writes `j` as indented JSON to `path`, atomically.
inline void write_json_file(const std::filesystem::path& path, const nlohmann::json& j) {
  write_text_atomically(path, j.dump(2) + "\n");
}

}  // namespace peft::io
