#pragma once
/// \file The exception type of the text components (tokenizers, chat templates).

#include "peft/core/error.hpp"

namespace peft::text {

/// Malformed text or tokenizer files; the message names the file or byte offset.
struct text_error : error {
  using error::error;
};

}  // namespace peft::text
