// expect: sequential: all layers must use the same backend
#include <peft/peft.hpp>
#include <peft/backend/xtensor.hpp>
using E = peft::backend::eigen<float>;
using X = peft::backend::xtensor<double>;
int main() {
  peft::layers::sequential s{peft::layers::activation_layer<E>{}, peft::layers::activation_layer<X>{}};
}
