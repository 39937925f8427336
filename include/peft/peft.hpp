#pragma once
/// \file Umbrella header for CPU users. Never includes CUDA headers; the CUDA backend lives in
/// `<peft/cuda/backend.cuh>` and is compiled by nvcc only.

#include "peft/core/backend.hpp"
#include "peft/core/config.hpp"
#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/host_tensor.hpp"
#include "peft/core/kernel_args.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/parameter.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/core/shape.hpp"
#include "peft/backend/eigen.hpp"
#include "peft/layers/activation.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/linear.hpp"
#include "peft/layers/sequential.hpp"
#include "peft/loss/cross_entropy.hpp"
#include "peft/loss/mse.hpp"
#include "peft/methods/adapter.hpp"
#include "peft/methods/bitfit.hpp"
#include "peft/methods/full.hpp"
#include "peft/methods/lora.hpp"
#include "peft/methods/method.hpp"
#include "peft/methods/plan.hpp"
#include "peft/layers/attention.hpp"
#include "peft/layers/embedding.hpp"
#include "peft/layers/layer_norm.hpp"
#include "peft/models/bert.hpp"
#include "peft/models/bert_config.hpp"
#include "peft/models/bert_memory.hpp"
#include "peft/models/mlp.hpp"
#include "peft/optim/adafactor.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/optim/schedule.hpp"
#include "peft/optim/sgd.hpp"
#include "peft/optim/update_rule.hpp"
#include "peft/train/metrics.hpp"
#include "peft/train/progress.hpp"
#include "peft/train/report.hpp"
#include "peft/train/training_state.hpp"
#include "peft/train/transfer.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/hf_config.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/text/wordpiece.hpp"
#include "peft/data/batching.hpp"
#include "peft/data/readers.hpp"

/// Short names for the common entities, as the guide's usage example spells them.
namespace peft {
using methods::adapter;
using methods::bitfit;
using methods::full;
using methods::lora;
}  // namespace peft
