// expect: a method family appears twice
// Two lora entries would wrap a layer twice; the roles belong in one lora<...>.
#include <peft/peft.hpp>
using namespace peft;
plan<lora<roles::query>, lora<roles::value>> p;
int main() {}
