// The backend-generic test bodies compiled by nvcc for the CUDA backend.
#include "bodies/scenarios.hpp"
#include "cuda/cuda_runs.hpp"
#include "peft/cuda/backend.cuh"

namespace peft::test::cuda_runs {
using cd = backend::cuda<double>;
using cf = backend::cuda<float>;

int device_count(std::string& why) { return peft::cuda::device_count(&why); }
results linear_double() { return linear_scenario<cd>(); }
results linear_float() { return linear_scenario<cf>(); }
results activation_double() { return activation_scenario<cd>(); }
results dropout_double() { return dropout_scenario<cd>(); }
results loss_double() { return loss_scenario<cd>(); }
results lora_bitfit_double() { return method_scenario<cd, lora_bitfit_plan>(); }
results lora_adapter_double() { return method_scenario<cd, lora_adapter_plan>(); }
results ia3_double(bool feedforward) {
  return method_scenario<cd, lora_bitfit_ia3_plan>(scenario_ia3_methods(feedforward));
}
results dora_double(bool dropout) { return method_scenario<cd, lora_bitfit_ia3_plan>(scenario_dora_methods(dropout)); }
results vera_double() { return method_scenario<cd, lora_vera_bitfit_plan>(scenario_vera_methods()); }
results training_adamw_double() { return training_scenario<cd, lora_bitfit_plan>(optim::adamw{.lr = 0.05}); }
results training_adamw_float() { return training_scenario<cf, lora_bitfit_plan>(optim::adamw{.lr = 0.05}); }
results training_sgd_double() {
  return training_scenario<cd, lora_adapter_plan>(optim::sgd{.lr = 0.1, .momentum = 0.9, .nesterov = true});
}
results training_adafactor_double() { return training_scenario<cd, plan<methods::full>>(optim::adafactor{.beta1 = 0.9}); }
results bert_first_token_double() { return bert_scenario<cd>(models::pooling::first_token); }
results bert_masked_mean_double() { return bert_scenario<cd>(models::pooling::masked_mean); }
results bert_first_token_float() { return bert_scenario<cf>(models::pooling::first_token); }
results llama_lora_double() { return llama_scenario<cd>(); }
results virtual_tokens_double() { return virtual_tokens_scenario<cd>(); }
}  // namespace peft::test::cuda_runs
