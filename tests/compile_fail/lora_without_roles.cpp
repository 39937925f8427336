// expect: peft::lora<Roles...>: name at least one role
#include <peft/peft.hpp>
peft::lora<> m;
int main() {}
