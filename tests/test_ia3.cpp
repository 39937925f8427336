// (IA)3: gradients against finite differences on both CPU backends, the output and input forms
// against a hand computation, identity at initialisation, exact merge and unmerge (over LoRA and
// BitFit too), PEFT's IA3 file format both ways (including PEFT's own BERT defaults), bad configs,
// and the run-time switch.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <fstream>

#include "bodies/scenarios.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/models/bert/memory.hpp"
#include "peft/train/report.hpp"
#include "support/adapter_config.hpp"
#include "support/backends.hpp"
#include "support/temp_dir.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::temp_dir;
using test::cpu_double_backends;

namespace {
using ia3_plan = plan<methods::ia3<roles::hidden>>;
using bert_ia3 = plan<methods::ia3<roles::key, roles::value, roles::ffn_out>>;
/// Every role, as peft-train compiles it, so that PEFT's BERT defaults (which scale
/// attention.output.dense as well) find their modules.
using bert_ia3_all =
    plan<methods::ia3<roles::query, roles::key, roles::value, roles::attention_output, roles::ffn_in, roles::ffn_out>>;

const layers::linear_options opts{.in_features = 7, .out_features = 5, .bias = true, .name = "h", .seed = 9};

method_config ia3_methods(bool feedforward, bool identity = false) {
  return method_config{ia3_config{.feedforward_modules = feedforward ? "h" : "", .init_ia3_weights = identity}};
}


template <class B, class M>
std::vector<typename B::value_type> logits_of(typename B::context& ctx, M& m) {
  return B::copy_to_host(ctx, m.forward(ctx, test::tiny_batch()));
}
void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream(p) << text;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(ia3)

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_of_both_forms_and_compositions, B, cpu_double_backends) {
  for (const bool feedforward : {false, true}) {
    typename B::context ctx;
    ctx.training = true;
    ctx.seed = 3;
    typename ia3_plan::template linear<roles::hidden, B> l(ctx, opts, ia3_methods(feedforward));
    BOOST_TEST(l.feedforward() == feedforward);
    test::randomize_parameters(ctx, l, 4);
    std::string e = test::check_gradients(ctx, l, test::random_tensor<B>(ctx, {2, 3, 7}, 5));
    BOOST_TEST(e.empty(), "ia3 feedforward=" << feedforward << ": " << e);

    method_config all = test::scenario_ia3_methods(feedforward);
    typename test::lora_bitfit_ia3_plan::template linear<roles::hidden, B> c(ctx, opts, all);
    test::randomize_parameters(ctx, c, 6);
    e = test::check_gradients(ctx, c, test::random_tensor<B>(ctx, {4, 7}, 7));
    BOOST_TEST(e.empty(), "lora+bitfit+ia3 feedforward=" << feedforward << ": " << e);
  }
  // A whole BERT with the paper's placement: key and value scale their output, ffn_out its input.
  typename B::context ctx;
  ctx.training = true;
  models::bert_for_sequence_classification<B, bert_ia3> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, {});
  test::randomize_parameters(ctx, m, 2, 0.3);
  const auto e = test::check_model_gradients(ctx, m, test::tiny_batch());
  BOOST_TEST(e.empty(), e);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(both_forms_match_a_hand_computation, B, cpu_double_backends) {
  for (const bool feedforward : {false, true}) {
    typename B::context ctx;
    typename ia3_plan::template linear<roles::hidden, B> l(ctx, opts, ia3_methods(feedforward));
    const auto w = B::copy_to_host(ctx, l.base_linear().weight().value);
    const auto b = B::copy_to_host(ctx, l.base_linear().bias().value);
    const auto s = B::copy_to_host(ctx, l.ia3_l().value);
    BOOST_TEST(l.ia3_l().value.shape().str() == (feedforward ? "[1, 7]" : "[5, 1]"));
    BOOST_TEST(std::abs(s[0] - 1.0) > 1e-6);  // init_ia3_weights = false: away from the identity
    const auto xt = test::random_tensor<B>(ctx, {3, 7}, 12);
    const auto x = B::copy_to_host(ctx, xt);
    const auto y = B::copy_to_host(ctx, l.forward(ctx, xt));
    for (std::size_t r = 0; r < 3; ++r)
      for (std::size_t o = 0; o < 5; ++o) {
        double acc = 0;
        for (std::size_t i = 0; i < 7; ++i) acc += w[o * 7 + i] * x[r * 7 + i] * (feedforward ? s[i] : 1.0);
        const double want = feedforward ? acc + b[o] : s[o] * (acc + b[o]);
        BOOST_TEST(y[r * 5 + o] == want, boost::test_tools::tolerance(1e-12));
      }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(starts_as_the_identity_with_peft_names_and_shapes, B, cpu_double_backends) {
  typename B::context ctx;
  layers::linear<B> base(ctx, opts);
  typename ia3_plan::template linear<roles::hidden, B> l(ctx, opts, method_config{ia3_config{}});
  const auto x = test::random_tensor<B>(ctx, {4, 7}, 6);
  const auto yb = B::copy_to_host(ctx, base.forward(ctx, x));
  const auto yl = B::copy_to_host(ctx, l.forward(ctx, x));
  BOOST_TEST(yb == yl, boost::test_tools::per_element());

  models::bert_for_sequence_classification<B, bert_ia3> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, {});
  std::vector<std::string> names;
  m.visit_parameters("", [&](const std::string& n, const auto& p) {
    if (std::string_view(std::remove_cvref_t<decltype(p)>::group::name) == "ia3") names.push_back(n + " " + p.value.shape().str());
  });
  BOOST_REQUIRE_EQUAL(names.size(), 6u);  // key, value, FFN output in each of two layers
  BOOST_TEST(names[0] == "bert.encoder.layer.0.attention.self.key.ia3_l [16, 1]");
  BOOST_TEST(names[1] == "bert.encoder.layer.0.attention.self.value.ia3_l [16, 1]");
  BOOST_TEST(names[2] == "bert.encoder.layer.0.output.dense.ia3_l [1, 24]");  // scales the FFN's hidden activations
  const auto counts = count_parameters(m);
  BOOST_TEST(counts.trainable == 2u * (16u + 16u + 24u) + 16u * 3u + 3u);  // the vectors (FFN width 24), the head
}

BOOST_AUTO_TEST_CASE_TEMPLATE(merge_equals_unmerged_and_unmerge_restores, B, cpu_double_backends) {
  for (const bool feedforward : {false, true}) {
    typename B::context ctx;
    typename test::lora_bitfit_ia3_plan::template linear<roles::hidden, B> l(ctx, opts, test::scenario_ia3_methods(feedforward));
    test::randomize_parameters(ctx, l, 10);
    const auto w0 = B::copy_to_host(ctx, l.base_linear().weight().value);
    const auto b0 = B::copy_to_host(ctx, l.base_linear().bias().value);
    const auto x = test::random_tensor<B>(ctx, {6, 7}, 11);
    const auto y = B::copy_to_host(ctx, l.forward(ctx, x));
    l.merge(ctx);
    BOOST_TEST(l.merged());
    BOOST_CHECK_THROW(l.merge(ctx), error);
    const auto ym = B::copy_to_host(ctx, l.forward(ctx, x));
    const auto yb = B::copy_to_host(ctx, l.base_linear().forward(ctx, x));
    BOOST_TEST(test::max_abs_diff(ym, y) < 1e-12);
    BOOST_TEST(ym == yb, boost::test_tools::per_element());  // the merged output is the base layer's alone
    l.unmerge(ctx);
    BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.base_linear().weight().value), w0) < 1e-13);
    BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.base_linear().bias().value), b0) < 1e-13);
    BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.forward(ctx, x)), y) < 1e-12);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(misuse_is_an_error_naming_the_module, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  typename ia3_plan::template linear<roles::hidden, B> l(ctx, opts, ia3_methods(false, true));
  const auto x = test::random_tensor<B>(ctx, {2, 7}, 1);
  const auto dy = test::random_tensor<B>(ctx, {2, 5}, 2);
  BOOST_CHECK_THROW(l.backward(ctx, dy), error);  // before forward
  BOOST_CHECK_THROW(l.unmerge(ctx), error);
  l.merge(ctx);
  l.forward(ctx, x);
  BOOST_CHECK_THROW(l.backward(ctx, dy), error);
  l.unmerge(ctx);
  // A zero in the vector erases a row when merged; unmerging it is refused, not a division by zero.
  auto s = B::copy_to_host(ctx, l.ia3_l().value);
  s[2] = 0;
  B::copy_from_host(ctx, s, l.ia3_l().value.shape(), l.ia3_l().value);
  l.merge(ctx);
  try {
    l.unmerge(ctx);
    BOOST_FAIL("unmerge with a zero scale did not throw");
  } catch (const error& e) {
    BOOST_TEST(std::string(e.what()).find("ia3 on 'h': cannot unmerge, ia3_l[2] is 0") != std::string::npos, e.what());
  }
  BOOST_CHECK_NO_THROW(l.forward(ctx, x));  // still merged and usable
  BOOST_CHECK_THROW((typename ia3_plan::template linear<roles::hidden, B>(
                        ctx, opts, method_config{ia3_config{.target_modules = "("}})),
                    config_error);
}

BOOST_AUTO_TEST_CASE(saves_peft_ia3_and_loads_it_back_and_merges) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  const method_config cfg{ia3_config{.init_ia3_weights = false}};
  models::bert_for_sequence_classification<B, bert_ia3> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  io::save_checkpoint(ctx, m, dir.path / "base.safetensors");
  const auto trained = logits_of<B>(ctx, m);

  io::save_peft_adapter(ctx, m, dir.path / "adapter", {.task_type = "SEQ_CLS", .methods = cfg});
  std::ifstream in(dir.path / "adapter" / "adapter_config.json");
  const auto j = nlohmann::json::parse(in);
  BOOST_TEST(j["peft_type"] == "IA3");
  BOOST_TEST(j["fan_in_fan_out"] == false);
  BOOST_TEST(j["init_ia3_weights"] == false);
  // PEFT wants feedforward_modules to be a subset of a target_modules list.
  BOOST_TEST(j["target_modules"].dump() == R"(["0.output.dense","1.output.dense","key","value"])");
  BOOST_TEST(j["feedforward_modules"].dump() == R"(["0.output.dense","1.output.dense"])");
  const auto f = io::safetensors_file::open(dir.path / "adapter" / "adapter_model.safetensors");
  const auto* t = f.find("base_model.model.bert.encoder.layer.1.output.dense.ia3_l");
  BOOST_REQUIRE(t);
  BOOST_TEST((t->shape == std::vector<std::size_t>{1, 24}));
  BOOST_TEST(f.tensors().size() == 6u + 2u);  // six vectors, the classifier's weight and bias

  // Read back into the plan peft-train compiles (every role): only the written modules get vectors.
  const auto info = io::read_peft_adapter_config<bert_ia3_all>(dir.path / "adapter");
  BOOST_TEST((info.methods == std::vector<std::string>{"ia3"}));
  BOOST_TEST(info.options.get<ia3_config>().init_ia3_weights == false);
  models::bert_for_sequence_classification<B, bert_ia3_all> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 7}, info.options);
  io::load_checkpoint(ctx, n, dir.path / "base.safetensors");
  BOOST_TEST(io::load_peft_adapter(ctx, n, dir.path / "adapter").loaded == 8u);
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-6);

  io::save_merged_checkpoint(ctx, n, dir.path / "merged", test::tiny_bert_config().to_json("BertForSequenceClassification"));
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-6);  // merged for the write, unmerged after
  models::bert_for_sequence_classification<B, plan<methods::full>> plain(ctx, test::tiny_bert_config(), {.num_labels = 3});
  const auto r = io::load_checkpoint(ctx, plain, dir.path / "merged" / "model.safetensors");
  BOOST_TEST(r.missing.empty(), r.str());
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, plain), trained) < 1e-5);

  const auto mem = models::estimate_memory(m, cfg, 2, 8);
  const auto without = models::estimate_memory(plain, method_config{}, 2, 8, 2);
  BOOST_TEST(mem.activations > without.activations);
}

BOOST_AUTO_TEST_CASE(reads_peft_bert_defaults_and_in_memory_names) {
  // PEFT's IA3 defaults for BERT: key, value and every "output.dense" (the attention output too),
  // all "output.dense" modules scaling their input (PEFT matches feedforward lists by plain suffix).
  using B = backend::eigen<float>;
  temp_dir dir;
  write_file(dir.path / "adapter_config.json", R"js({"peft_type": "IA3", "task_type": "SEQ_CLS",
    "target_modules": ["key", "value", "output.dense"], "feedforward_modules": ["output.dense"],
    "fan_in_fan_out": false, "init_ia3_weights": true, "modules_to_save": ["classifier"]})js");
  const auto info = io::read_peft_adapter_config<bert_ia3_all>(dir.path);
  B::context ctx;
  models::bert_for_sequence_classification<B, bert_ia3_all> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, info.options);
  std::map<std::string, std::string> shapes;
  m.visit_parameters("", [&](const std::string& n, const auto& p) {
    if (std::string_view(std::remove_cvref_t<decltype(p)>::group::name) == "ia3") shapes[n] = p.value.shape().str();
  });
  BOOST_TEST(shapes.size() == 8u);
  BOOST_TEST(shapes["bert.encoder.layer.0.attention.output.dense.ia3_l"] == "[1, 16]");
  BOOST_TEST(shapes["bert.encoder.layer.0.output.dense.ia3_l"] == "[1, 24]");
  BOOST_TEST(shapes["bert.encoder.layer.1.attention.self.value.ia3_l"] == "[16, 1]");
  BOOST_TEST(!shapes.count("bert.encoder.layer.0.attention.self.query.ia3_l"));
  BOOST_TEST(methods::detail::ia3_peft_format::parameter_name("bert.encoder.layer.0.attention.self.key.ia3_l.default") ==
             "bert.encoder.layer.0.attention.self.key.ia3_l");

  // No feedforward_modules at all: no module scales its input.
  write_file(dir.path / "adapter_config.json", R"js({"peft_type": "IA3", "target_modules": "(.*\\.)?(key|value)"})js");
  BOOST_TEST((io::read_peft_adapter_config<bert_ia3_all>(dir.path).options.get<ia3_config>().feedforward_modules == std::string()));
}

BOOST_AUTO_TEST_CASE(bad_configs_name_the_key) {
  const auto error_of = test::adapter_config_error<bert_ia3_all>;
  BOOST_TEST(error_of(R"js({"peft_type": "IA3", "target_modules": ["key"], "fan_in_fan_out": true})js").find("'fan_in_fan_out'") !=
             std::string::npos);
  BOOST_TEST(error_of(R"js({"peft_type": "IA3", "target_modules": 3})js").find("'target_modules' must be a string or a non-empty list") !=
             std::string::npos);
  BOOST_TEST(error_of(R"js({"peft_type": "IA3", "feedforward_modules": [1]})js").find("'feedforward_modules'") != std::string::npos);
  BOOST_TEST(error_of(R"js({"peft_type": "IA3", "exclude_modules": ["key"]})js").find("'exclude_modules' is not supported") !=
             std::string::npos);
  BOOST_TEST(error_of(R"js({"peft_type": "IA3", "init_ia3_weights": "yes"})js").find("init_ia3_weights") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(switched_off_it_costs_nothing_and_changes_nothing) {
  using B = backend::eigen<float>;
  B::context ctx;
  const method_config off{ia3_config{.enabled = false}};
  models::bert_for_sequence_classification<B, bert_ia3_all> big(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 5}, off);
  models::bert_for_sequence_classification<B, plan<methods::bitfit>> small(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 5},
                                                                           method_config{bitfit_config{.enabled = false}});
  std::vector<std::string> a, b;
  big.visit_parameters("", [&](const std::string& n, const auto&) { a.push_back(n); });
  small.visit_parameters("", [&](const std::string& n, const auto&) { b.push_back(n); });
  BOOST_TEST((a == b));
  BOOST_TEST(logits_of<B>(ctx, big) == logits_of<B>(ctx, small), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
