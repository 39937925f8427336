// End-to-end training of a small MLP classifier with every plan: reaches a stated loss, is
// deterministic, leaves frozen parameters bitwise unchanged, and allocates nothing in steady state.
#include <boost/test/unit_test.hpp>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <new>

#include "bodies/scenarios.hpp"
#include "peft/train/report.hpp"
#include "support/backends.hpp"

// Counts every heap allocation made while `counting` is set, by interposing the C allocation functions
// of glibc (operator new, Eigen's aligned_malloc and the OpenMP runtime all end in them). Sanitizer
// builds own these functions, so there the allocation case reports that it cannot count.
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#define PEFT_TEST_COUNTS_ALLOCATIONS 1
namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
void count_allocation() {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void* malloc(std::size_t n) {
  count_allocation();
  return __libc_malloc(n);
}
void* calloc(std::size_t count, std::size_t n) {
  count_allocation();
  return __libc_calloc(count, n);
}
void* realloc(void* p, std::size_t n) {
  count_allocation();
  return __libc_realloc(p, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
  count_allocation();
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
  count_allocation();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** p, std::size_t alignment, std::size_t n) {
  count_allocation();
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  *p = __libc_memalign(alignment, n);
  return *p || n == 0 ? 0 : ENOMEM;
}
}
#endif

using namespace peft;

namespace {
/// A fixed synthetic task: 3 classes given by the argmax of a random linear "teacher" over 12 inputs.
struct task {
  std::vector<double> x;
  std::vector<std::int32_t> y;
  std::size_t n, dim = 12;
  explicit task(std::size_t rows, std::uint64_t seed) : n(rows) {
    init_rng rng(seed), teacher(1234);
    std::vector<double> t(3 * dim);
    for (auto& v : t) v = teacher.normal(0, 1);
    x.resize(n * dim);
    for (auto& v : x) v = rng.uniform(-1, 1);
    for (std::size_t i = 0; i < n; ++i) {
      int best = 0;
      double best_v = -1e300;
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (std::size_t j = 0; j < dim; ++j) s += t[c * dim + j] * x[i * dim + j];
        if (s > best_v) best_v = s, best = c;
      }
      y.push_back(best);
    }
  }
};

struct run_result {
  std::vector<double> losses;
  double final_loss = 0;
  double accuracy = 0;
  std::uint64_t trainable = 0, total = 0;
  std::size_t optimizer_entries = 0, trainable_tensors = 0;
  bool frozen_unchanged = true;
};

/// Trains for `epochs` over mini-batches of 32, then evaluates the loss and accuracy on the whole set.
template <class B, class Plan>
run_result train(int epochs = 40, double lr = 1e-2) {
  using T = typename B::value_type;
  typename B::context ctx;
  ctx.seed = 7;
  const task data(256, 99);
  models::mlp_classifier<B, Plan> m(ctx, {.input_dim = data.dim, .hidden = {32, 32}, .num_labels = 3, .dropout = 0.0, .seed = 5},
                                    {lora_config{.r = 4, .alpha = 8}, adapter_config{.bottleneck = 8}});
  // Snapshot every frozen parameter.
  std::vector<std::vector<T>> frozen;
  m.visit_parameters("", [&](const std::string&, const auto& p) {
    if constexpr (!std::remove_cvref_t<decltype(p)>::trainable) frozen.push_back(B::copy_to_host(ctx, p.value));
  });
  optim::optimizer opt(m, optim::adamw{.lr = lr, .weight_decay = 0.0});
  loss::softmax_cross_entropy<B> ce;
  run_result r;
  const std::size_t batch = 32;
  typename B::tensor xb;
  for (int e = 0; e < epochs; ++e) {
    ctx.training = true;
    double sum = 0;
    for (std::size_t s = 0; s < data.n; s += batch) {
      std::vector<T> xs(data.x.begin() + long(s * data.dim), data.x.begin() + long((s + batch) * data.dim));
      B::copy_from_host(ctx, xs, {batch, data.dim}, xb);
      opt.zero_grad(ctx);
      sum += ce.forward(ctx, m.forward(ctx, xb), std::span(data.y).subspan(s, batch));
      m.backward(ctx, ce.gradient());
      opt.step(ctx);
    }
    r.losses.push_back(sum / double(data.n / batch));
  }
  ctx.training = false;
  std::vector<T> xs(data.x.begin(), data.x.end());
  B::copy_from_host(ctx, xs, {data.n, data.dim}, xb);
  const auto& logits = m.forward(ctx, xb);
  r.final_loss = ce.forward(ctx, logits, data.y);
  const auto h = B::copy_to_host(ctx, logits);
  int correct = 0;
  for (std::size_t i = 0; i < data.n; ++i) {
    const auto* row = h.data() + i * 3;
    correct += int(std::max_element(row, row + 3) - row) == data.y[i];
  }
  r.accuracy = double(correct) / double(data.n);
  std::size_t k = 0;
  m.visit_parameters("", [&](const std::string&, const auto& p) {
    if constexpr (!std::remove_cvref_t<decltype(p)>::trainable)
      r.frozen_unchanged = r.frozen_unchanged && B::copy_to_host(ctx, p.value) == frozen[k++];
  });
  const auto c = count_parameters(m);
  r.trainable = c.trainable;
  r.total = c.total;
  r.trainable_tensors = c.trainable_tensors;
  r.optimizer_entries = opt.states();
  return r;
}

template <class B, class Plan>
void check_plan(const char* name, double max_final_loss) {
  const run_result a = train<B, Plan>();
  const run_result b = train<B, Plan>();
  BOOST_TEST_MESSAGE(name << ": final loss " << a.final_loss << ", accuracy " << a.accuracy << ", trainable " << a.trainable
                          << " / " << a.total);
  BOOST_TEST(a.final_loss < max_final_loss, name << ": final loss " << a.final_loss << " >= " << max_final_loss);
  BOOST_TEST(a.losses.back() < 0.5 * a.losses.front(), name << ": loss did not fall");
  BOOST_TEST(a.losses == b.losses, name << ": two runs from the same seed differ");
  BOOST_TEST(a.frozen_unchanged, name << ": a frozen parameter changed");
  BOOST_TEST(a.optimizer_entries == a.trainable_tensors, name << ": optimizer state for a frozen parameter");
}

using full_p = plan<methods::full>;
using lora_p = plan<methods::lora<roles::hidden>>;
using bitfit_p = plan<methods::bitfit>;
using adapter_p = plan<methods::adapter<roles::hidden>>;
using lora_bitfit_p = plan<methods::lora<roles::hidden>, methods::bitfit>;
}  // namespace

BOOST_AUTO_TEST_SUITE(training)

BOOST_AUTO_TEST_CASE(mlp_classifier_with_every_plan) {
  using B = backend::eigen<float>;
  check_plan<B, full_p>("full", 0.10);
  check_plan<B, lora_p>("lora", 0.15);
  check_plan<B, bitfit_p>("bitfit", 0.45);
  check_plan<B, adapter_p>("adapter", 0.2);
  check_plan<B, lora_bitfit_p>("lora+bitfit", 0.15);
}

BOOST_AUTO_TEST_CASE(peft_plans_train_fewer_parameters) {
  using B = backend::eigen<float>;
  const auto full = train<B, full_p>(1), lora = train<B, lora_p>(1), bitfit = train<B, bitfit_p>(1);
  BOOST_TEST(lora.total > full.total);  // base plus LoRA matrices
  BOOST_TEST(lora.trainable < full.trainable);
  BOOST_TEST(bitfit.trainable == 32u + 32u + 32u * 3u + 3u);  // deltas of both hidden layers plus the head
}

BOOST_AUTO_TEST_CASE(training_runs_agree_across_backends) {
  using test::eigen_d;
  using test::xtensor_d;
  const double tol = 1e-10;
  std::string d = test::compare(test::training_scenario<eigen_d, test::lora_bitfit_plan>(optim::adamw{.lr = 0.05}),
                                test::training_scenario<xtensor_d, test::lora_bitfit_plan>(optim::adamw{.lr = 0.05}), tol);
  BOOST_TEST(d.empty(), "adamw lora+bitfit: " << d);
  d = test::compare(test::training_scenario<eigen_d, test::lora_adapter_plan>(optim::sgd{.lr = 0.1, .momentum = 0.9, .nesterov = true}),
                    test::training_scenario<xtensor_d, test::lora_adapter_plan>(optim::sgd{.lr = 0.1, .momentum = 0.9, .nesterov = true}),
                    tol);
  BOOST_TEST(d.empty(), "sgd lora+adapter: " << d);
  d = test::compare(test::training_scenario<eigen_d, plan<methods::full>>(optim::adafactor{.beta1 = 0.9}),
                    test::training_scenario<xtensor_d, plan<methods::full>>(optim::adafactor{.beta1 = 0.9}), tol);
  BOOST_TEST(d.empty(), "adafactor full: " << d);
}

#if defined(PEFT_TEST_COUNTS_ALLOCATIONS)
namespace {
/// Heap allocations made by steps 3 and 4 of `step` (the first two size every buffer, the GEMM
/// workspace and the optimizer state).
template <class Step>
long steady_state_allocations(Step&& step) {
  step();
  step();
  allocations = 0;
  counting = true;
  step();
  step();
  counting = false;
  return allocations.load();
}

/// The steady-state allocations of an MLP classifier (products of 64 x 128 x 256 and 64 x 256 x 256,
/// split over threads, and 64 x 256 x 4 on one) trained by `rule` with LoRA + BitFit.
template <class Rule>
long mlp_step_allocations(Rule rule) {
  using B = backend::eigen<float>;
  B::context ctx;  // OpenMP's thread count
  ctx.training = true;
  models::mlp_classifier<B, lora_bitfit_p> m(ctx, {.input_dim = 128, .hidden = {256, 256}, .num_labels = 4, .dropout = 0.1},
                                              {lora_config{.r = 8, .alpha = 16, .dropout = 0.1}});
  optim::optimizer opt(m, rule, optim::cosine_schedule{.warmup_steps = 2, .total_steps = 10});
  loss::softmax_cross_entropy<B> ce;
  B::tensor x;
  B::copy_from_host(ctx, std::vector<float>(64 * 128, 0.25f), {64, 128}, x);
  const std::vector<std::int32_t> labels(64, 1);
  return steady_state_allocations([&] {
    opt.zero_grad(ctx);
    ce.forward(ctx, m.forward(ctx, x), labels);
    m.backward(ctx, ce.gradient());
    opt.clip_grad_norm(ctx, 1.0);
    opt.step(ctx);
  });
}
}  // namespace
#endif

BOOST_AUTO_TEST_CASE(steady_state_step_allocates_nothing) {
#if defined(PEFT_TEST_COUNTS_ALLOCATIONS)
  // Controls: the counter sees an allocation, and Eigen's own product of this size allocates (its packing
  // buffers), so a zero below means the backend avoided it, not that nothing was counted.
  allocations = 0;
  counting = true;
  void* volatile probe = std::malloc(1000);  // volatile: the call cannot be elided
  counting = false;
  std::free(probe);
  BOOST_TEST_REQUIRE(allocations.load() == 1, "the allocation counter does not see allocations");
  Eigen::MatrixXf p = Eigen::MatrixXf::Constant(256, 256, 1.0f), q(256, 256);
  allocations = 0;
  counting = true;
  q.noalias() = p * p;
  counting = false;
  BOOST_TEST(allocations.load() >= 1, "Eigen's product is expected to allocate its packing buffers");
  BOOST_TEST(q(3, 4) == 256.0f);

  BOOST_TEST(mlp_step_allocations(optim::adamw{.lr = 1e-3}) == 0, "adamw");
  BOOST_TEST(mlp_step_allocations(optim::sgd{.lr = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01}) == 0,
             "sgd");
  BOOST_TEST(mlp_step_allocations(optim::adafactor{.beta1 = 0.9}) == 0, "adafactor");

  // A BERT encoder (attention's batched products, layer norm, embeddings, GELU, adapters) with LoRA,
  // BitFit and Houlsby adapters: sequence 32 x batch 4, hidden 64, 4 heads.
  using B = backend::eigen<float>;
  B::context ctx;
  ctx.training = true;
  const models::bert_config c{.vocab_size = 50, .hidden_size = 64, .num_hidden_layers = 2, .num_attention_heads = 4,
                              .intermediate_size = 128, .max_position_embeddings = 40, .type_vocab_size = 2};
  models::bert_for_sequence_classification<B, plan<methods::lora<roles::query, roles::value>, methods::bitfit,
                                                   methods::houlsby_adapter>>
      bert(ctx, c, {.num_labels = 3}, {lora_config{.r = 4, .alpha = 8, .dropout = 0.1}, adapter_config{.bottleneck = 8}});
  models::encoder_batch batch{.batch_size = 4, .seq_len = 32};
  for (std::size_t i = 0; i < 4 * 32; ++i) {
    batch.input_ids.push_back(std::int32_t(i * 7 % 50));
    batch.token_type_ids.push_back(std::int32_t(i % 32 >= 16));
    batch.attention_mask.push_back(i % 32 < 32 - 5 * (i / 32));  // the later sequences padded
  }
  optim::optimizer opt(bert, optim::adamw{.lr = 1e-3});
  loss::softmax_cross_entropy<B> ce;
  const std::vector<std::int32_t> labels{0, 1, 2, 1};
  BOOST_TEST(steady_state_allocations([&] {
               opt.zero_grad(ctx);
               ce.forward(ctx, bert.forward(ctx, batch), labels);
               bert.backward(ctx, ce.gradient());
               opt.step(ctx);
             }) == 0,
             "bert");
#else
  BOOST_TEST_MESSAGE("steady_state_step_allocates_nothing: allocations cannot be counted in this build (sanitizer)");
#endif
}

BOOST_AUTO_TEST_SUITE_END()
