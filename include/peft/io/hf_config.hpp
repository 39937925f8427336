#pragma once
/// \file Hugging Face `config.json` for BERT-family models: read into `models::bert_config`, and write.

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "peft/io/atomic_file.hpp"
#include "peft/models/bert_config.hpp"

namespace peft::io {

/// Parses the text of a `config.json`. Missing keys keep `BertConfig`'s defaults, as transformers
/// does; a key of the wrong JSON type, an unknown `hidden_act` or an inconsistent size is an error
/// naming `source` and the key.
inline models::bert_config parse_hf_config(const std::string& text, const std::string& source = "config.json") {
  using nlohmann::json;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw io_error(peft::detail::concat(source, ": not valid JSON: ", e.what()));
  }
  if (!j.is_object()) throw io_error(source + ": not a JSON object");
  models::bert_config c;
  auto size_field = [&](const char* key, std::size_t& out) {
    if (!j.contains(key)) return;
    if (!j[key].is_number_unsigned())
      throw io_error(peft::detail::concat(source, ": '", key, "' must be a non-negative integer, got ", j[key].dump()));
    out = j[key].get<std::size_t>();
  };
  auto real_field = [&](const char* key, double& out) {
    if (!j.contains(key)) return;
    if (!j[key].is_number()) throw io_error(peft::detail::concat(source, ": '", key, "' must be a number, got ", j[key].dump()));
    out = j[key].get<double>();
  };
  size_field("vocab_size", c.vocab_size);
  size_field("hidden_size", c.hidden_size);
  size_field("num_hidden_layers", c.num_hidden_layers);
  size_field("num_attention_heads", c.num_attention_heads);
  size_field("intermediate_size", c.intermediate_size);
  size_field("max_position_embeddings", c.max_position_embeddings);
  size_field("type_vocab_size", c.type_vocab_size);
  real_field("layer_norm_eps", c.layer_norm_eps);
  real_field("hidden_dropout_prob", c.hidden_dropout_prob);
  real_field("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
  real_field("initializer_range", c.initializer_range);
  if (j.contains("hidden_act")) {
    if (!j["hidden_act"].is_string()) throw io_error(source + ": 'hidden_act' must be a string, got " + j["hidden_act"].dump());
    const auto act = j["hidden_act"].get<std::string>();
    if (act == "gelu") c.hidden_act = activation::gelu;
    else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") c.hidden_act = activation::gelu_tanh;
    else if (act == "relu") c.hidden_act = activation::relu;
    else if (act == "tanh") c.hidden_act = activation::tanh;
    else throw io_error(source + ": unsupported hidden_act '" + act + "' (gelu, gelu_new, gelu_pytorch_tanh, relu, tanh)");
  }
  if (j.contains("model_type") && j["model_type"].is_string()) {
    const auto t = j["model_type"].get<std::string>();
    if (t != "bert")
      throw io_error(source + ": model_type '" + t + "' is not supported (BERT-family checkpoints have model_type 'bert')");
  }
  try {
    c.validate();
  } catch (const config_error& e) {
    throw io_error(source + ": " + e.what());
  }
  return c;
}

/// Reads and parses a `config.json` file.
inline models::bert_config read_hf_config(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw io_error(peft::detail::concat("cannot open '", path.string(), "'"));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_hf_config(text.str(), path.string());
}

/// The `config.json` of a BERT model as transformers writes it (`architectures`, `model_type`, the
/// sizes, and `id2label`/`label2id` when `labels` is given).
inline nlohmann::json to_hf_config_json(const models::bert_config& c, const std::string& architecture,
                                        const std::vector<std::string>& labels = {}) {
  nlohmann::json j = {{"architectures", {architecture}},
                      {"model_type", "bert"},
                      {"vocab_size", c.vocab_size},
                      {"hidden_size", c.hidden_size},
                      {"num_hidden_layers", c.num_hidden_layers},
                      {"num_attention_heads", c.num_attention_heads},
                      {"intermediate_size", c.intermediate_size},
                      {"max_position_embeddings", c.max_position_embeddings},
                      {"type_vocab_size", c.type_vocab_size},
                      {"layer_norm_eps", c.layer_norm_eps},
                      {"hidden_act", std::string(to_string(c.hidden_act))},
                      {"hidden_dropout_prob", c.hidden_dropout_prob},
                      {"attention_probs_dropout_prob", c.attention_probs_dropout_prob},
                      {"initializer_range", c.initializer_range},
                      {"position_embedding_type", "absolute"},
                      {"pad_token_id", 0}};
  if (!labels.empty()) {
    nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
    for (std::size_t i = 0; i < labels.size(); ++i) {
      id2label[std::to_string(i)] = labels[i];
      label2id[labels[i]] = i;
    }
    j["id2label"] = id2label;
    j["label2id"] = label2id;
  }
  return j;
}

/// Writes `config.json` atomically.
inline void write_hf_config(const std::filesystem::path& path, const models::bert_config& c, const std::string& architecture,
                            const std::vector<std::string>& labels = {}) {
  write_text_atomically(path, to_hf_config_json(c, architecture, labels).dump(2) + "\n");
}

}  // namespace peft::io
