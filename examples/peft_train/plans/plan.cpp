// One tuning plan's subcommands; compiled once per index with PEFT_TRAIN_PLAN_INDEX=<i>.
#include "../commands.hpp"
#include "../plans.hpp"

#ifndef PEFT_TRAIN_PLAN_INDEX
#error "compile with -DPEFT_TRAIN_PLAN_INDEX=<0 or 1>"
#endif

#define PEFT_TRAIN_CAT2(a, b) a##b
#define PEFT_TRAIN_CAT(a, b) PEFT_TRAIN_CAT2(a, b)

namespace peft_train {
command_table PEFT_TRAIN_CAT(commands_of_plan_, PEFT_TRAIN_PLAN_INDEX)() {
  using P = plan_at<PEFT_TRAIN_PLAN_INDEX>::type;
  return {&commands<P>::train, &commands<P>::eval, &commands<P>::predict, &commands<P>::merge};
}
}  // namespace peft_train
