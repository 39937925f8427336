// Training utilities: resumable training state (bitwise resume), entity-level F1 as seqeval computes
// it, run-time named schedules.
#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <memory>

#include "bodies/scenarios.hpp"
#include "peft/backend/eigen.hpp"
#include "peft/data/batching.hpp"
#include "peft/optim/schedule.hpp"
#include "peft/train/metrics.hpp"
#include "peft/train/training_state.hpp"
#include "support/fixtures.hpp"

using namespace peft;
namespace fs = std::filesystem;

namespace {
using F = backend::eigen<float>;  // the state file stores F32, so float runs resume bitwise
using P = plan<methods::lora<roles::query, roles::value>, methods::bitfit>;
using model_t = models::bert_for_sequence_classification<F, P>;
const method_config cfg{lora_config{.r = 4, .alpha = 8, .dropout = 0.2}};

struct run {
  F::context ctx;
  std::unique_ptr<model_t> m;
  std::unique_ptr<optim::optimizer<model_t, optim::adamw, optim::named_schedule>> opt;
  loss::softmax_cross_entropy<F> ce;
  run() {
    ctx.training = true;
    ctx.seed = 3;
    m = std::make_unique<model_t>(ctx, test::tiny_bert_config(), models::head_options{.num_labels = 3, .seed = 1}, cfg);
    opt = std::make_unique<optim::optimizer<model_t, optim::adamw, optim::named_schedule>>(
        *m, optim::adamw{.lr = 1e-2}, optim::named_schedule::from_name("linear", 2, 6));
  }
  void steps(int n) {
    const auto batch = test::tiny_batch();
    const std::vector<std::int32_t> labels{2, 0};
    for (int i = 0; i < n; ++i) {
      opt->zero_grad(ctx);
      ce.forward(ctx, m->forward(ctx, batch), labels);
      m->backward(ctx, ce.gradient());
      opt->step(ctx);
    }
  }
  std::vector<std::vector<float>> trainable() {
    std::vector<std::vector<float>> out;
    m->visit_parameters("", [&](const std::string&, const auto& p) {
      if constexpr (std::remove_cvref_t<decltype(p)>::trainable) out.push_back(F::copy_to_host(ctx, p.value));
    });
    return out;
  }
};
}  // namespace

BOOST_AUTO_TEST_SUITE(train_utilities)

BOOST_AUTO_TEST_CASE(training_state_resumes_bitwise) {
  const fs::path file = fs::temp_directory_path() / ("peft-state-" + std::to_string(::getpid()) + ".safetensors");
  run straight;
  straight.steps(6);

  run first;
  first.steps(4);
  train::save_training_state(first.ctx, *first.m, *first.opt, {{"random_offset", first.ctx.random_offset}, {"note", "x"}}, file);

  run resumed;  // a fresh process: same construction, then the saved state
  const auto record = train::load_training_state(resumed.ctx, *resumed.m, *resumed.opt, file);
  BOOST_TEST(record["note"] == "x");
  BOOST_TEST(resumed.opt->steps_taken() == 4);
  resumed.ctx.random_offset = record["random_offset"].get<std::uint64_t>();
  resumed.steps(2);
  BOOST_TEST((resumed.trainable() == straight.trainable()));  // bitwise: weights, moments, schedule, dropout

  // A state saved without the moments' step count differs: the check above can fail.
  run wrong;
  train::load_training_state(wrong.ctx, *wrong.m, *wrong.opt, file);
  wrong.opt->set_steps_taken(0);
  wrong.ctx.random_offset = record["random_offset"].get<std::uint64_t>();
  wrong.steps(2);
  BOOST_TEST(!(wrong.trainable() == straight.trainable()));

  // Another plan's model cannot take the file; the message names it and the tensor.
  using other_t = models::bert_for_sequence_classification<F, plan<methods::lora<roles::query, roles::value>>>;
  F::context ctx;
  other_t other(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  optim::optimizer other_opt(other, optim::adamw{});
  BOOST_CHECK_EXCEPTION(train::load_training_state(ctx, other, other_opt, file), io::io_error, [&](const io::io_error& e) {
    const std::string w = e.what();
    return w.find(file.string()) != std::string::npos && w.find("tensors") != std::string::npos;
  });
  BOOST_CHECK_THROW(train::load_training_state(ctx, other, other_opt, file.string() + ".missing"), io::io_error);
  fs::remove(file);
}

BOOST_AUTO_TEST_CASE(entity_f1_matches_seqeval) {
  // seqeval's README example: MISC is predicted one word early (wrong span), PER is right.
  const std::vector<std::vector<std::string>> gold = {{"O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"}, {"B-PER", "I-PER", "O"}};
  const std::vector<std::vector<std::string>> pred = {{"O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"}, {"B-PER", "I-PER", "O"}};
  const auto s = train::entity_f1(pred, gold);
  BOOST_TEST(s.correct == 1u);
  BOOST_TEST(s.predicted == 2u);
  BOOST_TEST(s.gold == 2u);
  BOOST_TEST(s.f1 == 0.5, boost::test_tools::tolerance(1e-12));

  // conlleval chunking: I- after O (or after another type) starts an entity; B- after I- splits.
  const auto spans = train::entity_spans({"I-PER", "I-PER", "I-LOC", "O", "B-LOC", "B-LOC", "I-LOC", "I-PER"});
  const std::vector<train::entity_span> expected = {
      {0, 0, 2, "PER"}, {0, 2, 3, "LOC"}, {0, 4, 5, "LOC"}, {0, 5, 7, "LOC"}, {0, 7, 8, "PER"}};
  BOOST_TEST((spans == expected));
  BOOST_TEST(train::entity_f1({{"O", "O"}}, {{"O", "O"}}).f1 == 0.0);  // nothing to find, nothing found
  const auto half = train::entity_f1({{"B-X", "O", "B-Y"}}, {{"B-X", "O", "O"}});
  BOOST_TEST(half.precision == 0.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(half.recall == 1.0, boost::test_tools::tolerance(1e-12));
  BOOST_CHECK_THROW(train::entity_spans({"S-PER"}), error);
  BOOST_CHECK_THROW(train::entity_f1({{"O"}}, {{"O", "O"}}), error);
  BOOST_TEST(train::accuracy({1, 0, 1, 1}, {1, 1, 1, 0}) == 0.5);
}

BOOST_AUTO_TEST_CASE(named_schedules_match_the_typed_ones) {
  const auto lin = optim::named_schedule::from_name("linear", 10, 100);
  const auto cos = optim::named_schedule::from_name("cosine", 10, 100);
  const auto con = optim::named_schedule::from_name("constant", 4, 100);
  for (std::int64_t s : {0, 5, 10, 37, 99, 100}) {
    BOOST_TEST(lin(s) == (optim::linear_schedule{10, 100}(s)));
    BOOST_TEST(cos(s) == (optim::cosine_schedule{10, 100}(s)));
  }
  BOOST_TEST(con(2) == 0.5);
  BOOST_TEST(con(50) == 1.0);
  BOOST_CHECK_THROW(optim::named_schedule::from_name("step", 0, 10), config_error);
  BOOST_CHECK_THROW(optim::named_schedule::from_name("linear", 20, 10), config_error);
}

BOOST_AUTO_TEST_CASE(over_long_sequences_are_errors_or_counted) {
  const auto tok = text::wordpiece_tokenizer::from_vocab_file(fs::path(PEFT_TEST_FIXTURES) / "tokenizer" / "vocab_uncased.txt", true);
  const std::vector<data::labeled_text> ex = {{"a short one", std::nullopt, "pos", 3},
                                              {"this sentence is rather longer than the limit", std::nullopt, "neg", 4}};
  const data::label_set labels({"neg", "pos"});
  data::batch_stats stats;
  const auto batches = data::make_classification_batches(tok, ex, labels, {.batch_size = 2, .max_length = 6}, "in.tsv", &stats);
  BOOST_TEST(stats.truncated == 1u);
  BOOST_TEST(stats.examples == 2u);
  BOOST_TEST(batches.at(0).inputs.seq_len == 6u);
  BOOST_CHECK_EXCEPTION(
      data::make_classification_batches(tok, ex, labels, {.batch_size = 2, .max_length = 6, .truncate = false}, "in.tsv"),
      data::data_error, [](const data::data_error& e) {
        return std::string(e.what()).find("in.tsv:4: 10 tokens (with [CLS]/[SEP]) exceed the maximum length 6") != std::string::npos;
      });
}

BOOST_AUTO_TEST_SUITE_END()

// ---- the library trainer -------------------------------------------------------------------------
#include "peft/models/mlp.hpp"
#include "peft/optim/sgd.hpp"
#include "peft/train/trainer.hpp"

namespace {
using D = backend::eigen<double>;
using mlp_t = models::mlp_classifier<D, plan<methods::full>>;
template <class X = D>
struct mlp_batch_of {
  typename X::tensor inputs;
  std::vector<std::int32_t> labels;
};
using mlp_batch = mlp_batch_of<D>;
/// `n` batches of `rows` rows each, the same data in the same order whatever the split.
template <class X = D>
std::vector<mlp_batch_of<X>> mlp_batches(typename X::context& ctx, std::size_t rows, std::size_t n, double poison = 0) {
  std::vector<mlp_batch_of<X>> out;
  for (std::size_t b = 0; b < n; ++b) {
    mlp_batch_of<X> x;
    std::vector<typename X::value_type> v(rows * 6);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = typename X::value_type(std::sin(double(b * rows * 6 + i) * 0.37) + poison);
    X::copy_from_host(ctx, v, {rows, 6}, x.inputs);
    for (std::size_t r = 0; r < rows; ++r) x.labels.push_back(std::int32_t((b * rows + r) % 3));
    out.push_back(std::move(x));
  }
  return out;
}
using mlp_trainer = train::trainer<train::classification_task<mlp_t>, optim::optimizer<mlp_t, optim::sgd>, mlp_batch>;
template <class M>
std::vector<double> weights_of(typename M::backend::context& ctx, const M& m) {
  std::vector<double> w;
  m.visit_parameters("", [&](const std::string&, const auto& p) {
    const auto v = M::backend::copy_to_host(ctx, p.value);
    w.insert(w.end(), v.begin(), v.end());
  });
  return w;
}
const models::mlp_options mlp_shape{.input_dim = 6, .hidden = {8}, .num_labels = 3, .seed = 4};
}  // namespace

BOOST_AUTO_TEST_SUITE(library_trainer)

BOOST_AUTO_TEST_CASE(gradient_accumulation_equals_the_larger_batch) {
  auto train_with = [](std::size_t rows, std::size_t n, std::size_t accumulation) {
    D::context ctx;
    mlp_t m(ctx, mlp_shape);
    optim::optimizer opt(m, optim::sgd{.lr = 0.3});
    train::classification_task<mlp_t> task(m);
    mlp_trainer loop(ctx, task, opt, {.epochs = 2, .gradient_accumulation = accumulation, .evaluate_every_epoch = false});
    const auto data = mlp_batches(ctx, rows, n);
    loop.fit([&](std::size_t) { return data; });
    BOOST_TEST(loop.state().step == 2 * n / accumulation);
    return weights_of(ctx, m);
  };
  const auto big = train_with(8, 3, 1), accumulated = train_with(4, 6, 2), plain = train_with(4, 6, 1);
  double diff = 0, other = 0;
  for (std::size_t i = 0; i < big.size(); ++i)
    diff = std::max(diff, std::abs(big[i] - accumulated[i])), other = std::max(other, std::abs(big[i] - plain[i]));
  BOOST_TEST(diff < 1e-12, "accumulated 2 x 4 rows vs batches of 8: " << diff);
  BOOST_TEST(other > 1e-3, "control: twice the steps on the small batches should differ (" << other << ")");
}

BOOST_AUTO_TEST_CASE(interrupted_and_resumed_equals_uninterrupted) {
  const fs::path ck = fs::temp_directory_path() / "peft-trainer-resume.safetensors";
  fs::remove(ck);
  struct stop_at : train::callback {
    std::size_t n;
    explicit stop_at(std::size_t n) : n(n) {}
    void on_step_end(const train::train_state& s, const train::step_record&, train::train_control& c) override {
      if (s.step == n) c.stop = c.save = true;
    }
  };
  // In float: checkpoints store float32, so a float run resumes bitwise.
  using fmlp_t = models::mlp_classifier<F, plan<methods::full>>;
  using fmlp_trainer = train::trainer<train::classification_task<fmlp_t>, optim::optimizer<fmlp_t, optim::sgd>, mlp_batch_of<F>>;
  auto run = [&](std::size_t interrupt_after, bool resume) {
    F::context ctx;
    ctx.seed = 11;
    fmlp_t m(ctx, {.input_dim = 6, .hidden = {8}, .num_labels = 3, .dropout = 0.3, .seed = 4});
    optim::optimizer opt(m, optim::sgd{.lr = 0.2, .momentum = 0.9});
    train::classification_task<fmlp_t> task(m);
    fmlp_trainer loop(ctx, task, opt, {.epochs = 3, .evaluate_every_epoch = false, .checkpoint = ck, .identity = {{"run", 1}}});
    if (resume) loop.resume();
    stop_at stopper(interrupt_after);
    loop.add_callback(stopper);
    const auto data = mlp_batches<F>(ctx, 4, 5);
    const auto why = loop.fit([&](std::size_t) { return data; });
    return std::pair(why, weights_of(ctx, m));
  };
  const auto straight = run(0, false);
  BOOST_TEST((straight.first == train::stop_reason::finished));
  fs::remove(ck);
  BOOST_TEST((run(7, false).first == train::stop_reason::interrupted));  // mid-epoch 2, dropout on
  BOOST_REQUIRE(fs::exists(ck));
  const auto resumed = run(0, true);
  BOOST_TEST((resumed.second == straight.second), "resumed weights differ from the uninterrupted run");
  // A checkpoint of another run is refused.
  {
    F::context ctx;
    fmlp_t m(ctx, {.input_dim = 6, .hidden = {8}, .num_labels = 3, .dropout = 0.3, .seed = 4});
    optim::optimizer opt(m, optim::sgd{.lr = 0.2, .momentum = 0.9});
    train::classification_task<fmlp_t> task(m);
    fmlp_trainer loop(ctx, task, opt, {.checkpoint = ck, .identity = {{"run", 2}}});
    BOOST_CHECK_THROW(loop.resume(), io::io_error);
  }
  fs::remove(ck);
}

BOOST_AUTO_TEST_CASE(early_stopping_and_the_non_finite_guard) {
  D::context ctx;
  mlp_t m(ctx, mlp_shape);
  optim::optimizer opt(m, optim::sgd{.lr = 0.1});
  train::classification_task<mlp_t> task(m);
  mlp_trainer loop(ctx, task, opt, {.epochs = 50, .early_stopping_patience = 2});
  int evaluations = 0;
  loop.set_evaluator([&](const train::train_state&) { return train::evaluation{++evaluations == 1 ? 0.9 : 0.5, {}}; });
  const auto data = mlp_batches(ctx, 4, 2);
  BOOST_TEST((loop.fit([&](std::size_t) { return data; }) == train::stop_reason::early_stopped));
  BOOST_TEST(evaluations == 3);  // the best, then two without improvement
  BOOST_TEST(loop.state().best_score == 0.9);

  mlp_t n(ctx, mlp_shape);
  optim::optimizer opt2(n, optim::sgd{.lr = 0.1});
  train::classification_task<mlp_t> task2(n);
  mlp_trainer bad(ctx, task2, opt2, {.epochs = 1});
  const auto poisoned = mlp_batches(ctx, 4, 2, std::numeric_limits<double>::quiet_NaN());
  BOOST_CHECK_EXCEPTION(bad.fit([&](std::size_t) { return poisoned; }), numeric_error, [](const numeric_error& e) {
    return std::string(e.what()).find("training stopped at step 1") != std::string::npos;
  });
}

BOOST_AUTO_TEST_SUITE_END()
