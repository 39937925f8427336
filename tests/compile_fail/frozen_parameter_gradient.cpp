// expect: no_gradient
// A frozen parameter has no gradient buffer: code that reads one does not compile.
#include <peft/peft.hpp>
using B = peft::backend::eigen<float>;
int main() {
  B::context ctx;
  peft::layers::linear<B> frozen(ctx, {.in_features = 2, .out_features = 2});
  B::fill(ctx, frozen.weight().grad, 0.0f);
}
