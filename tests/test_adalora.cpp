// AdaLoRA: gradients against finite differences on both CPU backends (alone, under BitFit, in a
// BERT), the forward against a hand computation, the start as the base model, merge and unmerge; the
// allocator: the cubic budget schedule, the importance EMAs and masks against an independent
// computation, the orthogonal regulariser's gradient against finite differences of its value, the
// final mask held; PEFT's file format both ways (pruned triplets, rank_pattern), the training state,
// bad configs.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <fstream>

#include "bodies/scenarios.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/methods/adalora.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/train/report.hpp"
#include "peft/train/training_state.hpp"
#include "support/adapter_config.hpp"
#include "support/backends.hpp"
#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace peft;
using test::cpu_double_backends;
using test::temp_dir;

namespace {
using ada_plan = plan<methods::adalora<roles::hidden>>;
using ada_bitfit_plan = plan<methods::adalora<roles::hidden>, methods::bitfit>;
using bert_ada = plan<methods::adalora<roles::query, roles::value>>;

const layers::linear_options opts{.in_features = 7, .out_features = 5, .bias = true, .name = "h", .seed = 9};

method_config ada_methods(std::size_t init_r = 4, bool identity = false, double dropout = 0.0) {
  return method_config{adalora_config{.init_r = init_r, .target_r = 2, .alpha = 6, .dropout = dropout, .total_step = 10,
                                      .init_lora_weights = identity}};
}

template <class B, class M>
std::vector<typename B::value_type> logits_of(typename B::context& ctx, M& m) {
  return B::copy_to_host(ctx, m.forward(ctx, test::tiny_batch()));
}

/// Host values of every parameter of group G of `m`, by name.
template <class G, class B, class M>
std::map<std::string, std::vector<double>> values_of(typename B::context& ctx, const M& m, bool grads = false) {
  std::map<std::string, std::vector<double>> out;
  m.visit_parameters("", [&](const std::string& n, const auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    if constexpr (std::is_same_v<typename P::group, G>) {
      if constexpr (P::trainable) {
        const auto v = B::copy_to_host(ctx, grads ? p.grad : p.value);
        out[n] = std::vector<double>(v.begin(), v.end());
      } else if (!grads) {
        const auto v = B::copy_to_host(ctx, p.value);
        out[n] = std::vector<double>(v.begin(), v.end());
      }
    }
  });
  return out;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(adalora)

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_alone_composed_and_in_a_model, B, cpu_double_backends) {
  for (const double dropout : {0.0, 0.3}) {
    typename B::context ctx;
    ctx.training = true;
    ctx.seed = 3;
    typename ada_plan::template linear<roles::hidden, B> l(ctx, opts, ada_methods(4, false, dropout));
    test::randomize_trainable(ctx, l, 4);
    const std::string e = test::check_gradients(ctx, l, test::random_tensor<B>(ctx, {2, 3, 7}, 5));
    BOOST_TEST(e.empty(), "adalora dropout " << dropout << ": " << e);
  }
  typename B::context ctx;
  ctx.training = true;
  typename ada_bitfit_plan::template linear<roles::hidden, B> c(ctx, opts, ada_methods());
  test::randomize_trainable(ctx, c, 6);
  std::string e = test::check_gradients(ctx, c, test::random_tensor<B>(ctx, {4, 7}, 7));
  BOOST_TEST(e.empty(), "adalora+bitfit: " << e);
  models::bert_for_sequence_classification<B, bert_ada> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, ada_methods(3));
  test::randomize_trainable(ctx, m, 2, 0.3);
  e = test::check_model_gradients(ctx, m, test::tiny_batch());
  BOOST_TEST(e.empty(), e);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(forward_matches_a_hand_computation_and_starts_as_the_base, B, cpu_double_backends) {
  typename B::context ctx;
  typename ada_plan::template linear<roles::hidden, B> l(ctx, opts, ada_methods(3));
  test::randomize_trainable(ctx, l, 11);
  const auto w = B::copy_to_host(ctx, l.base_linear().weight().value), b = B::copy_to_host(ctx, l.base_linear().bias().value);
  const auto q = B::copy_to_host(ctx, l.lora_A().weight().value), p = B::copy_to_host(ctx, l.lora_B().weight().value);
  const auto ev = B::copy_to_host(ctx, l.lora_E().value);
  BOOST_TEST(l.lora_E().value.shape().str() == "[3, 1]");
  BOOST_TEST(l.scaling() == 6.0 / (3.0 + 1e-5));  // lora_alpha / (ranknum + 1e-5), as PEFT
  const auto xt = test::random_tensor<B>(ctx, {4, 7}, 12);
  const auto x = B::copy_to_host(ctx, xt);
  const auto y = B::copy_to_host(ctx, l.forward(ctx, xt));
  for (std::size_t r = 0; r < 4; ++r)
    for (std::size_t o = 0; o < 5; ++o) {
      double want = b[o];
      for (std::size_t i = 0; i < 7; ++i) want += w[o * 7 + i] * x[r * 7 + i];
      for (std::size_t k = 0; k < 3; ++k) {
        double qx = 0;
        for (std::size_t i = 0; i < 7; ++i) qx += q[k * 7 + i] * x[r * 7 + i];
        want += l.scaling() * p[o * 3 + k] * ev[k] * qx;
      }
      BOOST_TEST(y[r * 5 + o] == want, boost::test_tools::tolerance(1e-12));
    }
  // PEFT's initialisation: E = 0, so the layer is its base.
  layers::linear<B> base(ctx, opts);
  typename ada_plan::template linear<roles::hidden, B> fresh(ctx, opts, ada_methods(3, true));
  BOOST_TEST(B::copy_to_host(ctx, fresh.forward(ctx, xt)) == B::copy_to_host(ctx, base.forward(ctx, xt)),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE_TEMPLATE(merges_and_unmerges, B, cpu_double_backends) {
  typename B::context ctx;
  typename ada_bitfit_plan::template linear<roles::hidden, B> l(ctx, opts, ada_methods());
  test::randomize_trainable(ctx, l, 10);
  const auto w0 = B::copy_to_host(ctx, l.base_linear().weight().value);
  const auto x = test::random_tensor<B>(ctx, {6, 7}, 6);
  const auto y = B::copy_to_host(ctx, l.forward(ctx, x));
  l.merge(ctx);
  BOOST_CHECK_THROW(l.merge(ctx), error);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.forward(ctx, x)), y) < 1e-12);
  l.unmerge(ctx);
  BOOST_CHECK_THROW(l.unmerge(ctx), error);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.base_linear().weight().value), w0) < 1e-13);
}

BOOST_AUTO_TEST_CASE(budget_schedule_is_peft_cubic) {
  using B = test::eigen_d;
  B::context ctx;
  adalora_config c{.init_r = 6, .target_r = 2, .tinit = 3, .tfinal = 4, .delta_t = 2, .total_step = 20};
  models::bert_for_sequence_classification<B, bert_ada> m(ctx, test::tiny_bert_config(), {.num_labels = 3}, method_config{c});
  methods::adalora_allocator<decltype(m)> a(m, c);
  BOOST_TEST(a.initial_budget() == 4u * 6u);  // query and value in two layers
  BOOST_TEST(a.target_budget() == 4u * 2u);
  for (std::size_t step = 0; step <= 22; ++step) {
    const auto [budget, mask] = a.budget_schedule(step);
    if (step <= 3) {
      BOOST_TEST((budget == 24u && !mask), "step " << step);
    } else if (step > 16) {
      BOOST_TEST((budget == 8u && mask), "step " << step);
    } else {
      const double mul = 1.0 - double(step - 3) / double(20 - 4 - 3);
      BOOST_TEST(budget == std::size_t((24 - 8) * mul * mul * mul + 8), "step " << step);
      BOOST_TEST(mask == (step % 2 == 0), "step " << step);
    }
  }
  // Schedules that leave no budgeting phase, and other bad options, are refused by name.
  auto refuses = [&](adalora_config bad, const std::string& want) {
    try {
      methods::adalora_allocator<decltype(m)> x(m, bad);
      BOOST_FAIL("accepted: " << want);
    } catch (const config_error& e) {
      BOOST_TEST(std::string(e.what()).find(want) != std::string::npos, e.what());
    }
  };
  refuses(adalora_config{.total_step = 0}, "total_step");
  refuses(adalora_config{.tinit = 5, .tfinal = 5, .total_step = 10}, "leaves no budgeting phase");
  refuses(adalora_config{.delta_t = 0, .total_step = 10}, "deltaT");
  refuses(adalora_config{.beta1 = 1.0, .total_step = 10}, "beta1");
  refuses(adalora_config{.orth_reg_weight = -1, .total_step = 10}, "orth_reg_weight");
}

BOOST_AUTO_TEST_CASE(importance_and_masks_match_an_independent_computation) {
  using B = test::eigen_d;
  B::context ctx;
  const adalora_config c{.init_r = 4, .target_r = 2, .beta1 = 0.8, .beta2 = 0.7, .total_step = 10};
  models::bert_for_sequence_classification<B, bert_ada> m(ctx, test::tiny_bert_config(), {.num_labels = 3}, method_config{c});
  test::randomize_trainable(ctx, m, 3);
  // Gradients: random values in the trainable parameters' gradients.
  std::uint64_t k = 0;
  m.visit_parameters("", [&](const std::string&, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable) p.grad = test::random_tensor<B>(ctx, p.value.shape(), 100 + k++);
  });
  const auto v = values_of<groups::adalora, B>(ctx, m), g = values_of<groups::adalora, B>(ctx, m, true);
  methods::adalora_allocator<decltype(m)> a(m, c);
  const std::size_t step = 5;  // in the budgeting phase, deltaT 1: masks now
  const auto [budget, mask] = a.budget_schedule(step);
  BOOST_REQUIRE(mask);
  a.update_and_allocate(ctx, step);

  // One EMA step from zero: sensitivity (1 − b1)|θg|, uncertainty (1 − b2)|θg − sensitivity|.
  std::map<std::string, std::vector<double>> score;  // per module, per triplet
  std::vector<double> all;
  for (const auto& [name, _] : v) {
    const std::string suffix = ".lora_E";
    if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string mod = name.substr(0, name.size() - suffix.size());
    auto element = [&](const std::string& n, std::size_t i) {
      const double now = std::abs(v.at(n)[i] * g.at(n)[i]);
      const double sens = (1 - 0.8) * now;
      return sens * ((1 - 0.7) * std::abs(now - sens));
    };
    const auto& q = v.at(mod + ".lora_A.weight");
    const std::size_t r = 4, in = q.size() / r, out = v.at(mod + ".lora_B.weight").size() / r;
    for (std::size_t t = 0; t < r; ++t) {
      double qs = 0, ps = 0;
      for (std::size_t j = 0; j < in; ++j) qs += element(mod + ".lora_A.weight", t * in + j);
      for (std::size_t i = 0; i < out; ++i) ps += element(mod + ".lora_B.weight", i * r + t);
      score[mod].push_back(element(name, t) + qs / double(in) + ps / double(out));
      all.push_back(score[mod].back());
    }
  }
  std::sort(all.begin(), all.end());
  const double threshold = all[16 - budget - 1];
  const auto pattern = a.rank_pattern(ctx);
  const auto e_after = values_of<groups::adalora, B>(ctx, m);
  std::size_t kept = 0;
  for (const auto& [mod, s] : score)
    for (std::size_t t = 0; t < s.size(); ++t) {
      const bool keep = s[t] > threshold;
      kept += keep;
      BOOST_TEST(pattern.at(mod)[t] == keep, mod << " triplet " << t);
      BOOST_TEST(e_after.at(mod + ".lora_E")[t] == (keep ? v.at(mod + ".lora_E")[t] : 0.0), mod << " E " << t);
    }
  BOOST_TEST(kept == budget);  // random scores: no ties
  const auto state = values_of<groups::adalora_state, B>(ctx, m);
  const std::string q0 = "bert.encoder.layer.0.attention.self.query";
  const double now = std::abs(v.at(q0 + ".lora_A.weight")[3] * g.at(q0 + ".lora_A.weight")[3]);
  BOOST_TEST(state.at(q0 + ".adalora_state.lora_A.exp_avg_ipt")[3] == 0.2 * now, boost::test_tools::tolerance(1e-12));

  // After total_step − tfinal the final mask holds: E entries the optimizer revived are zeroed again.
  m.visit_parameters("", [&](const std::string& n, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
      if (n == q0 + ".lora_E") B::fill(ctx, p.value, 0.5);
  });
  a.update_and_allocate(ctx, 10);  // the final step: masks to the target budget
  const auto final_pattern = a.rank_pattern(ctx);
  std::size_t final_kept = 0;
  for (const auto& [mod, f] : final_pattern) final_kept += std::size_t(std::count(f.begin(), f.end(), true));
  BOOST_TEST(final_kept == a.target_budget());
  m.visit_parameters("", [&](const std::string& n, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
      if (n == q0 + ".lora_E") B::fill(ctx, p.value, 0.5);
  });
  a.update_and_allocate(ctx, 11);
  const auto e_final = values_of<groups::adalora, B>(ctx, m).at(q0 + ".lora_E");
  for (std::size_t t = 0; t < 4; ++t) BOOST_TEST(e_final[t] == (final_pattern.at(q0)[t] ? 0.5 : 0.0));
}

BOOST_AUTO_TEST_CASE(orthogonal_regulariser_gradient_matches_finite_differences) {
  using B = test::eigen_d;
  B::context ctx;
  const adalora_config c{.init_r = 3, .orth_reg_weight = 0.7, .total_step = 10};
  models::bert_for_sequence_classification<B, bert_ada> m(ctx, test::tiny_bert_config(), {.num_labels = 3}, method_config{c});
  test::randomize_trainable(ctx, m, 8, 0.4);
  methods::adalora_allocator<decltype(m)> a(m, c);
  auto zero_grads = [&] {
    m.visit_parameters("", [&](const std::string&, auto& p) {
      if constexpr (std::remove_cvref_t<decltype(p)>::trainable) B::fill(ctx, p.grad, 0.0);
    });
  };
  zero_grads();
  const double r0 = a.regularize(ctx);
  BOOST_TEST(r0 > 0);
  const auto grads = values_of<groups::adalora, B>(ctx, m, true);
  double worst = 0;
  for (const std::string n : {"bert.encoder.layer.0.attention.self.query.lora_A.weight", "bert.encoder.layer.1.attention.self.value.lora_B.weight"}) {
    for (std::size_t i = 0; i < 6; ++i) {
      double fd[2];
      for (int side = 0; side < 2; ++side) {
        m.visit_parameters("", [&](const std::string& pn, auto& p) {
          if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
            if (pn == n) p.value.data()[i] += side ? -2e-6 : 1e-6;
        });
        zero_grads();
        fd[side] = a.regularize(ctx);
      }
      m.visit_parameters("", [&](const std::string& pn, auto& p) {
        if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
          if (pn == n) p.value.data()[i] += 1e-6;
      });
      const double numeric = (fd[0] - fd[1]) / 2e-6;
      worst = std::max(worst, std::abs(numeric - grads.at(n)[i]) / std::max(1.0, std::abs(numeric)));
    }
  }
  BOOST_TEST(worst < 1e-6);
  BOOST_TEST(grads.at("bert.encoder.layer.0.attention.self.query.lora_E")[0] == 0.0);  // E is not regularised
}

BOOST_AUTO_TEST_CASE(peft_files_keep_the_allocated_triplets_and_load_back) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  const adalora_config c{.init_r = 4, .target_r = 2, .alpha = 8, .total_step = 3};
  const method_config cfg{c};
  models::bert_for_sequence_classification<B, bert_ada> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  io::save_checkpoint(ctx, m, dir.path / "base.safetensors");
  test::randomize_trainable(ctx, m, 5, 0.3);
  std::uint64_t k = 0;
  m.visit_parameters("", [&](const std::string&, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable) p.grad = test::random_tensor<B>(ctx, p.value.shape(), 300 + k++);
  });
  methods::adalora_allocator<decltype(m)> a(m, c);
  a.update_and_allocate(ctx, 0);  // importance from these gradients (no masking at step 0)
  a.update_and_allocate(ctx, 3);  // the final mask: 8 of 16 triplets
  const auto pattern = a.rank_pattern(ctx);
  const auto trained = logits_of<B>(ctx, m);

  io::save_peft_adapter(ctx, m, dir.path / "adapter", {.task_type = "SEQ_CLS", .methods = cfg});
  std::ifstream in(dir.path / "adapter" / "adapter_config.json");
  const auto j = nlohmann::json::parse(in);
  BOOST_TEST(j["peft_type"] == "ADALORA");
  BOOST_TEST(j["init_r"] == 4);
  BOOST_TEST(j["target_r"] == 2);
  BOOST_TEST(j["total_step"] == 3);
  const std::string q0 = "bert.encoder.layer.0.attention.self.query";
  BOOST_REQUIRE(j["rank_pattern"].is_object());
  BOOST_TEST(j["rank_pattern"].size() == 4u);
  BOOST_TEST(j["rank_pattern"][q0 + ".lora_E"].get<std::vector<bool>>() == pattern.at(q0));
  const auto f = io::safetensors_file::open(dir.path / "adapter" / "adapter_model.safetensors");
  const std::size_t kept = std::size_t(std::count(pattern.at(q0).begin(), pattern.at(q0).end(), true));
  const auto* qa = f.find("base_model.model." + q0 + ".lora_A");
  const auto* qb = f.find("base_model.model." + q0 + ".lora_B");
  const auto* qe = f.find("base_model.model." + q0 + ".lora_E");
  BOOST_REQUIRE(qa && qb && qe);
  BOOST_TEST((qa->shape == std::vector<std::size_t>{kept, 16}));
  BOOST_TEST((qb->shape == std::vector<std::size_t>{16, kept}));
  BOOST_TEST((qe->shape == std::vector<std::size_t>{kept, 1}));
  for (const auto& t : f.tensors()) BOOST_TEST(t.name.find("adalora_state") == std::string::npos, t.name);

  // Read back: each module with its kept triplets, the same scaling (alpha / init_r), the same logits.
  const auto info = io::read_peft_adapter_config<bert_ada>(dir.path / "adapter");
  BOOST_TEST(info.options.get<adalora_config>().rank_pattern.at(q0) == pattern.at(q0));
  models::bert_for_sequence_classification<B, bert_ada> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 7}, info.options);
  io::load_checkpoint(ctx, n, dir.path / "base.safetensors");
  io::load_peft_adapter(ctx, n, dir.path / "adapter");
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-6);
  BOOST_TEST(n.encoder().layer(0).attention().query().rank() == kept);

  io::save_merged_checkpoint(ctx, n, dir.path / "merged", test::tiny_bert_config().to_json("BertForSequenceClassification"));
  models::bert_for_sequence_classification<B, plan<methods::full>> plain(ctx, test::tiny_bert_config(), {.num_labels = 3});
  io::load_checkpoint(ctx, plain, dir.path / "merged" / "model.safetensors");
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, plain), trained) < 1e-5);

  // A module whose every triplet was pruned: PEFT writes empty tensors, and it has no parameters here.
  auto p0 = info.options;
  p0.get<adalora_config>().rank_pattern[q0] = std::vector<bool>(4, false);
  models::bert_for_sequence_classification<B, bert_ada> none(ctx, test::tiny_bert_config(), {.num_labels = 3}, p0);
  BOOST_TEST(!none.encoder().layer(0).attention().query().active());
}

BOOST_AUTO_TEST_CASE(training_state_carries_the_allocation_state) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  ctx.training = true;
  const adalora_config c{.init_r = 3, .target_r = 1, .total_step = 6};
  typename ada_plan::template linear<roles::hidden, B> l(ctx, opts, method_config{c});
  optim::optimizer opt(l, optim::adamw{.lr = 1e-2});
  methods::adalora_allocator<decltype(l)> a(l, c);
  const auto x = test::random_tensor<B>(ctx, {4, 7}, 41);
  const auto dy = test::random_tensor<B>(ctx, {4, 5}, 42);
  for (std::size_t s = 0; s < 3; ++s) {
    opt.zero_grad(ctx);
    l.forward(ctx, x);
    l.backward(ctx, dy);
    a.regularize(ctx);
    opt.step(ctx);
    a.update_and_allocate(ctx, s);
  }
  train::save_training_state(ctx, l, opt, nlohmann::json{{"step", 3}}, dir.path / "state.safetensors");
  typename ada_plan::template linear<roles::hidden, B> r(ctx, opts, method_config{c});
  optim::optimizer opt2(r, optim::adamw{.lr = 1e-2});
  train::load_training_state(ctx, r, opt2, dir.path / "state.safetensors");
  BOOST_TEST((values_of<groups::adalora_state, B>(ctx, r) == values_of<groups::adalora_state, B>(ctx, l)));
  BOOST_TEST((values_of<groups::adalora, B>(ctx, r) == values_of<groups::adalora, B>(ctx, l)));
  const auto state = values_of<groups::adalora_state, B>(ctx, l);
  BOOST_TEST(std::count(state.at("adalora_state.rank_mask").begin(), state.at("adalora_state.rank_mask").end(), 0.0) > 0);
}

BOOST_AUTO_TEST_CASE(bad_configs_name_the_key) {
  const auto error_of = test::adapter_config_error<bert_ada>;
  auto says = [&](const std::string& text, const std::string& want) {
    const auto e = error_of(text);
    BOOST_TEST(e.find(want) != std::string::npos, text << " -> " << e);
  };
  says(R"js({"peft_type": "ADALORA", "init_r": 2, "rank_pattern": {"base_model.model.x.lora_E": [true]}})js",
       "entry 'base_model.model.x.lora_E' must be '<module>.lora_E' with a list of 2 booleans");
  says(R"js({"peft_type": "ADALORA", "rank_pattern": [1]})js", "'rank_pattern' must be an object");
  says(R"js({"peft_type": "ADALORA", "use_dora": true})js", "'use_dora': true is not supported");
  says(R"js({"peft_type": "ADALORA", "init_r": 0})js", "'init_r' must be positive");
  says(R"js({"peft_type": "ADALORA", "tinit": -1})js", "tinit");
  says(R"js({"peft_type": "ADALORA", "bias": "all"})js", "'bias'");
  BOOST_TEST(error_of(R"js({"peft_type": "ADALORA", "init_r": 12, "target_r": 8, "lora_alpha": 32, "target_modules": ["query", "value"],
    "tinit": 200, "tfinal": 100, "deltaT": 10, "beta1": 0.85, "beta2": 0.85, "orth_reg_weight": 0.5, "total_step": 1000,
    "rank_pattern": null, "r": 8, "use_dora": false, "use_rslora": false, "bias": "none", "fan_in_fan_out": false})js") == "no error");
  BOOST_TEST(methods::detail::adalora_peft_format::parameter_name("m.lora_A") == "m.lora_A.weight");
  BOOST_TEST(methods::detail::adalora_peft_format::parameter_name("m.lora_B.default") == "m.lora_B.weight");
  BOOST_TEST(methods::detail::adalora_peft_format::parameter_name("m.lora_E.default") == "m.lora_E");
}

BOOST_AUTO_TEST_SUITE_END()
