// CUDA backend against the eigen backend, on the same test bodies. Without a GPU the program
// prints why and exits with 77, which ctest reports as skipped (never as passed).
#define BOOST_TEST_MODULE peft_cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>
#include <iostream>

#include "bodies/scenarios.hpp"
#include "cuda/cuda_runs.hpp"
#include "peft/backend/eigen.hpp"

using namespace peft;
using ed = backend::eigen<double>;
using ef = backend::eigen<float>;

namespace {
void expect_same(const char* what, const test::results& gpu, const test::results& cpu, double tol) {
  const std::string d = test::compare(gpu, cpu, tol);
  BOOST_TEST(d.empty(), what << ": " << d);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(cuda_vs_eigen)

BOOST_AUTO_TEST_CASE(linear) {
  expect_same("linear double", test::cuda_runs::linear_double(), test::linear_scenario<ed>(), 1e-12);
  expect_same("linear float", test::cuda_runs::linear_float(), test::linear_scenario<ef>(), 1e-5);
}
BOOST_AUTO_TEST_CASE(activations_and_dropout) {
  expect_same("activations", test::cuda_runs::activation_double(), test::activation_scenario<ed>(), 1e-12);
  expect_same("dropout", test::cuda_runs::dropout_double(), test::dropout_scenario<ed>(), 1e-12);
}
BOOST_AUTO_TEST_CASE(losses) {
  expect_same("losses", test::cuda_runs::loss_double(), test::loss_scenario<ed>(), 1e-12);
}
BOOST_AUTO_TEST_CASE(lora_bitfit_adapter) {
  expect_same("lora+bitfit", test::cuda_runs::lora_bitfit_double(), test::method_scenario<ed, test::lora_bitfit_plan>(), 1e-12);
  expect_same("lora+adapter", test::cuda_runs::lora_adapter_double(), test::method_scenario<ed, test::lora_adapter_plan>(), 1e-12);
  for (const bool feedforward : {false, true})
    expect_same(feedforward ? "lora+bitfit+ia3 feedforward" : "lora+bitfit+ia3", test::cuda_runs::ia3_double(feedforward),
                test::method_scenario<ed, test::lora_bitfit_ia3_plan>(test::scenario_ia3_methods(feedforward)), 1e-12);
  for (const bool dropout : {false, true})
    expect_same(dropout ? "dora+bitfit+ia3 dropout" : "dora+bitfit+ia3", test::cuda_runs::dora_double(dropout),
                test::method_scenario<ed, test::lora_bitfit_ia3_plan>(test::scenario_dora_methods(dropout)), 1e-12);
  expect_same("lora+vera+bitfit", test::cuda_runs::vera_double(),
              test::method_scenario<ed, test::lora_vera_bitfit_plan>(test::scenario_vera_methods()), 1e-12);
}
BOOST_AUTO_TEST_CASE(training_with_adamw_sgd_adafactor) {
  expect_same("adamw double", test::cuda_runs::training_adamw_double(),
              test::training_scenario<ed, test::lora_bitfit_plan>(optim::adamw{.lr = 0.05}), 1e-9);
  expect_same("adamw float", test::cuda_runs::training_adamw_float(),
              test::training_scenario<ef, test::lora_bitfit_plan>(optim::adamw{.lr = 0.05}), 2e-4);
  expect_same("sgd", test::cuda_runs::training_sgd_double(),
              test::training_scenario<ed, test::lora_adapter_plan>(optim::sgd{.lr = 0.1, .momentum = 0.9, .nesterov = true}),
              1e-9);
  expect_same("adafactor", test::cuda_runs::training_adafactor_double(),
              test::training_scenario<ed, plan<methods::full>>(optim::adafactor{.beta1 = 0.9}), 1e-9);
}

BOOST_AUTO_TEST_CASE(bert_encoder_training_and_merge) {
  expect_same("bert first token", test::cuda_runs::bert_first_token_double(),
              test::bert_scenario<ed>(models::pooling::first_token), 1e-9);
  expect_same("bert masked mean", test::cuda_runs::bert_masked_mean_double(),
              test::bert_scenario<ed>(models::pooling::masked_mean), 1e-9);
  expect_same("bert float", test::cuda_runs::bert_first_token_float(), test::bert_scenario<ef>(models::pooling::first_token),
              5e-4);
}

BOOST_AUTO_TEST_CASE(llama_decoder_training_cache_and_merge) {
  expect_same("llama lora", test::cuda_runs::llama_lora_double(), test::llama_scenario<ed>(), 1e-9);
  expect_same("prompt and prefix tuning", test::cuda_runs::virtual_tokens_double(), test::virtual_tokens_scenario<ed>(), 1e-9);
}

BOOST_AUTO_TEST_SUITE_END()

int main(int argc, char* argv[]) {
  std::string why;
  if (test::cuda_runs::device_count(why) == 0) {
    std::cout << "SKIPPED: the CUDA tests need a GPU (" << why << ")\n";
    return 77;
  }
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
