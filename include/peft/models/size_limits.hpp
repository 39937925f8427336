#pragma once
/// \file Upper limits on a transformer config's sizes, shared by every model's `validate()`: sizes far
/// beyond any released model are typos or hostile files, refused before they size an allocation.

#include <cstddef>

#include "peft/core/error.hpp"

namespace peft::models::detail {

/// Throws `config_error` ("<model>: <key> <v> exceeds the limit of <limit>") for the first size of
/// `c` over its limit. `C` has vocab_size, hidden_size, intermediate_size, num_hidden_layers,
/// num_attention_heads and max_position_embeddings.
template <class C>
void require_sizes_within_limits(const C& c, const char* model) {
  auto at_most = [&](std::size_t v, const char* name, std::size_t limit) {
    if (v > limit) throw config_error(peft::detail::concat(model, ": ", name, " ", v, " exceeds the limit of ", limit));
  };
  at_most(c.vocab_size, "vocab_size", std::size_t(1) << 24);
  at_most(c.hidden_size, "hidden_size", std::size_t(1) << 16);
  at_most(c.intermediate_size, "intermediate_size", std::size_t(1) << 18);
  at_most(c.num_hidden_layers, "num_hidden_layers", 1024);
  at_most(c.num_attention_heads, "num_attention_heads", 1024);
  at_most(c.max_position_embeddings, "max_position_embeddings", std::size_t(1) << 20);
}

}  // namespace peft::models::detail
