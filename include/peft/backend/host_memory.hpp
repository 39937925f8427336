#pragma once
/// \file Host-memory transfers shared by the CPU backends (their tensors are `host_tensor`s).

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/host_tensor.hpp"

namespace peft::backend::detail {

/// `copy_from_host`, `copy_to_host` and `copy_labels` for backends whose memory is the host's.
/// CPU backends inherit these static members.
template <class T>
struct host_memory {
  template <class Context>
  static void copy_from_host(Context&, std::span<const T> src, const shape& s, host_tensor<T>& dst) {
    if (src.size() != s.size())
      throw shape_error(peft::detail::concat("copy_from_host: ", src.size(), " values for shape ", s));
    dst.resize(s);
    std::copy(src.begin(), src.end(), dst.data());
  }
  template <class Context>
  static std::vector<T> copy_to_host(Context&, const host_tensor<T>& t) {
    return {t.data(), t.data() + t.size()};
  }
  template <class Context>
  static void copy_labels(Context&, std::span<const std::int32_t> src, host_tensor<std::int32_t>& dst) {
    dst.resize(shape{src.size()});
    std::copy(src.begin(), src.end(), dst.data());
  }
};

}  // namespace peft::backend::detail
