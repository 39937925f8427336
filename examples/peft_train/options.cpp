#include "options.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include <peft/io/atomic_file.hpp>
#include <peft/models/bert/config.hpp>
#include <peft/io/peft_adapter.hpp>
#include <peft/io/safetensors.hpp>
#include <peft/methods/plan.hpp>

namespace peft_train {

namespace {
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep))
    if (!cur.empty()) out.push_back(cur);
  return out;
}
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

peft::method_config run_time_methods(const run_card& card) {
  const auto parts = split(card.method, '+');
  auto has = [&](const char* m) { return std::find(parts.begin(), parts.end(), m) != parts.end(); };
  peft::method_config m = card.methods;
  m.get<peft::lora_config>().enabled = has("lora");
  m.get<peft::bitfit_config>().enabled = has("bitfit");
  auto& a = m.get<peft::adapter_config>();
  a.enabled = has("houlsby") || has("pfeiffer");
  // BertModel's FFN output; Houlsby's placement also takes attention.output.dense.
  a.target_modules = has("pfeiffer") ? R"(.*\.layer\.\d+\.output\.dense)" : "";
  return m;
}

int method_index(const std::string& method) {
  std::set<std::string> parts;
  for (auto p : split(method, '+')) parts.insert(p == "adapter" ? "houlsby" : p);
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
                                                  : split(roles, ',');
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

run_card run_card::from_peft_adapter(const fs::path& adapter_dir, const fs::path& model_dir) {
  const auto info = peft::io::read_peft_adapter_config<peft::plan<peft::methods::lora<peft::roles::query>>>(adapter_dir);
  const std::string config_file = (adapter_dir / "adapter_config.json").string();
  if (info.peft_type != "LORA")
    throw peft::io::io_error("'" + adapter_dir.string() + "' has no peft_train.json, and only a PEFT LoRA adapter can do without one");
  run_card c;
  if (info.task_type == "SEQ_CLS") c.task = "sequence";
  else if (info.task_type == "TOKEN_CLS") c.task = "token";
  else
    throw peft::io::io_error(config_file + ": task_type '" + info.task_type +
                             "' is not one peft-train runs (SEQ_CLS, TOKEN_CLS)");
  c.method = "lora";
  c.methods.get<peft::lora_config>() = info.options.get<peft::lora_config>();
  c.lora_targets = info.json.value("target_modules", nlohmann::json()).dump();
  c.base_model = info.base_model_name_or_path;

  // The head: PEFT saves modules_to_save under their plain names, the same key load_peft_adapter reads.
  const auto weights = peft::io::safetensors_file::open(adapter_dir / "adapter_model.safetensors");
  const auto* head = weights.find(std::string(peft::io::peft_key_prefix) + "classifier.weight");
  if (!head || head->shape.size() != 2)
    throw peft::io::io_error(weights.source() + " has no classifier head (PEFT's modules_to_save: [\"classifier\"]); "
                             "peft-train needs the trained head to evaluate or predict");
  const std::size_t num_labels = head->shape[0];

  // Positions and label names from the base model's config.json, read once.
  const auto config_path = model_dir / "config.json";
  const auto file = peft::io::json_config::read(config_path);
  c.max_length = peft::models::bert_config::from_json(file).max_position_embeddings;
  const auto& config = file.json();
  if (config.contains("id2label") && config["id2label"].is_object() && config["id2label"].size() == num_labels) {
    for (std::size_t i = 0; i < num_labels; ++i) {
      const auto key = std::to_string(i);
      if (!config["id2label"].contains(key) || !config["id2label"][key].is_string()) {
        c.labels.clear();
        break;
      }
      c.labels.push_back(config["id2label"][key].get<std::string>());
    }
  }
  if (c.labels.empty())
    for (std::size_t i = 0; i < num_labels; ++i) c.labels.push_back(std::to_string(i));
  return c;
}

void run_card::write(const fs::path& dir) const { peft::io::write_text_atomically(dir / "peft_train.json", to_json().dump(2) + "\n"); }

nlohmann::json train_options::identity() const {
  return {{"card", card.to_json()},
          {"model_dir", fs::absolute(model_dir).lexically_normal().string()},
          {"train_file", fs::absolute(train_file).lexically_normal().string()},
          {"dev_file", dev_file.empty() ? "" : fs::absolute(dev_file).lexically_normal().string()},
          {"lr", lr}, {"weight_decay", weight_decay}, {"warmup_ratio", warmup_ratio}, {"clip", clip},
          {"schedule", schedule}, {"epochs", epochs}, {"batch_size", batch_size}, {"seed", seed}, {"max_steps", max_steps},
          {"gradient_accumulation", gradient_accumulation}, {"early_stopping", early_stopping}, {"format", format.to_json()}};
}

nlohmann::json data_format::to_json() const {
  return {{"delimiter", delimiter ? std::string(1, delimiter) : std::string()}, {"header", header}, {"text_column", text_column},
          {"pair_column", pair_column}, {"label_column", label_column}};
}

}  // namespace peft_train
