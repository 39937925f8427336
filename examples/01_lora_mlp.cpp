// Example 01: LoRA on a small MLP, step by step.
//
// The story: a classifier was "pretrained" on task A. Task B is a shifted version of A (its decision
// rule differs from A's by a low-rank change). Instead of retraining every weight, we freeze the
// pretrained network and learn a low-rank update with LoRA, then merge it for deployment.
#include <peft/peft.hpp>
#include <peft/train/trainer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

// 1. Choose a backend by a policy type. eigen<float> is the fast CPU path; swapping in
//    peft::backend::xtensor<double> (the reference) or, from a .cu file, peft::backend::cuda<float>
//    changes nothing else below.
using B = peft::backend::eigen<float>;

// 2. The tuning plans are types. "full" trains everything (used here to pretrain the base model);
//    the LoRA plan puts LoRA on the hidden layers and trains only those adapters plus the classifier
//    head, which every plan trains (Hugging Face PEFT's modules_to_save).
using pretrain_plan = peft::plan<peft::full>;
using lora_plan = peft::plan<peft::lora<peft::roles::hidden>>;

namespace {
constexpr std::size_t input_dim = 32, classes = 4, examples = 2048, batch = 64;

// A task: labels are the argmax of a linear "teacher" applied to uniform random inputs.
struct dataset {
  std::vector<float> x;
  std::vector<std::int32_t> y;
};
dataset make_task(const std::vector<double>& teacher, std::uint64_t seed) {
  peft::init_rng rng(seed);
  dataset d;
  d.x.resize(examples * input_dim);
  for (auto& v : d.x) v = float(rng.uniform(-1, 1));
  for (std::size_t i = 0; i < examples; ++i) {
    std::size_t best = 0;
    double best_score = -1e300;
    for (std::size_t c = 0; c < classes; ++c) {
      double s = 0;
      for (std::size_t j = 0; j < input_dim; ++j) s += teacher[c * input_dim + j] * d.x[i * input_dim + j];
      if (s > best_score) best_score = s, best = c;
    }
    d.y.push_back(std::int32_t(best));
  }
  return d;
}

// The task as batches the library trainer can run: inputs on the backend, labels on the host.
struct batch_t {
  B::tensor inputs;
  std::vector<std::int32_t> labels;
};
std::vector<batch_t> batches_of(B::context& ctx, const dataset& d) {
  std::vector<batch_t> out;
  for (std::size_t s = 0; s < examples; s += batch) {
    batch_t b;
    B::copy_from_host(ctx, std::span(d.x).subspan(s * input_dim, batch * input_dim), {batch, input_dim}, b.inputs);
    b.labels.assign(d.y.begin() + std::ptrdiff_t(s), d.y.begin() + std::ptrdiff_t(s + batch));
    out.push_back(std::move(b));
  }
  return out;
}

// Training is library code: peft::train::trainer runs the epochs (zero_grad, forward, loss, backward,
// clipping, step), refuses non-finite losses and weights, and reports to callbacks; this one prints
// the mean training loss every `every` epochs. Works for any model and optimizer.
template <class Model, class Optimizer>
void fit(B::context& ctx, Model& model, Optimizer& opt, const dataset& d, std::size_t epochs, std::size_t every = 0) {
  const auto data = batches_of(ctx, d);
  peft::train::classification_task<Model> task(model);  // the model with softmax cross-entropy
  peft::train::trainer<decltype(task), Optimizer, batch_t> loop(
      ctx, task, opt, {.epochs = epochs, .clip_grad_norm = 1.0, .log_every = data.size(), .evaluate_every_epoch = false});
  struct report : peft::train::callback {
    std::size_t every;
    explicit report(std::size_t e) : every(e) {}
    void on_log(const peft::train::train_state& s, const nlohmann::json& r) override {
      if (every && (s.epoch + 1) % every == 0) std::printf("epoch %2zu  train loss %.4f\n", s.epoch + 1, r["loss"].get<double>());
    }
  } printer(every);
  loop.add_callback(printer);
  loop.fit([&](std::size_t) { return data; });
}

// Accuracy of a model on a dataset, in evaluation mode.
template <class Model>
double accuracy(B::context& ctx, Model& model, const dataset& d) {
  ctx.training = false;
  B::tensor x;
  B::copy_from_host(ctx, d.x, {examples, input_dim}, x);
  const auto logits = B::copy_to_host(ctx, model.forward(ctx, x));
  std::size_t correct = 0;
  for (std::size_t i = 0; i < examples; ++i) {
    const float* row = logits.data() + i * classes;
    correct += std::size_t(std::max_element(row, row + classes) - row) == std::size_t(d.y[i]);
  }
  return double(correct) / double(examples);
}
}  // namespace

int main() {
  const auto start = std::chrono::steady_clock::now();
  B::context ctx;

  // 3. Two related tasks: B's teacher is A's plus a rank-2 change.
  peft::init_rng rng(2024);
  std::vector<double> teacher_a(classes * input_dim), u(classes * 2), v(2 * input_dim);
  for (auto& t : teacher_a) t = rng.normal(0, 1);
  for (auto& t : u) t = rng.normal(0, 1);
  for (auto& t : v) t = rng.normal(0, 1);
  std::vector<double> teacher_b = teacher_a;
  for (std::size_t c = 0; c < classes; ++c)
    for (std::size_t j = 0; j < input_dim; ++j)
      teacher_b[c * input_dim + j] += 0.8 * (u[c * 2] * v[j] + u[c * 2 + 1] * v[input_dim + j]);
  const dataset task_a = make_task(teacher_a, 1), task_b = make_task(teacher_b, 2);

  // 4. Pretrain the base model on task A with full fine-tuning. Sizes are run-time values.
  const peft::models::mlp_options shape{.input_dim = input_dim, .hidden = {128, 128}, .num_labels = classes, .seed = 7};
  peft::models::mlp_classifier<B, pretrain_plan> base(ctx, shape);
  {
    peft::optim::optimizer opt(base, peft::optim::adamw{.lr = 3e-3, .weight_decay = 0.0});
    fit(ctx, base, opt, task_a, 15);
  }
  std::printf("pretrained model: accuracy %.3f on task A, %.3f on task B\n", accuracy(ctx, base, task_a),
              accuracy(ctx, base, task_b));

  // 5. Build the LoRA model (r = 8, alpha = 16: scaling alpha / r = 2) and load the pretrained
  //    weights into it by parameter name. LoRA's B starts at zero, so the model starts out
  //    computing exactly what the pretrained one does.
  peft::models::mlp_classifier<B, lora_plan> model(ctx, shape, {peft::lora_config{.r = 8, .alpha = 16, .dropout = 0.0}});
  const auto transfer = peft::copy_parameters<B>(ctx, base, model);
  std::printf("loaded %zu pretrained tensors; %zu new (LoRA) tensors start fresh\n", transfer.copied, transfer.missing.size());
  std::printf("LoRA model before tuning: accuracy %.3f on task B\n", accuracy(ctx, model, task_b));

  // 6. The report, in Hugging Face PEFT's words.
  peft::print_trainable_parameters(model);

  // 7. Fine-tune on task B. The optimizer only ever sees trainable parameters; LoRA+ style, the B
  //    matrices get a larger learning rate through a per-group option.
  peft::optim::optimizer opt(model, peft::optim::adamw{.lr = 2e-3, .weight_decay = 0.0},
                             peft::optim::linear_schedule{.warmup_steps = 32, .total_steps = 20 * examples / batch});
  opt.set_group_options<peft::groups::lora_b>({.lr_multiplier = 4});
  fit(ctx, model, opt, task_b, 20, 5);
  const double tuned = accuracy(ctx, model, task_b);
  std::printf("LoRA model after tuning: accuracy %.3f on task B\n", tuned);

  // 8. Merge for deployment: W += (alpha / r) B A in every LoRA layer. The outputs do not change
  //    (up to float rounding), and inference no longer pays for the extra matrices.
  ctx.training = false;
  B::tensor x;
  B::copy_from_host(ctx, std::span(task_b.x).first(batch * input_dim), {batch, input_dim}, x);
  const auto before = B::copy_to_host(ctx, model.forward(ctx, x));
  model.merge(ctx);
  const auto after = B::copy_to_host(ctx, model.forward(ctx, x));
  float max_diff = 0;
  for (std::size_t i = 0; i < before.size(); ++i) max_diff = std::max(max_diff, std::abs(before[i] - after[i]));
  std::printf("merged: max |logit difference| = %.2e, accuracy %.3f on task B\n", double(max_diff), accuracy(ctx, model, task_b));

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("done in %.1f s\n", seconds);
  return tuned > 0.9 && max_diff < 1e-3f ? 0 : 1;
}
