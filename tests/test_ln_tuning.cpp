// LayerNorm tuning: gradients against finite differences on both CPU backends (one norm, a whole
// BERT, and under BitFit's shift delta), the start from the loaded norm, exact merge and unmerge,
// target_modules, PEFT's LN_TUNING format both ways and bad configs.
#include <boost/test/unit_test.hpp>
#include <fstream>

#include "bodies/scenarios.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/methods/ln_tuning.hpp"
#include "peft/train/report.hpp"
#include "support/backends.hpp"
#include "support/temp_dir.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::temp_dir;
using test::cpu_double_backends;

namespace {
using ln_plan = plan<methods::ln_tuning>;
using ln_bitfit_plan = plan<methods::ln_tuning, methods::bitfit>;

template <class B, class M>
std::vector<typename B::value_type> logits_of(typename B::context& ctx, M& m) {
  return B::copy_to_host(ctx, m.forward(ctx, test::tiny_batch()));
}
void write_file(const std::filesystem::path& p, const std::string& text) { std::ofstream(p) << text; }
}  // namespace

BOOST_AUTO_TEST_SUITE(ln_tuning)

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_of_a_norm_a_model_and_with_bitfit, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  const method_config cfg{ln_tuning_config{}};
  typename ln_plan::template norm<B> n(ctx, 6, 1e-5, "ln", cfg);
  test::randomize_parameters(ctx, n, 3);
  std::string e = test::check_gradients(ctx, n, test::random_tensor<B>(ctx, {4, 6}, 4));
  BOOST_TEST(e.empty(), "norm: " << e);

  typename ln_bitfit_plan::template norm<B> nb(ctx, 6, 1e-5, "ln", method_config{ln_tuning_config{}, bitfit_config{}});
  test::randomize_parameters(ctx, nb, 5);
  e = test::check_gradients(ctx, nb, test::random_tensor<B>(ctx, {4, 6}, 6));
  BOOST_TEST(e.empty(), "norm with bitfit: " << e);

  models::bert_for_sequence_classification<B, ln_plan> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  test::randomize_parameters(ctx, m, 2, 0.3);
  e = test::check_model_gradients(ctx, m, test::tiny_batch());
  BOOST_TEST(e.empty(), e);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(starts_from_the_loaded_norm_and_merges_exactly, B, cpu_double_backends) {
  typename B::context ctx;
  layers::layer_norm<B> base(ctx, 6, 1e-5, "ln");
  typename ln_bitfit_plan::template norm<B> n(ctx, 6, 1e-5, "ln", method_config{ln_tuning_config{}, bitfit_config{}});
  BOOST_TEST(n.inner().tuned_weight().value.empty());  // copied from the base at first use
  // Load the base norm after construction, as a checkpoint loader does.
  const auto g = test::random_tensor<B>(ctx, {6}, 11), b = test::random_tensor<B>(ctx, {6}, 12);
  B::copy(ctx, g, base.weight().value), B::copy(ctx, b, base.bias().value);
  B::copy(ctx, g, n.weight().value), B::copy(ctx, b, n.bias().value);
  const auto x = test::random_tensor<B>(ctx, {3, 6}, 13);
  const auto yb = B::copy_to_host(ctx, base.forward(ctx, x));
  BOOST_TEST(yb == B::copy_to_host(ctx, n.forward(ctx, x)), boost::test_tools::per_element());
  BOOST_TEST(B::copy_to_host(ctx, n.inner().tuned_weight().value) == B::copy_to_host(ctx, g), boost::test_tools::per_element());

  test::randomize_parameters(ctx, n, 14);  // a trained norm and shift delta
  const auto w0 = B::copy_to_host(ctx, n.weight().value), b0 = B::copy_to_host(ctx, n.bias().value);
  const auto y = B::copy_to_host(ctx, n.forward(ctx, x));
  n.merge(ctx);
  BOOST_CHECK_THROW(n.merge(ctx), error);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, n.forward(ctx, x)), y) < 1e-12);
  n.unmerge(ctx);
  BOOST_TEST(B::copy_to_host(ctx, n.weight().value) == w0, boost::test_tools::per_element());
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, n.bias().value), b0) < 1e-15);  // BitFit adds and subtracts its delta
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, n.forward(ctx, x)), y) < 1e-12);
}

BOOST_AUTO_TEST_CASE(saves_peft_ln_tuning_and_loads_it_back_and_merges) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  const method_config cfg{ln_tuning_config{}};
  models::bert_for_sequence_classification<B, ln_plan> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  std::size_t tuned = 0;
  m.visit_parameters("", [&](const std::string&, const auto& p) {
    tuned += std::string_view(std::remove_cvref_t<decltype(p)>::group::name) == "ln_tuning";
  });
  BOOST_TEST(tuned == 2u * (1u + 2u * 2u));  // weight and bias of the embeddings' norm and two per layer
  BOOST_TEST(count_parameters(m).trainable == 5u * 2u * 16u + 16u * 3u + 3u);
  logits_of<B>(ctx, m);
  io::save_checkpoint(ctx, m, dir.path / "base.safetensors");
  test::randomize_trainable(ctx, m, 3, 0.3);
  const auto trained = logits_of<B>(ctx, m);
  io::save_peft_adapter(ctx, m, dir.path / "adapter", {.task_type = "SEQ_CLS", .methods = cfg});
  std::ifstream in(dir.path / "adapter" / "adapter_config.json");
  const auto j = nlohmann::json::parse(in);
  BOOST_TEST(j["peft_type"] == "LN_TUNING");
  BOOST_TEST(j["target_modules"].dump() == R"(["LayerNorm"])");
  const auto f = io::safetensors_file::open(dir.path / "adapter" / "adapter_model.safetensors");
  BOOST_TEST(f.find("base_model.model.bert.encoder.layer.1.output.LayerNorm.ln_tuning_layers.weight"));
  BOOST_TEST(f.find("base_model.model.bert.embeddings.LayerNorm.ln_tuning_layers.bias"));
  BOOST_TEST(f.tensors().size() == 10u + 2u);

  const auto info = io::read_peft_adapter_config<ln_bitfit_plan>(dir.path / "adapter");
  BOOST_TEST((info.methods == std::vector<std::string>{"ln_tuning"}));
  method_config read = info.options;
  read.get<bitfit_config>().enabled = false;
  models::bert_for_sequence_classification<B, ln_bitfit_plan> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 7}, read);
  io::load_checkpoint(ctx, n, dir.path / "base.safetensors");
  BOOST_TEST(io::load_peft_adapter(ctx, n, dir.path / "adapter").loaded == 12u);
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-6);

  io::save_merged_checkpoint(ctx, n, dir.path / "merged", test::tiny_bert_config().to_json("BertForSequenceClassification"));
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-6);
  models::bert_for_sequence_classification<B, plan<methods::full>> plain(ctx, test::tiny_bert_config(), {.num_labels = 3});
  const auto r = io::load_checkpoint(ctx, plain, dir.path / "merged" / "model.safetensors");
  BOOST_TEST(r.missing.empty(), r.str());
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, plain), trained) < 1e-6);

  BOOST_TEST(methods::detail::ln_tuning_peft_format::parameter_name("bert.embeddings.LayerNorm.ln_tuning_layers.default.weight") ==
             "bert.embeddings.LayerNorm.ln_tuning_layers.weight");
}

BOOST_AUTO_TEST_CASE(target_modules_narrow_and_bad_configs_name_the_key) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  write_file(dir.path / "adapter_config.json",
             R"js({"peft_type": "LN_TUNING", "task_type": "SEQ_CLS", "target_modules": ["attention.output.LayerNorm"]})js");
  const auto info = io::read_peft_adapter_config<ln_plan>(dir.path);
  models::bert_for_sequence_classification<B, ln_plan> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, info.options);
  std::vector<std::string> names;
  m.visit_parameters("", [&](const std::string& n, const auto& p) {
    if (std::string_view(std::remove_cvref_t<decltype(p)>::group::name) == "ln_tuning") names.push_back(n);
  });
  BOOST_TEST((names == std::vector<std::string>{"bert.encoder.layer.0.attention.output.LayerNorm.ln_tuning_layers.weight",
                                                "bert.encoder.layer.0.attention.output.LayerNorm.ln_tuning_layers.bias",
                                                "bert.encoder.layer.1.attention.output.LayerNorm.ln_tuning_layers.weight",
                                                "bert.encoder.layer.1.attention.output.LayerNorm.ln_tuning_layers.bias"}));
  logits_of<B>(ctx, m);
  io::save_peft_adapter(ctx, m, dir.path / "out", {.task_type = "SEQ_CLS", .methods = info.options});
  std::ifstream in(dir.path / "out" / "adapter_config.json");
  BOOST_TEST(nlohmann::json::parse(in)["target_modules"].dump() == R"(["attention.output.LayerNorm"])");

  write_file(dir.path / "adapter_config.json", R"js({"peft_type": "LN_TUNING", "exclude_modules": ["LayerNorm"]})js");
  try {
    io::read_peft_adapter_config<ln_plan>(dir.path);
    BOOST_FAIL("exclude_modules was accepted");
  } catch (const std::exception& e) {
    BOOST_TEST(std::string(e.what()).find("'exclude_modules' is not supported") != std::string::npos, e.what());
  }
  write_file(dir.path / "adapter_config.json", R"js({"peft_type": "LN_TUNING", "target_modules": 3})js");
  BOOST_CHECK_THROW(io::read_peft_adapter_config<ln_plan>(dir.path), std::exception);
}

BOOST_AUTO_TEST_SUITE_END()
