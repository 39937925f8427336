#pragma once
/// \file `peft::models::encoder_batch`: a batch of token id sequences as encoders take it.

#include <cstdint>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::models {

/// One batch of token sequences, row-major (batch_size x seq_len), on the host. `token_type_ids`
/// empty means all 0; `attention_mask` empty means no padding (1 = token, 0 = padding).
struct encoder_batch {
  std::size_t batch_size = 0;
  std::size_t seq_len = 0;
  std::vector<std::int32_t> input_ids;
  std::vector<std::int32_t> token_type_ids;
  std::vector<std::int32_t> attention_mask;

  /// Throws `shape_error` naming the field whose length is not batch_size * seq_len.
  void validate() const {
    const std::size_t n = batch_size * seq_len;
    if (n == 0) throw shape_error("encoder_batch: batch_size and seq_len must be positive");
    auto check = [&](const std::vector<std::int32_t>& v, const char* name, bool optional) {
      if ((optional && v.empty()) || v.size() == n) return;
      throw shape_error(peft::detail::concat("encoder_batch: ", name, " has ", v.size(), " entries, expected batch_size * seq_len = ",
                                             batch_size, " * ", seq_len, " = ", n));
    };
    check(input_ids, "input_ids", false);
    check(token_type_ids, "token_type_ids", true);
    check(attention_mask, "attention_mask", true);
    for (std::size_t i = 0; i < attention_mask.size(); ++i)
      if (attention_mask[i] != 0 && attention_mask[i] != 1)
        throw shape_error(peft::detail::concat("encoder_batch: attention_mask[", i, "] = ", attention_mask[i], " is not 0 or 1"));
  }
};

}  // namespace peft::models
