#pragma once
/// \file The BPE vocabulary and chat template stored in a GGUF file's `tokenizer.*` metadata.

#include <optional>
#include <string>

#include "peft/io/gguf.hpp"
#include "peft/text/bpe.hpp"

namespace peft::text {

/// The byte-level BPE vocabulary of `file` (`tokenizer.ggml.model` "gpt2": tokens, token types,
/// merges, pre-tokenizer, special ids, add_bos/add_eos). Throws `io_error` naming the file and the
/// key when a key is missing or mistyped, or the tokenizer model is not byte-level BPE; the
/// tokenizer's own checks (unknown pre-tokenizer, bad merges) follow when it is built.
inline bpe_vocabulary bpe_vocabulary_from_gguf(const io::gguf_file& file) {
  const std::string model = file.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    file.fail("tokenizer model '" + model + "' is not supported (only byte-level BPE, tokenizer.ggml.model 'gpt2'" +
              (model == "llama" ? "; 'llama' is SentencePiece" : "") + ")");
  bpe_vocabulary v;
  v.source = file.source();
  v.tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (file.contains("tokenizer.ggml.token_type")) {
    const auto& types = file.get_integer_array("tokenizer.ggml.token_type");
    if (types.size() != v.tokens.size())
      file.fail(peft::detail::concat("tokenizer.ggml.token_type has ", types.size(), " entries for ", v.tokens.size(), " tokens"));
    v.types.reserve(types.size());
    for (std::size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 1 || types[i] > 6) file.fail(peft::detail::concat("token ", i, " has unknown token type ", types[i]));
      v.types.push_back(bpe_token_type(types[i]));
    }
  }
  if (file.contains("tokenizer.ggml.merges")) v.merges = file.get_string_array("tokenizer.ggml.merges");
  v.pre_tokenizer = file.get_string_or("tokenizer.ggml.pre").value_or("default");
  auto id = [&](const char* key) -> std::optional<std::int32_t> {
    const auto u = file.get_uint_or(key);
    if (!u) return std::nullopt;
    if (*u >= v.tokens.size()) file.fail(peft::detail::concat(key, " = ", *u, " is not a token id (", v.tokens.size(), " tokens)"));
    return std::int32_t(*u);
  };
  v.bos = id("tokenizer.ggml.bos_token_id");
  v.eos = id("tokenizer.ggml.eos_token_id");
  v.unk = id("tokenizer.ggml.unknown_token_id");
  v.pad = id("tokenizer.ggml.padding_token_id");
  v.add_bos = file.get_bool_or("tokenizer.ggml.add_bos_token").value_or(false);
  v.add_eos = file.get_bool_or("tokenizer.ggml.add_eos_token").value_or(false);
  return v;
}

/// The tokenizer of `file` (see `bpe_vocabulary_from_gguf`).
inline bpe_tokenizer bpe_tokenizer_from_gguf(const io::gguf_file& file) { return bpe_tokenizer(bpe_vocabulary_from_gguf(file)); }

/// The chat template (`tokenizer.chat_template`), if the file has one.
inline std::optional<std::string> chat_template_of(const io::gguf_file& file) { return file.get_string_or("tokenizer.chat_template"); }

}  // namespace peft::text
