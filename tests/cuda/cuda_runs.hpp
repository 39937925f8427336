#pragma once
// The shared test bodies instantiated for backend::cuda (in cuda_scenarios.cu, compiled by nvcc),
// exposed as plain functions so the Boost.Test program is compiled by the host compiler.

#include <string>

#include "support/results.hpp"

namespace peft::test::cuda_runs {
/// Number of usable CUDA devices; 0 with the reason in `why` when there is none.
int device_count(std::string& why);
results linear_double();
results linear_float();
results activation_double();
results dropout_double();
results loss_double();
results lora_bitfit_double();
results lora_adapter_double();
results ia3_double(bool feedforward);
results dora_double(bool dropout);
results vera_double();
results training_adamw_double();
results training_adamw_float();
results training_sgd_double();
results training_adafactor_double();
results bert_first_token_double();
results bert_masked_mean_double();
results bert_first_token_float();
results llama_lora_double();
results virtual_tokens_double();
}  // namespace peft::test::cuda_runs
