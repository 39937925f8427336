#pragma once
/// \file What prompt tuning and prefix tuning share in Hugging Face PEFT's files ("prompt learning"):
/// the learned table is `prompt_embeddings` at the top of `adapter_model.safetensors`, and the
/// trained head sits under `base_model.` (not `base_model.model.`), because PEFT puts the prompt
/// encoder beside the base model instead of wrapping its layers. Both methods name their parameters
/// here as PEFT does in memory, without the adapter name: `prompt_encoder.embedding.weight` (and,
/// for prefix tuning's reparametrisation, `prompt_encoder.transform.{0,2}.*`), whatever module path
/// the model that holds them has: the prompt encoder belongs to the whole model.

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/core/error.hpp"
#include "peft/io/json_config.hpp"
#include "peft/io/safetensors.hpp"

namespace peft::methods::detail {

/// The in-memory name of the learned table, and its key in PEFT's files.
inline constexpr const char* prompt_table_name = "prompt_encoder.embedding.weight";
inline constexpr const char* prompt_table_key = "prompt_embeddings";

/// The largest number of virtual tokens accepted (a sanity bound: PEFT's examples use 8 to 100).
inline constexpr std::size_t max_virtual_tokens = 4096;

/// `n` virtual tokens for `method`, or a `config_error` saying the range.
inline std::size_t checked_virtual_tokens(std::size_t n, const char* method) {
  if (n == 0 || n > max_virtual_tokens)
    throw config_error(peft::detail::concat(method, ": num_virtual_tokens ", n, " must be in 1..", max_virtual_tokens));
  return n;
}

/// File key -> parameter name: `prompt_embeddings` is the table; a key under `base_model.` that is
/// not under `base_model.model.` (which the loader has already taken off) and names a module's
/// parameter (`base_model.classifier.weight`) is a prompt-learning file's head. Model-wide tensors
/// of other methods (VeRA's `base_model.vera_A`) name no module and stay as they are.
inline std::string prompt_learning_parameter_name(std::string key) {
  if (key == prompt_table_key) return prompt_table_name;
  const std::string head = "base_model.";
  if (key.rfind(head, 0) == 0 && key.find('.', head.size()) != std::string::npos) key.erase(0, head.size());
  return key;
}

/// Parameter keys as written (`base_model.model.<name>`) -> PEFT's prompt-learning keys: the table as
/// `prompt_embeddings`, everything else (the head) under `base_model.`.
inline void prompt_learning_keys(std::vector<io::tensor_to_write>& tensors) {
  const std::string written = "base_model.model.";
  for (auto& t : tensors) {
    if (t.name.rfind(written, 0) != 0) continue;
    const std::string name = t.name.substr(written.size());
    t.name = name == prompt_table_name ? std::string(prompt_table_key) : "base_model." + name;
  }
}

/// The keys both methods read: `num_virtual_tokens` (a positive integer) and
/// `num_transformer_submodules` (1: encoder-decoder models, which have 2, are not supported).
inline void read_prompt_learning_common(const io::json_config& f, std::size_t& num_virtual_tokens) {
  const auto& j = f.json();
  if (!f.has("num_virtual_tokens") || !j["num_virtual_tokens"].is_number_unsigned() || j["num_virtual_tokens"].get<std::size_t>() == 0)
    f.fail("'num_virtual_tokens' must be a positive integer, got " +
           (j.contains("num_virtual_tokens") ? j["num_virtual_tokens"].dump() : std::string("nothing")));
  num_virtual_tokens = j["num_virtual_tokens"].get<std::size_t>();
  std::size_t submodules = 1;
  f.read("num_transformer_submodules", submodules);
  if (submodules != 1)
    f.fail("'num_transformer_submodules' " + std::to_string(submodules) +
           " (an encoder-decoder model's prompt) is not supported; encoders and decoders have 1");
}

/// The keys both methods write, as PEFT's `PromptLearningConfig` spells them. The model's sizes
/// (`token_dim`, `num_layers`, `num_attention_heads`) are left null: PEFT fills them from the base
/// model's config, and the tensor's shape, checked on loading, fixes them here.
inline void write_prompt_learning_common(nlohmann::json& j, std::size_t num_virtual_tokens) {
  j.update({{"num_virtual_tokens", num_virtual_tokens},
            {"num_transformer_submodules", 1},
            {"token_dim", nullptr},
            {"num_layers", nullptr},
            {"num_attention_heads", nullptr}});
}

/// A tensor's F32 values (all adapter tensors are written as F32).
inline std::vector<double> f32_values(const io::tensor_to_write& t) {
  if (t.dtype != io::dtype::F32) throw error("prompt learning: tensor '" + t.name + "' is not F32");
  std::vector<double> out(t.data.size() / 4);
  for (std::size_t i = 0; i < out.size(); ++i) {
    float v;
    std::memcpy(&v, t.data.data() + 4 * i, 4);
    out[i] = v;
  }
  return out;
}

}  // namespace peft::methods::detail
