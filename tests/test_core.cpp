// Core types, static tests of the concepts, reproducible randomness, the parameter report.
#include <boost/test/unit_test.hpp>

#include "peft/peft.hpp"
#include "peft/backend/xtensor.hpp"
#include "support/backends.hpp"

using namespace peft;
using test::eigen_d;
using test::eigen_f;
using test::xtensor_d;

// ---- static tests of the concepts (compile-time; a failure stops the build) ----------------------
static_assert(Backend<eigen_f> && Backend<eigen_d> && Backend<xtensor_d>);
static_assert(!Backend<int> && !Backend<host_tensor<float>>);
static_assert(DenseTensor<host_tensor<float>> && !DenseTensor<std::vector<float>>);
static_assert(Layer<layers::linear<eigen_f>> && Layer<layers::activation_layer<eigen_f>> && Layer<layers::dropout<eigen_f>>);
static_assert(Layer<layers::sequential<layers::linear<eigen_f>, layers::activation_layer<eigen_f>>>);
static_assert(!Layer<int> && !Layer<host_tensor<float>>);
static_assert(PeftMethod<methods::lora<roles::query>> && PeftMethod<methods::bitfit> &&
              PeftMethod<methods::adapter<roles::ffn_out>> && PeftMethod<methods::full>);
static_assert(!PeftMethod<int> && !PeftMethod<roles::query>);
static_assert(optim::UpdateRule<optim::adamw, eigen_f> && optim::UpdateRule<optim::sgd, xtensor_d> &&
              optim::UpdateRule<optim::adafactor, eigen_d>);
static_assert(!optim::UpdateRule<int, eigen_f> && !optim::UpdateRule<optim::adamw, int>);
static_assert(groups::Group<groups::lora_a> && !groups::Group<int> && roles::Role<roles::value> && !roles::Role<double>);
static_assert(optim::Schedule<optim::cosine_schedule> && !optim::Schedule<int>);

// Trainability is decided by the plan at compile time.
using lora_qv = plan<methods::lora<roles::query, roles::value>>;
static_assert(!lora_qv::trainable_groups<roles::query>::contains<groups::weight>);
static_assert(lora_qv::trainable_groups<roles::classifier>::contains<groups::weight>);
static_assert(plan<methods::full>::trainable_groups<roles::key>::contains<groups::bias>);
static_assert(std::is_same_v<lora_qv::linear<roles::key, eigen_f>, layers::linear<eigen_f, group_set<>>>);
static_assert(std::is_same_v<lora_qv::linear<roles::query, eigen_f>, methods::lora_linear<layers::linear<eigen_f, group_set<>>>>);
// Composition does not depend on the order the methods are listed in.
static_assert(std::is_same_v<plan<methods::lora<roles::hidden>, methods::bitfit>::linear<roles::hidden, eigen_f>,
                             plan<methods::bitfit, methods::lora<roles::hidden>>::linear<roles::hidden, eigen_f>>);
static_assert(std::is_same_v<plan<methods::adapter<roles::hidden>, methods::lora<roles::hidden>>::linear<roles::hidden, eigen_f>,
                             methods::bottleneck_adapter<methods::lora_linear<layers::linear<eigen_f, group_set<>>>>>);
// The classifier is never wrapped, and trains fully.
static_assert(std::is_same_v<plan<methods::bitfit>::linear<roles::classifier, eigen_f>, layers::linear<eigen_f, all_base_groups>>);
// A frozen parameter has no gradient storage at all.
static_assert(std::is_empty_v<decltype(parameter<eigen_f, groups::weight, false>::grad)>);
// ... and a trainable one has no packed (storage-format) slot: trainable values are always dense.
static_assert(std::is_empty_v<decltype(parameter<eigen_f, groups::weight, true>::packed)>);
static_assert(Mergeable<methods::lora_linear<layers::linear<eigen_f>>> && !Mergeable<layers::linear<eigen_f>>);

BOOST_AUTO_TEST_SUITE(core)

BOOST_AUTO_TEST_CASE(shape_views_any_rank_as_a_matrix) {
  const shape s{2, 3, 5};
  BOOST_TEST(s.rank() == 3u);
  BOOST_TEST(s.size() == 30u);
  BOOST_TEST(s.rows() == 6u);
  BOOST_TEST(s.cols() == 5u);
  BOOST_TEST(s.with_cols(7).str() == "[2, 3, 7]");
  BOOST_TEST(shape{}.size() == 1u);
  BOOST_TEST(shape{4}.rows() == 1u);
  BOOST_CHECK_THROW((shape{1, 2, 3, 4, 5}), shape_error);
}

BOOST_AUTO_TEST_CASE(host_tensor_resize_keeps_capacity) {
  host_tensor<float> t(shape{64, 64});
  const float* p = t.data();
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(p) % 64 == 0u);
  t.resize(shape{8, 8});
  t.resize(shape{32, 128});
  BOOST_TEST(t.data() == p);  // shrinking then growing within capacity does not reallocate
  BOOST_TEST(t.size() == 32u * 128u);
}

BOOST_AUTO_TEST_CASE(counter_uniform_is_a_pure_function_of_seed_and_index) {
  double mean = 0;
  for (std::uint64_t i = 0; i < 100000; ++i) {
    const double u = counter_uniform(42, i);
    BOOST_REQUIRE(u >= 0.0);
    BOOST_REQUIRE(u < 1.0);
    mean += u;
  }
  BOOST_TEST(mean / 100000 == 0.5, boost::test_tools::tolerance(0.01));
  BOOST_TEST(counter_uniform(42, 17) == counter_uniform(42, 17));
  BOOST_TEST(counter_uniform(42, 17) != counter_uniform(43, 17));
  init_rng a(5), b(5);
  BOOST_TEST(a.normal(0, 1) == b.normal(0, 1));
}

BOOST_AUTO_TEST_CASE(report_matches_hf_peft_wording) {
  eigen_f::context ctx;
  // hidden.0: 4x3 + 3 frozen, lora A 2x4 + B 3x2 trainable; classifier 2x3 + 2 trainable.
  models::mlp_classifier<eigen_f, plan<methods::lora<roles::hidden>>> m(ctx, {.input_dim = 4, .hidden = {3}, .num_labels = 2},
                                                                         {lora_config{.r = 2, .alpha = 4}});
  const auto c = count_parameters(m);
  BOOST_TEST(c.total == 15u + 14u + 8u);
  BOOST_TEST(c.trainable == 14u + 8u);
  BOOST_TEST(trainable_parameters_report(m) == "trainable params: 22 || all params: 37 || trainable%: 59.4595");
  BOOST_TEST(detail::thousands(22700000) == "22,700,000");
}

BOOST_AUTO_TEST_CASE(parameter_names_follow_module_paths) {
  eigen_f::context ctx;
  models::mlp_classifier<eigen_f, plan<methods::lora<roles::hidden>, methods::bitfit, methods::adapter<roles::hidden>>> m(
      ctx, {.input_dim = 4, .hidden = {6}, .num_labels = 2}, {lora_config{.r = 2}, adapter_config{.bottleneck = 2}});
  std::vector<std::string> names;
  m.visit_parameters("", [&](const std::string& n, const auto&) { names.push_back(n); });
  const std::vector<std::string> expected{"hidden.0.weight", "hidden.0.bias", "hidden.0.lora_A.weight",
                                          "hidden.0.lora_B.weight", "hidden.0.bias_delta",
                                          "hidden.0.adapter.down.weight", "hidden.0.adapter.down.bias",
                                          "hidden.0.adapter.up.weight", "hidden.0.adapter.up.bias",
                                          "classifier.weight", "classifier.bias"};
  BOOST_TEST(names == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
