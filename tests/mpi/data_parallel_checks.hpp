#pragma once
// The data-parallel checks, for any backend and communicator (MPI on the CPU in
// test_data_parallel.cpp, NCCL on GPUs in nccl_checks.cu): the trainer with `Comm` trains the
// parameters that one process trains on the same global batches (a BERT classifier with LoRA and
// BitFit, dropout on, gradient accumulation, clipping, a last batch too small for every process to get
// a row), to 1e-11 in double; an error on one process stops every process at the step's end with the
// same step in its message; a sum gives the same bits on every process.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "bodies/scenarios.hpp"
#include "peft/data/batching.hpp"
#include "peft/methods/bitfit.hpp"
#include "peft/methods/lora.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/train/communicator.hpp"
#include "peft/train/trainer.hpp"

namespace peft::test::data_parallel {

using plan_t = plan<methods::lora<roles::query, roles::value>, methods::bitfit>;
template <class B>
using model_t = models::bert_for_sequence_classification<B, plan_t>;

/// Counts failed checks; prints every check on process 0 and failures everywhere.
struct checks {
  std::size_t rank = 0;
  int failures = 0;
  void operator()(bool ok, const std::string& what) {
    if (!ok) ++failures;
    if (!ok || rank == 0) std::printf("%s (process %zu): %s\n", ok ? "ok" : "FAIL", rank, what.c_str());
  }
};

inline std::string sci(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1e", v);
  return b;
}

/// Batches of `rows` sequences of length 7 (some padded), labels 0..2, for epoch `epoch`; the last
/// batch of each epoch has a single row.
inline std::vector<data::labeled_batch> batches(std::size_t epoch) {
  std::vector<data::labeled_batch> out;
  init_rng rng(derive_seed(99, epoch));
  for (const std::size_t rows : {5, 4, 6, 1}) {
    data::labeled_batch b;
    b.inputs.batch_size = rows, b.inputs.seq_len = 7;
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t len = 3 + std::size_t(rng.uniform(0, 4.999));
      for (std::size_t s = 0; s < 7; ++s) {
        b.inputs.input_ids.push_back(s < len ? std::int32_t(1 + rng.uniform(0, 28.999)) : 0);
        b.inputs.token_type_ids.push_back(0);
        b.inputs.attention_mask.push_back(s < len ? 1 : 0);
      }
      b.labels.push_back(std::int32_t(rng.uniform(0, 2.999)));
    }
    out.push_back(std::move(b));
  }
  return out;
}

/// The classification task, failing in its forward at the `fail_at`-th call when asked to.
template <class B>
struct failing_task : train::classification_task<model_t<B>> {
  using train::classification_task<model_t<B>>::classification_task;
  std::size_t calls = 0, fail_at = 0;
  template <class Batch>
  double loss(typename B::context& ctx, const Batch& b) {
    if (++calls == fail_at) throw error("a test failure");
    return train::classification_task<model_t<B>>::loss(ctx, b);
  }
};

/// Trains a fresh model (same seed everywhere) for two epochs with `comm`; returns its trainable
/// values. `fail_on_rank`: that process's forward fails in the second step.
template <class B, class Comm>
std::vector<double> train_with(Comm comm, std::size_t accumulation, std::size_t fail_on_rank = 99) {
  typename B::context ctx;
  ctx.seed = 17;
  model_t<B> m(ctx, tiny_bert_config(), {.num_labels = 3, .seed = 5}, {lora_config{.r = 4, .alpha = 8, .dropout = 0.2}});
  randomize_trainable(ctx, m, 3, 0.3);  // away from LoRA's B = 0
  optim::optimizer opt(m, optim::adamw{.lr = 2e-2});
  failing_task<B> task(m);
  if (fail_on_rank == comm.rank()) task.fail_at = accumulation + 1;
  train::trainer<failing_task<B>, decltype(opt), data::labeled_batch, Comm> loop(
      ctx, task, opt, {.epochs = 2, .gradient_accumulation = accumulation, .clip_grad_norm = 0.5, .evaluate_every_epoch = false},
      comm);
  loop.fit(batches);
  std::vector<double> values;
  m.visit_parameters("", [&](const std::string&, const auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable) {
      const auto v = B::copy_to_host(ctx, p.value);
      values.insert(values.end(), v.begin(), v.end());
    }
  });
  return values;
}

/// `mine`, and whether it has the same bytes as process 0's.
template <class Comm>
bool same_bits_everywhere(Comm& world, const std::vector<double>& mine) {
  std::string first(reinterpret_cast<const char*>(mine.data()), mine.size() * sizeof(double));
  world.broadcast(first, 0);
  double differs = std::memcmp(first.data(), mine.data(), first.size()) != 0 ? 1.0 : 0.0;
  world.max(std::span<double>(&differs, 1));
  return differs == 0;
}

/// Every check on backend B over `world`; returns the number of failed checks over all processes.
template <class B, class Comm>
int run_checks(Comm& world) {
  const std::size_t rank = world.rank();
  checks check{rank};
  for (const std::size_t accumulation : {std::size_t(1), std::size_t(2)}) {
    const auto alone = train_with<B>(train::single_process{}, accumulation);
    const auto together = train_with<B>(world, accumulation);
    const auto again = train_with<B>(train::single_process{}, accumulation);  // one process is deterministic
    double worst = 0, moved = 0;
    for (std::size_t i = 0; i < alone.size() && i < together.size(); ++i) worst = std::max(worst, std::abs(alone[i] - together[i]));
    for (std::size_t i = 0; i < alone.size(); ++i) moved = std::max(moved, std::abs(alone[i] - again[i]));
    check(together.size() == alone.size() && worst < 1e-11 && moved == 0,
          std::to_string(world.size()) + " processes vs one, accumulation " + std::to_string(accumulation) +
              ": largest parameter difference " + sci(worst));
  }
  // The same bits everywhere after a sum, of host values and (where the communicator sums them
  // where they live) of the backend's tensors.
  std::vector<double> v{0.1 * double(rank + 1), 1e-17, 3.0};
  world.sum(v);
  const double want = 0.05 * double(world.size()) * double(world.size() + 1);
  check(same_bits_everywhere(world, v) && std::abs(v[0] - want) <= 1e-15 * want && v[2] == 3.0 * double(world.size()),
        "a sum of host values is right and has the same bits on every process");
  if constexpr (train::TensorSumCommunicator<Comm, B>) {
    typename B::context ctx;
    std::vector<typename B::value_type> host(1000);
    for (std::size_t i = 0; i < host.size(); ++i) host[i] = std::sin(double(i) + 0.37 * double(rank));
    typename B::tensor a, empty, b;
    B::copy_from_host(ctx, host, shape{10, 100}, a);
    B::copy_from_host(ctx, std::vector<typename B::value_type>(3, 1.0), shape{3}, b);
    std::vector<typename B::tensor*> ts{&a, &empty, &b};
    world.sum_tensors(ctx, std::span<typename B::tensor* const>(ts));
    const auto got = B::copy_to_host(ctx, a);
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      double expected = 0;
      for (std::size_t r = 0; r < world.size(); ++r) expected += std::sin(double(i) + 0.37 * double(r));
      worst = std::max(worst, std::abs(double(got[i]) - expected));
    }
    const auto ones = B::copy_to_host(ctx, b);
    std::vector<double> all(got.begin(), got.end());
    all.insert(all.end(), ones.begin(), ones.end());
    check(same_bits_everywhere(world, all) && worst < 1e-13 && empty.empty() && ones[2] == double(world.size()),
          "a sum of tensors where they live is right (" + sci(worst) + ") and has the same bits on every process");
  }
  // An error on the last process stops all of them at that step, with the reason where it happened.
  std::string message;
  try {
    train_with<B>(world, 1, world.size() - 1);
  } catch (const std::exception& e) {
    message = e.what();
  }
  const bool here = rank == world.size() - 1;
  check(message.find("training stopped at step 2") != std::string::npos &&
            message.find(here ? "a test failure" : "other process(es) failed") != std::string::npos,
        "an error on process " + std::to_string(world.size() - 1) + " stops every process: " + message);
  double failed = check.failures;
  world.sum(std::span<double>(&failed, 1));
  if (rank == 0) std::printf("%s\n", failed == 0 ? "all data-parallel checks passed" : "data-parallel checks FAILED");
  return int(failed);
}

}  // namespace peft::test::data_parallel
