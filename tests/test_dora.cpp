// DoRA: gradients against finite differences on both CPU backends (the direct path, the path with
// dropout, a trainable base weight, and under BitFit and (IA)3), the forward against a hand
// computation of PEFT's formula, the start as the base model with the magnitude measured on the
// loaded weight, merge and unmerge, a packed (bf16) base weight against its dense twin, PEFT's file
// format both ways, the training state, and misuse.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <fstream>

#include "bodies/scenarios.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/models/bert/memory.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/train/report.hpp"
#include "peft/train/training_state.hpp"
#include "support/backends.hpp"
#include "support/temp_dir.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::temp_dir;
using test::cpu_double_backends;

namespace {
using lora_plan = plan<methods::lora<roles::hidden>>;
using full_lora_plan = plan<methods::full, methods::lora<roles::hidden>>;
using bert_dora = plan<methods::lora<roles::query, roles::value>>;

const layers::linear_options opts{.in_features = 7, .out_features = 5, .bias = true, .name = "h", .seed = 9};

method_config dora_methods(double dropout, std::size_t r = 3) {
  return method_config{lora_config{.r = r, .alpha = 6, .dropout = dropout, .use_dora = true}};
}


template <class B, class M>
std::vector<typename B::value_type> logits_of(typename B::context& ctx, M& m) {
  return B::copy_to_host(ctx, m.forward(ctx, test::tiny_batch()));
}
/// The DoRA layer inside a plan's linear layer (LoRA is the innermost wrapper).
template <class L>
auto& lora_of(L& l) {
  if constexpr (requires { l.dora(); }) return l;
  else return lora_of(l.inner());
}

/// PEFT's DoRA forward in double on the host, with x_d the input after the LoRA dropout (x without it):
/// W x + b + (g - 1) ⊙ (W x_d) + g ⊙ (s B A x_d), g = m / ||W + s B A||_row.
template <class B, class L>
std::vector<double> hand_forward(typename B::context& ctx, L& l, const std::vector<typename B::value_type>& x, std::size_t rows,
                                 const std::vector<typename B::value_type>* dropped = nullptr) {
  const auto& x_d = dropped ? *dropped : x;
  auto& lora = lora_of(l);
  const auto w = l.base_linear().weight().host_values(ctx);
  const auto bias = B::copy_to_host(ctx, l.base_linear().bias().value);
  const auto a = B::copy_to_host(ctx, lora.lora_A().weight().value);
  const auto bm = B::copy_to_host(ctx, lora.lora_B().weight().value);
  const auto m = B::copy_to_host(ctx, lora.dora()->magnitude().value);
  const std::size_t in = l.in_features(), out = l.out_features(), r = lora.rank();
  const double s = lora.scaling();
  std::vector<double> merged(out * in), y(rows * out);
  for (std::size_t o = 0; o < out; ++o) {
    double norm2 = 0;
    for (std::size_t i = 0; i < in; ++i) {
      double ba = 0;
      for (std::size_t k = 0; k < r; ++k) ba += double(bm[o * r + k]) * double(a[k * in + i]);
      merged[o * in + i] = double(w[o * in + i]) + s * ba;
      norm2 += merged[o * in + i] * merged[o * in + i];
    }
    const double g = double(m[o]) / std::sqrt(norm2);
    for (std::size_t q = 0; q < rows; ++q) {
      double base = 0, base_d = 0, merged_d = 0;
      for (std::size_t i = 0; i < in; ++i) {
        base += double(w[o * in + i]) * double(x[q * in + i]);
        base_d += double(w[o * in + i]) * double(x_d[q * in + i]);
        merged_d += merged[o * in + i] * double(x_d[q * in + i]);
      }
      y[q * out + o] = base + double(bias[o]) + (g - 1) * base_d + g * (merged_d - base_d);
    }
  }
  return y;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(dora)

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_on_every_path, B, cpu_double_backends) {
  // The norm is held at its value from the first forward, as the gradient treats it (PEFT detaches it).
  for (const double dropout : {0.0, 0.3}) {
    typename B::context ctx;
    ctx.training = true;
    ctx.seed = 3;
    typename lora_plan::template linear<roles::hidden, B> l(ctx, opts, dora_methods(dropout));
    test::randomize_parameters(ctx, l, 4);
    l.forward(ctx, test::random_tensor<B>(ctx, {2, 3, 7}, 5));
    BOOST_TEST(l.dora()->direct() == (dropout == 0.0));
    l.dora()->hold_norm(true);
    std::string e = test::check_gradients(ctx, l, test::random_tensor<B>(ctx, {2, 3, 7}, 5));
    BOOST_TEST(e.empty(), "dora dropout=" << dropout << ": " << e);

    // A trainable base (full fine-tuning with DoRA): W gets the gradient of the rescaled term too.
    typename full_lora_plan::template linear<roles::hidden, B> f(ctx, opts, dora_methods(dropout));
    test::randomize_parameters(ctx, f, 6);
    f.forward(ctx, test::random_tensor<B>(ctx, {4, 7}, 7));
    BOOST_TEST(!lora_of(f).dora()->direct());
    lora_of(f).dora()->hold_norm(true);
    e = test::check_gradients(ctx, f, test::random_tensor<B>(ctx, {4, 7}, 7));
    BOOST_TEST(e.empty(), "full+dora dropout=" << dropout << ": " << e);

    // Under BitFit and (IA)3, which wrap it.
    method_config all = test::scenario_ia3_methods(false);
    all.get<lora_config>().use_dora = true;
    all.get<lora_config>().dropout = dropout;
    typename test::lora_bitfit_ia3_plan::template linear<roles::hidden, B> c(ctx, opts, all);
    test::randomize_parameters(ctx, c, 8);
    c.forward(ctx, test::random_tensor<B>(ctx, {4, 7}, 9));
    lora_of(c).dora()->hold_norm(true);
    e = test::check_gradients(ctx, c, test::random_tensor<B>(ctx, {4, 7}, 9));
    BOOST_TEST(e.empty(), "lora(dora)+bitfit+ia3 dropout=" << dropout << ": " << e);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(forward_is_peft_formula_and_the_norm_follows_the_update, B, cpu_double_backends) {
  typename B::context ctx;
  typename lora_plan::template linear<roles::hidden, B> l(ctx, opts, dora_methods(0.0));
  test::randomize_parameters(ctx, l, 11);
  const auto xt = test::random_tensor<B>(ctx, {3, 7}, 12);
  const auto x = B::copy_to_host(ctx, xt);
  for (const bool training : {false, true}) {  // no dropout: both modes are the direct formula
    ctx.training = training;
    const auto y = B::copy_to_host(ctx, l.forward(ctx, xt));
    const auto want = hand_forward<B>(ctx, l, x, 3);
    BOOST_TEST(test::max_abs_diff(y, want) < 1e-12);
  }
  // The norm is measured again after A and B change (it is not frozen at its first value).
  auto bm = B::copy_to_host(ctx, l.lora_B().weight().value);
  for (auto& v : bm) v *= -2;
  B::copy_from_host(ctx, bm, l.lora_B().weight().value.shape(), l.lora_B().weight().value);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.forward(ctx, xt)), hand_forward<B>(ctx, l, x, 3)) < 1e-12);
  // So is the base weight's own norm: a weight replaced after the first forward (a checkpoint loaded
  // late) is measured again.
  B::copy(ctx, test::random_tensor<B>(ctx, {5, 7}, 14, 2.0), l.base_linear().weight().value);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.forward(ctx, xt)), hand_forward<B>(ctx, l, x, 3)) < 1e-12);

  // With dropout at work, the base term sees x and the rescaled and LoRA terms the dropped-out x_d
  // (the same mask a dropout layer draws at the same place in the context's stream).
  typename lora_plan::template linear<roles::hidden, B> d(ctx, opts, dora_methods(0.5));
  test::randomize_parameters(ctx, d, 13);
  ctx.training = true;
  ctx.seed = 17;
  const std::uint64_t offset = ctx.random_offset;
  layers::dropout<B> same_mask(0.5);
  const auto x_d = B::copy_to_host(ctx, same_mask.forward(ctx, xt));
  BOOST_TEST(test::max_abs_diff(x_d, x) > 0.1);  // some units were dropped
  ctx.random_offset = offset;
  const auto y_d = B::copy_to_host(ctx, d.forward(ctx, xt));
  BOOST_TEST(!d.dora()->direct());
  BOOST_TEST(test::max_abs_diff(y_d, hand_forward<B>(ctx, d, x, 3, &x_d)) < 1e-12);
  ctx.training = false;  // evaluation mode: no dropout, the direct formula again
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, d.forward(ctx, xt)), hand_forward<B>(ctx, d, x, 3)) < 1e-12);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(starts_as_the_base_with_the_magnitude_of_the_loaded_weight, B, cpu_double_backends) {
  for (const double dropout : {0.0, 0.3}) {
    typename B::context ctx;
    ctx.training = true;
    layers::linear<B> base(ctx, opts);
    typename lora_plan::template linear<roles::hidden, B> l(ctx, opts, dora_methods(dropout));
    BOOST_TEST(l.dora()->magnitude().value.empty());  // set at first use, from the weight then
    BOOST_TEST(l.dora()->magnitude().stored_shape().str() == "[5]");
    // Replace the base weight after construction, as a checkpoint loader does.
    const auto w = test::random_tensor<B>(ctx, {5, 7}, 21);
    B::copy(ctx, w, base.weight().value);
    B::copy(ctx, w, l.base_linear().weight().value);
    const auto x = test::random_tensor<B>(ctx, {4, 7}, 22);
    const auto yb = B::copy_to_host(ctx, base.forward(ctx, x));
    const auto yl = B::copy_to_host(ctx, l.forward(ctx, x));
    BOOST_TEST(yb == yl, boost::test_tools::per_element());  // B = 0 and g = 1: exactly the base
    const auto wh = B::copy_to_host(ctx, w);
    const auto m = B::copy_to_host(ctx, l.dora()->magnitude().value);
    for (std::size_t o = 0; o < 5; ++o) {
      double n2 = 0;
      for (std::size_t i = 0; i < 7; ++i) n2 += wh[o * 7 + i] * wh[o * 7 + i];
      BOOST_TEST(m[o] == std::sqrt(n2), boost::test_tools::tolerance(1e-13));
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(merge_equals_unmerged_and_unmerge_restores, B, cpu_double_backends) {
  typename B::context ctx;
  typename test::lora_bitfit_ia3_plan::template linear<roles::hidden, B> l(ctx, opts, [] {
    method_config c = test::scenario_ia3_methods(false);
    c.get<lora_config>().use_dora = true;
    return c;
  }());
  test::randomize_parameters(ctx, l, 10);
  const auto w0 = B::copy_to_host(ctx, l.base_linear().weight().value);
  const auto b0 = B::copy_to_host(ctx, l.base_linear().bias().value);
  const auto x = test::random_tensor<B>(ctx, {6, 7}, 11);
  const auto y = B::copy_to_host(ctx, l.forward(ctx, x));
  l.merge(ctx);
  BOOST_CHECK_THROW(l.merge(ctx), error);
  const auto ym = B::copy_to_host(ctx, l.forward(ctx, x));
  BOOST_TEST(test::max_abs_diff(ym, y) < 1e-12);
  BOOST_TEST(ym == B::copy_to_host(ctx, l.base_linear().forward(ctx, x)), boost::test_tools::per_element());
  l.unmerge(ctx);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.base_linear().weight().value), w0) < 1e-13);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.base_linear().bias().value), b0) < 1e-13);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.forward(ctx, x)), y) < 1e-12);
}

BOOST_AUTO_TEST_CASE(a_packed_base_weight_gives_what_its_dense_twin_gives) {
  // bf16 frozen storage: the norm's products and the dropout path read the packed weight.
  using B = backend::eigen<double>;
  for (const double dropout : {0.0, 0.3}) {
    B::context ctx;
    ctx.training = true;
    ctx.seed = 4;
    typename lora_plan::template linear<roles::hidden, B> packed(ctx, opts, dora_methods(dropout));
    typename lora_plan::template linear<roles::hidden, B> dense(ctx, opts, dora_methods(dropout));
    test::randomize_parameters(ctx, dense, 30);
    test::randomize_parameters(ctx, packed, 30);
    const auto w = B::copy_to_host(ctx, dense.base_linear().weight().value);
    const std::vector<float> wf(w.begin(), w.end());
    auto pm = packed_matrix::encode(wf, 5, 7, storage_format::bf16, "h.weight");
    const auto rounded = pm.dequantize<double>();
    packed.base_linear().set_weight(ctx, std::move(pm));
    BOOST_REQUIRE(packed.base_linear().packed_weight());
    B::copy_from_host(ctx, rounded, shape{5, 7}, dense.base_linear().weight().value);
    const auto x = test::random_tensor<B>(ctx, {4, 7}, 31);
    const auto dy = test::random_tensor<B>(ctx, {4, 5}, 32);
    ctx.random_offset = 0;
    const auto yp = B::copy_to_host(ctx, packed.forward(ctx, x));
    const auto dxp = B::copy_to_host(ctx, packed.backward(ctx, dy));
    ctx.random_offset = 0;
    const auto yd = B::copy_to_host(ctx, dense.forward(ctx, x));
    const auto dxd = B::copy_to_host(ctx, dense.backward(ctx, dy));
    BOOST_TEST(test::max_abs_diff(yp, yd) < 1e-12);
    BOOST_TEST(test::max_abs_diff(dxp, dxd) < 1e-12);
    BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, packed.dora()->magnitude().grad), B::copy_to_host(ctx, dense.dora()->magnitude().grad)) <
               1e-12);
  }
}

BOOST_AUTO_TEST_CASE(saves_peft_dora_and_loads_it_back_and_merges) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  const method_config cfg = dora_methods(0.0, 4);
  models::bert_for_sequence_classification<B, bert_dora> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  // Before the first forward the magnitudes have no value: saving is refused, nothing is written.
  BOOST_CHECK_THROW(io::save_peft_adapter(ctx, m, dir.path / "early", {.task_type = "SEQ_CLS", .methods = cfg}), error);
  BOOST_CHECK_THROW(io::save_checkpoint(ctx, m, dir.path / "early.safetensors"), error);
  BOOST_TEST(!std::filesystem::exists(dir.path / "early"));
  BOOST_TEST(!std::filesystem::exists(dir.path / "early.safetensors"));
  logits_of<B>(ctx, m);  // sets them from the base weights
  io::save_checkpoint(ctx, m, dir.path / "base.safetensors");
  test::randomize_trainable(ctx, m, 3, 0.3);  // a trained adapter, magnitudes included
  const auto trained = logits_of<B>(ctx, m);
  io::save_peft_adapter(ctx, m, dir.path / "adapter", {.task_type = "SEQ_CLS", .methods = cfg});
  std::ifstream in(dir.path / "adapter" / "adapter_config.json");
  const auto j = nlohmann::json::parse(in);
  BOOST_TEST(j["peft_type"] == "LORA");
  BOOST_TEST(j["use_dora"] == true);
  const auto f = io::safetensors_file::open(dir.path / "adapter" / "adapter_model.safetensors");
  const auto* t = f.find("base_model.model.bert.encoder.layer.1.attention.self.value.lora_magnitude_vector");
  BOOST_REQUIRE(t);
  BOOST_TEST((t->shape == std::vector<std::size_t>{16}));
  BOOST_TEST(f.tensors().size() == 4u * 3u + 2u);  // A, B, magnitude on four modules; the classifier

  const auto info = io::read_peft_adapter_config<bert_dora>(dir.path / "adapter");
  BOOST_TEST(info.options.get<lora_config>().use_dora);
  models::bert_for_sequence_classification<B, bert_dora> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 7}, info.options);
  io::load_checkpoint(ctx, n, dir.path / "base.safetensors");
  BOOST_TEST(io::load_peft_adapter(ctx, n, dir.path / "adapter").loaded == 14u);
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-5);  // the loaded magnitude is kept, not re-measured

  io::save_merged_checkpoint(ctx, n, dir.path / "merged", test::tiny_bert_config().to_json("BertForSequenceClassification"));
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-5);
  models::bert_for_sequence_classification<B, plan<methods::full>> plain(ctx, test::tiny_bert_config(), {.num_labels = 3});
  const auto r = io::load_checkpoint(ctx, plain, dir.path / "merged" / "model.safetensors");
  BOOST_TEST(r.missing.empty(), r.str());
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, plain), trained) < 1e-5);

  BOOST_TEST(methods::detail::lora_peft_format::parameter_name(
                 "bert.encoder.layer.0.attention.self.query.lora_magnitude_vector.default.weight") ==
             "bert.encoder.layer.0.attention.self.query.lora_magnitude_vector");
  const auto counts = count_parameters(models::bert_for_sequence_classification<B, bert_dora>(
      ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg));
  BOOST_TEST(counts.trainable == 2u * 2u * (4u * 16u + 16u * 4u + 16u) + 16u * 3u + 3u);  // before any forward
  const auto mem = models::estimate_memory(m, cfg, 2, 8);
  const auto lora_only = models::estimate_memory(m, method_config{lora_config{.r = 4, .alpha = 6}}, 2, 8);
  BOOST_TEST(mem.activations > lora_only.activations);
}

BOOST_AUTO_TEST_CASE(training_state_restores_into_a_model_before_its_first_forward) {
  using B = backend::eigen<float>;  // training states are F32: bit for bit in float
  temp_dir dir;
  B::context ctx;
  ctx.training = true;
  const method_config cfg = dora_methods(0.0);
  typename lora_plan::template linear<roles::hidden, B> l(ctx, opts, cfg);
  optim::optimizer opt(l, optim::adamw{.lr = 1e-2});
  // Before the first forward the magnitude has no value: no training state is written.
  BOOST_CHECK_THROW(train::save_training_state(ctx, l, opt, nlohmann::json{}, dir.path / "early.safetensors"), error);
  BOOST_TEST(!std::filesystem::exists(dir.path / "early.safetensors"));
  const auto x = test::random_tensor<B>(ctx, {4, 7}, 41);
  const auto dy = test::random_tensor<B>(ctx, {4, 5}, 42);
  for (int s = 0; s < 2; ++s) {
    opt.zero_grad(ctx);
    l.forward(ctx, x);
    l.backward(ctx, dy);
    opt.step(ctx);
  }
  train::save_training_state(ctx, l, opt, nlohmann::json{{"step", 2}}, dir.path / "state.safetensors");

  typename lora_plan::template linear<roles::hidden, B> k(ctx, opts, cfg);
  B::copy(ctx, l.base_linear().weight().value, k.base_linear().weight().value);
  B::copy(ctx, l.base_linear().bias().value, k.base_linear().bias().value);
  optim::optimizer opt2(k, optim::adamw{.lr = 1e-2});
  train::load_training_state(ctx, k, opt2, dir.path / "state.safetensors");
  BOOST_TEST(B::copy_to_host(ctx, k.dora()->magnitude().value) == B::copy_to_host(ctx, l.dora()->magnitude().value),
             boost::test_tools::per_element());
  for (auto* o : {&opt, &opt2}) o->zero_grad(ctx);
  l.forward(ctx, x), l.backward(ctx, dy), opt.step(ctx);
  k.forward(ctx, x), k.backward(ctx, dy), opt2.step(ctx);
  BOOST_TEST(B::copy_to_host(ctx, k.dora()->magnitude().value) == B::copy_to_host(ctx, l.dora()->magnitude().value),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(misuse_is_an_error_naming_the_module) {
  using B = backend::eigen<double>;
  B::context ctx;
  typename lora_plan::template linear<roles::hidden, B> l(ctx, opts, dora_methods(0.0));
  test::randomize_parameters(ctx, l, 51);
  auto m = B::copy_to_host(ctx, l.dora()->magnitude().value);
  m[3] = 0;  // merging erases row 3
  B::copy_from_host(ctx, m, shape{5}, l.dora()->magnitude().value);
  l.merge(ctx);
  try {
    l.unmerge(ctx);
    BOOST_FAIL("unmerge with a zero magnitude did not throw");
  } catch (const error& e) {
    BOOST_TEST(std::string(e.what()).find("dora on 'h': cannot unmerge, the magnitude scale of row 3 was 0") != std::string::npos,
               e.what());
  }
}

BOOST_AUTO_TEST_SUITE_END()
