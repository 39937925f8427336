// libFuzzer target: peft-train's run card (peft_train.json, examples/peft_train/options.cpp) must
// parse or be rejected with peft::error naming the file, never crash; a card that parses must
// survive its own round trip (to_json, from_json) unchanged.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "../../examples/peft_train/options.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto j = nlohmann::json::parse(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    const auto card = peft_train::run_card::from_json(j, "peft_train.json");
    const auto again = peft_train::run_card::from_json(card.to_json(), "round trip");
    if (again.to_json() != card.to_json()) __builtin_trap();
  } catch (const peft::error&) {
  }
  return 0;
}
