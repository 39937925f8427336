#pragma once
// Backend lists for BOOST_AUTO_TEST_CASE_TEMPLATE.

#include <boost/mpl/list.hpp>

#include "peft/backend/eigen.hpp"
#include "peft/backend/xtensor.hpp"

namespace peft::test {
using eigen_d = backend::eigen<double>;
using eigen_f = backend::eigen<float>;
using xtensor_d = backend::xtensor<double>;
/// The CPU backends in double precision: every gradient check runs on each.
using cpu_double_backends = boost::mpl::list<eigen_d, xtensor_d>;
}  // namespace peft::test
