#pragma once
// peft-train: the model side of every subcommand, for one tuning plan (a compile-time type). Each
// plans/*.cpp instantiates it for one plan; main.cpp picks the plan from --method at run time.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <type_traits>

#include <peft/peft.hpp>
#include <peft/train/metrics.hpp>
#include <peft/train/progress.hpp>
#include <peft/train/training_state.hpp>

#include "common.hpp"
#include "options.hpp"

namespace peft_train {

using B = peft::backend::eigen<float>;

/// Scores of one pass over a labelled file.
struct eval_result {
  double loss = 0;
  double accuracy = 0;             ///< "sequence"
  peft::train::entity_scores ent;  ///< "token": entity-level, exact span match
  std::vector<std::vector<std::string>> predicted;  ///< per example: one label, or one tag per word
  std::vector<std::vector<float>> confidence;       ///< per example: softmax probability of each prediction
  [[nodiscard]] double score(const std::string& task) const { return task == "token" ? ent.f1 : accuracy; }
};

/// A model of `Plan` for the card's task, with its context: built, loaded, evaluated.
template <class Plan>
class session {
 public:
  session(const model_dir& md, const run_card& card, std::uint64_t seed, int threads) : card_(card), ctx_(threads) {
    ctx_.seed = seed;
    const peft::models::head_options head{
        .num_labels = card.labels.size(),
        .pool = card.pooling == "mean" ? peft::models::pooling::masked_mean : peft::models::pooling::first_token,
        .seed = seed};
    const peft::method_config methods = run_time_methods(card);
    if (card.task == "token") token_ = std::make_unique<token_model>(ctx_, md.config, head, methods);
    else sequence_ = std::make_unique<sequence_model>(ctx_, md.config, head, methods);
    // A method switched on whose targets reach no module would train nothing in silence.
    auto modules_with = [&](std::string_view group) {
      std::size_t n = 0;
      with_model([&](auto& m) {
        m.visit_parameters("", [&](const std::string&, const auto& p) { n += std::remove_cvref_t<decltype(p)>::group::name == group; });
      });
      return n;
    };
    if (methods.get<peft::lora_config>().enabled && modules_with(peft::groups::lora_a::name) == 0)
      throw peft::config_error("LoRA targets '" + card.lora_targets + "' select no module of the model");
    if (methods.get<peft::adalora_config>().enabled && modules_with(peft::groups::adalora::name) == 0)
      throw peft::config_error("AdaLoRA targets '" + card.adalora_targets + "' select no module of the model");
    if (methods.get<peft::vera_config>().enabled && modules_with(peft::groups::vera_lambda::name) == 0)
      throw peft::config_error("VeRA targets '" + card.vera_targets + "' select no module of the model");
    if (methods.get<peft::ia3_config>().enabled && modules_with(peft::groups::ia3::name) == 0)
      throw peft::config_error("(IA)3 targets '" + card.ia3_targets + "' select no module of the model");
    if (methods.get<peft::ln_tuning_config>().enabled && modules_with(peft::groups::ln_tuning::name) == 0)
      throw peft::config_error("LayerNorm tuning's target_modules '" + methods.get<peft::ln_tuning_config>().target_modules +
                               "' select no layer norm of the model");
  }

  /// Loads base weights from `file`. Missing encoder weights are an error; a missing head is one
  /// only when `head_required` (evaluating a full model).
  void load_base(const fs::path& file, bool head_required, bool verbose) {
    with_model([&](auto& m) {
      const auto r = peft::io::load_checkpoint(ctx_, m, file);
      std::string missing;
      for (const auto& n : r.missing)
        if (head_required || (n.rfind("classifier.", 0) != 0 && n.rfind("bert.pooler.", 0) != 0))
          missing += (missing.empty() ? "" : ", ") + n;
      if (!missing.empty())
        throw peft::io::io_error("'" + file.string() + "' lacks parameters the model needs: " + missing);
      // A frozen pooler missing from the checkpoint would be random, and not in the adapter either.
      bool frozen_pooler_missing = false;
      m.visit_parameters("", [&](const std::string& name, const auto& p) {
        if constexpr (!std::remove_cvref_t<decltype(p)>::trainable)
          if (name.rfind("bert.pooler.", 0) == 0 && std::find(r.missing.begin(), r.missing.end(), name) != r.missing.end())
            frozen_pooler_missing = true;
      });
      if (frozen_pooler_missing)
        throw peft::io::io_error("'" + file.string() +
                                 "' has no pooler (bert.pooler.dense.*), which --pooling cls needs frozen and pretrained; "
                                 "use --pooling mean (or full fine-tuning)");
      if (verbose) std::cerr << "loaded " << file.string() << ": " << r.str() << "\n";
    });
  }

  /// Keeps the frozen base weights as `format` says: "f32" (as loaded) or "bf16" (half the memory;
  /// AVX512_BF16 products where the CPU has them). Call after loading the base weights.
  void store_frozen(const std::string& format, bool verbose) {
    if (format == "f32") return;
    if (format != "bf16") throw peft::config_error("--frozen-weights '" + format + "': expected f32 or bf16");
    const std::size_t n = with_model([&](auto& m) { return peft::store_frozen_weights<B>(ctx_, m, peft::storage_format::bf16); });
    if (verbose) std::cerr << "frozen weights: " << n << " matrices stored as bf16; " << peft::backend::bf16_kernels() << "\n";
  }

  template <class F>
  decltype(auto) with_model(F&& f) {
    if (token_) return f(*token_);
    return f(*sequence_);
  }
  B::context& ctx() { return ctx_; }
  const run_card& card() const { return card_; }

  /// Loss and task metric over `batches` of `d` (evaluation mode: no dropout).
  eval_result evaluate(const std::vector<peft::data::labeled_batch>& batches, const dataset& d,
                       const peft::text::wordpiece_tokenizer& tok, bool with_gold = true) {
    ctx_.training = false;
    ctx_.forward_only = true;  // no backward follows: the encoder's blocks share their buffers
    eval_result r;
    r.predicted.resize(d.size());
    r.confidence.resize(d.size());
    std::vector<std::vector<std::int32_t>> word_ids;  // per sentence, per token (token task)
    if (card_.task == "token")
      for (const auto& s : d.sentences)
        word_ids.push_back(tok.encode_words(s.tokens, {.max_length = max_length()}).word_ids);
    double loss_sum = 0;
    std::size_t loss_rows = 0;
    for (const auto& b : batches) {
      with_model([&](auto& m) {
        const auto& logits = m.forward(ctx_, b.inputs);
        if (with_gold) {
          const double l = ce_.forward(ctx_, logits, b.labels);
          std::size_t rows = 0;
          for (auto y : b.labels) rows += y != -100;
          loss_sum += l * double(rows);
          loss_rows += rows;
        }
        const auto host = B::copy_to_host(ctx_, logits);
        const std::size_t L = card_.labels.size();
        // Finite weights can still overflow; a NaN score must never be printed as a prediction.
        if (const auto bad = std::find_if(host.begin(), host.end(), [](float v) { return !std::isfinite(v); }); bad != host.end()) {
          const std::size_t row = std::size_t(bad - host.begin()) / L;
          const std::size_t e = card_.task == "token" ? row / b.inputs.seq_len : row;
          const std::size_t i = b.example_indices[e];
          throw peft::numeric_error(peft::detail::concat(
              d.path.string(), ":", card_.task == "token" ? d.sentences[i].first_line : d.texts[i].line,
              ": the model's scores for this example are not finite (", *bad, "); the weights are unusable"));
        }
        auto best = [&](std::size_t row) {
          const float* z = host.data() + row * L;
          const std::size_t k = std::size_t(std::max_element(z, z + L) - z);
          double s = 0;
          for (std::size_t j = 0; j < L; ++j) s += std::exp(double(z[j] - z[k]));
          return std::pair<std::size_t, float>(k, float(1.0 / s));
        };
        for (std::size_t e = 0; e < b.example_indices.size(); ++e) {
          const std::size_t i = b.example_indices[e];
          if (card_.task == "token") {
            auto& tags = r.predicted[i];
            tags.assign(d.sentences[i].tokens.size(), "O");
            r.confidence[i].assign(tags.size(), 0.f);
            std::int32_t previous = -1;
            for (std::size_t t = 0; t < word_ids[i].size(); ++t) {
              const std::int32_t w = word_ids[i][t];
              if (w >= 0 && w != previous) {
                const auto [k, p] = best(e * b.inputs.seq_len + t);
                tags[std::size_t(w)] = card_.labels[k];
                r.confidence[i][std::size_t(w)] = p;
              }
              if (w >= 0) previous = w;
            }
          } else {
            const auto [k, p] = best(e);
            r.predicted[i] = {card_.labels[k]};
            r.confidence[i] = {p};
          }
        }
      });
    }
    if (!with_gold) return r;
    r.loss = loss_rows ? loss_sum / double(loss_rows) : 0;
    if (card_.task == "token") {
      std::vector<std::vector<std::string>> gold;
      for (const auto& s : d.sentences) gold.push_back(s.tags);
      r.ent = peft::train::entity_f1(r.predicted, gold);
    } else {
      std::size_t right = 0;
      for (std::size_t i = 0; i < d.texts.size(); ++i) right += r.predicted[i][0] == d.texts[i].label;
      r.accuracy = double(right) / double(d.texts.size());
    }
    return r;
  }

  std::size_t max_length() const { return card_.max_length; }
  peft::loss::softmax_cross_entropy<B>& loss() { return ce_; }

  using sequence_model = peft::models::bert_for_sequence_classification<B, Plan>;
  using token_model = peft::models::bert_for_token_classification<B, Plan>;

 private:
  run_card card_;
  B::context ctx_;
  std::unique_ptr<sequence_model> sequence_;
  std::unique_ptr<token_model> token_;
  peft::loss::softmax_cross_entropy<B> ce_;
};

/// The subcommands, for one plan.
template <class Plan>
struct commands {
  static int train(const train_options& o);
  static int eval(const eval_options& o, const run_card& card);
  static int predict(const predict_options& o, const run_card& card);
  static int merge(const merge_options& o, const run_card& card);
};

}  // namespace peft_train
