#pragma once
/// \file Task metrics: accuracy, and entity-level precision / recall / F1 with exact span match, as
/// `seqeval` computes them in its default (conlleval-compatible) mode for IOB1/IOB2/IOE-free BIO tags.

#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::train {

/// Fraction of equal entries; throws when the lengths differ or are zero.
inline double accuracy(const std::vector<int>& predicted, const std::vector<int>& gold) {
  if (predicted.size() != gold.size() || gold.empty())
    throw error(peft::detail::concat("accuracy: ", predicted.size(), " predictions for ", gold.size(), " gold labels"));
  std::size_t right = 0;
  for (std::size_t i = 0; i < gold.size(); ++i) right += predicted[i] == gold[i];
  return double(right) / double(gold.size());
}

/// An entity: [begin, end) word positions in a sentence and its type ("person" for "B-person").
struct entity_span {
  std::size_t sentence = 0, begin = 0, end = 0;
  std::string type;
  auto operator<=>(const entity_span&) const = default;
};

/// The entities of one tag sequence. Chunking follows conlleval / seqeval's default mode: a chunk
/// starts at `B-X`, or at `I-X` after `O` or after a chunk of another type; it ends before `O`, `B-*`
/// or a tag of another type. Tags other than `O` must look like `B-X` or `I-X`.
inline std::vector<entity_span> entity_spans(const std::vector<std::string>& tags, std::size_t sentence = 0) {
  std::vector<entity_span> out;
  bool open = false;
  entity_span cur;
  for (std::size_t i = 0; i <= tags.size(); ++i) {
    std::string_view prefix = "O", type;
    if (i < tags.size() && tags[i] != "O") {
      const std::string& t = tags[i];
      if (t.size() < 3 || (t[0] != 'B' && t[0] != 'I') || t[1] != '-')
        throw error("entity_spans: tag '" + t + "' is not O, B-<type> or I-<type>");
      prefix = std::string_view(t).substr(0, 1);
      type = std::string_view(t).substr(2);
    }
    const bool continues = open && prefix == "I" && type == cur.type;
    if (open && !continues) {
      cur.end = i;
      out.push_back(cur);
      open = false;
    }
    if (!open && prefix != "O") {
      cur = {sentence, i, i, std::string(type)};
      open = true;
    }
  }
  return out;
}

/// Entity-level scores (micro-averaged over types), as seqeval's classification_report "micro avg".
struct entity_scores {
  double precision = 0, recall = 0, f1 = 0;
  std::size_t predicted = 0, gold = 0, correct = 0;
};

/// Scores predicted tag sequences against gold ones (same number of sentences and words).
inline entity_scores entity_f1(const std::vector<std::vector<std::string>>& predicted,
                               const std::vector<std::vector<std::string>>& gold) {
  if (predicted.size() != gold.size())
    throw error(peft::detail::concat("entity_f1: ", predicted.size(), " predicted sentences for ", gold.size(), " gold ones"));
  std::set<entity_span> p, g;
  for (std::size_t s = 0; s < gold.size(); ++s) {
    if (predicted[s].size() != gold[s].size())
      throw error(peft::detail::concat("entity_f1: sentence ", s, " has ", predicted[s].size(), " predicted tags for ",
                                       gold[s].size(), " words"));
    for (auto& e : entity_spans(predicted[s], s)) p.insert(std::move(e));
    for (auto& e : entity_spans(gold[s], s)) g.insert(std::move(e));
  }
  entity_scores r;
  r.predicted = p.size();
  r.gold = g.size();
  for (const auto& e : p) r.correct += g.count(e);
  r.precision = r.predicted ? double(r.correct) / double(r.predicted) : 0;
  r.recall = r.gold ? double(r.correct) / double(r.gold) : 0;
  r.f1 = r.precision + r.recall > 0 ? 2 * r.precision * r.recall / (r.precision + r.recall) : 0;
  return r;
}

}  // namespace peft::train
