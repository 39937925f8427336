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

peft::method_config run_time_methods(const run_card& card) {
  auto has = [&](const char* m) { return has_component(card.method, m); };
  peft::method_config m = card.methods;
  m.get<peft::lora_config>().enabled = has("lora");
  m.get<peft::bitfit_config>().enabled = has("bitfit");
  m.get<peft::vera_config>().enabled = has("vera");
  m.get<peft::adalora_config>().enabled = has("adalora");
  m.get<peft::ia3_config>().enabled = has("ia3");
  m.get<peft::ln_tuning_config>().enabled = has("ln_tuning");
  m.get<peft::prompt_tuning_config>().enabled = has("prompt_tuning");
  m.get<peft::prefix_tuning_config>().enabled = has("prefix_tuning");
  auto& a = m.get<peft::adapter_config>();
  a.enabled = has("houlsby") || has("pfeiffer");
  // BertModel's FFN output; Houlsby's placement also takes attention.output.dense.
  a.target_modules = has("pfeiffer") ? R"(.*\.layer\.\d+\.output\.dense)" : "";
  return m;
}

std::size_t virtual_tokens(const run_card& card) {
  if (has_component(card.method, "prompt_tuning")) return card.methods.get<peft::prompt_tuning_config>().num_virtual_tokens;
  if (has_component(card.method, "prefix_tuning")) return card.methods.get<peft::prefix_tuning_config>().num_virtual_tokens;
  return 0;
}

run_card run_card::from_peft_adapter(const fs::path& adapter_dir, const fs::path& model_dir) {
  const auto info =
      peft::io::read_peft_adapter_config<peft::plan<peft::methods::lora<peft::roles::query>, peft::methods::adalora<peft::roles::query>,
                                                    peft::methods::vera<peft::roles::query>,
                                                    peft::methods::ia3<peft::roles::key>, peft::methods::ln_tuning,
                                                    peft::methods::prompt_tuning, peft::methods::prefix_tuning>>(adapter_dir);
  const std::string config_file = (adapter_dir / "adapter_config.json").string();
  static const std::set<std::string> readable = {"LORA", "ADALORA", "VERA", "IA3", "LN_TUNING", "PROMPT_TUNING", "PREFIX_TUNING"};
  if (!readable.count(info.peft_type))
    throw peft::io::io_error("'" + adapter_dir.string() +
                             "' has no peft_train.json, and only a PEFT LoRA, ADALORA, VERA, IA3, LN_TUNING, PROMPT_TUNING or "
                             "PREFIX_TUNING adapter can do without one");
  run_card c;
  if (info.task_type == "SEQ_CLS") c.task = "sequence";
  else if (info.task_type == "TOKEN_CLS") c.task = "token";
  else
    throw peft::io::io_error(config_file + ": task_type '" + info.task_type +
                             "' is not one peft-train runs (SEQ_CLS, TOKEN_CLS)");
  if (info.peft_type == "IA3") {
    c.method = "ia3";
    c.methods.get<peft::ia3_config>() = info.options.get<peft::ia3_config>();
    c.ia3_targets = info.json.value("target_modules", nlohmann::json()).dump();
  } else if (info.peft_type == "ADALORA") {
    c.method = "adalora";
    c.methods.get<peft::adalora_config>() = info.options.get<peft::adalora_config>();
    c.adalora_targets = info.json.value("target_modules", nlohmann::json()).dump();
  } else if (info.peft_type == "VERA") {
    c.method = "vera";
    c.methods.get<peft::vera_config>() = info.options.get<peft::vera_config>();
    c.vera_targets = info.json.value("target_modules", nlohmann::json()).dump();
  } else if (info.peft_type == "PROMPT_TUNING") {
    c.method = "prompt_tuning";
    c.methods.get<peft::prompt_tuning_config>() = info.options.get<peft::prompt_tuning_config>();
  } else if (info.peft_type == "PREFIX_TUNING") {
    c.method = "prefix_tuning";
    c.methods.get<peft::prefix_tuning_config>() = info.options.get<peft::prefix_tuning_config>();
  } else if (info.peft_type == "LN_TUNING") {
    c.method = "ln_tuning";
    c.methods.get<peft::ln_tuning_config>() = info.options.get<peft::ln_tuning_config>();
  } else {
    c.method = "lora";
    c.methods.get<peft::lora_config>() = info.options.get<peft::lora_config>();
    c.lora_targets = info.json.value("target_modules", nlohmann::json()).dump();
  }
  c.base_model = info.base_model_name_or_path;

  // The head: PEFT saves modules_to_save under their plain names (under base_model. beside a prompt
  // encoder), the same keys load_peft_adapter reads.
  const auto weights = peft::io::safetensors_file::open(adapter_dir / "adapter_model.safetensors");
  const auto* head = weights.find(std::string(peft::io::peft_key_prefix) + "classifier.weight");
  if (!head) head = weights.find("base_model.classifier.weight");
  if (!head || head->shape.size() != 2)
    throw peft::io::io_error(weights.source() + " has no classifier head (PEFT's modules_to_save: [\"classifier\"]); "
                             "peft-train needs the trained head to evaluate or predict");
  const std::size_t num_labels = head->shape[0];

  // Positions and label names from the base model's config.json, read once.
  const auto config_path = model_dir / "config.json";
  const auto file = peft::io::json_config::read(config_path);
  const std::size_t positions = peft::models::bert_config::from_json(file).max_position_embeddings;
  if (virtual_tokens(c) >= positions)
    throw peft::io::io_error(peft::detail::concat(config_file, ": ", virtual_tokens(c), " virtual tokens leave no room in the model's ",
                                                  positions, " positions"));
  c.max_length = positions - virtual_tokens(c);
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
