#pragma once
// peft-train: the two tuning plans behind every --method, and one table of subcommands per plan.
//
// Full fine-tuning changes which base parameters train, so it is a plan of its own. Every other method
// (LoRA and DoRA, AdaLoRA, VeRA, BitFit, (IA)3, LayerNorm tuning, Houlsby or Pfeiffer adapters, prompt and prefix tuning, and
// their combinations) runs in one plan that holds
// them all, switched on and off at run time through their options (`run_time_methods`): a method
// left off builds no parameters and costs nothing in a step. Two instantiations instead of one per
// combination keep the build short; each is compiled in its own translation unit (plans/plan.cpp
// built once per index), so a parallel build spreads them over the cores.

#include <peft/methods/adalora.hpp>
#include <peft/methods/adapter.hpp>
#include <peft/methods/bitfit.hpp>
#include <peft/methods/full.hpp>
#include <peft/methods/ia3.hpp>
#include <peft/methods/ln_tuning.hpp>
#include <peft/methods/lora.hpp>
#include <peft/methods/plan.hpp>
#include <peft/methods/prefix_tuning.hpp>
#include <peft/methods/prompt_tuning.hpp>
#include <peft/methods/vera.hpp>

#include "options.hpp"

namespace peft_train {

struct command_table {
  int (*train)(const train_options&);
  int (*eval)(const eval_options&, const run_card&);
  int (*predict)(const predict_options&, const run_card&);
  int (*merge)(const merge_options&, const run_card&);
};

namespace m = peft::methods;
/// LoRA may reach every linear layer of BertModel, the pooler included, so that PEFT adapters whose
/// target_modules also match `bert.pooler.dense` (PEFT's `dense` does) load; `--target` picks.
using lora_all = m::lora<peft::roles::query, peft::roles::key, peft::roles::value, peft::roles::attention_output,
                         peft::roles::ffn_in, peft::roles::ffn_out, peft::roles::pooler>;

/// (IA)3 may reach every role, so that PEFT's IA3 adapters for BERT (which also scale
/// attention.output.dense) load; `--ia3-target` picks the paper's key, value, ffn_out by default.
using ia3_all = m::ia3<peft::roles::query, peft::roles::key, peft::roles::value, peft::roles::attention_output,
                       peft::roles::ffn_in, peft::roles::ffn_out, peft::roles::pooler>;

/// VeRA may reach every role too; `--vera-target` picks (query and value by default).
using vera_all = m::vera<peft::roles::query, peft::roles::key, peft::roles::value, peft::roles::attention_output,
                         peft::roles::ffn_in, peft::roles::ffn_out, peft::roles::pooler>;

/// AdaLoRA may reach every role; `--adalora-target` picks (query and value by default).
using adalora_all = m::adalora<peft::roles::query, peft::roles::key, peft::roles::value, peft::roles::attention_output,
                               peft::roles::ffn_in, peft::roles::ffn_out, peft::roles::pooler>;

/// Plan 0: full fine-tuning. Plan 1: every other method, chosen at run time.
template <int I> struct plan_at;
template <> struct plan_at<0> { using type = peft::plan<m::full>; };
template <> struct plan_at<1> {
  using type = peft::plan<lora_all, adalora_all, vera_all, m::bitfit, ia3_all, m::ln_tuning, m::houlsby_adapter, m::prompt_tuning,
                          m::prefix_tuning>;
};
using peft_plan = plan_at<1>::type;

command_table commands_of_plan_0();
command_table commands_of_plan_1();

/// The subcommands compiled for `method`: full fine-tuning, or the run-time-switched plan.
inline command_table commands_of(const std::string& method) {
  return canonical_method(method) == "full" ? commands_of_plan_0() : commands_of_plan_1();
}

}  // namespace peft_train
