// peft-train: the run card (peft_train.json) and the option spellings it records. Kept apart from
// options.cpp, which instantiates the adapter readers for a plan, so that the run-card fuzzer
// (tests/fuzz/fuzz_run_card.cpp) builds from this file alone.
#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include <peft/io/atomic_file.hpp>

#include "options.hpp"

namespace peft_train {

std::vector<std::string> split_nonempty(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep))
    if (!cur.empty()) out.push_back(cur);
  return out;
}

namespace {
std::string choices() {
  std::string s;
  for (auto m : method_names) s += (s.empty() ? "" : ", ") + std::string(m);
  return s;
}
}  // namespace

peft::activation activation_named(const std::string& name) {
  if (const auto a = peft::activation_from_name(name)) return *a;
  throw peft::config_error("activation '" + name + "' is not one of " + peft::supported_activation_names);
}

int method_index(const std::string& method) {
  std::set<std::string> parts;
  for (auto p : split_nonempty(method, '+')) parts.insert(p == "adapter" ? "houlsby" : p);
  std::string canonical;
  for (const char* c : {"full", "lora", "bitfit", "houlsby", "pfeiffer"})
    if (parts.erase(c)) canonical += (canonical.empty() ? "" : "+") + std::string(c);
  if (parts.empty())
    for (std::size_t i = 0; i < method_names.size(); ++i)
      if (method_names[i] == canonical) return int(i);
  throw peft::config_error("method '" + method + "' is not one of: " + choices());
}

std::string lora_target_regex(const std::string& roles) {
  // Module names of BertModel per role; PEFT full-matches the expression against each module name.
  static const std::map<std::string, std::string> module_of = {
      {"query", R"(attention\.self\.query)"},      {"key", R"(attention\.self\.key)"},
      {"value", R"(attention\.self\.value)"},      {"attention_output", R"(attention\.output\.dense)"},
      {"ffn_in", R"(intermediate\.dense)"},        {"ffn_out", R"(layer\.\d+\.output\.dense)"}};
  std::vector<std::string> names = roles == "all" ? std::vector<std::string>{"query", "key", "value", "attention_output", "ffn_in", "ffn_out"}
                                                  : split_nonempty(roles, ',');
  if (names.empty()) throw peft::config_error("--target: name at least one role");
  std::string alternatives;
  for (const auto& n : names) {
    const auto it = module_of.find(n);
    if (it == module_of.end())
      throw peft::config_error("--target: role '" + n + "' is not one of query, key, value, attention_output, ffn_in, ffn_out, all");
    alternatives += (alternatives.empty() ? "" : "|") + it->second;
  }
  return ".*\\.(" + alternatives + ")";
}

nlohmann::json run_card::to_json() const {
  const auto& l = methods.get<peft::lora_config>();
  const auto& a = methods.get<peft::adapter_config>();
  return {{"format", "peft-train run card 1"},
          {"method", method},
          {"task", task},
          {"labels", labels},
          {"pooling", pooling},
          {"max_length", max_length},
          {"truncate", truncate},
          {"lora", {{"r", l.r}, {"alpha", l.alpha}, {"dropout", l.dropout}, {"use_rslora", l.use_rslora},
                    {"targets", lora_targets}, {"target_modules", l.target_modules}}},
          {"adapter", {{"bottleneck", a.bottleneck}, {"reduction_factor", a.reduction_factor},
                       {"nonlinearity", std::string(peft::to_string(a.nonlinearity))}}},
          {"base_model", base_model}};
}

run_card run_card::from_json(const nlohmann::json& j, const std::string& source) {
  run_card c;
  try {
    c.method = j.at("method").get<std::string>();
    method_index(c.method);
    c.task = j.at("task").get<std::string>();
    if (c.task != "sequence" && c.task != "token") throw peft::config_error("task '" + c.task + "' is not sequence or token");
    c.labels = j.at("labels").get<std::vector<std::string>>();
    if (c.labels.size() < 2) throw peft::config_error("fewer than two labels");
    c.pooling = j.at("pooling").get<std::string>();
    c.max_length = j.at("max_length").get<std::size_t>();
    c.truncate = j.at("truncate").get<bool>();
    const auto& l = j.at("lora");
    c.methods.get<peft::lora_config>().r = l.at("r").get<std::size_t>();
    c.methods.get<peft::lora_config>().alpha = l.at("alpha").get<double>();
    c.methods.get<peft::lora_config>().dropout = l.at("dropout").get<double>();
    c.methods.get<peft::lora_config>().use_rslora = l.at("use_rslora").get<bool>();
    c.lora_targets = l.at("targets").get<std::string>();
    c.methods.get<peft::lora_config>().target_modules = l.at("target_modules").get<std::string>();
    const auto& a = j.at("adapter");
    c.methods.get<peft::adapter_config>().bottleneck = a.at("bottleneck").get<std::size_t>();
    c.methods.get<peft::adapter_config>().reduction_factor = a.at("reduction_factor").get<double>();
    c.methods.get<peft::adapter_config>().nonlinearity = activation_named(a.at("nonlinearity").get<std::string>());
    c.base_model = j.value("base_model", "");
  } catch (const nlohmann::json::exception& e) {
    throw peft::io::io_error(source + ": malformed run card: " + e.what());
  } catch (const peft::error& e) {
    throw peft::io::io_error(source + ": " + e.what());
  }
  return c;
}

run_card run_card::read(const fs::path& dir) {
  const auto path = dir / "peft_train.json";
  std::ifstream in(path);
  if (!in)
    throw peft::io::io_error("'" + dir.string() + "' has no peft_train.json: pass an adapter or model directory written by peft-train");
  try {
    return from_json(nlohmann::json::parse(in), path.string());
  } catch (const nlohmann::json::parse_error& e) {
    throw peft::io::io_error(path.string() + ": not valid JSON: " + e.what());
  }
}

void run_card::write(const fs::path& dir) const { peft::io::write_text_atomically(dir / "peft_train.json", to_json().dump(2) + "\n"); }

}  // namespace peft_train
