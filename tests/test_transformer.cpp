// The BERT encoder: finite-difference gradients for each block and for a tiny whole model with every
// method, padding invariance, an independent numpy reference, method placement, and bad input.
#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <xtensor/xnpy.hpp>

#include "bodies/scenarios.hpp"
#include "peft/models/bert/memory.hpp"
#include "peft/train/report.hpp"
#include "support/backends.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::cpu_double_backends;
using models::bert_config;
using models::encoder_batch;

namespace {
const method_config tiny_cfg{lora_config{.r = 3, .alpha = 6, .dropout = 0.1},
                             adapter_config{.bottleneck = 4, .nonlinearity = activation::gelu}};

using full_p = plan<methods::full>;
using lora_p = plan<methods::lora<roles::query, roles::value>>;
using bitfit_p = plan<methods::bitfit>;
using houlsby_p = plan<methods::houlsby_adapter>;
using pfeiffer_p = plan<methods::pfeiffer_adapter>;
using lora_bitfit_p = plan<methods::lora<roles::query, roles::value>, methods::bitfit>;
using lora_adapter_p = plan<methods::lora<roles::query, roles::key, roles::value, roles::attention_output, roles::ffn_in,
                                          roles::ffn_out, roles::pooler>,
                            methods::houlsby_adapter>;

/// Gradient check of a whole sequence classifier (dropout on, random weights).
template <class B, class Plan>
std::string whole_model_check(models::pooling pool = models::pooling::first_token) {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 3;
  models::bert_for_sequence_classification<B, Plan> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .pool = pool, .seed = 1},
                                                      tiny_cfg);
  test::randomize_parameters(ctx, m, 2, 0.3);
  return test::check_model_gradients(ctx, m, test::tiny_batch());
}
}  // namespace

BOOST_AUTO_TEST_SUITE(transformer_gradients)

BOOST_AUTO_TEST_CASE_TEMPLATE(layer_norm_with_trainable_scale_shift_and_delta, B, cpu_double_backends) {
  typename B::context ctx;
  methods::bitfit_norm<layers::layer_norm<B, group_set<groups::norm>>> ln(ctx, 7, 1e-5, "LayerNorm", {});
  test::randomize_parameters(ctx, ln, 1);
  const auto err = test::check_gradients(ctx, ln, test::random_tensor<B>(ctx, {2, 3, 7}, 2, 2.0));
  BOOST_TEST(err.empty(), err);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(attention_block_with_padding_and_dropout, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  auto c = test::tiny_bert_config();
  models::bert_attention<B, full_p> attn(ctx, c, tiny_cfg, "encoder.layer.0.attention", 1);
  test::randomize_parameters(ctx, attn, 2, 0.4);
  auto x = test::random_tensor<B>(ctx, {2, 5, 16}, 3);
  typename B::tensor mask;
  B::copy_from_host(ctx, std::vector<double>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 5}, mask);
  const auto err = test::check_module_gradients(
      ctx, attn, [&]() -> const auto& { return attn.forward(ctx, x, mask); },
      [&](const auto& dy) { return &attn.backward(ctx, dy); }, &x);
  BOOST_TEST(err.empty(), err);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(feed_forward_block, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  models::bert_ffn<B, lora_bitfit_p> ffn(ctx, test::tiny_bert_config(), tiny_cfg, "encoder.layer.0", 1);
  test::randomize_parameters(ctx, ffn, 2, 0.4);
  const auto err = test::check_gradients(ctx, ffn, test::random_tensor<B>(ctx, {2, 4, 16}, 3));
  BOOST_TEST(err.empty(), err);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(whole_encoder_with_every_method, B, cpu_double_backends) {
  std::string e;
  e = whole_model_check<B, full_p>();
  BOOST_TEST(e.empty(), "full: " << e);
  e = whole_model_check<B, lora_p>();
  BOOST_TEST(e.empty(), "lora: " << e);
  e = whole_model_check<B, bitfit_p>();
  BOOST_TEST(e.empty(), "bitfit: " << e);
  e = whole_model_check<B, houlsby_p>();
  BOOST_TEST(e.empty(), "houlsby: " << e);
  e = whole_model_check<B, pfeiffer_p>();
  BOOST_TEST(e.empty(), "pfeiffer: " << e);
  e = whole_model_check<B, lora_bitfit_p>();
  BOOST_TEST(e.empty(), "lora+bitfit: " << e);
  e = whole_model_check<B, lora_adapter_p>();
  BOOST_TEST(e.empty(), "lora (all roles)+houlsby: " << e);
  e = whole_model_check<B, full_p>(models::pooling::masked_mean);
  BOOST_TEST(e.empty(), "full, masked mean: " << e);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(token_classifier, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  models::bert_for_token_classification<B, lora_bitfit_p> m(ctx, test::tiny_bert_config(), {.num_labels = 4}, tiny_cfg);
  test::randomize_parameters(ctx, m, 2, 0.3);
  const auto err = test::check_model_gradients(ctx, m, test::tiny_batch());
  BOOST_TEST(err.empty(), err);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(transformer_semantics)

BOOST_AUTO_TEST_CASE_TEMPLATE(padding_changes_nothing_in_unpadded_outputs, B, cpu_double_backends) {
  typename B::context ctx;
  for (auto pool : {models::pooling::first_token, models::pooling::masked_mean}) {
    models::bert_for_sequence_classification<B, lora_bitfit_p> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .pool = pool},
                                                                 tiny_cfg);
    test::randomize_parameters(ctx, m, 9, 0.3);
    const encoder_batch tight{.batch_size = 1, .seq_len = 4, .input_ids = {2, 7, 11, 5}, .token_type_ids = {0, 0, 1, 1}};
    const encoder_batch padded{.batch_size = 2, .seq_len = 7, .input_ids = {2, 7, 11, 5, 17, 21, 1, 4, 4, 4, 4, 4, 4, 4},
                               .token_type_ids = {0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0},
                               .attention_mask = {1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1}};
    const auto h_tight = B::copy_to_host(ctx, m.encoder().forward(ctx, tight));
    const auto h_padded = B::copy_to_host(ctx, m.encoder().forward(ctx, padded));
    for (std::size_t i = 0; i < h_tight.size(); ++i) BOOST_TEST(h_padded[i] == h_tight[i], boost::test_tools::tolerance(1e-12));
    const auto l_tight = B::copy_to_host(ctx, m.forward(ctx, tight));
    const auto l_padded = B::copy_to_host(ctx, m.forward(ctx, padded));
    for (std::size_t i = 0; i < l_tight.size(); ++i) BOOST_TEST(l_padded[i] == l_tight[i], boost::test_tools::tolerance(1e-12));
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(matches_the_numpy_reference, B, cpu_double_backends) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(PEFT_TEST_FIXTURES) / "bert_tiny";
  typename B::context ctx;
  const bert_config c{.vocab_size = 40, .hidden_size = 16, .num_hidden_layers = 2, .num_attention_heads = 2,
                      .intermediate_size = 32, .max_position_embeddings = 12, .type_vocab_size = 2, .layer_norm_eps = 1e-12};
  models::bert_for_sequence_classification<B, plan<methods::full>> m(ctx, c, {.num_labels = 3});
  std::size_t loaded = 0;
  m.visit_parameters("", [&](const std::string& name, auto& p) {
    const auto a = xt::load_npy<double>((dir / (name + ".npy")).string());
    BOOST_REQUIRE_EQUAL(a.size(), p.value.size());
    B::copy_from_host(ctx, std::vector<double>(a.begin(), a.end()), p.value.shape(), p.value);
    ++loaded;
  });
  BOOST_TEST(loaded == 41u);
  auto ints = [&](const char* name) {
    const auto a = xt::load_npy<std::int32_t>((dir / name).string());
    return std::vector<std::int32_t>(a.begin(), a.end());
  };
  const encoder_batch batch{.batch_size = 3, .seq_len = 7, .input_ids = ints("input_ids.npy"),
                            .token_type_ids = ints("token_type_ids.npy"), .attention_mask = ints("attention_mask.npy")};
  auto expect = [&](const char* name, const std::vector<double>& got) {
    const auto ref = xt::load_npy<double>((dir / name).string());
    BOOST_REQUIRE_EQUAL(ref.size(), got.size());
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
      worst = std::max(worst, std::abs(got[i] - ref.flat(i)) / std::max(1e-3, std::abs(ref.flat(i))));
    BOOST_TEST(worst < 1e-5, name << ": worst relative difference " << worst);
  };
  expect("last_hidden_state.npy", B::copy_to_host(ctx, m.encoder().forward(ctx, batch)));
  expect("logits.npy", B::copy_to_host(ctx, m.forward(ctx, batch)));
}

BOOST_AUTO_TEST_CASE(float_backend_matches_the_reference_loosely) {
  // eigen<float> against the double run of the same scenario.
  const auto d = test::compare(test::bert_scenario<test::eigen_f>(), test::bert_scenario<test::eigen_d>(), 2e-4);
  BOOST_TEST(d.empty(), d);
}

BOOST_AUTO_TEST_CASE(backends_agree_on_training_and_merge) {
  auto a = test::bert_scenario<test::eigen_d>();
  const auto b = test::bert_scenario<test::xtensor_d>();
  std::string d = test::compare(a, b, 1e-10);
  BOOST_TEST(d.empty(), d);
  // Merging LoRA and BitFit leaves evaluation logits unchanged (adapters stay unmerged).
  const auto& eval = a["eval:logits"];
  const auto& merged = a["merged:logits"];
  for (std::size_t i = 0; i < eval.size(); ++i) BOOST_TEST(merged[i] == eval[i], boost::test_tools::tolerance(1e-10));
  d = test::compare(test::bert_scenario<test::eigen_d>(models::pooling::masked_mean),
                    test::bert_scenario<test::xtensor_d>(models::pooling::masked_mean), 1e-10);
  BOOST_TEST(d.empty(), "masked mean: " << d);
}

BOOST_AUTO_TEST_CASE(method_placement_and_trainability) {
  using B = test::eigen_f;
  B::context ctx;
  auto names_of = [&](auto& m) {
    std::vector<std::string> trainable;
    m.visit_parameters("", [&](const std::string& n, const auto& p) {
      if constexpr (std::remove_cvref_t<decltype(p)>::trainable) trainable.push_back(n);
    });
    return trainable;
  };
  auto has = [](const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); };
  const auto c = test::tiny_bert_config();
  {
    models::bert_for_sequence_classification<B, houlsby_p> m(ctx, c, {}, tiny_cfg);
    const auto t = names_of(m);
    BOOST_TEST(has(t, "bert.encoder.layer.1.attention.output.dense.adapter.down.weight"));
    BOOST_TEST(has(t, "bert.encoder.layer.1.output.dense.adapter.up.bias"));
    BOOST_TEST(has(t, "classifier.weight"));
    BOOST_TEST(t.size() == 2u * 2u * 4u + 2u);  // 2 layers x 2 adapters x 4 tensors + classifier
  }
  {
    models::bert_for_sequence_classification<B, pfeiffer_p> m(ctx, c, {}, tiny_cfg);
    const auto t = names_of(m);
    BOOST_TEST(!has(t, "bert.encoder.layer.0.attention.output.dense.adapter.down.weight"));
    BOOST_TEST(has(t, "bert.encoder.layer.0.output.dense.adapter.down.weight"));
  }
  {
    models::bert_for_sequence_classification<B, bitfit_p> m(ctx, c, {}, tiny_cfg);
    const auto t = names_of(m);
    BOOST_TEST(has(t, "bert.embeddings.LayerNorm.bias_delta"));
    BOOST_TEST(has(t, "bert.encoder.layer.0.attention.self.key.bias_delta"));
    BOOST_TEST(has(t, "bert.encoder.layer.1.output.LayerNorm.bias_delta"));
    BOOST_TEST(!has(t, "bert.embeddings.word_embeddings.weight"));
  }
  {
    models::bert_for_sequence_classification<B, full_p> m(ctx, c, {}, tiny_cfg);
    const auto counts = count_parameters(m);
    BOOST_TEST(counts.trainable == counts.total);
  }
  {
    // layers_to_transform and rank/alpha patterns, as PEFT's LoraConfig.
    method_config cfg = tiny_cfg;
    cfg.get<lora_config>().layers_to_transform = {1};
    cfg.get<lora_config>().rank_pattern = {{"value", 2}};
    cfg.get<lora_config>().alpha_pattern = {{"layer\\.1\\.attention\\.self\\.query", 12}};
    models::bert_for_sequence_classification<B, lora_p> m(ctx, c, {}, cfg);
    const auto t = names_of(m);
    BOOST_TEST(!has(t, "bert.encoder.layer.0.attention.self.query.lora_A.weight"));
    BOOST_TEST(has(t, "bert.encoder.layer.1.attention.self.query.lora_A.weight"));
    auto& l1 = m.encoder().layer(1).attention();
    BOOST_TEST(l1.query().rank() == 3u);
    BOOST_TEST(l1.value().rank() == 2u);
    BOOST_TEST(l1.query().scaling() == 4.0);  // alpha 12 / r 3
    BOOST_TEST(l1.value().scaling() == 3.0);  // alpha 6 / r 2
    BOOST_TEST(!m.encoder().layer(0).attention().query().active());
  }
}

BOOST_AUTO_TEST_CASE(bad_input_is_reported_clearly) {
  using B = test::eigen_f;
  B::context ctx;
  auto c = test::tiny_bert_config();
  models::bert_for_sequence_classification<B, lora_p> m(ctx, c, {}, tiny_cfg);
  auto expect = [&](const encoder_batch& b, const char* fragment) {
    try {
      m.forward(ctx, b);
      BOOST_ERROR("no error for " << fragment);
    } catch (const error& e) {
      BOOST_TEST(std::string(e.what()).find(fragment) != std::string::npos, e.what());
    }
  };
  expect({.batch_size = 1, .seq_len = 11, .input_ids = std::vector<std::int32_t>(11, 1)}, "exceeds max_position_embeddings 10");
  expect({.batch_size = 1, .seq_len = 3, .input_ids = {1, 2, 99}}, "id 99 at position 2 is outside [0, 30)");
  expect({.batch_size = 2, .seq_len = 3, .input_ids = {1, 2, 3}}, "input_ids has 3 entries");
  expect({.batch_size = 1, .seq_len = 2, .input_ids = {1, 2}, .attention_mask = {1, 2}}, "attention_mask[1] = 2");
  c.num_attention_heads = 3;
  try {
    models::bert_encoder<B, lora_p> bad(ctx, c);
    BOOST_ERROR("no error for heads");
  } catch (const config_error& e) {
    BOOST_TEST(std::string(e.what()).find("not a multiple of num_attention_heads 3") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(shared_backward_buffers)

BOOST_AUTO_TEST_CASE(scopes_hand_out_distinct_buffers_in_two_alternating_sets) {
  using tensor = host_tensor<double>;
  block_buffers<tensor> buffers;
  tensor own;
  BOOST_TEST(&buffers.take(own) == &own);  // outside a block: the layer's own
  std::vector<tensor*> even, odd;
  {
    const auto block = buffers.block(4);
    even = {&buffers.take(own), &buffers.take(own)};
    BOOST_CHECK_THROW((void)buffers.block(3), error);  // blocks do not nest
  }
  BOOST_TEST(&buffers.take(own) == &own);
  {
    const auto block = buffers.block(3);
    odd = {&buffers.take(own), &buffers.take(own), &buffers.take(own)};
  }
  std::vector<tensor*> all = even;
  all.insert(all.end(), odd.begin(), odd.end());
  for (std::size_t i = 0; i < all.size(); ++i) {
    BOOST_TEST(all[i] != &own);
    for (std::size_t j = i + 1; j < all.size(); ++j) BOOST_TEST(all[i] != all[j]);
  }
  {
    const auto block = buffers.block(2);  // block 4's set again, in the same order
    BOOST_TEST(&buffers.take(own) == even[0]);
    BOOST_TEST(&buffers.take(own) == even[1]);
    BOOST_TEST(&buffers.take(own) != odd[0]);  // a third buffer of the even set, new
  }
  buffers.shared = false;
  const auto block = buffers.block(0);
  BOOST_TEST(&buffers.take(own) == &own);
}

namespace {
/// One training step's gradients (every trainable parameter) of a 4-block BERT classifier with
/// dropout, with or without buffers shared between blocks; and the elements the shared sets hold.
template <class B, class Plan>
std::pair<test::results, std::size_t> bert_step(bool shared, const method_config& cfg) {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 5;
  ctx.block_scratch.shared = shared;
  auto c = test::tiny_bert_config();
  c.num_hidden_layers = 4;
  models::bert_for_sequence_classification<B, Plan> m(ctx, c, {.num_labels = 3, .seed = 2}, cfg);
  test::randomize_parameters(ctx, m, 3, 0.3);
  loss::softmax_cross_entropy<B> ce;
  test::results r;
  optim::optimizer opt(m, optim::sgd{.lr = 0.1});
  for (int step = 0; step < 2; ++step) {  // the second step reuses the grown buffers
    opt.zero_grad(ctx);
    r["loss"].push_back(ce.forward(ctx, m.forward(ctx, test::tiny_batch()), std::vector<std::int32_t>{2, 0}));
    m.backward(ctx, ce.gradient());
  }
  test::record_parameters(r, ctx, m, false, true);
  return {r, ctx.block_scratch.elements()};
}

template <class Plan>
void check_sharing(const method_config& cfg, const std::string& what) {
  using B = backend::eigen<double>;
  const auto [shared, shared_elements] = bert_step<B, Plan>(true, cfg);
  const auto [own, own_elements] = bert_step<B, Plan>(false, cfg);
  const auto diff = test::compare(shared, own, 0.0);
  BOOST_TEST(diff.empty(), what << ": " << diff);
  BOOST_TEST(own_elements == 0u, what);
  BOOST_TEST(shared_elements > 0u, what);
  // The memory report counts the taken buffers twice for the encoder instead of once per block: its
  // two sets are exactly what the blocks took (the last block, pruned, takes less than the others).
  typename B::context ctx;
  auto c = test::tiny_bert_config();
  c.num_hidden_layers = 4;
  models::bert_for_sequence_classification<B, Plan> m(ctx, c, {.num_labels = 3, .seed = 2}, cfg);
  const auto batch = test::tiny_batch();
  const auto with = models::estimate_memory(m, cfg, batch.batch_size, batch.seq_len, 2, true, true);
  const auto without = models::estimate_memory(m, cfg, batch.batch_size, batch.seq_len, 2, true, false);
  BOOST_TEST(with.shared_backward == shared_elements * sizeof(double), what);
  BOOST_TEST(without.shared_backward == 0u, what);
  BOOST_TEST(without.activations > with.activations, what);
}
}  // namespace

BOOST_AUTO_TEST_CASE(sharing_between_blocks_changes_no_bit_and_the_report_counts_it) {
  check_sharing<full_p>({}, "full");
  check_sharing<lora_p>({lora_config{.r = 3, .alpha = 6, .dropout = 0.1}}, "lora");
  check_sharing<bitfit_p>({}, "bitfit");
}

BOOST_AUTO_TEST_CASE(inference_shares_the_forward_buffers_too) {
  using B = backend::eigen<double>;
  // Logits of an evaluation forward (LoRA, first-token and masked-mean pooling) and the elements the
  // shared sets hold, for a stack of `blocks`.
  auto eval = [](bool shared, std::size_t blocks, models::pooling pool) {
    B::context ctx;
    ctx.forward_only = true;
    ctx.block_scratch.shared = shared;
    auto c = test::tiny_bert_config();
    c.num_hidden_layers = blocks;
    models::bert_for_sequence_classification<B, lora_p> m(ctx, c, {.num_labels = 3, .pool = pool, .seed = 2}, tiny_cfg);
    test::randomize_parameters(ctx, m, 3, 0.3);
    test::results r;
    test::record<B>(r, "logits", ctx, m.forward(ctx, test::tiny_batch()));
    test::record<B>(r, "again", ctx, m.forward(ctx, test::tiny_batch()));
    return std::pair{r, ctx.block_scratch.elements()};
  };
  for (auto pool : {models::pooling::first_token, models::pooling::masked_mean}) {
    const auto [shared, shared_elements] = eval(true, 4, pool);
    const auto [own, own_elements] = eval(false, 4, pool);
    const auto diff = test::compare(shared, own, 0.0);
    BOOST_TEST(diff.empty(), diff);
    BOOST_TEST(own_elements == 0u);
    BOOST_TEST(shared_elements > 0u);
    if (pool == models::pooling::masked_mean)  // alike blocks: two sets, whatever the depth
      BOOST_TEST(eval(true, 6, pool).second == shared_elements);
  }
}

BOOST_AUTO_TEST_CASE(a_decoder_shares_them_too) {
  using B = backend::eigen<double>;
  using lora_all = methods::lora<roles::query, roles::key, roles::value, roles::attention_output, roles::ffn_in,
                                 roles::ffn_out, roles::ffn_gate>;
  auto step = [](bool shared) {
    B::context ctx;
    ctx.block_scratch.shared = shared;
    models::llama_config c;
    c.vocab_size = 13, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 3;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 16, c.rope_theta = 10000;
    models::llama_for_causal_lm<B, plan<lora_all>> m(ctx, c, {lora_config{.r = 2, .alpha = 4}}, 3);
    test::randomize_parameters(ctx, m, 6, 0.3);
    const models::decoder_batch batch{.batch_size = 2, .seq_len = 5, .input_ids = {1, 5, 9, 2, 7, 3, 3, 8, 12, 0}, .labels = {}};
    loss::softmax_cross_entropy<B> ce;
    test::results r;
    r["loss"].push_back(ce.forward(ctx, m.forward(ctx, batch), models::next_token_targets(batch)));
    m.backward(ctx, ce.gradient());
    test::record_parameters(r, ctx, m, false, true);
    return std::pair{r, ctx.block_scratch.elements()};
  };
  const auto [shared, shared_elements] = step(true);
  const auto [own, own_elements] = step(false);
  const auto diff = test::compare(shared, own, 0.0);
  BOOST_TEST(diff.empty(), diff);
  BOOST_TEST(shared_elements > 0u);
  BOOST_TEST(own_elements == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(first_token_pruning)

namespace {
/// Logits, losses and every trainable gradient of two training steps of a 3-block classifier with
/// first-token pooling and dropout on, the last block pruned or not.
template <class B, class Plan>
test::results first_token_steps(bool prune, const method_config& cfg) {
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 21;
  auto c = test::tiny_bert_config();
  c.num_hidden_layers = 3;
  c.max_position_embeddings = 12;
  models::bert_for_sequence_classification<B, Plan> m(ctx, c, {.num_labels = 3, .seed = 6, .prune_last_block = prune}, cfg);
  test::randomize_parameters(ctx, m, 8, 0.3);
  loss::softmax_cross_entropy<B> ce;
  optim::optimizer opt(m, optim::sgd{.lr = 0.1});
  test::results r;
  for (int step = 0; step < 2; ++step) {  // the second step's masks start where the first's ended
    opt.zero_grad(ctx);
    const auto& logits = m.forward(ctx, test::tiny_batch());
    test::record<B>(r, "logits" + std::to_string(step), ctx, logits);
    r["loss"].push_back(ce.forward(ctx, logits, std::vector<std::int32_t>{1, 2}));
    m.backward(ctx, ce.gradient());
    if (step == 0) test::record_parameters(r, ctx, m, false, true);
    opt.step(ctx);
  }
  return r;
}
}  // namespace

// Dropout draws the masks the full block gives row 0 and reserves the rest, so with dropout on the
// pruned run is the full run up to summation order.
BOOST_AUTO_TEST_CASE_TEMPLATE(the_pruned_last_block_gives_the_full_logits_and_gradients, B, cpu_double_backends) {
  using prompt_p = plan<methods::prompt_tuning>;
  using prefix_p = plan<methods::prefix_tuning>;
  const auto check = [](const test::results& pruned, const test::results& full, const std::string& what) {
    const auto diff = test::compare(pruned, full, 1e-12);
    BOOST_TEST(diff.empty(), what << ": " << diff);
  };
  check(first_token_steps<B, full_p>(true, {}), first_token_steps<B, full_p>(false, {}), "full");
  check(first_token_steps<B, lora_adapter_p>(true, tiny_cfg), first_token_steps<B, lora_adapter_p>(false, tiny_cfg),
        "lora on every role (dropout 0.1) + houlsby");
  const method_config prompt{prompt_tuning_config{.num_virtual_tokens = 3}};
  check(first_token_steps<B, prompt_p>(true, prompt), first_token_steps<B, prompt_p>(false, prompt), "prompt tuning");
  const method_config prefix{prefix_tuning_config{.num_virtual_tokens = 2}};
  check(first_token_steps<B, prefix_p>(true, prefix), first_token_steps<B, prefix_p>(false, prefix), "prefix tuning");
}

BOOST_AUTO_TEST_CASE(the_encoder_returns_the_first_rows_only_when_asked) {
  using B = backend::eigen<double>;
  B::context ctx;
  models::bert_encoder<B, full_p> enc(ctx, test::tiny_bert_config(), {}, 3);
  test::randomize_parameters(ctx, enc, 4, 0.3);
  const auto full = B::copy_to_host(ctx, enc.forward(ctx, test::tiny_batch()));
  const auto& first = enc.forward(ctx, test::tiny_batch(), true);
  BOOST_TEST((first.shape() == shape{2, 1, 16}));
  const auto firsts = B::copy_to_host(ctx, first);
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t j = 0; j < 16; ++j) BOOST_TEST(firsts[b * 16 + j] == full[b * 6 * 16 + j], boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(separate_query_rows_are_refused_where_positions_matter) {
  using B = backend::eigen<double>;
  B::context ctx;
  layers::multi_head_attention<B, full_p> causal(ctx, {.hidden = 8, .heads = 2, .causal = true, .name = "dec"}, {});
  auto x = test::random_tensor<B>(ctx, {1, 4, 8}, 1);
  auto q = test::random_tensor<B>(ctx, {1, 1, 8}, 2);
  try {
    causal.forward(ctx, x, {.queries = &q});
    BOOST_ERROR("no error for separate queries in a causal attention");
  } catch (const config_error& e) {
    BOOST_TEST(std::string(e.what()).find("'dec': separate query rows need a bidirectional") != std::string::npos, e.what());
  }
  layers::multi_head_attention<B, full_p> bidir(ctx, {.hidden = 8, .heads = 2, .name = "enc"}, {});
  auto bad = test::random_tensor<B>(ctx, {2, 1, 8}, 3);
  BOOST_CHECK_THROW(bidir.forward(ctx, x, {.queries = &bad}), shape_error);
  bidir.forward(ctx, x);
  BOOST_CHECK_THROW((void)bidir.query_input_gradient(), error);
}

BOOST_AUTO_TEST_SUITE_END()
