// expect: the update rule lacks .template <class B> struct state
// An update rule must say what per-parameter state it keeps.
#include <peft/peft.hpp>
using B = peft::backend::eigen<float>;
struct stateless {
  double lr = 0.1;
  double weight_decay = 0;
};
int main() {
  B::context ctx;
  peft::models::mlp_classifier<B, peft::plan<peft::methods::full>> m(ctx, {.input_dim = 2, .hidden = {2}, .num_labels = 2});
  peft::optim::optimizer opt(m, stateless{});
}
