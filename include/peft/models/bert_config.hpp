#pragma once
/// \file `peft::models::bert_config`: the sizes of a BERT-family encoder, as Hugging Face's
/// `BertConfig` names them. All are run-time values: one binary loads any checkpoint size.

#include <cstdint>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/kernel_args.hpp"

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
};

}  // namespace peft::models
