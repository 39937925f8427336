// expect: peft::plan<>: name at least one method
#include <peft/peft.hpp>
peft::plan<> p;
int main() {}
