#pragma once
/// \file `peft::train::trainer`: the training loop as library code (ensmallen's and dlib's lesson: a
/// loop every user copies is a loop every user gets subtly wrong). It runs epochs of batches through a
/// `TaskModel`, accumulates gradients, clips, steps the optimizer, evaluates every epoch or every N
/// steps, stops early, saves checkpoints that resume bit-exactly, refuses non-finite losses,
/// gradients and weights, and reports to callbacks (progress bar, JSON-lines metrics, TensorBoard:
/// train/callbacks.hpp).

#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"
#include "peft/loss/cross_entropy.hpp"
#include "peft/train/communicator.hpp"
#include "peft/train/training_state.hpp"

namespace peft::train {

/// A model with its loss, as the trainer drives it. Requirements: `backend` names the backend;
/// `loss(ctx, batch)` runs the forward pass in the context's mode and returns the batch's loss,
/// keeping what `backward` needs; `backward(ctx)` accumulates the gradients of that loss into the
/// trainable parameters; `model()` is the `Module` whose parameters train. Optional:
/// `tokens(batch)` (throughput in the progress bar and logs).
template <class T, class Batch>
concept TaskModel = requires(T& t, typename T::backend::context& ctx, const Batch& b) {
  typename T::backend;
  { t.loss(ctx, b) } -> std::convertible_to<double>;
  t.backward(ctx);
  requires Module<std::remove_cvref_t<decltype(t.model())>>;
};

/// A `TaskModel` that data-parallel training can split: `rows(batch)` (the batch's rows),
/// `slice(batch, first, count)` (rows [first, first + count) as a batch of their own, padded as the
/// whole batch is), `weight(batch)` (what its loss averages over: labels not ignored), and
/// `set_loss_weight(w)` (the next `backward` scales the loss's gradient by w, so that each process's
/// share of a batch counts as in the whole batch's mean).
template <class T, class Batch>
concept ShardableTask = TaskModel<T, Batch> && requires(T& t, const Batch& b, std::size_t n, double w) {
  { t.rows(b) } -> std::convertible_to<std::size_t>;
  { t.slice(b, n, n) } -> std::same_as<Batch>;
  { t.weight(b) } -> std::convertible_to<double>;
  t.set_loss_weight(w);
};

/// The usual task model: a classifier (`forward(ctx, inputs)` -> logits, `backward(ctx, dlogits)`)
/// with softmax cross-entropy on batches that have `inputs` and `labels` (-100 is ignored). Its
/// `outputs()` are the logits of the last batch (the predictions).
template <class Model>
class classification_task {
 public:
  using backend = typename Model::backend;
  using B = backend;

  explicit classification_task(Model& model) : model_(model) {}

  template <class Batch>
  double loss(typename B::context& ctx, const Batch& b) {
    logits_ = &model_.forward(ctx, b.inputs);
    return ce_.forward(ctx, *logits_, b.labels);
  }
  void backward(typename B::context& ctx) {
    if (loss_weight_ == 1.0) {
      model_.backward(ctx, ce_.gradient());
      return;
    }
    B::copy(ctx, ce_.gradient(), weighted_);
    B::scale(ctx, typename B::value_type(loss_weight_), weighted_);
    model_.backward(ctx, weighted_);
  }
  /// Data parallelism (`ShardableTask`), for batches of token sequences (`inputs` an
  /// `encoder_batch`): rows are sequences; a slice keeps the whole batch's padded length; the weight
  /// is the number of labels not ignored (-100).
  template <class Batch>
    requires requires(const Batch& x) { x.inputs.batch_size; x.inputs.seq_len; x.inputs.attention_mask; }
  static std::size_t rows(const Batch& b) {
    return b.inputs.batch_size;
  }
  template <class Batch>
    requires requires(const Batch& x) { x.inputs.batch_size; x.inputs.seq_len; x.inputs.attention_mask; }
  static Batch slice(const Batch& b, std::size_t first, std::size_t count) {
    Batch out;
    const std::size_t seq = b.inputs.seq_len, label_width = b.labels.size() / std::max<std::size_t>(b.inputs.batch_size, 1);
    out.inputs.batch_size = count, out.inputs.seq_len = seq;
    auto cut = [&](const std::vector<std::int32_t>& v, std::size_t width) {
      if (v.empty()) return std::vector<std::int32_t>{};
      return std::vector<std::int32_t>(v.begin() + std::ptrdiff_t(first * width), v.begin() + std::ptrdiff_t((first + count) * width));
    };
    out.inputs.input_ids = cut(b.inputs.input_ids, seq);
    out.inputs.token_type_ids = cut(b.inputs.token_type_ids, seq);
    out.inputs.attention_mask = cut(b.inputs.attention_mask, seq);
    out.labels = cut(b.labels, label_width);
    if constexpr (requires { b.example_indices; })
      if (b.example_indices.size() == b.inputs.batch_size)
        out.example_indices.assign(b.example_indices.begin() + std::ptrdiff_t(first),
                                   b.example_indices.begin() + std::ptrdiff_t(first + count));
    return out;
  }
  template <class Batch>
  static double weight(const Batch& b) {
    double n = 0;
    for (auto y : b.labels) n += y != -100;
    return n;
  }
  void set_loss_weight(double w) noexcept { loss_weight_ = w; }
  /// Non-padding tokens of a batch whose inputs carry an attention mask; else its rows.
  template <class Batch>
  static std::size_t tokens(const Batch& b) {
    if constexpr (requires { b.inputs.attention_mask; }) {
      std::size_t n = 0;
      for (auto v : b.inputs.attention_mask) n += std::size_t(v);
      return n ? n : b.labels.size();
    } else {
      return b.labels.size();
    }
  }
  Model& model() noexcept { return model_; }
  [[nodiscard]] const typename B::tensor& outputs() const { return *logits_; }
  loss::softmax_cross_entropy<B>& criterion() noexcept { return ce_; }

 private:
  Model& model_;
  loss::softmax_cross_entropy<B> ce_;
  const typename B::tensor* logits_ = nullptr;
  double loss_weight_ = 1.0;
  typename B::tensor weighted_;
};

/// Where the loop stands; all of it goes into a checkpoint, so a resumed run continues exactly.
struct train_state {
  std::size_t epoch = 0;        ///< current epoch (0-based)
  std::size_t next_batch = 0;   ///< first batch of `epoch` not yet trained on
  std::size_t step = 0;         ///< optimizer steps taken
  std::size_t window_rows = 0;  ///< batches since the last train log record
  std::size_t window_tokens = 0;
  double window_loss = 0;       ///< sum of their losses
  double trained_seconds = 0;   ///< wall time of earlier runs of this training (resume adds to it)
  double best_score = -1;       ///< best evaluation score so far (-1: none)
  std::size_t evaluations_without_improvement = 0;
  nlohmann::json last_eval;     ///< the last evaluation record (null: none)
  std::uint64_t random_offset = 0;

  [[nodiscard]] nlohmann::json to_json() const {
    return {{"epoch", epoch}, {"next_batch", next_batch}, {"step", step}, {"window_rows", window_rows},
            {"window_tokens", window_tokens}, {"window_loss", window_loss}, {"trained_seconds", trained_seconds},
            {"best_score", best_score}, {"evaluations_without_improvement", evaluations_without_improvement},
            {"last_eval", last_eval}, {"random_offset", random_offset}};
  }
  static train_state from_json(const nlohmann::json& j) {
    train_state s;
    s.epoch = j.at("epoch"), s.next_batch = j.at("next_batch"), s.step = j.at("step");
    s.window_rows = j.at("window_rows"), s.window_tokens = j.at("window_tokens"), s.window_loss = j.at("window_loss");
    s.trained_seconds = j.at("trained_seconds"), s.best_score = j.at("best_score");
    s.evaluations_without_improvement = j.value("evaluations_without_improvement", std::size_t(0));
    s.last_eval = j.at("last_eval"), s.random_offset = j.at("random_offset");
    return s;
  }
};

/// What a callback may ask of the loop.
struct train_control {
  bool stop = false;  ///< stop after this step
  bool save = false;  ///< with `stop`: save a checkpoint first (an interruption)
};

/// One optimizer step as callbacks see it.
struct step_record {
  double loss;       ///< mean loss of the step's micro-batches
  double lr;         ///< learning rate the step used
  double grad_norm;  ///< global gradient norm before clipping
  std::size_t tokens;
};

/// Why `fit` returned.
enum class stop_reason { finished, max_steps, early_stopped, interrupted };

/// Observer of the loop. Every hook has an empty default; override what you need.
class callback {
 public:
  virtual ~callback() = default;
  virtual void on_train_begin(const train_state&) {}
  virtual void on_epoch_begin(const train_state&, std::size_t /*batches*/) {}
  virtual void on_step_end(const train_state&, const step_record&, train_control&) {}
  /// A "train" record every `log_every` steps: event, epoch, step, loss, lr, tokens, elapsed_s.
  virtual void on_log(const train_state&, const nlohmann::json& /*record*/) {}
  /// An "eval" record: the evaluator's metrics with event, split, epoch, step, score.
  virtual void on_evaluate(const train_state&, const nlohmann::json& /*record*/, train_control&) {}
  virtual void on_epoch_end(const train_state&) {}
  virtual void on_train_end(const train_state&, stop_reason) {}
};

/// An evaluation: the score early stopping and `best_score` follow (higher is better), and the
/// metrics that go into the logs.
struct evaluation {
  double score = 0;
  nlohmann::json metrics = nlohmann::json::object();
};

/// Options of the loop. Requirements: epochs > 0, gradient_accumulation > 0, log_every > 0.
struct trainer_options {
  std::size_t epochs = 1;
  std::size_t max_steps = 0;              ///< stop after this many optimizer steps (0: all epochs)
  std::size_t gradient_accumulation = 1;  ///< micro-batches per optimizer step (their gradients averaged)
  double clip_grad_norm = 0;              ///< global-norm clipping (0: off)
  std::size_t log_every = 20;             ///< steps between train log records
  bool evaluate_every_epoch = true;
  std::size_t evaluate_every_steps = 0;   ///< also evaluate every N steps (0: off)
  std::size_t early_stopping_patience = 0;  ///< stop after this many evaluations without improvement (0: off)
  double early_stopping_min_delta = 0;      ///< an improvement must exceed this
  std::filesystem::path checkpoint{};       ///< where checkpoints go (empty: none)
  std::size_t save_every_steps = 0;         ///< periodic checkpoints (0: only at epoch ends and on interruption)
  nlohmann::json identity = nlohmann::json::object();  ///< what a resumed run must match (options, files)
};

/// The loop. `Task` is a `TaskModel` for `Batch`; `Optimizer` is a `peft::optim::optimizer` over
/// `task.model()`; `Comm` a `Communicator` (one process by default). Guarantees: no non-finite loss,
/// gradient or trainable weight survives a step unnoticed (a `numeric_error` names the step and the
/// parameter, and neither a checkpoint nor a result is written after it); a checkpoint saved at any
/// step and resumed gives bit-identical weights, optimizer state and logs to an uninterrupted run
/// with the same batches.
///
/// With several processes (a `ShardableTask`): every process gets the same global batches from its
/// batch source and trains on its block of rows of each (`rows_of`); the loss of its rows is weighted
/// by their share of the batch's weight, so the sum of the processes' gradients, taken once per
/// optimizer step (`Comm::sum`, with the step's loss, tokens, failures and random offset), is the
/// whole batch's gradient, and dropout draws the masks the whole batch would (`context_base::shard`).
/// N processes then train the parameters one process would, up to the order of floating-point sums.
/// Every process keeps the whole optimizer state and evaluates the whole dev set (the results are the
/// same everywhere, so are the decisions); stops (interruption, early stopping) are agreed, an error
/// on one process stops all of them with its message at the step's end, and only rank 0 writes
/// checkpoints. At the end the replicas' weights are compared and a difference is an error.
template <class Task, class Optimizer, class Batch, Communicator Comm = single_process>
  requires TaskModel<Task, Batch>
class trainer {
 public:
  using B = typename Task::backend;
  /// The batches of epoch `e` (the same for the same `e`, so a resumed run sees what the first saw).
  using batch_source = std::function<std::vector<Batch>(std::size_t epoch)>;
  using evaluator = std::function<evaluation(const train_state&)>;

  trainer(typename B::context& ctx, Task& task, Optimizer& opt, trainer_options o, Comm comm = {})
      : ctx_(ctx), task_(task), opt_(opt), o_(std::move(o)), comm_(std::move(comm)) {
    if (o_.epochs == 0 || o_.gradient_accumulation == 0 || o_.log_every == 0)
      throw config_error("trainer: epochs, gradient_accumulation and log_every must be positive");
    if (!(o_.clip_grad_norm >= 0)) throw config_error("trainer: clip_grad_norm must be 0 (off) or positive");
    if constexpr (!ShardableTask<Task, Batch>)
      if (comm_.size() > 1)
        throw config_error("trainer: data-parallel training needs a task that can split its batches (ShardableTask)");
  }

  /// Adds an observer; it must outlive `fit`.
  void add_callback(callback& c) { callbacks_.push_back(&c); }
  /// Work done at every optimizer step `step` (counted from 0): `before` once the step's gradients
  /// are complete (accumulated and averaged), before their norm is measured, clipped and applied;
  /// `after` once the update is applied, with the gradients still there. AdaLoRA's allocator uses
  /// them (`adalora_allocator::regularize`, `::update_and_allocate`).
  using step_hook = std::function<void(typename B::context&, std::size_t step)>;
  void set_step_hooks(step_hook before, step_hook after) {
    before_step_ = std::move(before);
    after_step_ = std::move(after);
  }
  void set_evaluator(evaluator e) { evaluate_ = std::move(e); }

  /// Optimizer steps of a run over `batches_per_epoch` batches per epoch (max_steps applied).
  [[nodiscard]] std::size_t total_steps(std::size_t batches_per_epoch) const {
    const std::size_t per_epoch = (batches_per_epoch + o_.gradient_accumulation - 1) / o_.gradient_accumulation;
    const std::size_t all = o_.epochs * per_epoch;
    return o_.max_steps ? std::min(o_.max_steps, all) : all;
  }

  /// Restores the checkpoint at `o.checkpoint` into the model, the optimizer, the context's random
  /// stream and the loop state. Throws `io_error` when it is missing or was saved by a run with
  /// another `identity`.
  void resume() {
    const auto& path = o_.checkpoint;
    if (path.empty() || !std::filesystem::exists(path))
      throw io::io_error("resume: '" + path.string() + "' does not exist (nothing to resume)");
    const auto rec = load_training_state(ctx_, task_.model(), opt_, path);
    if (!rec.contains("identity") || rec.at("identity") != o_.identity)
      throw io::io_error("resume: '" + path.string() +
                         "' was saved by a run with other options or files; rerun with the same ones");
    state_ = train_state::from_json(rec.at("state"));
    ctx_.random_offset = state_.random_offset;
    resumed_ = true;
  }
  [[nodiscard]] bool resumed() const noexcept { return resumed_; }

  /// Trains until the epochs (or max_steps) are done, early stopping triggers, or a callback stops it.
  stop_reason fit(const batch_source& batches) {
    started_ = clock::now();
    seconds_before_ = state_.trained_seconds;
    for (auto* c : callbacks_) c->on_train_begin(state_);
    std::optional<std::size_t> total;  // steps of this run, from the first epoch's batch count
    bool done = false;
    stop_reason why = stop_reason::finished;
    auto finish = [&](stop_reason r) {
      state_.trained_seconds = elapsed();
      for (auto* c : callbacks_) c->on_train_end(state_, r);
      return r;
    };
    for (; state_.epoch < o_.epochs && !done; ++state_.epoch, state_.next_batch = 0) {
      const auto epoch_batches = batches(state_.epoch);
      if (!total) total = total_steps(epoch_batches.size());
      if (state_.step >= *total) break;
      for (auto* c : callbacks_) c->on_epoch_begin(state_, epoch_batches.size());
      std::size_t micro = 0, step_tokens = 0;
      double step_loss = 0;
      std::string failure;  // data parallel: this process's error, told to all at the step's end
      for (std::size_t b = state_.next_batch; b < epoch_batches.size() && !done; ++b) {
        const Batch& batch = epoch_batches[b];
        ctx_.training = true;
        ctx_.forward_only = false;
        if (micro == 0) opt_.zero_grad(ctx_);
        double l = 0;
        std::size_t tokens = 0;
        if (parallel()) {
          l = parallel_micro_batch(batch, tokens, failure);
        } else {
          try {
            l = task_.loss(ctx_, batch);
          } catch (const numeric_error& e) {  // a loss that checks itself: add where and what to do
            throw numeric_error(peft::detail::concat("training stopped at step ", state_.step + 1, ": ", e.what(),
                                                     "; lower the learning rate", checkpoint_note()));
          }
          if (!std::isfinite(l))
            throw numeric_error(peft::detail::concat("training stopped at step ", state_.step + 1, ": the loss is ", l,
                                                     "; lower the learning rate", checkpoint_note()));
          task_.backward(ctx_);
          if constexpr (requires { task_.tokens(batch); }) tokens = task_.tokens(batch);
          state_.window_loss += l, ++state_.window_rows, state_.window_tokens += tokens;
        }
        ++micro;
        step_loss += l;
        step_tokens += tokens;
        const bool last_of_epoch = b + 1 == epoch_batches.size();
        if (micro < o_.gradient_accumulation && !last_of_epoch) continue;
        if (parallel()) {  // the processes' gradients, loss and tokens summed: the step's
          gather_step(step_loss, step_tokens, failure);
          state_.window_loss += step_loss, state_.window_rows += micro, state_.window_tokens += step_tokens;
        }
        if (micro > 1) opt_.scale_grads(ctx_, 1.0 / double(micro));
        if (before_step_) before_step_(ctx_, state_.step);
        const double norm = opt_.grad_norm(ctx_);
        if (!std::isfinite(norm))
          throw numeric_error(peft::detail::concat("training stopped at step ", state_.step + 1,
                                                   ": the gradient norm is not finite (", norm, "); lower the learning rate",
                                                   checkpoint_note()));
        if (o_.clip_grad_norm > 0) opt_.clip_grad_norm(ctx_, o_.clip_grad_norm);
        const double lr = opt_.current_lr();
        opt_.step(ctx_);
        if (after_step_) after_step_(ctx_, state_.step);
        ++state_.step;
        state_.next_batch = b + 1;
        done = state_.step >= *total;
        train_control control;
        const step_record rec{step_loss / double(micro), lr, norm, step_tokens};
        for (auto* c : callbacks_) c->on_step_end(state_, rec, control);
        agree(control);
        micro = 0, step_loss = 0, step_tokens = 0;
        if (state_.step % o_.log_every == 0 || done) log_train(lr);
        if (o_.evaluate_every_steps && state_.step % o_.evaluate_every_steps == 0 && !last_of_epoch)
          run_evaluation(control);
        if (control.stop && !done) {
          if (!control.save) return finish(stop_reason::early_stopped);
          save_checkpoint("interrupted");
          return finish(stop_reason::interrupted);
        }
        if (o_.save_every_steps && state_.step % o_.save_every_steps == 0 && !done) save_checkpoint("periodic");
      }
      train_control control;
      if (o_.evaluate_every_epoch) run_evaluation(control);
      for (auto* c : callbacks_) c->on_epoch_end(state_);
      agree(control);
      if (control.stop) {
        why = stop_reason::early_stopped;
        break;
      }
      if (!done && state_.epoch + 1 < o_.epochs) {  // the checkpoint says: start the next epoch
        const std::size_t finished = state_.epoch;
        state_.epoch = finished + 1, state_.next_batch = 0;
        save_checkpoint("epoch end");
        state_.epoch = finished;
      }
    }
    require_finite_weights("after the last step");
    if (parallel()) require_identical_replicas();
    if (why == stop_reason::finished && o_.max_steps && state_.step >= o_.max_steps && state_.epoch < o_.epochs)
      why = stop_reason::max_steps;
    return finish(why);
  }

  [[nodiscard]] const train_state& state() const noexcept { return state_; }
  /// Wall time of this training, earlier runs of it included.
  [[nodiscard]] double elapsed() const {
    return seconds_before_ + std::chrono::duration<double>(clock::now() - started_).count();
  }
  /// Throws `numeric_error` naming the first trainable parameter with a non-finite value.
  void require_finite_weights(const char* when) const {
    std::string bad;
    task_.model().visit_parameters("", [&](const std::string& name, const auto& p) {
      if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
        if (bad.empty() && !std::isfinite(B::sum_squares(ctx_, p.value))) bad = name;
    });
    if (!bad.empty())
      throw numeric_error(peft::detail::concat("training stopped at step ", state_.step, ": parameter '", bad,
                                               "' is not finite ", when, "; lower the learning rate", checkpoint_note()));
  }

 private:
  using clock = std::chrono::steady_clock;

  [[nodiscard]] bool parallel() const noexcept { return comm_.size() > 1; }

  /// This process's rows of `batch`: forward and backward with the loss weighted by their share of
  /// the batch's, dropout drawing the whole batch's masks for them. Returns its weighted loss (its
  /// part of the batch's mean); an error is kept in `failure` for the step's end, not thrown, so that
  /// the other processes are not left waiting.
  double parallel_micro_batch(const Batch& batch, std::size_t& tokens, std::string& failure) {
    if constexpr (ShardableTask<Task, Batch>) {
      const std::size_t rows = task_.rows(batch);
      const row_block mine = rows_of(rows, comm_.rank(), comm_.size());
      if (mine.count == 0 || !failure.empty()) return 0;
      double l = 0;
      try {
        const Batch local = task_.slice(batch, mine.first, mine.count);
        const double whole = task_.weight(batch), share = whole > 0 ? task_.weight(local) / whole : 0.0;
        ctx_.shard = {mine.first, mine.count, rows};
        task_.set_loss_weight(share);
        l = task_.loss(ctx_, local);
        if (!std::isfinite(l)) throw numeric_error(peft::detail::concat("the loss is ", l));
        task_.backward(ctx_);
        if constexpr (requires { task_.tokens(local); }) tokens = task_.tokens(local);
        l *= share;
      } catch (const std::exception& e) {
        failure = e.what();
      }
      ctx_.shard = {};
      task_.set_loss_weight(1.0);
      return l;
    } else {
      (void)batch, (void)tokens, (void)failure;
      return 0;
    }
  }

  /// One sum over the processes per optimizer step: every trainable gradient, the step's loss and
  /// tokens, and the count of processes that failed; the random offset agreed (a process with no row
  /// of a small last batch drew nothing). A failure anywhere stops every process here. Gradients are
  /// summed where they live when the communicator can (`TensorSumCommunicator`: NCCL on GPUs), else
  /// through one host buffer with the step's numbers.
  void gather_step(double& step_loss, std::size_t& step_tokens, std::string& failure) {
    gathered_.clear();
    if constexpr (TensorSumCommunicator<Comm, B>) {
      std::vector<typename B::tensor*> grads;
      task_.model().visit_parameters("", [&](const std::string&, auto& p) {
        if constexpr (std::remove_cvref_t<decltype(p)>::trainable) grads.push_back(&p.grad);
      });
      comm_.sum_tensors(ctx_, std::span<typename B::tensor* const>(grads));
    } else {
      task_.model().visit_parameters("", [&](const std::string&, const auto& p) {
        if constexpr (std::remove_cvref_t<decltype(p)>::trainable) {
          const auto g = B::copy_to_host(ctx_, p.grad);
          gathered_.insert(gathered_.end(), g.begin(), g.end());
        }
      });
    }
    gathered_.push_back(step_loss);
    gathered_.push_back(double(step_tokens));
    gathered_.push_back(failure.empty() ? 0.0 : 1.0);
    comm_.sum(gathered_);
    double offset = double(ctx_.random_offset);
    comm_.max(std::span<double>(&offset, 1));
    ctx_.random_offset = std::uint64_t(offset);
    const double failed = gathered_.back();
    if (failed > 0) {
      const std::string what = failure.empty()
                                   ? peft::detail::concat(failed, " other process(es) failed (their message is above)")
                                   : peft::detail::concat("process ", comm_.rank(), ": ", failure);
      failure.clear();
      throw numeric_error(peft::detail::concat("training stopped at step ", state_.step + 1, ": ", what, checkpoint_note()));
    }
    step_tokens = std::size_t(gathered_[gathered_.size() - 2]);
    step_loss = gathered_[gathered_.size() - 3];
    if constexpr (!TensorSumCommunicator<Comm, B>) {
      std::size_t at = 0;
      task_.model().visit_parameters("", [&](const std::string&, auto& p) {
        if constexpr (std::remove_cvref_t<decltype(p)>::trainable) {
          const std::vector<typename B::value_type> g(gathered_.begin() + std::ptrdiff_t(at),
                                                      gathered_.begin() + std::ptrdiff_t(at + p.grad.size()));
          B::copy_from_host(ctx_, g, p.grad.shape(), p.grad);
          at += p.grad.size();
        }
      });
    }
  }

  /// Stops agreed between the processes: one that was asked to stop (a signal arrives at each
  /// separately) stops all at the same step.
  void agree(train_control& control) {
    if (!parallel()) return;
    double flags[2] = {control.stop ? 1.0 : 0.0, control.save ? 1.0 : 0.0};
    comm_.max(flags);
    control.stop = flags[0] > 0, control.save = flags[1] > 0;
  }

  /// The replicas' weights, compared through their sum of squares (equal bits give equal sums).
  void require_identical_replicas() {
    double mine = 0;
    task_.model().visit_parameters("", [&](const std::string&, const auto& p) {
      if constexpr (std::remove_cvref_t<decltype(p)>::trainable) mine += B::sum_squares(ctx_, p.value);
    });
    double range[2] = {mine, -mine};
    comm_.max(range);
    if (range[0] != -range[1])
      throw error(peft::detail::concat("data-parallel training: the processes' weights differ at step ", state_.step,
                                       " (sum of squares ", -range[1], " to ", range[0], "); the replicas went out of step"));
  }

  std::string checkpoint_note() const {
    if (o_.checkpoint.empty()) return " (nothing was saved)";
    if (std::filesystem::exists(o_.checkpoint)) return " (the last checkpoint, " + o_.checkpoint.string() + ", is intact)";
    return " (no checkpoint was written)";
  }
  void log_train(double lr) {
    const nlohmann::json record = {{"event", "train"},
                                   {"epoch", state_.epoch + 1},
                                   {"step", state_.step},
                                   {"loss", state_.window_loss / double(state_.window_rows)},
                                   {"lr", lr},
                                   {"tokens", state_.window_tokens},
                                   {"elapsed_s", elapsed()}};
    for (auto* c : callbacks_) c->on_log(state_, record);
    state_.window_loss = 0, state_.window_rows = 0, state_.window_tokens = 0;
  }
  void run_evaluation(train_control& control) {
    if (!evaluate_) return;
    const evaluation e = evaluate_(state_);
    nlohmann::json record = e.metrics;
    record.update({{"event", "eval"}, {"split", "dev"}, {"epoch", state_.epoch + 1}, {"step", state_.step}});
    state_.last_eval = record;
    if (state_.best_score < 0 || e.score > state_.best_score + o_.early_stopping_min_delta) {
      state_.evaluations_without_improvement = 0;
    } else {
      ++state_.evaluations_without_improvement;
    }
    state_.best_score = std::max(state_.best_score, e.score);
    for (auto* c : callbacks_) c->on_evaluate(state_, record, control);
    if (o_.early_stopping_patience && state_.evaluations_without_improvement >= o_.early_stopping_patience) control.stop = true;
  }
  void save_checkpoint(const char* why) {
    if (o_.checkpoint.empty() || comm_.rank() != 0) return;
    require_finite_weights("before a checkpoint");
    state_.random_offset = ctx_.random_offset;
    train_state saved = state_;
    saved.trained_seconds = elapsed();
    save_training_state(ctx_, task_.model(), opt_, {{"identity", o_.identity}, {"state", saved.to_json()}, {"saved_because", why}},
                        o_.checkpoint);
  }

  typename B::context& ctx_;
  Task& task_;
  Optimizer& opt_;
  trainer_options o_;
  Comm comm_;
  std::vector<double> gathered_;  // the step's host-side sum: gradients (without device sums) and numbers
  std::vector<callback*> callbacks_;
  step_hook before_step_, after_step_;
  evaluator evaluate_;
  train_state state_;
  bool resumed_ = false;
  clock::time_point started_ = clock::now();
  double seconds_before_ = 0;
};

}  // namespace peft::train
