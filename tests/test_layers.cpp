// Layers and losses: finite-difference gradients in double on both CPU backends, agreement between
// backends, and clear errors for bad input.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <limits>

#include "bodies/scenarios.hpp"
#include "peft/layers/sequential.hpp"
#include "support/backends.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::cpu_double_backends;

namespace {
/// Checks that `f` throws `E` whose message contains every fragment.
template <class E, class F>
void check_message(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    BOOST_ERROR("expected an exception");
  } catch (const E& e) {
    const std::string what = e.what();
    for (const char* frag : fragments) BOOST_TEST(what.find(frag) != std::string::npos, "'" << what << "' lacks '" << frag << "'");
  }
}
}  // namespace

BOOST_AUTO_TEST_SUITE(layers_gradients)

BOOST_AUTO_TEST_CASE_TEMPLATE(linear_trainable_with_and_without_bias, B, cpu_double_backends) {
  typename B::context ctx;
  for (bool bias : {true, false}) {
    layers::linear<B, group_set<groups::weight, groups::bias>> l(ctx, {.in_features = 5, .out_features = 4, .bias = bias});
    const auto x = test::random_tensor<B>(ctx, {2, 3, 5}, 1);
    const auto err = test::check_gradients(ctx, l, x);
    BOOST_TEST(err.empty(), err);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(frozen_linear_passes_input_gradient, B, cpu_double_backends) {
  typename B::context ctx;
  layers::linear<B> l(ctx, {.in_features = 6, .out_features = 3});
  const auto err = test::check_gradients(ctx, l, test::random_tensor<B>(ctx, {4, 6}, 2));
  BOOST_TEST(err.empty(), err);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(activations, B, cpu_double_backends) {
  typename B::context ctx;
  for (activation a : {activation::identity, activation::relu, activation::gelu, activation::gelu_tanh, activation::tanh, activation::silu}) {
    layers::activation_layer<B> l(a);
    // Keep inputs away from relu's kink at 0, where the derivative is undefined.
    auto x = test::random_tensor<B>(ctx, {3, 7}, 3, 3.0);
    for (std::size_t i = 0; i < x.size(); ++i)
      if (std::abs(x[i]) < 1e-3) x[i] = 0.5;
    const auto err = test::check_gradients(ctx, l, x);
    BOOST_TEST(err.empty(), to_string(a) << ": " << err);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(dropout_in_training_mode, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  layers::dropout<B> d(0.4);
  const auto err = test::check_gradients(ctx, d, test::random_tensor<B>(ctx, {5, 8}, 4));
  BOOST_TEST(err.empty(), err);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(sequential_composition, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  using trainable = group_set<groups::weight, groups::bias>;
  layers::sequential net(layers::linear<B, trainable>(ctx, {.in_features = 6, .out_features = 8, .seed = 1}),
                         layers::activation_layer<B>(activation::gelu), layers::dropout<B>(0.25),
                         layers::linear<B, trainable>(ctx, {.in_features = 8, .out_features = 3, .seed = 2}));
  static_assert(Layer<decltype(net)>);
  const auto err = test::check_gradients(ctx, net, test::random_tensor<B>(ctx, {4, 6}, 5));
  BOOST_TEST(err.empty(), err);
  std::vector<std::string> names;
  net.visit_parameters("net.", [&](const std::string& n, const auto&) { names.push_back(n); });
  BOOST_TEST(names.front() == "net.0.weight");
  BOOST_TEST(names.back() == "net.3.bias");
}

BOOST_AUTO_TEST_CASE_TEMPLATE(cross_entropy_and_mse, B, cpu_double_backends) {
  typename B::context ctx;
  auto z = test::random_tensor<B>(ctx, {5, 4}, 6, 2.0);
  const std::vector<std::int32_t> labels{1, -100, 3, 0, 2};
  loss::softmax_cross_entropy<B> ce;
  auto value = [&] { return ce.forward(ctx, z, labels); };
  value();
  const typename B::tensor g = ce.gradient();
  const auto t = test::random_tensor<B>(ctx, {5, 4}, 7);
  loss::mse<B> mse;
  mse.forward(ctx, z, t);
  const typename B::tensor gm = mse.gradient();
  for (std::size_t i = 0; i < z.size(); ++i) {
    const double saved = z[i], eps = 1e-6;
    z[i] = saved + eps;
    const double up = value(), mup = mse.forward(ctx, z, t);
    z[i] = saved - eps;
    const double down = value(), mdown = mse.forward(ctx, z, t);
    z[i] = saved;
    BOOST_TEST(g[i] == (up - down) / (2 * eps), boost::test_tools::tolerance(1e-6));
    BOOST_TEST(gm[i] == (mup - mdown) / (2 * eps), boost::test_tools::tolerance(1e-6));
  }
  // Ignored row: zero gradient. A batch where every row is ignored: loss 0.
  for (std::size_t j = 0; j < 4; ++j) BOOST_TEST(g[4 + j] == 0.0);
  const std::vector<std::int32_t> none(5, -100);
  BOOST_TEST(ce.forward(ctx, z, none) == 0.0);
}

BOOST_AUTO_TEST_CASE(cross_entropy_matches_a_hand_computed_value) {
  using B = test::eigen_d;
  B::context ctx;
  B::tensor z;
  B::copy_from_host(ctx, std::vector<double>{1.0, 2.0, 3.0, 0.5, 0.5, 0.5}, {2, 3}, z);
  loss::softmax_cross_entropy<B> ce;
  const std::vector<std::int32_t> labels{2, 0};
  const double expected = 0.5 * ((std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0) + std::log(3.0));
  BOOST_TEST(ce.forward(ctx, z, labels) == expected, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(backends_agree)

BOOST_AUTO_TEST_CASE(eigen_and_xtensor_in_double) {
  using test::eigen_d;
  using test::xtensor_d;
  const double tol = 1e-12;
  std::string d;
  d = test::compare(test::linear_scenario<eigen_d>(), test::linear_scenario<xtensor_d>(), tol);
  BOOST_TEST(d.empty(), "linear: " << d);
  d = test::compare(test::activation_scenario<eigen_d>(), test::activation_scenario<xtensor_d>(), tol);
  BOOST_TEST(d.empty(), "activations: " << d);
  d = test::compare(test::dropout_scenario<eigen_d>(), test::dropout_scenario<xtensor_d>(), tol);
  BOOST_TEST(d.empty(), "dropout: " << d);
  d = test::compare(test::loss_scenario<eigen_d>(), test::loss_scenario<xtensor_d>(), tol);
  BOOST_TEST(d.empty(), "losses: " << d);
}

BOOST_AUTO_TEST_CASE(eigen_float_tracks_the_double_reference) {
  const double tol = 2e-5;
  std::string d = test::compare(test::linear_scenario<test::eigen_f>(), test::linear_scenario<test::xtensor_d>(), tol);
  BOOST_TEST(d.empty(), "linear: " << d);
  d = test::compare(test::activation_scenario<test::eigen_f>(), test::activation_scenario<test::xtensor_d>(), tol);
  BOOST_TEST(d.empty(), "activations: " << d);
  d = test::compare(test::loss_scenario<test::eigen_f>(), test::loss_scenario<test::xtensor_d>(), tol);
  BOOST_TEST(d.empty(), "losses: " << d);
}

namespace {
/// Every element of c = alpha op(a) op(b) + beta c0 from a plain triple loop in long double; the largest
/// error relative to the largest |term|, so float and double share one tolerance scale.
template <class T>
double naive_gemm_error(op ta, op tb, std::size_t m, std::size_t n, std::size_t k, T alpha, const std::vector<T>& a,
                        const std::vector<T>& b, T beta, const std::vector<T>& c0, const std::vector<T>& c) {
  double worst = 0;
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      long double s = 0, mag = 0;
      for (std::size_t p = 0; p < k; ++p) {
        const long double x = ta == op::n ? a[i * k + p] : a[p * m + i], y = tb == op::n ? b[p * n + j] : b[j * k + p];
        s += x * y;
        mag += std::fabs(x * y);
      }
      const long double ref = alpha * s + (beta == T(0) ? 0.0L : beta * c0[i * n + j]);
      const long double scale = std::fabs(alpha) * mag + std::fabs(beta * c0[i * n + j]) + 1e-30L;
      worst = std::max(worst, double(std::fabs(ref - c[i * n + j]) / scale));
    }
  return worst;
}

template <class T>
void check_eigen_gemm(double tol) {
  using B = backend::eigen<T>;
  typename B::context ctx(2);
  init_rng rng(7);
  auto random = [&](std::size_t count) {
    std::vector<T> v(count);
    for (auto& x : v) x = T(rng.uniform(-1, 1));
    return v;
  };
  // Small (one thread), odd (bands not multiples of 8), wide, tall, and large enough to split over
  // threads along rows or along columns; k = 1 and a row vector for the kernel's edge cases.
  const std::size_t shapes[][3] = {{3, 5, 2}, {1, 33, 7}, {17, 1, 40}, {130, 75, 97}, {9, 300, 200},
                                   {300, 9, 200}, {257, 129, 65}, {64, 64, 1}, {96, 200, 300}};
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (const auto& [m, n, k] : shapes)
    for (const op ta : {op::n, op::t})
      for (const op tb : {op::n, op::t})
        for (const T beta : {T(0), T(1), T(-0.5)}) {
          typename B::tensor a, b, c;
          const auto ha = random(m * k), hb = random(k * n);
          // beta == 0 must ignore C entirely, NaN included (BLAS semantics).
          const auto hc0 = beta == T(0) ? std::vector<T>(m * n, nan) : random(m * n);
          B::copy_from_host(ctx, ha, ta == op::n ? shape{m, k} : shape{k, m}, a);
          B::copy_from_host(ctx, hb, tb == op::n ? shape{k, n} : shape{n, k}, b);
          B::copy_from_host(ctx, hc0, {m, n}, c);
          B::gemm(ctx, ta, tb, T(0.75), a, b, beta, c);
          const double err = naive_gemm_error(ta, tb, m, n, k, T(0.75), ha, hb, beta, hc0, B::copy_to_host(ctx, c));
          BOOST_TEST(err < tol, "gemm " << m << "x" << n << "x" << k << " ta=" << int(ta) << " tb=" << int(tb)
                                        << " beta=" << beta << ": relative error " << err);
        }
  // Batched, strided: 3 x 2 products of 40x24 (a^T) by 24x36 inside larger row pitches.
  const std::size_t m = 40, n = 36, k = 24, outer = 3, inner = 2, lda = 50, ldb = 45, ldc = 60;
  const auto ha = random(outer * inner * k * lda), hb = random(outer * inner * k * ldb);
  auto hc = random(outer * inner * m * ldc);
  const auto hc0 = hc;
  B::gemm_batched(ctx, op::t, op::n, m, n, k, T(1.5), {ha.data(), lda, k * lda, inner * k * lda},
                  {hb.data(), ldb, k * ldb, inner * k * ldb}, T(2), {hc.data(), ldc, m * ldc, inner * m * ldc}, outer,
                  inner);
  for (std::size_t idx = 0; idx < outer * inner; ++idx) {
    std::vector<T> a(k * m), b(k * n), c0(m * n), c(m * n);
    for (std::size_t r = 0; r < k; ++r)
      for (std::size_t j = 0; j < m; ++j) a[r * m + j] = ha[idx * k * lda + r * lda + j];
    for (std::size_t r = 0; r < k; ++r)
      for (std::size_t j = 0; j < n; ++j) b[r * n + j] = hb[idx * k * ldb + r * ldb + j];
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t j = 0; j < n; ++j) {
        c0[r * n + j] = hc0[idx * m * ldc + r * ldc + j];
        c[r * n + j] = hc[idx * m * ldc + r * ldc + j];
      }
    const double err = naive_gemm_error(op::t, op::n, m, n, k, T(1.5), a, b, T(2), c0, c);
    BOOST_TEST(err < tol, "gemm_batched product " << idx << ": relative error " << err);
    for (std::size_t r = 0; r < m; ++r)  // the pitch padding is not written
      for (std::size_t j = n; j < ldc; ++j) BOOST_TEST(hc[idx * m * ldc + r * ldc + j] == hc0[idx * m * ldc + r * ldc + j]);
  }
}
}  // namespace

BOOST_AUTO_TEST_CASE(eigen_gemm_matches_a_naive_product) {
  check_eigen_gemm<float>(1e-5);
  check_eigen_gemm<double>(1e-13);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(bad_input)

BOOST_AUTO_TEST_CASE_TEMPLATE(shape_mismatches_name_the_layer_and_shapes, B, cpu_double_backends) {
  typename B::context ctx;
  layers::linear<B, group_set<groups::weight>> l(ctx, {.in_features = 8, .out_features = 4, .name = "encoder.fc"});
  const auto x = test::random_tensor<B>(ctx, {4, 7}, 1);
  check_message<shape_error>([&] { l.forward(ctx, x); }, {"encoder.fc", "[4, 7]", "in_features = 8"});
  const auto good = test::random_tensor<B>(ctx, {4, 8}, 1);
  l.forward(ctx, good);
  check_message<shape_error>([&] { l.backward(ctx, test::random_tensor<B>(ctx, {4, 5}, 1)); }, {"encoder.fc", "[4, 5]", "[4, 4]"});
  typename B::tensor a = test::random_tensor<B>(ctx, {3, 4}, 1), b = test::random_tensor<B>(ctx, {5, 6}, 2), c(shape{3, 6});
  check_message<shape_error>([&] { B::gemm(ctx, op::n, op::n, 1.0, a, b, 0.0, c); }, {"gemm", "[3, 4]", "[5, 6]"});
  check_message<shape_error>([&] { B::axpy(ctx, 1.0, a, b); }, {"axpy", "[3, 4]", "[5, 6]"});
  check_message<config_error>([&] { layers::linear<B>(ctx, {.in_features = 0, .out_features = 3, .name = "x"}); }, {"'x'", "in_features (0)"});
  check_message<config_error>([] { layers::dropout<B>(1.0, "drop"); }, {"drop", "[0, 1)"});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(losses_reject_bad_labels_and_non_finite_values, B, cpu_double_backends) {
  typename B::context ctx;
  auto z = test::random_tensor<B>(ctx, {3, 4}, 1);
  loss::softmax_cross_entropy<B> ce;
  check_message<config_error>([&] { ce.forward(ctx, z, std::vector<std::int32_t>{0, 4, 1}); }, {"label 4", "row 1", "[0, 4)"});
  check_message<shape_error>([&] { ce.forward(ctx, z, std::vector<std::int32_t>{0, 1}); }, {"2 labels", "[3, 4]"});
  z[5] = std::numeric_limits<double>::quiet_NaN();
  check_message<numeric_error>([&] { ce.forward(ctx, z, std::vector<std::int32_t>{0, 1, 2}); }, {"not finite", "[3, 4]"});
  loss::mse<B> mse;
  check_message<shape_error>([&] { mse.forward(ctx, z, test::random_tensor<B>(ctx, {4, 3}, 2)); }, {"[3, 4]", "[4, 3]"});
  check_message<numeric_error>([&] { mse.forward(ctx, z, test::random_tensor<B>(ctx, {3, 4}, 2)); }, {"not finite"});
}

BOOST_AUTO_TEST_SUITE_END()
