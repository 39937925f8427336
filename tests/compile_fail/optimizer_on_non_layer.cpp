// expect: the model must satisfy peft::Layer
#include <peft/peft.hpp>
struct not_a_layer {
  using backend = peft::backend::eigen<float>;
};
int main() {
  not_a_layer m;
  peft::optim::optimizer opt(m, peft::optim::adamw{});
}
