// expect: peft::plan: a method's .stage. must be 0 or more
// A method declaring a negative stage would never be applied; the plan refuses it.
#include <peft/peft.hpp>
struct early : peft::methods::bitfit {
  static constexpr std::string_view name = "early";
  static constexpr int stage = -1;
};
using bad = peft::plan<early>;
bad::linear<peft::roles::query, peft::backend::eigen<float>>* p = nullptr;
int main() { return p != nullptr; }
