// One training step (forward, backward, AdamW update) of a BERT sequence classifier per tuning plan,
// eigen<float>: MiniLM shape (hidden 384, 6 layers, 12 heads, FFN 1536, batch 16, seq 128) for full
// fine-tuning, LoRA (r 8, alpha 16, query + value), BitFit and a Houlsby adapter (bottleneck 64);
// BERT-base shape (hidden 768, 12 layers, FFN 3072, batch 8, seq 128) for full and LoRA; "_bf16"
// configurations keep the frozen weights as bf16 (store_frozen_weights), multiplied with AVX512_BF16
// where the CPU has it (the JSON context's "peft_kernels" says).
//
// Run one configuration per process so that peak resident memory belongs to it:
//   bench_bert_step --benchmark_filter='minilm/lora$' --benchmark_format=json
// (benchmarks/run_bert.sh does that for every configuration; benchmarks/side_by_side/run.py runs
// it against PyTorch). GEMMs run on Eigen's own kernels, built for PEFT_CPU_ARCH (the JSON context's
// "peft_kernels" names them); OpenBLAS is not used, so OPENBLAS_CORETYPE has no effect here.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <peft/backend/cpu_features.hpp>
#include <peft/peft.hpp>

namespace {
using B = peft::backend::eigen<float>;
using namespace peft;

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}
double current_rss_mb() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return double(resident) * double(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

models::bert_config minilm() {
  return {.vocab_size = 30522, .hidden_size = 384, .num_hidden_layers = 6, .num_attention_heads = 12,
          .intermediate_size = 1536, .max_position_embeddings = 512};
}
models::bert_config bert_base() { return {}; }

template <class Plan>
void step(benchmark::State& state, models::bert_config config, std::size_t batch, std::size_t seq, bool bf16_frozen, bool dora) {
  const double baseline = current_rss_mb();
  B::context ctx;
  ctx.training = true;
  const method_config cfg{lora_config{.r = 8, .alpha = 16, .dropout = 0.1, .use_dora = dora}, adapter_config{.bottleneck = 64}};
  models::bert_for_sequence_classification<B, Plan> m(ctx, config, {.num_labels = 2}, cfg);
  if (bf16_frozen) store_frozen_weights<B>(ctx, m, storage_format::bf16);
  optim::optimizer opt(m, optim::adamw{.lr = 1e-4});
  loss::softmax_cross_entropy<B> ce;
  models::encoder_batch b{.batch_size = batch, .seq_len = seq};
  init_rng rng(1);
  for (std::size_t i = 0; i < batch * seq; ++i) b.input_ids.push_back(std::int32_t(rng.uniform(0, double(config.vocab_size))));
  b.attention_mask.assign(batch * seq, 1);
  std::vector<std::int32_t> labels(batch);
  for (std::size_t i = 0; i < batch; ++i) labels[i] = std::int32_t(i % 2);
  auto train_step = [&] {
    opt.zero_grad(ctx);
    benchmark::DoNotOptimize(ce.forward(ctx, m.forward(ctx, b), labels));
    m.backward(ctx, ce.gradient());
    opt.step(ctx);
  };
  train_step();  // sizes every buffer and makes the optimizer state
  for (auto _ : state) train_step();

  const auto report = models::estimate_memory(m, cfg, batch, seq, 2);
  const auto counts = count_parameters(m);
  state.counters["tokens_per_s"] = benchmark::Counter(double(batch * seq), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["trainable_params"] = double(counts.trainable);
  state.counters["total_params"] = double(counts.total);
  state.counters["baseline_rss_mb"] = baseline;
  state.counters["peak_rss_mb"] = peak_rss_mb();
  state.counters["report_weights_mb"] = double(report.weights) / 1048576.0;
  state.counters["report_gradients_mb"] = double(report.gradients) / 1048576.0;
  state.counters["report_optimizer_mb"] = double(report.optimizer_state) / 1048576.0;
  state.counters["report_activations_mb"] = double(report.activations) / 1048576.0;
  state.counters["report_total_mb"] = double(report.total()) / 1048576.0;
}

using full_p = plan<methods::full>;
using lora_p = plan<methods::lora<roles::query, roles::value>>;
using bitfit_p = plan<methods::bitfit>;
using houlsby_p = plan<methods::houlsby_adapter>;
template <class Plan>
void add(const char* name, models::bert_config (*config)(), std::size_t batch, std::size_t seq, int iterations,
         bool bf16_frozen = false, bool dora = false) {
  benchmark::RegisterBenchmark(name, [=](benchmark::State& st) { step<Plan>(st, config(), batch, seq, bf16_frozen, dora); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(iterations)
      ->Repetitions(3)
      ->ReportAggregatesOnly(true);
}
}  // namespace

int main(int argc, char** argv) {
  add<full_p>("minilm/full", minilm, 16, 128, 2);
  add<lora_p>("minilm/lora", minilm, 16, 128, 2);
  add<bitfit_p>("minilm/bitfit", minilm, 16, 128, 2);
  add<houlsby_p>("minilm/houlsby", minilm, 16, 128, 2);
  add<full_p>("bert_base/full", bert_base, 8, 128, 1);
  add<lora_p>("bert_base/lora", bert_base, 8, 128, 1);
  // Frozen weights stored as bf16 (store_frozen_weights): AVX512_BF16 products where the CPU has them.
  add<lora_p>("minilm/lora_bf16", minilm, 16, 128, 2, true);
  add<bitfit_p>("minilm/bitfit_bf16", minilm, 16, 128, 2, true);
  add<lora_p>("bert_base/lora_bf16", bert_base, 8, 128, 1, true);
  // DoRA: LoRA with magnitudes (dropout 0.1, so the rescaled base term takes one more weight product).
  add<lora_p>("minilm/dora", minilm, 16, 128, 2, false, true);
  benchmark::AddCustomContext("peft_kernels", backend::cpu_kernels() + "; " + backend::bf16_kernels());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
