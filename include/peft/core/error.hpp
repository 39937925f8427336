#pragma once
/// \file Exception types. Every error names what was wrong and where (layer, parameter, shapes).

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace peft {

/// Base of all exceptions thrown by the library.
struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Tensor shapes that do not fit together (never silently broadcast).
struct shape_error : error {
  using error::error;
};

/// Invalid run-time configuration (rank, alpha, dropout probability, learning rate, ...).
struct config_error : error {
  using error::error;
};

/// A non-finite value where a finite one is required (loss, gradient norm).
struct numeric_error : error {
  using error::error;
};

namespace detail {
/// Streams all arguments into one string: `concat("layer '", name, "': ", shape)`.
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

}  // namespace peft
