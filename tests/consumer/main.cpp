// Builds against the installed headers and package config only: one LoRA step on an MLP.
#include <peft/peft.hpp>

#include <cstdio>

int main() {
  using B = peft::backend::eigen<float>;
  B::context ctx;
  peft::models::mlp_classifier<B, peft::plan<peft::lora<peft::roles::hidden>>> m(
      ctx, {.input_dim = 8, .hidden = {16}, .num_labels = 2}, {peft::lora_config{.r = 4, .alpha = 8}});
  peft::optim::optimizer opt(m, peft::optim::adamw{.lr = 1e-2});
  peft::loss::softmax_cross_entropy<B> ce;
  B::tensor x;
  B::copy_from_host(ctx, std::vector<float>(4 * 8, 0.5f), {4, 8}, x);
  const std::vector<std::int32_t> y{0, 1, 0, 1};
  const double loss = ce.forward(ctx, m.forward(ctx, x), y);
  m.backward(ctx, ce.gradient());
  opt.step(ctx);
  std::printf("consumer: %s; first loss %.4f\n", peft::trainable_parameters_report(m).c_str(), loss);
  return 0;
}
