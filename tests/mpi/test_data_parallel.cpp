// Data-parallel training over MPI, run as `mpiexec -np 2 peft_mpi_tests`: the trainer with an
// `mpi_communicator` trains the parameters that one process trains on the same global batches (a
// BERT classifier with LoRA and BitFit, dropout on, gradient accumulation, clipping, a last batch too
// small for every process to get a row), to 1e-11 in double; an error on one process stops every
// process at the step's end with the same step in its message; the sum is the same on every process.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bodies/scenarios.hpp"
#include "peft/backend/eigen.hpp"
#include "peft/data/batching.hpp"
#include "peft/methods/bitfit.hpp"
#include "peft/methods/lora.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/train/mpi_communicator.hpp"
#include "peft/train/trainer.hpp"

using namespace peft;
using B = backend::eigen<double>;
using plan_t = plan<methods::lora<roles::query, roles::value>, methods::bitfit>;
using model_t = models::bert_for_sequence_classification<B, plan_t>;

namespace {
int failures = 0;
void check(bool ok, const std::string& what, std::size_t rank) {
  if (!ok) ++failures;
  if (!ok || rank == 0) std::printf("%s (process %zu): %s\n", ok ? "ok" : "FAIL", rank, what.c_str());
}

/// Batches of `rows` sequences of length 7 (some padded), labels 0..2, for epoch `epoch`; the last
/// batch of each epoch has a single row.
std::vector<data::labeled_batch> batches(std::size_t epoch) {
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
struct failing_task : train::classification_task<model_t> {
  using classification_task::classification_task;
  std::size_t calls = 0, fail_at = 0;
  template <class Batch>
  double loss(B::context& ctx, const Batch& b) {
    if (++calls == fail_at) throw error("a test failure");
    return classification_task::loss(ctx, b);
  }
};

/// Trains a fresh model (same seed everywhere) for two epochs with `comm`; returns its trainable
/// values. `fail_on_rank`: that process's forward fails in the second step.
template <class Comm>
std::vector<double> train_with(Comm comm, std::size_t accumulation, std::size_t fail_on_rank = 99) {
  B::context ctx;
  ctx.seed = 17;
  model_t m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 5},
            {lora_config{.r = 4, .alpha = 8, .dropout = 0.2}});
  test::randomize_trainable(ctx, m, 3, 0.3);  // away from LoRA's B = 0
  optim::optimizer opt(m, optim::adamw{.lr = 2e-2});
  failing_task task(m);
  if (fail_on_rank == comm.rank()) task.fail_at = accumulation + 1;
  train::trainer<failing_task, decltype(opt), data::labeled_batch, Comm> loop(
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
}  // namespace

int main(int argc, char** argv) {
  train::mpi_session session(argc, argv);
  train::mpi_communicator world;
  const std::size_t rank = world.rank();
  if (world.size() < 2) {
    std::printf("run with mpiexec -np 2 or more\n");
    return 1;
  }
  for (const std::size_t accumulation : {std::size_t(1), std::size_t(2)}) {
    const auto alone = train_with(train::single_process{}, accumulation);
    const auto together = train_with(world, accumulation);
    double worst = 0, moved = 0;
    const auto again = train_with(train::single_process{}, accumulation);  // one process is deterministic
    for (std::size_t i = 0; i < alone.size(); ++i) worst = std::max(worst, std::abs(alone[i] - together[i]));
    for (std::size_t i = 0; i < alone.size(); ++i) moved = std::max(moved, std::abs(alone[i] - again[i]));
    check(together.size() == alone.size() && worst < 1e-11 && moved == 0,
          std::to_string(world.size()) + " processes vs one, accumulation " + std::to_string(accumulation) +
              ": largest parameter difference " + [&] { char b[32]; std::snprintf(b, sizeof b, "%.1e", worst); return std::string(b); }(),
          rank);
  }
  // The same bits everywhere after a sum.
  std::vector<double> v{0.1 * double(rank + 1), 1e-17, 3.0};
  world.sum(v);
  std::vector<double> first = v;
  std::string text(reinterpret_cast<const char*>(first.data()), first.size() * sizeof(double));
  world.broadcast(text, 0);
  check(std::memcmp(text.data(), v.data(), text.size()) == 0, "a sum gives the same bits on every process", rank);
  // An error on the last process stops all of them at that step, with the reason where it happened.
  std::string message;
  try {
    train_with(world, 1, world.size() - 1);
  } catch (const std::exception& e) {
    message = e.what();
  }
  const bool here = rank == world.size() - 1;
  check(message.find("training stopped at step 2") != std::string::npos &&
            message.find(here ? "a test failure" : "other process(es) failed") != std::string::npos,
        "an error on process " + std::to_string(world.size() - 1) + " stops every process: " + message, rank);
  double failed = failures;
  world.sum(std::span<double>(&failed, 1));
  if (rank == 0) std::printf("%s\n", failed == 0 ? "all data-parallel checks passed" : "data-parallel checks FAILED");
  return failed == 0 ? 0 : 1;
}
