// One training step (forward, backward, AdamW) of an MLP classifier per tuning plan, eigen<float>.
// Run: ./bench_mlp_step --benchmark_format=json (OPENBLAS_CORETYPE does not matter here: Eigen's own
// GEMM kernels run unless the build defines EIGEN_USE_BLAS).
#include <benchmark/benchmark.h>

#include <peft/peft.hpp>

namespace {
using B = peft::backend::eigen<float>;
constexpr std::size_t batch = 256, input = 512, width = 1024, classes = 8;

template <class Plan>
void training_step(benchmark::State& state) {
  B::context ctx;
  ctx.training = true;
  peft::models::mlp_classifier<B, Plan> m(ctx, {.input_dim = input, .hidden = {width, width, width}, .num_labels = classes},
                                          {peft::lora_config{.r = 8, .alpha = 16}, peft::adapter_config{.bottleneck = 64}});
  peft::optim::optimizer opt(m, peft::optim::adamw{.lr = 1e-4});
  peft::loss::softmax_cross_entropy<B> ce;
  B::tensor x;
  std::vector<float> xs(batch * input);
  peft::init_rng rng(1);
  for (auto& v : xs) v = float(rng.uniform(-1, 1));
  B::copy_from_host(ctx, xs, {batch, input}, x);
  std::vector<std::int32_t> y(batch);
  for (std::size_t i = 0; i < batch; ++i) y[i] = std::int32_t(i % classes);
  for (auto _ : state) {
    opt.zero_grad(ctx);
    benchmark::DoNotOptimize(ce.forward(ctx, m.forward(ctx, x), y));
    m.backward(ctx, ce.gradient());
    opt.step(ctx);
  }
  const auto c = peft::count_parameters(m);
  state.counters["trainable_params"] = double(c.trainable);
  state.counters["examples_per_s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
}
}  // namespace

BENCHMARK(training_step<peft::plan<peft::full>>)->Name("mlp_step/full")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(training_step<peft::plan<peft::lora<peft::roles::hidden>>>)->Name("mlp_step/lora")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(training_step<peft::plan<peft::bitfit>>)->Name("mlp_step/bitfit")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(training_step<peft::plan<peft::adapter<peft::roles::hidden>>>)->Name("mlp_step/adapter")->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
