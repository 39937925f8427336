// GEMM throughput of backend::eigen<float> at the shapes of a MiniLM training step (batch 16 x 128
// tokens), against the machine's peak for the instruction set the program was built for.
//
// "peak/fma" runs independent fused multiply-adds on Eigen's widest packet (the kernels' own vector
// width), one chain per register, so its GFLOP/s is what one thread can reach at most; run it with
// --benchmark_filter=peak and compare the GEMM rows. Products are row-major as the layers call them:
// "x W^T" is a linear layer's forward, "dy^T x" its weight gradient, "dy W" its input gradient,
// "heads" the attention's per-head products (scores = Q K^T) as one batch over 16 x 12 heads;
// "gemm_bf16" the forward product with a frozen weight stored as bf16.
#include <benchmark/benchmark.h>

#include <peft/backend/cpu_features.hpp>
#include <array>
#include <peft/backend/eigen.hpp>
#include <peft/core/packed_matrix.hpp>
#include <vector>

namespace {
using B = peft::backend::eigen<float>;
using peft::op;

void peak_fma(benchmark::State& state) {
  using P = Eigen::internal::packet_traits<float>::type;
  constexpr int lanes = Eigen::internal::unpacket_traits<P>::size;
  constexpr int chains = 12;  // enough independent chains to cover the FMA latency on two pipes
  P acc[chains];
  for (int i = 0; i < chains; ++i) acc[i] = Eigen::internal::pset1<P>(float(i));
  const P a = Eigen::internal::pset1<P>(0.999999f), b = Eigen::internal::pset1<P>(1e-7f);
  constexpr long steps = 1 << 20;
  for (auto _ : state) {
    for (long s = 0; s < steps; ++s)
      for (int i = 0; i < chains; ++i) acc[i] = Eigen::internal::pmadd(acc[i], a, b);
    for (int i = 0; i < chains; ++i) benchmark::DoNotOptimize(acc[i]);
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * lanes * chains * double(steps), benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
  state.counters["lanes"] = lanes;
}

void gemm(benchmark::State& state, op ta, op tb, std::size_t m, std::size_t n, std::size_t k, int threads) {
  B::context ctx(threads);
  peft::host_tensor<float> a(ta == op::n ? peft::shape{m, k} : peft::shape{k, m});
  peft::host_tensor<float> b(tb == op::n ? peft::shape{k, n} : peft::shape{n, k});
  peft::host_tensor<float> c(peft::shape{m, n});
  B::fill(ctx, a, 0.5f);
  B::fill(ctx, b, 0.25f);
  B::gemm(ctx, ta, tb, 1.f, a, b, 0.f, c);  // sizes the packing buffers
  for (auto _ : state) B::gemm(ctx, ta, tb, 1.f, a, b, 0.f, c);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k), benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

// c = x W^T with W stored as bf16 (a frozen weight after store_frozen_weights): AVX512_BF16 dot
// products where the CPU has them, else W widened to fp32 tile by tile (the context names which).
void gemm_bf16(benchmark::State& state, std::size_t m, std::size_t n, std::size_t k, int threads) {
  B::context ctx(threads);
  std::vector<float> wv(n * k, 0.25f);
  const auto w = peft::packed_matrix::encode(wv, n, k, peft::storage_format::bf16, "w");
  peft::host_tensor<float> a(peft::shape{m, k}), c(peft::shape{m, n});
  B::fill(ctx, a, 0.5f);
  B::gemm_packed(ctx, op::t, 1.f, a, w, 0.f, c);
  for (auto _ : state) B::gemm_packed(ctx, op::t, 1.f, a, w, 0.f, c);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k), benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

void heads(benchmark::State& state, int threads) {
  const std::size_t batch = 16 * 12, s = 128, d = 32;
  B::context ctx(threads);
  peft::host_tensor<float> q(peft::shape{batch * s, d}), k(peft::shape{batch * s, d}), scores(peft::shape{batch * s, s});
  B::fill(ctx, q, 0.5f);
  B::fill(ctx, k, 0.25f);
  auto run = [&] {
    // matrix_batch{data, ld, inner stride, outer stride}
    B::gemm_batched(ctx, op::n, op::t, s, s, d, 1.f, {q.data(), d, s * d, 0}, {k.data(), d, s * d, 0}, 0.f,
                    {scores.data(), s, s * s, 0}, 1, batch);
  };
  run();
  for (auto _ : state) run();
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(batch * s * s * d), benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

void add(const std::string& name, op ta, op tb, std::size_t m, std::size_t n, std::size_t k) {
  for (int threads : {1, 2})
    benchmark::RegisterBenchmark((name + "/threads:" + std::to_string(threads)).c_str(),
                                 [=](benchmark::State& st) { gemm(st, ta, tb, m, n, k, threads); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}
}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("peak/fma/threads:1", peak_fma)->Unit(benchmark::kMillisecond);
  add("gemm/x_Wt/2048x384x384", op::n, op::t, 2048, 384, 384);
  add("gemm/x_Wt/2048x1536x384", op::n, op::t, 2048, 1536, 384);
  add("gemm/x_Wt/2048x384x1536", op::n, op::t, 2048, 384, 1536);
  add("gemm/dyT_x/384x384x2048", op::t, op::n, 384, 384, 2048);
  add("gemm/dy_W/2048x384x1536", op::n, op::n, 2048, 384, 1536);
  add("gemm/lora_A/2048x8x384", op::n, op::t, 2048, 8, 384);
  for (int threads : {1, 2})
    benchmark::RegisterBenchmark(("gemm/heads/192x128x128x32/threads:" + std::to_string(threads)).c_str(),
                                 [=](benchmark::State& st) { heads(st, threads); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  for (auto [m, n, k] : {std::array<std::size_t, 3>{2048, 384, 384}, {2048, 1536, 384}, {2048, 384, 1536}})
    for (int threads : {1, 2})
      benchmark::RegisterBenchmark(("gemm_bf16/x_Wt/" + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                                    "/threads:" + std::to_string(threads)).c_str(),
                                   [=](benchmark::State& st) { gemm_bf16(st, m, n, k, threads); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  benchmark::AddCustomContext("peft_kernels", peft::backend::cpu_kernels() + "; " + peft::backend::bf16_kernels());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
