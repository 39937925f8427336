// expect: peft::plan: a method lacks .static constexpr std::string_view name
// A plan argument that is not a PeftMethod is rejected with a message naming the missing member.
#include <peft/peft.hpp>
using bad = peft::plan<peft::methods::lora<peft::roles::query>, int>;
bad::linear<peft::roles::query, peft::backend::eigen<float>>* p = nullptr;
int main() { return p != nullptr; }
