#pragma once
/// \file `peft::models::llama_config`: the sizes of a Llama-family decoder, as Hugging Face's
/// `LlamaConfig` names them, read from a GGUF file's `llama.*` metadata or from a `config.json`.

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "peft/core/error.hpp"
#include "peft/models/size_limits.hpp"
#include "peft/core/kernel_args.hpp"
#include "peft/io/gguf.hpp"
#include "peft/io/json_config.hpp"

namespace peft::models {

/// Llama hyperparameters (defaults: SmolLM2-135M).
struct llama_config {
  std::size_t vocab_size = 49152;
  std::size_t hidden_size = 576;
  std::size_t intermediate_size = 1536;
  std::size_t num_hidden_layers = 30;
  std::size_t num_attention_heads = 9;
  std::size_t num_key_value_heads = 3;
  std::size_t head_dim = 0;  ///< 0 = hidden_size / num_attention_heads
  std::size_t max_position_embeddings = 8192;
  double rms_norm_eps = 1e-5;
  double rope_theta = 100000;
  std::size_t rope_dims = 0;  ///< rotated dimensions per head; 0 = head_dim
  /// How rotary pairs are laid out in Q and K: Hugging Face pairs dimension i with i + head_dim / 2;
  /// GGUF files store Q/K rows permuted so that adjacent dimensions pair. A model loaded from GGUF
  /// uses half-split, with the rows put back in Hugging Face's order at load time.
  rope_pairing pairing = rope_pairing::half_split;
  bool tie_word_embeddings = true;
  bool attention_bias = false;
  bool mlp_bias = false;
  double initializer_range = 0.02;

  [[nodiscard]] std::size_t head_size() const noexcept { return head_dim ? head_dim : hidden_size / num_attention_heads; }

  /// Throws `config_error` naming the first inconsistent field.
  void validate() const {
    auto positive = [](std::size_t v, const char* name) {
      if (v == 0) throw config_error(peft::detail::concat("llama_config: ", name, " must be positive"));
    };
    detail::require_sizes_within_limits(*this, "llama_config");
    positive(vocab_size, "vocab_size");
    positive(hidden_size, "hidden_size");
    positive(intermediate_size, "intermediate_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(num_attention_heads, "num_attention_heads");
    positive(num_key_value_heads, "num_key_value_heads");
    positive(max_position_embeddings, "max_position_embeddings");
    if (!head_dim && hidden_size % num_attention_heads != 0)
      throw config_error(peft::detail::concat("llama_config: hidden_size ", hidden_size,
                                              " is not a multiple of num_attention_heads ", num_attention_heads));
    if (num_attention_heads % num_key_value_heads != 0)
      throw config_error(peft::detail::concat("llama_config: num_attention_heads ", num_attention_heads,
                                              " is not a multiple of num_key_value_heads ", num_key_value_heads));
    if (rope_dims % 2 != 0 || rope_dims > head_size())
      throw config_error(peft::detail::concat("llama_config: rope dimension count ", rope_dims, " must be even and at most ",
                                              head_size()));
    if (!(rms_norm_eps > 0) || !(rope_theta > 0)) throw config_error("llama_config: rms_norm_eps and rope_theta must be positive");
    // Sizes beyond these are a corrupt file, not a model: refuse before allocating anything.
    constexpr std::size_t limit = std::size_t(1) << 20;
    if (vocab_size > 16 * limit || hidden_size > limit / 8 || intermediate_size > limit || num_hidden_layers > 4096 ||
        num_attention_heads > 4096 || max_position_embeddings > 16 * limit)
      throw config_error("llama_config: a size is implausibly large (vocab, hidden, intermediate, layers, heads or context)");
  }

  /// From a GGUF file of architecture `llama` (keys `llama.embedding_length`, ...). The vocabulary
  /// size is the token list's length when `llama.vocab_size` is absent, and the output is tied when
  /// the file has no `output.weight`. Errors name the file and the key.
  static llama_config from_gguf(const io::gguf_file& f) {
    const std::string arch = f.get_string("general.architecture");
    if (arch != "llama")
      f.fail("architecture '" + arch + "' is not supported by the Llama decoder (general.architecture must be 'llama')");
    llama_config c;
    c.hidden_size = f.get_uint("llama.embedding_length");
    c.intermediate_size = f.get_uint("llama.feed_forward_length");
    c.num_hidden_layers = f.get_uint("llama.block_count");
    c.num_attention_heads = f.get_uint("llama.attention.head_count");
    c.num_key_value_heads = f.get_uint_or("llama.attention.head_count_kv").value_or(c.num_attention_heads);
    c.max_position_embeddings = f.get_uint_or("llama.context_length").value_or(2048);
    c.rms_norm_eps = f.get_float("llama.attention.layer_norm_rms_epsilon");
    c.rope_theta = f.get_float_or("llama.rope.freq_base").value_or(10000.0);
    c.head_dim = f.get_uint_or("llama.attention.key_length").value_or(0);
    c.rope_dims = f.get_uint_or("llama.rope.dimension_count").value_or(0);
    if (const auto s = f.get_string_or("llama.rope.scaling.type"); s && *s != "none")
      f.fail("rope scaling '" + *s + "' is not supported (only unscaled rotary embeddings)");
    if (f.contains("llama.vocab_size")) c.vocab_size = f.get_uint("llama.vocab_size");
    else if (f.contains("tokenizer.ggml.tokens")) c.vocab_size = f.get_string_array("tokenizer.ggml.tokens").size();
    else if (const auto* t = f.find_tensor("token_embd.weight")) c.vocab_size = t->rows();
    // The loader puts Q and K rows back in Hugging Face's order (llama_for_causal_lm::gguf_row_order),
    // so the model pairs rotary dimensions as Hugging Face does and its adapters are Hugging Face's.
    c.pairing = rope_pairing::half_split;
    c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
    c.attention_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
    try {
      c.validate();
    } catch (const config_error& e) {
      f.fail(e.what());
    }
    return c;
  }

  /// From a Hugging Face `config.json` (model_type llama). Missing keys keep the defaults above.
  static llama_config from_json(const io::json_config& j) {
    llama_config c;
    j.read("vocab_size", c.vocab_size);
    j.read("hidden_size", c.hidden_size);
    j.read("intermediate_size", c.intermediate_size);
    j.read("num_hidden_layers", c.num_hidden_layers);
    j.read("num_attention_heads", c.num_attention_heads);
    c.num_key_value_heads = c.num_attention_heads;
    j.read("num_key_value_heads", c.num_key_value_heads);
    j.read("head_dim", c.head_dim);
    j.read("max_position_embeddings", c.max_position_embeddings);
    j.read("rms_norm_eps", c.rms_norm_eps);
    j.read("rope_theta", c.rope_theta);
    j.read("tie_word_embeddings", c.tie_word_embeddings);
    j.read("attention_bias", c.attention_bias);
    j.read("mlp_bias", c.mlp_bias);
    j.read("initializer_range", c.initializer_range);
    c.pairing = rope_pairing::half_split;
    if (const auto t = j.string("model_type"); t && *t != "llama")
      j.fail("model_type '" + *t + "' is not supported by the Llama decoder (model_type must be 'llama')");
    try {
      c.validate();
    } catch (const config_error& e) {
      j.fail(e.what());
    }
    return c;
  }

  /// The `config.json` transformers writes for this model (`LlamaForCausalLM`).
  [[nodiscard]] nlohmann::json to_json() const {
    return {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"vocab_size", vocab_size},
            {"hidden_size", hidden_size},
            {"intermediate_size", intermediate_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"num_key_value_heads", num_key_value_heads},
            {"head_dim", head_size()},
            {"max_position_embeddings", max_position_embeddings},
            {"rms_norm_eps", rms_norm_eps},
            {"rope_theta", rope_theta},
            {"tie_word_embeddings", tie_word_embeddings},
            {"attention_bias", attention_bias},
            {"mlp_bias", mlp_bias},
            {"hidden_act", "silu"},
            {"initializer_range", initializer_range},
            {"torch_dtype", "float32"}};
  }
};

}  // namespace peft::models
