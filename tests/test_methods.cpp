// PEFT methods on linear layers: gradients, identity at initialisation, exact merge/unmerge,
// composition, configuration errors.
#include <boost/test/unit_test.hpp>
#include <cmath>

#include "bodies/scenarios.hpp"
#include "support/backends.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::cpu_double_backends;

namespace {
using lora_plan = plan<methods::lora<roles::hidden>>;
using bitfit_plan = plan<methods::bitfit>;
using adapter_plan = plan<methods::adapter<roles::hidden>>;
using all_plan = plan<methods::lora<roles::hidden>, methods::bitfit, methods::adapter<roles::hidden>>;
using full_lora_plan = plan<methods::full, methods::lora<roles::hidden>>;

const layers::linear_options opts{.in_features = 7, .out_features = 5, .bias = true, .name = "h", .seed = 9};
const method_config cfg{lora_config{.r = 3, .alpha = 5, .dropout = 0.3}, adapter_config{.bottleneck = 2, .nonlinearity = activation::gelu}};

template <class B, class Plan>
std::string gradient_check_for_plan() {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 3;
  typename Plan::template linear<roles::hidden, B> l(ctx, opts, cfg);
  test::randomize_parameters(ctx, l, 4);
  return test::check_gradients(ctx, l, test::random_tensor<B>(ctx, {2, 3, 7}, 5));
}
}  // namespace

BOOST_AUTO_TEST_SUITE(methods_gradients)

BOOST_AUTO_TEST_CASE_TEMPLATE(every_method_and_composition, B, cpu_double_backends) {
  std::string e;
  e = gradient_check_for_plan<B, lora_plan>();
  BOOST_TEST(e.empty(), "lora: " << e);
  e = gradient_check_for_plan<B, bitfit_plan>();
  BOOST_TEST(e.empty(), "bitfit: " << e);
  e = gradient_check_for_plan<B, adapter_plan>();
  BOOST_TEST(e.empty(), "adapter: " << e);
  e = gradient_check_for_plan<B, test::lora_bitfit_plan>();
  BOOST_TEST(e.empty(), "lora+bitfit: " << e);
  e = gradient_check_for_plan<B, test::lora_adapter_plan>();
  BOOST_TEST(e.empty(), "lora+adapter: " << e);
  e = gradient_check_for_plan<B, all_plan>();
  BOOST_TEST(e.empty(), "lora+bitfit+adapter: " << e);
  e = gradient_check_for_plan<B, full_lora_plan>();
  BOOST_TEST(e.empty(), "full+lora: " << e);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(rslora_scaling, B, cpu_double_backends) {
  typename B::context ctx;
  method_config c = cfg;
  c.get<lora_config>().use_rslora = true;
  c.get<lora_config>().r = 4;
  c.get<lora_config>().alpha = 8;
  typename lora_plan::template linear<roles::hidden, B> l(ctx, opts, c);
  BOOST_TEST(l.scaling() == 4.0);
  c.get<lora_config>().use_rslora = false;
  typename lora_plan::template linear<roles::hidden, B> l2(ctx, opts, c);
  BOOST_TEST(l2.scaling() == 2.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(methods_semantics)

BOOST_AUTO_TEST_CASE_TEMPLATE(lora_initialisation_follows_hf_peft, B, cpu_double_backends) {
  typename B::context ctx;
  typename lora_plan::template linear<roles::hidden, B> l(ctx, opts, cfg);
  const auto& a = l.lora_A().weight().value;
  const auto& b = l.lora_B().weight().value;
  BOOST_TEST(a.shape().str() == "[3, 7]");
  BOOST_TEST(b.shape().str() == "[5, 3]");
  const double bound = 1.0 / std::sqrt(7.0);
  double max_abs = 0;
  for (std::size_t i = 0; i < a.size(); ++i) max_abs = std::max(max_abs, std::abs(a[i]));
  BOOST_TEST(max_abs <= bound);
  BOOST_TEST(max_abs > 0.5 * bound);  // spread over the range, not collapsed
  for (std::size_t i = 0; i < b.size(); ++i) BOOST_TEST(b[i] == 0.0);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(fresh_methods_reproduce_the_base_output, B, cpu_double_backends) {
  // LoRA (B = 0), BitFit (delta = 0) and the adapter (up = 0) start as the identity on the base layer,
  // whose weights depend only on the seed.
  typename B::context ctx;
  layers::linear<B> base(ctx, opts);
  typename all_plan::template linear<roles::hidden, B> l(ctx, opts, cfg);
  const auto x = test::random_tensor<B>(ctx, {4, 7}, 6);
  const auto yb = B::copy_to_host(ctx, base.forward(ctx, x));
  const auto yl = B::copy_to_host(ctx, l.forward(ctx, x));
  BOOST_TEST(yb == yl, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE_TEMPLATE(merge_equals_unmerged_and_unmerge_restores, B, cpu_double_backends) {
  typename B::context ctx;
  typename test::lora_bitfit_plan::template linear<roles::hidden, B> l(ctx, opts, cfg);
  test::randomize_parameters(ctx, l, 10);
  const auto w0 = B::copy_to_host(ctx, l.base_linear().weight().value);
  const auto b0 = B::copy_to_host(ctx, l.base_linear().bias().value);
  const auto x = test::random_tensor<B>(ctx, {6, 7}, 11);
  const auto y = B::copy_to_host(ctx, l.forward(ctx, x));
  l.merge(ctx);
  BOOST_TEST(l.merged());
  const auto ym = B::copy_to_host(ctx, l.forward(ctx, x));
  for (std::size_t i = 0; i < y.size(); ++i) BOOST_TEST(ym[i] == y[i], boost::test_tools::tolerance(1e-12));
  // The merged output comes from the base layer alone.
  const auto yb = B::copy_to_host(ctx, l.base_linear().forward(ctx, x));
  BOOST_TEST(ym == yb, boost::test_tools::per_element());
  l.unmerge(ctx);
  const auto w1 = B::copy_to_host(ctx, l.base_linear().weight().value);
  const auto b1 = B::copy_to_host(ctx, l.base_linear().bias().value);
  for (std::size_t i = 0; i < w0.size(); ++i) BOOST_TEST(w1[i] == w0[i], boost::test_tools::tolerance(1e-14));
  for (std::size_t i = 0; i < b0.size(); ++i) BOOST_TEST(b1[i] == b0[i], boost::test_tools::tolerance(1e-14));
  const auto yu = B::copy_to_host(ctx, l.forward(ctx, x));
  for (std::size_t i = 0; i < y.size(); ++i) BOOST_TEST(yu[i] == y[i], boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(merge_misuse_is_an_error, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  typename lora_plan::template linear<roles::hidden, B> l(ctx, opts, cfg);
  const auto x = test::random_tensor<B>(ctx, {2, 7}, 1);
  BOOST_CHECK_THROW(l.unmerge(ctx), error);
  l.merge(ctx);
  BOOST_CHECK_THROW(l.merge(ctx), error);
  l.forward(ctx, x);
  BOOST_CHECK_THROW(l.backward(ctx, test::random_tensor<B>(ctx, {2, 5}, 2)), error);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(bitfit_without_a_bias_is_inert, B, cpu_double_backends) {
  typename B::context ctx;
  auto o = opts;
  o.bias = false;
  typename bitfit_plan::template linear<roles::hidden, B> l(ctx, o, cfg);
  int n = 0;
  l.visit_parameters("", [&](const std::string&, const auto&) { ++n; });
  BOOST_TEST(n == 1);  // only the frozen weight
}

BOOST_AUTO_TEST_CASE_TEMPLATE(bad_configuration_names_the_layer, B, cpu_double_backends) {
  typename B::context ctx;
  auto expect = [&](method_config c, const char* fragment) {
    try {
      typename all_plan::template linear<roles::hidden, B> l(ctx, opts, c);
      BOOST_ERROR("no error for " << fragment);
    } catch (const config_error& e) {
      const std::string what = e.what();
      BOOST_TEST(what.find("'h'") != std::string::npos, what);
      BOOST_TEST(what.find(fragment) != std::string::npos, what);
    }
  };
  method_config c = cfg;
  c.get<lora_config>().r = 0;
  expect(c, "r = 0");
  c.get<lora_config>().r = 6;
  expect(c, "min(in_features = 7, out_features = 5) = 5");
  c = cfg;
  c.get<lora_config>().alpha = 0;
  expect(c, "lora_alpha = 0");
  c.get<lora_config>().alpha = -2;
  expect(c, "lora_alpha = -2");
  c = cfg;
  c.get<lora_config>().dropout = 1.0;
  expect(c, "lora_dropout = 1");
  c = cfg;
  c.get<adapter_config>().reduction_factor = 0.5;
  c.get<adapter_config>().bottleneck = 0;
  expect(c, "reduction_factor");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(backends_agree)

BOOST_AUTO_TEST_CASE(methods_eigen_and_xtensor) {
  std::string d = test::compare(test::method_scenario<test::eigen_d, test::lora_bitfit_plan>(),
                                test::method_scenario<test::xtensor_d, test::lora_bitfit_plan>(), 1e-12);
  BOOST_TEST(d.empty(), "lora+bitfit: " << d);
  d = test::compare(test::method_scenario<test::eigen_d, test::lora_adapter_plan>(),
                    test::method_scenario<test::xtensor_d, test::lora_adapter_plan>(), 1e-12);
  BOOST_TEST(d.empty(), "lora+adapter: " << d);
  for (const bool feedforward : {false, true}) {
    const auto cfg = test::scenario_ia3_methods(feedforward);
    d = test::compare(test::method_scenario<test::eigen_d, test::lora_bitfit_ia3_plan>(cfg),
                      test::method_scenario<test::xtensor_d, test::lora_bitfit_ia3_plan>(cfg), 1e-12);
    BOOST_TEST(d.empty(), "lora+bitfit+ia3 (feedforward " << feedforward << "): " << d);
  }
  for (const bool dropout : {false, true}) {
    const auto cfg = test::scenario_dora_methods(dropout);
    d = test::compare(test::method_scenario<test::eigen_d, test::lora_bitfit_ia3_plan>(cfg),
                      test::method_scenario<test::xtensor_d, test::lora_bitfit_ia3_plan>(cfg), 1e-12);
    BOOST_TEST(d.empty(), "dora+bitfit+ia3 (dropout " << dropout << "): " << d);
  }
  d = test::compare(test::method_scenario<test::eigen_d, test::lora_vera_bitfit_plan>(test::scenario_vera_methods()),
                    test::method_scenario<test::xtensor_d, test::lora_vera_bitfit_plan>(test::scenario_vera_methods()), 1e-12);
  BOOST_TEST(d.empty(), "lora+vera+bitfit: " << d);
}

BOOST_AUTO_TEST_SUITE_END()
