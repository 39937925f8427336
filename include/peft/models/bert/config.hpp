#pragma once
/// \file `peft::models::bert_config`: the sizes of a BERT-family encoder, as Hugging Face's
/// `BertConfig` names them, read from and written to `config.json`. All are run-time values: one
/// binary loads any checkpoint size.

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/models/size_limits.hpp"
#include "peft/core/kernel_args.hpp"
#include "peft/io/json_config.hpp"

namespace peft::models {

/// BERT hyperparameters (defaults: bert-base-uncased).
struct bert_config {
  std::size_t vocab_size = 30522;
  std::size_t hidden_size = 768;
  std::size_t num_hidden_layers = 12;
  std::size_t num_attention_heads = 12;
  std::size_t intermediate_size = 3072;
  std::size_t max_position_embeddings = 512;
  std::size_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  activation hidden_act = activation::gelu;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  double initializer_range = 0.02;

  /// Throws `config_error` naming the first inconsistent field.
  void validate() const {
    auto positive = [](std::size_t v, const char* name) {
      if (v == 0) throw config_error(peft::detail::concat("bert_config: ", name, " must be positive"));
    };
    detail::require_sizes_within_limits(*this, "bert_config");
    positive(vocab_size, "vocab_size");
    positive(hidden_size, "hidden_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(num_attention_heads, "num_attention_heads");
    positive(intermediate_size, "intermediate_size");
    positive(max_position_embeddings, "max_position_embeddings");
    positive(type_vocab_size, "type_vocab_size");
    if (hidden_size % num_attention_heads != 0)
      throw config_error(peft::detail::concat("bert_config: hidden_size ", hidden_size,
                                              " is not a multiple of num_attention_heads ", num_attention_heads));
    if (!(layer_norm_eps > 0)) throw config_error("bert_config: layer_norm_eps must be positive");
    if (!(hidden_dropout_prob >= 0 && hidden_dropout_prob < 1) ||
        !(attention_probs_dropout_prob >= 0 && attention_probs_dropout_prob < 1))
      throw config_error("bert_config: dropout probabilities must be in [0, 1)");
  }
  [[nodiscard]] std::size_t head_dim() const noexcept { return hidden_size / num_attention_heads; }

  /// From a Hugging Face `config.json`. Missing keys keep `BertConfig`'s defaults, as transformers
  /// does; a key of the wrong type, an unknown `hidden_act`, a `model_type` other than bert or an
  /// inconsistent size is an `io_error` naming the file and the key.
  static bert_config from_json(const io::json_config& j) {
    bert_config c;
    j.read("vocab_size", c.vocab_size);
    j.read("hidden_size", c.hidden_size);
    j.read("num_hidden_layers", c.num_hidden_layers);
    j.read("num_attention_heads", c.num_attention_heads);
    j.read("intermediate_size", c.intermediate_size);
    j.read("max_position_embeddings", c.max_position_embeddings);
    j.read("type_vocab_size", c.type_vocab_size);
    j.read("layer_norm_eps", c.layer_norm_eps);
    j.read("hidden_dropout_prob", c.hidden_dropout_prob);
    j.read("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
    j.read("initializer_range", c.initializer_range);
    j.read("hidden_act", c.hidden_act);
    if (const auto t = j.string("model_type"); t && *t != "bert")
      j.fail("model_type '" + *t + "' is not supported by the BERT model (BERT-family checkpoints have model_type 'bert')");
    try {
      c.validate();
    } catch (const config_error& e) {
      j.fail(e.what());
    }
    return c;
  }
  /// Reads `path` (a `config.json`).
  static bert_config read(const std::filesystem::path& path) { return from_json(io::json_config::read(path)); }

  /// The `config.json` of a BERT model as transformers writes it (`architectures`, `model_type`, the
  /// sizes, and `id2label`/`label2id` when `labels` is given).
  [[nodiscard]] nlohmann::json to_json(const std::string& architecture, const std::vector<std::string>& labels = {}) const {
    nlohmann::json j = {{"architectures", {architecture}},
                        {"model_type", "bert"},
                        {"vocab_size", vocab_size},
                        {"hidden_size", hidden_size},
                        {"num_hidden_layers", num_hidden_layers},
                        {"num_attention_heads", num_attention_heads},
                        {"intermediate_size", intermediate_size},
                        {"max_position_embeddings", max_position_embeddings},
                        {"type_vocab_size", type_vocab_size},
                        {"layer_norm_eps", layer_norm_eps},
                        {"hidden_act", std::string(to_string(hidden_act))},
                        {"hidden_dropout_prob", hidden_dropout_prob},
                        {"attention_probs_dropout_prob", attention_probs_dropout_prob},
                        {"initializer_range", initializer_range},
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
};

}  // namespace peft::models
