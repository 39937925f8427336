// expect: peft::plan: a method's .wrap<Inner>. did not give a Layer
// A method whose wrapper lacks forward/backward is a readable error, not one deep inside a model.
#include <peft/peft.hpp>
template <class Inner>
struct half_done {
  using backend = typename Inner::backend;
  template <class F>
  void visit_parameters(const std::string&, F&&) const {}
};
struct broken : peft::methods::bitfit {
  static constexpr std::string_view name = "broken";
  template <class Inner>
  using wrap = half_done<Inner>;
};
using bad = peft::plan<broken>;
bad::linear<peft::roles::query, peft::backend::eigen<float>>* p = nullptr;
int main() { return p != nullptr; }
