#pragma once
// The error an adapter_config.json text gives when read for a plan, for tests of bad configurations.

#include <exception>
#include <string>

#include "peft/io/json_config.hpp"
#include "peft/io/peft_adapter.hpp"

namespace peft::test {

/// The message `parse_peft_adapter_config<Plan>` throws for `text` (read as adapter_config.json), or
/// "no error".
template <class Plan>
std::string adapter_config_error(const std::string& text) {
  try {
    io::parse_peft_adapter_config<Plan>(io::json_config::parse(text, "adapter_config.json"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace peft::test
