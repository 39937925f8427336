#pragma once
/// \file Text generation with a causal LM over its KV cache: a batch of prompts (left-padded, the
/// padding masked out) is run once, then one token per step for every unfinished sequence, until
/// each hits a stop token, a stop string, the token budget or the context length. Text is streamed
/// as it becomes final: bytes that may still turn into a stop string or complete a UTF-8 character
/// are held back.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/backend.hpp"
#include "peft/core/error.hpp"
#include "peft/generate/sampler.hpp"

namespace peft::generate {

/// Options of `generate`.
struct generation_options {
  std::size_t max_new_tokens = 128;
  sampling_options sampling;
  std::vector<std::int32_t> stop_tokens;  ///< ends a sequence (the token itself is not part of the text)
  std::vector<std::string> stop_strings;  ///< ends a sequence before the string's first occurrence
  std::int32_t pad_token = 0;             ///< fills left padding and finished sequences (always masked)
  /// Prompt tokens per forward call: the prompt runs through the KV cache in chunks, so the
  /// activations held at once stay those of this many tokens however long the prompt is.
  std::size_t prefill_chunk = 64;
};

/// Why a sequence ended.
enum class finish_reason { length, stop_token, stop_string, context };

inline const char* to_string(finish_reason r) noexcept {
  switch (r) {
    case finish_reason::length: return "length";
    case finish_reason::stop_token: return "stop_token";
    case finish_reason::stop_string: return "stop_string";
    case finish_reason::context: return "context";
  }
  return "?";
}

/// One generated continuation.
struct generation {
  std::vector<std::int32_t> tokens;  ///< generated ids (a stop token excluded)
  std::string text;                  ///< decoded, cut before a stop string
  finish_reason reason = finish_reason::length;
};

/// Where the time of a `generate` call went: the prompt step (all prompts, one batched forward) and
/// the decoding steps (one token per unfinished sequence each).
struct generation_stats {
  std::size_t prompt_tokens = 0;  ///< prompt tokens run (without padding)
  double prompt_seconds = 0;
  std::size_t decode_steps = 0;
  std::size_t new_tokens = 0;     ///< tokens generated over all sequences
  double decode_seconds = 0;
};

/// A causal LM that generates: `make_cache(batch, max_tokens)`, `forward_cached(ctx, ids, new,
/// cache, key_mask)` giving (batch, vocab) logits at each sequence's last position, and `config()`
/// with `max_position_embeddings` and `vocab_size`.
template <class M>
concept CausalLM = requires(M& m, typename M::backend::context& ctx, std::span<const std::int32_t> ids,
                            typename M::cache_state& cache, const typename M::tensor* mask) {
  typename M::cache_state;
  { m.make_cache(std::size_t{}, std::size_t{}) } -> std::same_as<typename M::cache_state>;
  { m.forward_cached(ctx, ids, std::size_t{}, cache, mask) } -> std::same_as<const typename M::tensor&>;
  { m.config().max_position_embeddings } -> std::convertible_to<std::size_t>;
};

namespace detail {
/// Length of the longest suffix of `text` that is a proper prefix of some stop string (held back).
inline std::size_t stop_prefix_length(std::string_view text, const std::vector<std::string>& stops) {
  std::size_t hold = 0;
  for (const auto& s : stops)
    for (std::size_t n = std::min(s.size() - 1, text.size()); n > hold; --n)
      if (text.substr(text.size() - n) == std::string_view(s).substr(0, n)) {
        hold = n;
        break;
      }
  return hold;
}
/// Positions a model takes before every prompt (prompt or prefix tuning's virtual tokens), when it
/// says (`virtual_tokens()`); its caches hold them besides the tokens fed.
template <class M>
std::size_t virtual_positions(const M& m) {
  if constexpr (requires { { m.virtual_tokens() } -> std::convertible_to<std::size_t>; }) return m.virtual_tokens();
  else return 0;
}
/// Bytes at the end of `text` that start a UTF-8 sequence not yet complete.
inline std::size_t incomplete_utf8_tail(std::string_view text) {
  for (std::size_t back = 1; back <= std::min<std::size_t>(3, text.size()); ++back) {
    const auto c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const std::size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}
}  // namespace detail

/// Generates a continuation of every prompt (token ids, each non-empty). `decode(ids)` turns
/// generated ids into text (for stop strings and streaming); `on_text(i, piece)`, when given,
/// receives the text of sequence i piece by piece as it becomes final. Prompts run as one
/// left-padded batch; the result is the same as running each alone, up to float rounding.
/// Throws `config_error` for an empty prompt or one that fills the context.
template <CausalLM M, class Decode>
std::vector<generation> generate(typename M::backend::context& ctx, M& model, std::span<const std::vector<std::int32_t>> prompts,
                                 const generation_options& opts, Decode&& decode,
                                 const std::function<void(std::size_t, std::string_view)>& on_text = {},
                                 generation_stats* stats = nullptr) {
  using B = typename M::backend;
  using T = typename B::value_type;
  opts.sampling.validate();
  const std::size_t n = prompts.size();
  if (n == 0) return {};
  std::size_t longest = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (prompts[i].empty()) throw config_error(peft::detail::concat("generate: prompt ", i, " is empty"));
    longest = std::max(longest, prompts[i].size());
  }
  const std::size_t virt = detail::virtual_positions(model);
  // Virtual tokens sit before the left padding, so padding would change how far a prompt is from
  // them (Hugging Face counts positions past the padding instead): prompts of different lengths
  // then run one at a time, which is what batching must equal.
  if (virt && n > 1 && std::any_of(prompts.begin(), prompts.end(), [&](const auto& p) { return p.size() != prompts[0].size(); })) {
    std::vector<generation> out;
    generation_stats total;
    for (std::size_t i = 0; i < n; ++i) {
      generation_stats one;
      auto piece = on_text ? std::function<void(std::size_t, std::string_view)>(
                                 [&](std::size_t, std::string_view text) { on_text(i, text); })
                           : std::function<void(std::size_t, std::string_view)>{};
      out.push_back(std::move(generate(ctx, model, prompts.subspan(i, 1), opts, decode, piece, &one).front()));
      total.prompt_tokens += one.prompt_tokens, total.prompt_seconds += one.prompt_seconds;
      total.decode_steps += one.decode_steps, total.new_tokens += one.new_tokens, total.decode_seconds += one.decode_seconds;
    }
    if (stats) *stats = total;
    return out;
  }
  const std::size_t context = model.config().max_position_embeddings - std::min<std::size_t>(virt, model.config().max_position_embeddings);
  if (longest >= context)
    throw config_error(peft::detail::concat("generate: a prompt of ", longest, " tokens leaves no room in the context of ", context));
  const std::size_t budget = std::min(opts.max_new_tokens, context - longest);
  std::vector<generation> out(n);
  if (opts.max_new_tokens == 0) return out;  // nothing asked for: no forward at all
  auto cache = model.make_cache(n, longest + budget);

  std::vector<std::vector<std::int32_t>> history(prompts.begin(), prompts.end());
  std::vector<sampler> samplers;
  samplers.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    sampling_options s = opts.sampling;
    s.seed = opts.sampling.seed + i;
    samplers.emplace_back(s);
  }
  std::vector<bool> done(n, false);
  std::vector<std::size_t> emitted(n, 0);  // bytes of text already streamed
  std::vector<T> mask_host;
  typename B::tensor mask;

  // Prompt step: left padding, masked.
  std::vector<std::int32_t> ids(n * longest, opts.pad_token);
  mask_host.assign(n * longest, T(0));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t t = 0; t < prompts[i].size(); ++t) {
      ids[i * longest + longest - prompts[i].size() + t] = prompts[i][t];
      mask_host[i * longest + longest - prompts[i].size() + t] = T(1);
    }
  const bool padded = std::any_of(prompts.begin(), prompts.end(), [&](const auto& p) { return p.size() != longest; });
  if (opts.prefill_chunk == 0) throw config_error("generate: prefill_chunk must be positive");
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  const typename B::tensor* logits = nullptr;
  std::vector<std::int32_t> chunk_ids;
  std::vector<T> chunk_mask;
  for (std::size_t c0 = 0; c0 < longest; c0 += opts.prefill_chunk) {  // the prompt, chunk by chunk
    const std::size_t len = std::min(opts.prefill_chunk, longest - c0), seen = c0 + len;
    chunk_ids.resize(n * len);
    chunk_mask.resize(n * seen);
    for (std::size_t i = 0; i < n; ++i) {
      std::copy_n(ids.begin() + std::ptrdiff_t(i * longest + c0), len, chunk_ids.begin() + std::ptrdiff_t(i * len));
      std::copy_n(mask_host.begin() + std::ptrdiff_t(i * longest), seen, chunk_mask.begin() + std::ptrdiff_t(i * seen));
    }
    if (padded) B::copy_from_host(ctx, chunk_mask, shape{n, seen}, mask);
    logits = &model.forward_cached(ctx, chunk_ids, len, cache, padded ? &mask : nullptr);
  }
  B::copy_to_host(ctx, *logits);  // waits for the device, so the prompt's time is its own
  if (stats) {
    stats->prompt_seconds = std::chrono::duration<double>(clock::now() - t0).count();
    for (const auto& p : prompts) stats->prompt_tokens += p.size();
  }
  t0 = clock::now();

  auto finish_text = [&](std::size_t i, bool final) {
    std::string text = decode(std::span<const std::int32_t>(out[i].tokens));
    std::size_t cut = text.size();
    for (const auto& s : opts.stop_strings)
      if (const auto at = text.find(s); at != std::string::npos && at < cut) cut = at;
    if (cut < text.size()) {
      text.resize(cut);
      final = true;
      out[i].reason = finish_reason::stop_string;
      done[i] = true;
    }
    std::size_t ready = text.size();
    if (!final) ready -= std::max(detail::stop_prefix_length(text, opts.stop_strings), detail::incomplete_utf8_tail(text));
    if (on_text && ready > emitted[i]) on_text(i, std::string_view(text).substr(emitted[i], ready - emitted[i]));
    emitted[i] = std::max(emitted[i], ready);
    out[i].text = std::move(text);
  };

  std::vector<std::int32_t> next(n, opts.pad_token);
  for (std::size_t step = 0;; ++step) {
    const auto host = B::copy_to_host(ctx, *logits);
    const std::size_t vocab = host.size() / n;
    for (std::size_t i = 0; i < n; ++i) {
      next[i] = opts.pad_token;
      if (done[i]) continue;
      const std::int32_t t = samplers[i].next(std::span<const T>(host.data() + i * vocab, vocab), std::span<const std::int32_t>(history[i]));
      if (std::find(opts.stop_tokens.begin(), opts.stop_tokens.end(), t) != opts.stop_tokens.end()) {
        done[i] = true;
        out[i].reason = finish_reason::stop_token;
        finish_text(i, true);
        continue;
      }
      out[i].tokens.push_back(t);
      history[i].push_back(t);
      next[i] = t;
      finish_text(i, false);
      if (!done[i] && out[i].tokens.size() >= budget) {
        done[i] = true;
        out[i].reason = budget < opts.max_new_tokens ? finish_reason::context : finish_reason::length;
        finish_text(i, true);
      }
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    // One more token per sequence; finished ones feed masked padding.
    const std::size_t total = cache.length() - virt + 1, past = total - 1;
    std::vector<T> grown(n * total);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t t = 0; t < past; ++t) grown[i * total + t] = mask_host[i * past + t];
      grown[i * total + past] = done[i] ? T(0) : T(1);
    }
    mask_host.swap(grown);
    const bool masked = padded || std::any_of(done.begin(), done.end(), [](bool d) { return d; });
    B::copy_from_host(ctx, mask_host, shape{n, total}, mask);
    logits = &model.forward_cached(ctx, next, 1, cache, masked ? &mask : nullptr);
    if (stats) ++stats->decode_steps;
  }
  if (stats) {
    stats->decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
    for (const auto& g : out) stats->new_tokens += g.tokens.size();
  }
  return out;
}

}  // namespace peft::generate
