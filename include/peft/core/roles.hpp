#pragma once
/// \file Roles: tag types naming what a layer does in a model, so that a PEFT method can target roles
/// at compile time (as Hugging Face PEFT's `target_modules` does by name). Roles are model-agnostic:
/// each model decides which of its modules plays which role (BERT's `attention.self.query` and
/// Llama's `self_attn.q_proj` are both `query`), and names the modules itself.

#include <concepts>
#include <string_view>
#include <type_traits>

namespace peft::roles {

/// Requirements of a role tag: an empty type with a `static constexpr std::string_view name` (for
/// messages and reports).
template <class R>
concept Role = std::is_empty_v<R> && requires {
  { R::name } -> std::convertible_to<std::string_view>;
};

struct query { static constexpr std::string_view name = "query"; };                        ///< attention Q
struct key { static constexpr std::string_view name = "key"; };                            ///< attention K
struct value { static constexpr std::string_view name = "value"; };                        ///< attention V
struct attention_output { static constexpr std::string_view name = "attention_output"; };  ///< attention O
struct ffn_in { static constexpr std::string_view name = "ffn_in"; };      ///< FFN up projection
struct ffn_gate { static constexpr std::string_view name = "ffn_gate"; };  ///< gated FFN's gate projection
struct ffn_out { static constexpr std::string_view name = "ffn_out"; };    ///< FFN down projection
struct hidden { static constexpr std::string_view name = "hidden"; };      ///< MLP hidden layer
struct pooler { static constexpr std::string_view name = "pooler"; };      ///< sequence pooler projection
/// Embedding tables (word, position, token type): no method wraps them; `full` trains them.
struct embeddings { static constexpr std::string_view name = "embeddings"; };
/// Norms (layer norm, RMS norm): `full` trains them; BitFit gives layer norms' bias a delta.
struct layer_norm { static constexpr std::string_view name = "layer_norm"; };
/// The task head. Every plan trains it fully (Hugging Face PEFT's `modules_to_save`); methods never
/// wrap it.
struct classifier { static constexpr std::string_view name = "classifier"; };

}  // namespace peft::roles
