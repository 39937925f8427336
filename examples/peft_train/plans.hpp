#pragma once
// peft-train: the tuning plans behind each --method, and one table of subcommands per plan. Each
// plan is compiled in its own translation unit (plans/plan.cpp built once per index), so a parallel
// build spreads the template instantiation over the cores.

#include <peft/methods/adapter.hpp>
#include <peft/methods/bitfit.hpp>
#include <peft/methods/full.hpp>
#include <peft/methods/lora.hpp>
#include <peft/methods/plan.hpp>

#include "options.hpp"

namespace peft_train {

struct command_table {
  int (*train)(const train_options&);
  int (*eval)(const eval_options&, const run_card&);
  int (*predict)(const predict_options&, const run_card&);
  int (*merge)(const merge_options&, const run_card&);
};

namespace m = peft::methods;
using lora_all = m::lora<peft::roles::query, peft::roles::key, peft::roles::value, peft::roles::attention_output,
                         peft::roles::ffn_in, peft::roles::ffn_out>;

/// The plan of `method_names[I]`.
template <int I> struct plan_at;
template <> struct plan_at<0> { using type = peft::plan<m::full>; };
template <> struct plan_at<1> { using type = peft::plan<lora_all>; };
template <> struct plan_at<2> { using type = peft::plan<m::bitfit>; };
template <> struct plan_at<3> { using type = peft::plan<m::houlsby_adapter>; };
template <> struct plan_at<4> { using type = peft::plan<m::pfeiffer_adapter>; };
template <> struct plan_at<5> { using type = peft::plan<lora_all, m::bitfit>; };
template <> struct plan_at<6> { using type = peft::plan<lora_all, m::houlsby_adapter>; };
template <> struct plan_at<7> { using type = peft::plan<lora_all, m::pfeiffer_adapter>; };
template <> struct plan_at<8> { using type = peft::plan<m::bitfit, m::houlsby_adapter>; };
template <> struct plan_at<9> { using type = peft::plan<m::bitfit, m::pfeiffer_adapter>; };
template <> struct plan_at<10> { using type = peft::plan<lora_all, m::bitfit, m::houlsby_adapter>; };
template <> struct plan_at<11> { using type = peft::plan<lora_all, m::bitfit, m::pfeiffer_adapter>; };
static_assert(method_names.size() == 12, "one plan_at per method name");

#define PEFT_TRAIN_PLANS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define PEFT_TRAIN_DECLARE(I) command_table commands_of_plan_##I();
PEFT_TRAIN_PLANS(PEFT_TRAIN_DECLARE)
#undef PEFT_TRAIN_DECLARE

/// The subcommands compiled for `method_names[index]`.
inline command_table commands_of(int index) {
  switch (index) {
#define PEFT_TRAIN_CASE(I) \
  case I: return commands_of_plan_##I();
    PEFT_TRAIN_PLANS(PEFT_TRAIN_CASE)
#undef PEFT_TRAIN_CASE
  }
  throw peft::config_error("no plan for method index " + std::to_string(index));
}

}  // namespace peft_train
