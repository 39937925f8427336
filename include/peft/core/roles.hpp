#pragma once
/// \file Roles: tag types naming what a linear layer does in a model, so that a PEFT method can
/// target roles at compile time (as Hugging Face PEFT's `target_modules` does by name).

#include <concepts>
#include <string_view>
#include <type_traits>

namespace peft::roles {

/// Requirements of a role tag: an empty type with a `static constexpr std::string_view name`, the
/// Hugging Face module-name suffix it corresponds to.
template <class R>
concept Role = std::is_empty_v<R> && requires {
  { R::name } -> std::convertible_to<std::string_view>;
};

struct query { static constexpr std::string_view name = "query"; };                ///< attention Q
struct key { static constexpr std::string_view name = "key"; };                    ///< attention K
struct value { static constexpr std::string_view name = "value"; };                ///< attention V
struct attention_output { static constexpr std::string_view name = "attention.output.dense"; };
struct ffn_in { static constexpr std::string_view name = "intermediate.dense"; };   ///< FFN up
struct ffn_out { static constexpr std::string_view name = "output.dense"; };        ///< FFN down
struct hidden { static constexpr std::string_view name = "hidden"; };               ///< MLP hidden layer
struct pooler { static constexpr std::string_view name = "pooler.dense"; };         ///< BERT pooler
/// Embedding tables (word, position, token type): no method wraps them; `full` trains them.
struct embeddings { static constexpr std::string_view name = "embeddings"; };
/// Layer norms: `full` trains them; BitFit gives their bias a delta.
struct layer_norm { static constexpr std::string_view name = "LayerNorm"; };
/// The task head. Every plan trains it fully (Hugging Face PEFT's `modules_to_save`); methods never
/// wrap it.
struct classifier { static constexpr std::string_view name = "classifier"; };

}  // namespace peft::roles
