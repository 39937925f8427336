#pragma once
// Named arrays of numbers produced by a test scenario, and their comparison. Plain C++ with no
// backend or Boost header, so CPU and CUDA test programs share it.

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace peft::test {

/// The observable results of a scenario: outputs, gradients, losses, parameters, by name.
using results = std::map<std::string, std::vector<double>>;

/// Appends the host copy of a backend tensor under `name`.
template <class B>
void record(results& r, const std::string& name, typename B::context& ctx, const typename B::tensor& t) {
  const auto h = B::copy_to_host(ctx, t);
  r[name].assign(h.begin(), h.end());
}

/// Empty string when `a` and `b` hold the same names and every value agrees within
/// |x - y| <= tol * max(1, |x|, |y|); otherwise a description of the first disagreement.
inline std::string compare(const results& a, const results& b, double tol) {
  std::ostringstream os;
  for (const auto& [name, va] : a) {
    const auto it = b.find(name);
    if (it == b.end()) return "missing '" + name + "' in second result";
    const auto& vb = it->second;
    if (va.size() != vb.size()) {
      os << "'" << name << "': sizes " << va.size() << " vs " << vb.size();
      return os.str();
    }
    for (std::size_t i = 0; i < va.size(); ++i) {
      const double scale = std::max({1.0, std::abs(va[i]), std::abs(vb[i])});
      if (!(std::abs(va[i] - vb[i]) <= tol * scale)) {
        os << "'" << name << "'[" << i << "]: " << va[i] << " vs " << vb[i] << " (tol " << tol << ")";
        return os.str();
      }
    }
  }
  if (a.size() != b.size()) return "second result has extra entries";
  return {};
}

}  // namespace peft::test
