// libFuzzer target: configuration files (a model's config.json, an adapter_config.json for a plan
// with LoRA (DoRA), AdaLoRA, VeRA, BitFit, (IA)3, LayerNorm tuning, adapters, prompt and prefix tuning) must parse or be rejected with peft::error naming the problem,
// never crash; whatever parses must describe a model that validates.
#include <cstddef>
#include <cstdint>
#include <string>

#include "peft/io/peft_adapter.hpp"
#include "peft/methods/adalora.hpp"
#include "peft/methods/adapter.hpp"
#include "peft/methods/bitfit.hpp"
#include "peft/methods/ia3.hpp"
#include "peft/methods/ln_tuning.hpp"
#include "peft/methods/lora.hpp"
#include "peft/methods/prefix_tuning.hpp"
#include "peft/methods/prompt_tuning.hpp"
#include "peft/methods/vera.hpp"
#include <tuple>
#include "peft/models/bert/config.hpp"

// The adapter reader needs only a plan's method list (peft::plan<...> itself trips clang 14, which
// builds the fuzzers, so the list is spelt out).
struct fuzz_plan {
  using methods = std::tuple<peft::methods::lora<peft::roles::query>, peft::methods::adalora<peft::roles::query>,
                             peft::methods::vera<peft::roles::query>,
                             peft::methods::bitfit, peft::methods::ia3<peft::roles::key>,
                             peft::methods::ln_tuning, peft::methods::houlsby_adapter, peft::methods::prompt_tuning,
                             peft::methods::prefix_tuning>;
};

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto j = peft::io::json_config::parse(text, "fuzz.json");
    try {
      peft::models::bert_config::from_json(j).validate();  // from_json validates; a second time must agree
    } catch (const peft::error&) {
    }
    const auto info = peft::io::parse_peft_adapter_config<fuzz_plan>(j);
    if (info.peft_type.empty()) __builtin_trap();
  } catch (const peft::error&) {
  }
  return 0;
}
