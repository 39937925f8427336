// VeRA: gradients against finite differences on both CPU backends (alone, over LoRA and BitFit, a
// whole BERT), the forward against a hand computation, the shared matrices (every layer's slices cut
// from one pair, Kaiming bounds, the seed), the start as the base model, merge and unmerge, PEFT's
// file format both ways (one shared pair in the file, slices cut on load), bad configs and files,
// and misuse.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <fstream>

#include "bodies/scenarios.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/methods/vera.hpp"
#include "peft/models/bert/memory.hpp"
#include "peft/train/report.hpp"
#include "support/adapter_config.hpp"
#include "support/backends.hpp"
#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace peft;
using test::cpu_double_backends;
using test::temp_dir;

namespace {
using vera_plan = plan<methods::vera<roles::hidden>>;
/// Layers of three shapes (16 x 16, 16 -> 24, 24 -> 16), so the shared matrices are 24 wide and tall.
using bert_vera = plan<methods::vera<roles::query, roles::value, roles::ffn_in, roles::ffn_out>>;

const layers::linear_options opts{.in_features = 7, .out_features = 5, .bias = true, .name = "h", .seed = 9};

template <class B, class M>
std::vector<typename B::value_type> logits_of(typename B::context& ctx, M& m) {
  return B::copy_to_host(ctx, m.forward(ctx, test::tiny_batch()));
}

/// Every frozen slice of `m`: name -> (shape, values).
template <class B, class M>
std::map<std::string, std::pair<shape, std::vector<double>>> slices_of(typename B::context& ctx, const M& m) {
  std::map<std::string, std::pair<shape, std::vector<double>>> out;
  m.visit_parameters("", [&](const std::string& n, const auto& p) {
    if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(p)>::group, groups::vera_projection>) {
      const auto v = B::copy_to_host(ctx, p.value);
      out[n] = {p.stored_shape(), std::vector<double>(v.begin(), v.end())};
    }
  });
  return out;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(vera)

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_alone_composed_and_in_a_model, B, cpu_double_backends) {
  for (const double dropout : {0.0, 0.3}) {
    typename B::context ctx;
    ctx.training = true;
    ctx.seed = 3;
    typename vera_plan::template linear<roles::hidden, B> l(ctx, opts, method_config{vera_config{.r = 4, .dropout = dropout}});
    test::randomize_parameters(ctx, l, 4);  // the slices too: no model prepares a lone layer
    const std::string e = test::check_gradients(ctx, l, test::random_tensor<B>(ctx, {2, 3, 7}, 5));
    BOOST_TEST(e.empty(), "vera dropout " << dropout << ": " << e);
  }
  typename B::context ctx;
  ctx.training = true;
  ctx.seed = 4;
  typename test::lora_vera_bitfit_plan::template linear<roles::hidden, B> c(ctx, opts, test::scenario_vera_methods());
  test::randomize_parameters(ctx, c, 6);
  std::string e = test::check_gradients(ctx, c, test::random_tensor<B>(ctx, {4, 7}, 7));
  BOOST_TEST(e.empty(), "lora+vera+bitfit: " << e);

  // A whole BERT whose layers slice the model's shared pair.
  models::bert_for_sequence_classification<B, bert_vera> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1},
                                                           method_config{vera_config{.r = 5, .init_weights = false}});
  test::randomize_trainable(ctx, m, 2, 0.3);
  e = test::check_model_gradients(ctx, m, test::tiny_batch());
  BOOST_TEST(e.empty(), e);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(forward_matches_a_hand_computation, B, cpu_double_backends) {
  typename B::context ctx;
  typename vera_plan::template linear<roles::hidden, B> l(ctx, opts, method_config{vera_config{.r = 3, .init_weights = false}});
  test::randomize_parameters(ctx, l, 11);
  const auto w = B::copy_to_host(ctx, l.base_linear().weight().value);
  const auto b = B::copy_to_host(ctx, l.base_linear().bias().value);
  const auto a = B::copy_to_host(ctx, l.projection_a().value), bm = B::copy_to_host(ctx, l.projection_b().value);
  const auto lb = B::copy_to_host(ctx, l.lambda_b().value), ld = B::copy_to_host(ctx, l.lambda_d().value);
  BOOST_TEST(l.projection_a().value.shape().str() == "[3, 7]");
  BOOST_TEST(l.projection_b().value.shape().str() == "[5, 3]");
  const auto xt = test::random_tensor<B>(ctx, {4, 7}, 12);
  const auto x = B::copy_to_host(ctx, xt);
  const auto y = B::copy_to_host(ctx, l.forward(ctx, xt));
  for (std::size_t r = 0; r < 4; ++r)
    for (std::size_t o = 0; o < 5; ++o) {
      double base = b[o], update = 0;
      for (std::size_t i = 0; i < 7; ++i) base += w[o * 7 + i] * x[r * 7 + i];
      for (std::size_t k = 0; k < 3; ++k) {
        double ax = 0;
        for (std::size_t i = 0; i < 7; ++i) ax += a[k * 7 + i] * x[r * 7 + i];
        update += bm[o * 3 + k] * ld[k] * ax;
      }
      BOOST_TEST(y[r * 5 + o] == base + lb[o] * update, boost::test_tools::tolerance(1e-12));
    }
}

BOOST_AUTO_TEST_CASE(every_layer_slices_one_shared_pair_drawn_from_the_seed) {
  using B = test::eigen_d;
  B::context ctx;
  const std::size_t r = 6;
  models::bert_for_sequence_classification<B, bert_vera> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1},
                                                           method_config{vera_config{.r = r}});
  const auto s = slices_of<B>(ctx, m);
  BOOST_REQUIRE_EQUAL(s.size(), 2u * 4u * 2u);  // A and B of four modules in two layers
  const std::string l0 = "bert.encoder.layer.0.", l1 = "bert.encoder.layer.1.";
  const auto& a_query = s.at(l0 + "attention.self.query.vera_A");
  const auto& a_ffn_out = s.at(l1 + "output.dense.vera_A");  // the widest input: 24
  const auto& b_ffn_in = s.at(l1 + "intermediate.dense.vera_B");  // the tallest output: 24
  const auto& b_value = s.at(l0 + "attention.self.value.vera_B");
  BOOST_TEST(a_query.first.str() == "[6, 16]");
  BOOST_TEST(a_ffn_out.first.str() == "[6, 24]");
  BOOST_TEST(b_ffn_in.first.str() == "[24, 6]");
  BOOST_TEST(b_value.first.str() == "[16, 6]");
  // A[:, :16] of the 24-wide matrix, B[:16, :] of the 24-tall one.
  for (std::size_t k = 0; k < r; ++k)
    for (std::size_t i = 0; i < 16; ++i) BOOST_TEST(a_query.second[k * 16 + i] == a_ffn_out.second[k * 24 + i]);
  for (std::size_t o = 0; o < 16 * r; ++o) BOOST_TEST(b_value.second[o] == b_ffn_in.second[o]);
  // Every module of the model sees the same pair.
  BOOST_TEST(s.at(l1 + "attention.self.query.vera_A").second == a_query.second);
  // Kaiming-uniform over each matrix's fan-in (24 for A, r for B), as PEFT draws them.
  double a_max = 0, b_max = 0;
  for (double v : a_ffn_out.second) a_max = std::max(a_max, std::abs(v));
  for (double v : b_ffn_in.second) b_max = std::max(b_max, std::abs(v));
  BOOST_TEST(a_max <= std::sqrt(6.0 / 24));
  BOOST_TEST(a_max > 0.8 * std::sqrt(6.0 / 24));
  BOOST_TEST(b_max <= std::sqrt(6.0 / double(r)));
  BOOST_TEST(b_max > 0.6 * std::sqrt(6.0 / double(r)));

  // The pair depends on projection_prng_key alone, not on the model's seed.
  models::bert_for_sequence_classification<B, bert_vera> same(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 9},
                                                              method_config{vera_config{.r = r}});
  models::bert_for_sequence_classification<B, bert_vera> other(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1},
                                                               method_config{vera_config{.r = r, .projection_prng_key = 1}});
  BOOST_TEST((slices_of<B>(ctx, same) == s));
  BOOST_TEST(slices_of<B>(ctx, other).at(l0 + "attention.self.query.vera_A").second != a_query.second);

  // Trainable: the vectors and the head; the frozen slices count as neither (PEFT keeps them as buffers).
  const auto counts = count_parameters(m);
  BOOST_TEST(counts.trainable == 2u * ((16u + r) * 2 + (24u + r) + (16u + r)) + 16u * 3u + 3u);
  models::bert_for_sequence_classification<B, plan<methods::full>> plain(ctx, test::tiny_bert_config(), {.num_labels = 3});
  BOOST_TEST(counts.total == count_parameters(plain).total + counts.trainable - (16u * 3u + 3u));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(starts_as_the_base_merges_and_unmerges, B, cpu_double_backends) {
  typename B::context ctx;
  layers::linear<B> base(ctx, opts);
  typename vera_plan::template linear<roles::hidden, B> fresh(ctx, opts, method_config{vera_config{.r = 4}});
  methods::vera<roles::hidden>::prepare(ctx, fresh, method_config{vera_config{.r = 4}});  // a lone layer is its own model
  const auto x = test::random_tensor<B>(ctx, {6, 7}, 6);
  BOOST_TEST(B::copy_to_host(ctx, base.forward(ctx, x)) == B::copy_to_host(ctx, fresh.forward(ctx, x)),
             boost::test_tools::per_element());
  BOOST_TEST(B::copy_to_host(ctx, fresh.lambda_d().value)[0] == 0.1);  // d_initial
  BOOST_TEST(B::copy_to_host(ctx, fresh.lambda_b().value)[0] == 0.0);

  typename test::lora_vera_bitfit_plan::template linear<roles::hidden, B> l(ctx, opts, test::scenario_vera_methods());
  test::randomize_parameters(ctx, l, 10);
  const auto w0 = B::copy_to_host(ctx, l.base_linear().weight().value);
  const auto y = B::copy_to_host(ctx, l.forward(ctx, x));
  l.merge(ctx);
  BOOST_TEST(l.merged());
  BOOST_CHECK_THROW(l.merge(ctx), error);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.forward(ctx, x)), y) < 1e-12);
  BOOST_TEST(B::copy_to_host(ctx, l.forward(ctx, x)) == B::copy_to_host(ctx, l.base_linear().forward(ctx, x)),
             boost::test_tools::per_element());  // the merged output is the base layer's alone
  l.unmerge(ctx);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.base_linear().weight().value), w0) < 1e-13);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, l.forward(ctx, x)), y) < 1e-12);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(misuse_is_an_error_naming_the_module, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;
  typename vera_plan::template linear<roles::hidden, B> l(ctx, opts, method_config{vera_config{.r = 4}});
  const auto x = test::random_tensor<B>(ctx, {2, 7}, 1);
  const auto dy = test::random_tensor<B>(ctx, {2, 5}, 2);
  try {  // no model prepared this lone layer
    l.forward(ctx, x);
    BOOST_FAIL("forward without the shared matrices did not throw");
  } catch (const error& e) {
    BOOST_TEST(std::string(e.what()).find("vera on 'h': the shared projections vera_A / vera_B are not set") != std::string::npos,
               e.what());
  }
  methods::vera<roles::hidden>::prepare(ctx, l, method_config{vera_config{.r = 4}});
  BOOST_CHECK_THROW(l.backward(ctx, dy), error);  // before forward
  BOOST_CHECK_THROW(l.unmerge(ctx), error);
  l.merge(ctx);
  l.forward(ctx, x);
  BOOST_CHECK_THROW(l.backward(ctx, dy), error);
  l.unmerge(ctx);
  using layer = typename vera_plan::template linear<roles::hidden, B>;
  BOOST_CHECK_THROW((void)layer(ctx, opts, method_config{vera_config{.r = 0}}), config_error);
  BOOST_CHECK_THROW((void)layer(ctx, opts, method_config{vera_config{.dropout = 1.0}}), config_error);
  BOOST_CHECK_THROW((void)layer(ctx, opts, method_config{vera_config{.target_modules = "("}}), config_error);
  // Left out at run time: no parameter, the base layer's output.
  layer off(ctx, opts, method_config{vera_config{.target_modules = "other"}});
  std::size_t params = 0;
  off.visit_parameters("", [&](const std::string&, const auto&) { ++params; });
  BOOST_TEST(params == 2u);
  BOOST_TEST(!off.active());
}

BOOST_AUTO_TEST_CASE(saves_peft_vera_with_one_shared_pair_and_loads_it_back_and_merges) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  const method_config cfg{vera_config{.r = 6, .projection_prng_key = 3, .d_initial = 0.2}};
  models::bert_for_sequence_classification<B, bert_vera> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  io::save_checkpoint(ctx, m, dir.path / "base.safetensors");
  test::randomize_trainable(ctx, m, 5, 0.3);  // a trained adapter
  const auto trained = logits_of<B>(ctx, m);

  io::save_peft_adapter(ctx, m, dir.path / "adapter", {.task_type = "SEQ_CLS", .methods = cfg});
  std::ifstream in(dir.path / "adapter" / "adapter_config.json");
  const auto j = nlohmann::json::parse(in);
  BOOST_TEST(j["peft_type"] == "VERA");
  BOOST_TEST(j["r"] == 6);
  BOOST_TEST(j["projection_prng_key"] == 3);
  BOOST_TEST(j["d_initial"] == 0.2);
  BOOST_TEST(j["save_projection"] == true);
  BOOST_TEST(j["target_modules"].dump() == R"(["0.output.dense","1.output.dense","intermediate.dense","query","value"])");
  const auto f = io::safetensors_file::open(dir.path / "adapter" / "adapter_model.safetensors");
  BOOST_TEST(f.tensors().size() == 2u * 4u * 2u + 2u + 2u);  // λ_b and λ_d of 8 modules, the pair, the head
  const auto* a = f.find("base_model.vera_A");
  const auto* b = f.find("base_model.vera_B");
  BOOST_REQUIRE(a);
  BOOST_REQUIRE(b);
  BOOST_TEST((a->shape == std::vector<std::size_t>{6, 24}));
  BOOST_TEST((b->shape == std::vector<std::size_t>{24, 6}));
  BOOST_TEST(f.find("base_model.model.bert.encoder.layer.0.attention.self.query.vera_lambda_d"));
  BOOST_TEST(!f.find("base_model.model.bert.encoder.layer.0.attention.self.query.vera_A"));

  // Into a model whose own pair differs (another key): the file's pair replaces it.
  const auto info = io::read_peft_adapter_config<bert_vera>(dir.path / "adapter");
  BOOST_TEST((info.methods == std::vector<std::string>{"vera"}));
  BOOST_TEST(info.options.get<vera_config>().r == 6u);
  BOOST_TEST(info.options.get<vera_config>().projection_prng_key == 3u);
  method_config other = info.options;
  other.get<vera_config>().projection_prng_key = 8;
  models::bert_for_sequence_classification<B, bert_vera> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 7}, other);
  io::load_checkpoint(ctx, n, dir.path / "base.safetensors");
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) > 1e-3);
  io::load_peft_adapter(ctx, n, dir.path / "adapter");
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-6);
  BOOST_TEST((slices_of<B>(ctx, n) == slices_of<B>(ctx, m)));

  io::save_merged_checkpoint(ctx, n, dir.path / "merged", test::tiny_bert_config().to_json("BertForSequenceClassification"));
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, n), trained) < 1e-6);  // merged for the write, unmerged after
  models::bert_for_sequence_classification<B, plan<methods::full>> plain(ctx, test::tiny_bert_config(), {.num_labels = 3});
  const auto r = io::load_checkpoint(ctx, plain, dir.path / "merged" / "model.safetensors");
  BOOST_TEST(r.missing.empty(), r.str());
  BOOST_TEST(test::max_abs_diff(logits_of<B>(ctx, plain), trained) < 1e-5);

  const auto mem = models::estimate_memory(m, cfg, 2, 8);
  const auto without = models::estimate_memory(plain, method_config{}, 2, 8, 2);
  BOOST_TEST(mem.activations > without.activations);
}

BOOST_AUTO_TEST_CASE(bad_files_and_slices_are_errors_that_write_and_change_nothing) {
  using B = backend::eigen<float>;
  temp_dir dir;
  B::context ctx;
  const method_config cfg{vera_config{.r = 4}};
  models::bert_for_sequence_classification<B, bert_vera> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  test::randomize_trainable(ctx, m, 5, 0.3);
  io::save_peft_adapter(ctx, m, dir.path / "good", {.task_type = "SEQ_CLS", .methods = cfg});

  // The shared pair missing, or of another rank: the error names the file and the key; the model is unchanged.
  auto rewrite = [&](const std::string& name, auto&& change) {
    const auto f = io::safetensors_file::open(dir.path / "good" / "adapter_model.safetensors");
    std::vector<io::tensor_to_write> out;
    for (const auto& t : f.tensors()) {
      const auto v = f.read<float>(t);
      auto w = io::tensor_to_write::f32<float>(t.name, t.shape, std::span<const float>(v));
      if (change(w)) out.push_back(std::move(w));
    }
    std::filesystem::create_directories(dir.path / name);
    std::filesystem::copy_file(dir.path / "good" / "adapter_config.json", dir.path / name / "adapter_config.json",
                               std::filesystem::copy_options::overwrite_existing);
    io::write_safetensors(dir.path / name / "adapter_model.safetensors", out, {{"format", "pt"}});
  };
  rewrite("no_a", [](io::tensor_to_write& t) { return t.name != "base_model.vera_A"; });
  rewrite("narrow_b", [](io::tensor_to_write& t) {
    if (t.name == "base_model.vera_B") {  // 24 x 4 cut to 8 x 4: too short for every layer
      t.shape = {8, 4};
      t.data.resize(8 * 4 * 4);
    }
    return true;
  });
  models::bert_for_sequence_classification<B, bert_vera> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 2}, cfg);
  const auto before = logits_of<B>(ctx, n);
  for (const auto& [name, want] : {std::pair<std::string, std::string>{"no_a", "has no tensor 'base_model.vera_A'"},
                                   {"narrow_b", "tensor 'base_model.vera_B' has shape [8, 4]"}}) {
    try {
      io::load_peft_adapter(ctx, n, dir.path / name);
      BOOST_FAIL(name << ": loaded");
    } catch (const io::io_error& e) {
      BOOST_TEST(std::string(e.what()).find(want) != std::string::npos, e.what());
      BOOST_TEST(std::string(e.what()).find(name) != std::string::npos, e.what());
    }
    BOOST_TEST(logits_of<B>(ctx, n) == before, boost::test_tools::per_element());
  }

  // Slices that are not cut from one pair cannot be written as one; nothing is written.
  m.visit_parameters("", [&](const std::string& name, auto& p) {
    if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(p)>::group, groups::vera_projection>)
      if (name == "bert.encoder.layer.1.attention.self.value.vera_A") p.value = test::random_tensor<B>(ctx, {4, 16}, 3);
  });
  try {
    io::save_peft_adapter(ctx, m, dir.path / "mixed", {.task_type = "SEQ_CLS", .methods = cfg});
    BOOST_FAIL("inconsistent slices were written");
  } catch (const error& e) {
    BOOST_TEST(std::string(e.what()).find("not cut from one shared matrix") != std::string::npos, e.what());
  }
  BOOST_TEST(!std::filesystem::exists(dir.path / "mixed" / "adapter_model.safetensors"));
}

BOOST_AUTO_TEST_CASE(bad_configs_name_the_key) {
  const auto error_of = test::adapter_config_error<bert_vera>;
  auto says = [&](const std::string& text, const std::string& want) {
    const auto e = error_of(text);
    BOOST_TEST(e.find(want) != std::string::npos, text << " -> " << e);
  };
  says(R"js({"peft_type": "VERA", "r": 4, "save_projection": false})js", "'save_projection': false");
  says(R"js({"peft_type": "VERA", "r": 0})js", "'r' must be a positive integer");
  says(R"js({"peft_type": "VERA", "r": "8"})js", "'r' must be a positive integer");
  says(R"js({"peft_type": "VERA", "bias": "all"})js", "'bias' \"all\" is not supported");
  says(R"js({"peft_type": "VERA", "layers_to_transform": [0]})js", "'layers_to_transform' is not supported");
  says(R"js({"peft_type": "VERA", "fan_in_fan_out": true})js", "'fan_in_fan_out'");
  says(R"js({"peft_type": "VERA", "projection_prng_key": 0.5})js", "'projection_prng_key' must be a non-negative integer");
  says(R"js({"peft_type": "VERA", "d_initial": "x"})js", "d_initial");
  // PEFT's own keys with their defaults read cleanly.
  BOOST_TEST(error_of(R"js({"peft_type": "VERA", "r": 256, "target_modules": ["query", "value"], "projection_prng_key": 0,
    "save_projection": true, "vera_dropout": 0.0, "d_initial": 0.1, "fan_in_fan_out": false, "bias": "none",
    "layers_to_transform": null, "layers_pattern": null, "init_weights": true, "modules_to_save": ["classifier"]})js") ==
             "no error");
  BOOST_TEST(methods::detail::vera_peft_format::parameter_name("bert.encoder.layer.0.attention.self.key.vera_lambda_b.default") ==
             "bert.encoder.layer.0.attention.self.key.vera_lambda_b");
}

BOOST_AUTO_TEST_SUITE_END()
