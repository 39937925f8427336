// expect: the model must satisfy peft::Module
#include <peft/peft.hpp>
struct not_a_layer {  // has a backend but no visit_parameters
  using backend = peft::backend::eigen<float>;
};
int main() {
  not_a_layer m;
  peft::optim::optimizer opt(m, peft::optim::adamw{});
}
