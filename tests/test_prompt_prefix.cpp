// Prompt tuning and prefix tuning: gradients against finite differences on both CPU backends (BERT
// sequence and token classification, both poolings, the Llama decoder, prefix tuning with and
// without its reparametrisation); two independent references (prompt tuning with a text start is the
// base model reading that text first; prefix tuning with a prefix cut from a KV cache is the base
// model reading the tokens that made the cache), for forwards and for greedy generation; PEFT's
// file layout both ways; merging refused; bad options, configs and files.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "bodies/scenarios.hpp"
#include "peft/generate/generator.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/methods/full.hpp"
#include "peft/methods/prefix_tuning.hpp"
#include "peft/methods/prompt_tuning.hpp"
#include "peft/models/llama/model.hpp"
#include "support/adapter_config.hpp"
#include "support/backends.hpp"
#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace peft;
using test::cpu_double_backends;
using test::eigen_d;
using test::temp_dir;

namespace {
using prompt_plan = plan<methods::prompt_tuning>;
using prefix_plan = plan<methods::prefix_tuning>;
using base_plan = plan<methods::frozen>;
using both_plan = plan<methods::prompt_tuning, methods::prefix_tuning>;

/// The tiny BERT with room for virtual tokens in its positions.
models::bert_config bert_config() {
  auto c = test::tiny_bert_config();
  c.max_position_embeddings = 12;
  return c;
}
models::llama_config llama_config() {
  models::llama_config c;
  c.vocab_size = 11, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 32;
  c.rope_theta = 10000, c.initializer_range = 0.3;
  return c;
}
const models::decoder_batch decoder_batch{.batch_size = 2, .seq_len = 5, .input_ids = {1, 5, 9, 2, 7, 3, 3, 8, 10, 0}, .labels = {}};

/// `batch` with `text` before every sequence (token type 0, always attended to).
models::encoder_batch with_text(const models::encoder_batch& batch, const std::vector<std::int32_t>& text) {
  const std::size_t n = text.size(), len = n + batch.seq_len;
  models::encoder_batch out{.batch_size = batch.batch_size, .seq_len = len, .input_ids = {}, .token_type_ids = {}, .attention_mask = {}};
  for (std::size_t b = 0; b < batch.batch_size; ++b) {
    out.input_ids.insert(out.input_ids.end(), text.begin(), text.end());
    out.token_type_ids.insert(out.token_type_ids.end(), n, 0);
    out.attention_mask.insert(out.attention_mask.end(), n, 1);
    for (std::size_t s = 0; s < batch.seq_len; ++s) {
      out.input_ids.push_back(batch.input_ids[b * batch.seq_len + s]);
      out.token_type_ids.push_back(batch.token_type_ids[b * batch.seq_len + s]);
      out.attention_mask.push_back(batch.attention_mask[b * batch.seq_len + s]);
    }
  }
  return out;
}
models::decoder_batch with_text(const models::decoder_batch& batch, const std::vector<std::int32_t>& text) {
  models::decoder_batch out{.batch_size = batch.batch_size, .seq_len = text.size() + batch.seq_len, .input_ids = {}, .labels = {}};
  for (std::size_t b = 0; b < batch.batch_size; ++b) {
    out.input_ids.insert(out.input_ids.end(), text.begin(), text.end());
    out.input_ids.insert(out.input_ids.end(), batch.input_ids.begin() + std::ptrdiff_t(b * batch.seq_len),
                         batch.input_ids.begin() + std::ptrdiff_t((b + 1) * batch.seq_len));
  }
  return out;
}

/// The largest difference between rows [skip, skip + rows) of every sequence of `longer` and the rows
/// of `shorter`, both (batch, *, width) on the host.
double tail_difference(const std::vector<double>& longer, const std::vector<double>& shorter, std::size_t batch,
                       std::size_t skip, std::size_t rows, std::size_t width) {
  if (shorter.size() != batch * rows * width || longer.size() != batch * (skip + rows) * width) return INFINITY;
  double worst = 0;
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t i = 0; i < rows * width; ++i)
      worst = std::max(worst, std::abs(longer[(b * (skip + rows) + skip) * width + i] - shorter[b * rows * width + i]));
  return worst;
}

auto letters = [](std::span<const std::int32_t> ids) {
  std::string s;
  for (auto t : ids) s += char('a' + t);
  return s;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

BOOST_AUTO_TEST_SUITE(prompt_and_prefix_tuning)

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_match_finite_differences, B, cpu_double_backends) {
  typename B::context ctx;
  ctx.training = true;  // dropout on: the checks replay its masks
  ctx.seed = 5;
  const method_config prompt{prompt_tuning_config{.num_virtual_tokens = 3}};
  for (const auto pool : {models::pooling::first_token, models::pooling::masked_mean}) {
    models::bert_for_sequence_classification<B, prompt_plan> m(ctx, bert_config(), {.num_labels = 3, .pool = pool, .seed = 1}, prompt);
    test::randomize_trainable(ctx, m, 2, 0.5);
    const std::string e = test::check_model_gradients(ctx, m, test::tiny_batch());
    BOOST_TEST(e.empty(), "prompt, bert sequence classification: " << e);
  }
  {
    models::bert_for_token_classification<B, prompt_plan> m(ctx, bert_config(), {.num_labels = 4, .seed = 2}, prompt);
    test::randomize_trainable(ctx, m, 3, 0.5);
    const std::string e = test::check_model_gradients(ctx, m, test::tiny_batch());
    BOOST_TEST(e.empty(), "prompt, bert token classification: " << e);
  }
  for (const bool projection : {false, true}) {
    const method_config prefix{prefix_tuning_config{.num_virtual_tokens = 2, .prefix_projection = projection, .encoder_hidden_size = 5}};
    models::bert_for_sequence_classification<B, prefix_plan> m(ctx, bert_config(), {.num_labels = 3, .seed = 1}, prefix);
    test::randomize_trainable(ctx, m, 4, 0.5);
    std::string e = test::check_model_gradients(ctx, m, test::tiny_batch());
    BOOST_TEST(e.empty(), "prefix (projection " << projection << "), bert: " << e);
    models::llama_for_causal_lm<B, prefix_plan> d(ctx, llama_config(), prefix, 3);
    test::randomize_trainable(ctx, d, 5, 0.5);
    e = test::check_model_gradients(ctx, d, decoder_batch);
    BOOST_TEST(e.empty(), "prefix (projection " << projection << "), llama: " << e);
  }
  models::llama_for_causal_lm<B, prompt_plan> d(ctx, llama_config(), prompt, 3);
  test::randomize_trainable(ctx, d, 6, 0.5);
  const std::string e = test::check_model_gradients(ctx, d, decoder_batch);
  BOOST_TEST(e.empty(), "prompt, llama: " << e);
}

BOOST_AUTO_TEST_CASE(prompt_from_a_text_is_the_base_model_reading_the_text_first) {
  eigen_d::context ctx;
  const std::vector<std::int32_t> text{5, 8};  // three virtual tokens: 5, 8, 5 (PEFT repeats, then cuts)
  const std::vector<std::int32_t> virtual_ids{5, 8, 5};
  const method_config cfg{prompt_tuning_config{.num_virtual_tokens = 3, .init = prompt_init::text, .init_token_ids = text}};
  const auto batch = test::tiny_batch();
  for (const auto pool : {models::pooling::first_token, models::pooling::masked_mean}) {
    models::bert_for_sequence_classification<eigen_d, base_plan> base(ctx, bert_config(), {.num_labels = 3, .pool = pool, .seed = 7});
    models::bert_for_sequence_classification<eigen_d, prompt_plan> tuned(ctx, bert_config(), {.num_labels = 3, .pool = pool, .seed = 7}, cfg);
    const auto want = eigen_d::copy_to_host(ctx, base.forward(ctx, with_text(batch, virtual_ids)));
    const auto got = eigen_d::copy_to_host(ctx, tuned.forward(ctx, batch));
    BOOST_TEST(test::max_abs_diff(want, got) < 1e-12, "pooling " << int(pool));
  }
  models::bert_for_token_classification<eigen_d, base_plan> base(ctx, bert_config(), {.num_labels = 4, .seed = 8});
  models::bert_for_token_classification<eigen_d, prompt_plan> tuned(ctx, bert_config(), {.num_labels = 4, .seed = 8}, cfg);
  const auto want = eigen_d::copy_to_host(ctx, base.forward(ctx, with_text(batch, virtual_ids)));
  const auto got = eigen_d::copy_to_host(ctx, tuned.forward(ctx, batch));
  BOOST_TEST(tail_difference(want, got, 2, 3, 6, 4) < 1e-12);

  models::llama_for_causal_lm<eigen_d, base_plan> lbase(ctx, llama_config(), {}, 9);
  models::llama_for_causal_lm<eigen_d, prompt_plan> ltuned(ctx, llama_config(), cfg, 9);
  const auto lwant = eigen_d::copy_to_host(ctx, lbase.forward(ctx, with_text(decoder_batch, virtual_ids)));
  const auto lgot = eigen_d::copy_to_host(ctx, ltuned.forward(ctx, decoder_batch));
  BOOST_TEST(tail_difference(lwant, lgot, 2, 3, 5, 11) < 1e-12);

  // Greedy generation, batched prompts of different lengths and chunked prefill included.
  const std::vector<std::vector<std::int32_t>> prompts{{3, 1, 4, 1, 5}, {9, 2}, {6, 5, 3}};
  std::vector<std::vector<std::int32_t>> read_first;
  for (const auto& p : prompts) {
    read_first.push_back(virtual_ids);
    read_first.back().insert(read_first.back().end(), p.begin(), p.end());
  }
  generate::generation_options o{.max_new_tokens = 6, .sampling = {}, .stop_tokens = {}, .stop_strings = {}, .pad_token = 0,
                                 .prefill_chunk = 2};
  const auto a = generate::generate(ctx, ltuned, std::span(prompts), o, letters);
  const auto b = generate::generate(ctx, lbase, std::span(read_first), o, letters);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    BOOST_TEST(a[i].tokens == b[i].tokens, "prompt " << i);
    BOOST_TEST(a[i].tokens.size() == 6u);
  }
}

BOOST_AUTO_TEST_CASE(prefix_from_a_kv_cache_is_the_base_model_reading_its_tokens_first) {
  eigen_d::context ctx;
  const auto c = llama_config();
  const std::vector<std::int32_t> text{4, 7, 2};
  models::llama_for_causal_lm<eigen_d, base_plan> base(ctx, c, {}, 9);
  models::llama_for_causal_lm<eigen_d, prefix_plan> tuned(ctx, c, method_config{prefix_tuning_config{.num_virtual_tokens = 3}}, 9);
  // The base model's cache after reading the text: every layer's rotated keys and its values.
  auto cache = base.make_cache(1, 3);
  base.forward_cached(ctx, text, 3, cache);
  const std::size_t w = c.num_key_value_heads * c.head_size(), width = c.num_hidden_layers * 2 * w;
  std::vector<double> table(3 * width);
  for (std::size_t l = 0; l < c.num_hidden_layers; ++l) {
    const auto k = eigen_d::copy_to_host(ctx, cache.layers[l].keys), v = eigen_d::copy_to_host(ctx, cache.layers[l].values);
    for (std::size_t t = 0; t < 3; ++t)
      for (std::size_t j = 0; j < w; ++j) {
        table[t * width + 2 * l * w + j] = k[t * w + j];
        table[t * width + (2 * l + 1) * w + j] = v[t * w + j];
      }
  }
  tuned.visit_parameters("", [&](const std::string& name, auto& p) {
    if (name == "prompt_encoder.embedding.weight") eigen_d::copy_from_host(ctx, table, shape{3, width}, p.value);
  });
  const auto want = eigen_d::copy_to_host(ctx, base.forward(ctx, with_text(decoder_batch, text)));
  const auto got = eigen_d::copy_to_host(ctx, tuned.forward(ctx, decoder_batch));
  BOOST_TEST(tail_difference(want, got, 2, 3, 5, 11) < 1e-12);

  const std::vector<std::vector<std::int32_t>> prompts{{3, 1, 4, 1, 5}, {9, 2}, {6, 5, 3}};
  std::vector<std::vector<std::int32_t>> read_first;
  for (const auto& p : prompts) {
    read_first.push_back(text);
    read_first.back().insert(read_first.back().end(), p.begin(), p.end());
  }
  generate::generation_options o{.max_new_tokens = 6, .sampling = {}, .stop_tokens = {}, .stop_strings = {}, .pad_token = 0};
  const auto a = generate::generate(ctx, tuned, std::span(prompts), o, letters);
  const auto b = generate::generate(ctx, base, std::span(read_first), o, letters);
  for (std::size_t i = 0; i < prompts.size(); ++i) BOOST_TEST(a[i].tokens == b[i].tokens, "prompt " << i);
  // Prompts of one length run as one batch: the same tokens as one at a time.
  const std::vector<std::vector<std::int32_t>> same_length{{3, 1, 4}, {9, 2, 6}};
  const auto together = generate::generate(ctx, tuned, std::span(same_length), o, letters);
  for (std::size_t i = 0; i < same_length.size(); ++i)
    BOOST_TEST(together[i].tokens == generate::generate(ctx, tuned, std::span(same_length).subspan(i, 1), o, letters)[0].tokens);
}

BOOST_AUTO_TEST_CASE(files_round_trip_in_peft_layout_and_refuse_to_merge) {
  eigen_d::context ctx;
  temp_dir dir;
  auto keys_of = [](const std::filesystem::path& d) {
    std::map<std::string, std::vector<std::size_t>> out;
    const auto file = io::safetensors_file::open(d / "adapter_model.safetensors");
    for (const auto& t : file.tensors()) out[t.name] = t.shape;
    return out;
  };
  auto config_of = [](const std::filesystem::path& d) {
    std::ifstream in(d / "adapter_config.json");
    return nlohmann::json::parse(in);
  };
  const auto batch = test::tiny_batch();
  {  // prompt tuning, sequence classification
    models::bert_for_sequence_classification<eigen_d, prompt_plan> m(ctx, bert_config(), {.num_labels = 3, .seed = 1},
                                                                     method_config{prompt_tuning_config{.num_virtual_tokens = 3}});
    test::randomize_trainable(ctx, m, 2, 0.5);
    io::save_peft_adapter(ctx, m, dir.path / "prompt", {.base_model_name_or_path = "tiny", .task_type = "SEQ_CLS",
                                                        .methods = {prompt_tuning_config{.num_virtual_tokens = 3}}});
    const auto keys = keys_of(dir.path / "prompt");
    BOOST_TEST(keys.size() == 3u);
    BOOST_TEST((keys.at("prompt_embeddings") == std::vector<std::size_t>{3, 16}));
    BOOST_TEST(keys.count("base_model.classifier.weight") == 1u);
    BOOST_TEST(keys.count("base_model.classifier.bias") == 1u);
    const auto j = config_of(dir.path / "prompt");
    BOOST_TEST(j["peft_type"] == "PROMPT_TUNING");
    BOOST_TEST(j["num_virtual_tokens"] == 3);
    BOOST_TEST(j["prompt_tuning_init"] == "RANDOM");
    const auto info = io::read_peft_adapter_config<prompt_plan>(dir.path / "prompt");
    // The same base weights (from the seed here, from a checkpoint in real use), then the adapter.
    models::bert_for_sequence_classification<eigen_d, prompt_plan> same_base(ctx, bert_config(), {.num_labels = 3, .seed = 1}, info.options);
    io::load_peft_adapter(ctx, same_base, dir.path / "prompt");
    BOOST_TEST(test::max_abs_diff(eigen_d::copy_to_host(ctx, m.forward(ctx, batch)), eigen_d::copy_to_host(ctx, same_base.forward(ctx, batch))) < 1e-6);
    const std::string e = error_of([&] { io::save_merged_checkpoint(ctx, m, dir.path / "merged", nlohmann::json::object()); });
    BOOST_TEST(e.find("virtual tokens are extra inputs") != std::string::npos, e);
    BOOST_TEST(!std::filesystem::exists(dir.path / "merged"));
  }
  {  // prefix tuning with its reparametrisation: the file holds the table it computes
    const prefix_tuning_config pc{.num_virtual_tokens = 2, .prefix_projection = true, .encoder_hidden_size = 5};
    models::bert_for_sequence_classification<eigen_d, prefix_plan> m(ctx, bert_config(), {.num_labels = 3, .seed = 1}, method_config{pc});
    test::randomize_trainable(ctx, m, 3, 0.5);
    io::save_peft_adapter(ctx, m, dir.path / "prefix", {.base_model_name_or_path = "tiny", .task_type = "SEQ_CLS", .methods = {pc}});
    const auto keys = keys_of(dir.path / "prefix");
    BOOST_TEST(keys.size() == 3u);
    BOOST_TEST((keys.at("prompt_embeddings") == std::vector<std::size_t>{2, 2 * 2 * 16}));
    const auto j = config_of(dir.path / "prefix");
    BOOST_TEST(j["peft_type"] == "PREFIX_TUNING");
    BOOST_TEST(j["prefix_projection"] == true);
    BOOST_TEST(j["encoder_hidden_size"] == 5);
    const auto info = io::read_peft_adapter_config<prefix_plan>(dir.path / "prefix");
    BOOST_TEST(info.options.get<prefix_tuning_config>().inference_mode);
    models::bert_for_sequence_classification<eigen_d, prefix_plan> back(ctx, bert_config(), {.num_labels = 3, .seed = 1}, info.options);
    io::load_peft_adapter(ctx, back, dir.path / "prefix");
    BOOST_TEST(test::max_abs_diff(eigen_d::copy_to_host(ctx, m.forward(ctx, batch)), eigen_d::copy_to_host(ctx, back.forward(ctx, batch))) < 1e-5);
    // A table of the wrong size is refused by name.
    models::bert_for_sequence_classification<eigen_d, prefix_plan> longer(ctx, bert_config(), {.num_labels = 3, .seed = 1},
                                                                          method_config{prefix_tuning_config{.num_virtual_tokens = 4, .inference_mode = true}});
    BOOST_CHECK_THROW(io::load_peft_adapter(ctx, longer, dir.path / "prefix"), shape_error);
  }
  {  // a decoder's prefix: the table alone
    models::llama_for_causal_lm<eigen_d, prefix_plan> m(ctx, llama_config(), method_config{prefix_tuning_config{.num_virtual_tokens = 2}}, 3);
    io::save_peft_adapter(ctx, m, dir.path / "decoder", {.base_model_name_or_path = "tiny", .task_type = "CAUSAL_LM",
                                                         .methods = {prefix_tuning_config{.num_virtual_tokens = 2}},
                                                         .modules_to_save = {}});
    const auto keys = keys_of(dir.path / "decoder");
    BOOST_TEST(keys.size() == 1u);
    BOOST_TEST((keys.at("prompt_embeddings") == std::vector<std::size_t>{2, 2 * 2 * 8}));  // 2 layers x K, V x 2 kv heads x 4
    const auto info = io::read_peft_adapter_config<prefix_plan>(dir.path / "decoder");
    models::llama_for_causal_lm<eigen_d, prefix_plan> back(ctx, llama_config(), info.options, 3);
    io::load_peft_adapter(ctx, back, dir.path / "decoder");
    BOOST_TEST(test::max_abs_diff(eigen_d::copy_to_host(ctx, m.forward(ctx, decoder_batch)),
                                  eigen_d::copy_to_host(ctx, back.forward(ctx, decoder_batch))) < 1e-5);
  }
}

BOOST_AUTO_TEST_CASE(bad_options_configs_and_inputs_are_refused_by_name) {
  eigen_d::context ctx;
  auto bert_error = [&](const method_config& cfg) {
    return error_of([&] { models::bert_for_sequence_classification<eigen_d, both_plan> m(ctx, bert_config(), {.num_labels = 2}, cfg); });
  };
  const prompt_tuning_config off_prompt{.enabled = false};
  const prefix_tuning_config off_prefix{.enabled = false};
  BOOST_TEST(bert_error({prompt_tuning_config{.num_virtual_tokens = 0}, off_prefix}).find("num_virtual_tokens 0") != std::string::npos);
  BOOST_TEST(bert_error({prompt_tuning_config{.init = prompt_init::text}, off_prefix}).find("init_token_ids") != std::string::npos);
  BOOST_TEST(bert_error({prompt_tuning_config{.init = prompt_init::text, .init_token_ids = {3, 30}}, off_prefix}).find("init token id 30") !=
             std::string::npos);
  BOOST_TEST(bert_error({off_prompt, prefix_tuning_config{.num_virtual_tokens = 5000}}).find("num_virtual_tokens 5000") != std::string::npos);
  BOOST_TEST(bert_error({prompt_tuning_config{}, prefix_tuning_config{}}).find("cannot run together") != std::string::npos);
  BOOST_TEST(bert_error({off_prompt, off_prefix}) == "no error");
  // Positions: 6 tokens and 7 virtual ones do not fit in 12.
  models::bert_for_sequence_classification<eigen_d, prompt_plan> m(ctx, bert_config(), {.num_labels = 2},
                                                                   method_config{prompt_tuning_config{.num_virtual_tokens = 7}});
  const std::string e = error_of([&] { m.forward(ctx, test::tiny_batch()); });
  BOOST_TEST(e.find("7 virtual tokens") != std::string::npos, e);
  models::llama_for_causal_lm<eigen_d, prefix_plan> d(ctx, llama_config(), method_config{prefix_tuning_config{.num_virtual_tokens = 30}}, 1);
  BOOST_CHECK_THROW(d.forward(ctx, decoder_batch), shape_error);
  BOOST_CHECK_THROW(d.make_cache(1, 5), config_error);

  using test::adapter_config_error;
  auto has = [](const std::string& s, const char* what) { return s.find(what) != std::string::npos; };
  BOOST_TEST(has(adapter_config_error<prompt_plan>(R"({"peft_type": "PROMPT_TUNING"})"), "'num_virtual_tokens' must be a positive integer"));
  BOOST_TEST(has(adapter_config_error<prompt_plan>(R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 0})"), "num_virtual_tokens"));
  BOOST_TEST(has(adapter_config_error<prompt_plan>(R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": "8"})"), "num_virtual_tokens"));
  BOOST_TEST(has(adapter_config_error<prompt_plan>(R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8, "num_transformer_submodules": 2})"),
                 "encoder-decoder"));
  BOOST_TEST(has(adapter_config_error<prompt_plan>(R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8, "prompt_tuning_init": "ZEROS"})"),
                 "'prompt_tuning_init' 'ZEROS'"));
  BOOST_TEST(has(adapter_config_error<prefix_plan>(R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 8, "init_weights": "gaussian"})"),
                 "'init_weights' 'gaussian'"));
  BOOST_TEST(adapter_config_error<prefix_plan>(R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 8, "token_dim": 16})") == "no error");
}

BOOST_AUTO_TEST_CASE(backends_agree_on_training_and_cached_steps) {
  const auto a = test::virtual_tokens_scenario<eigen_d>();
  const auto d = test::compare(a, test::virtual_tokens_scenario<test::xtensor_d>(), 1e-10);
  BOOST_TEST(d.empty(), "eigen vs xtensor: " << d);
  const auto f = test::compare(test::virtual_tokens_scenario<test::eigen_f>(), a, 2e-4);
  BOOST_TEST(f.empty(), "float vs double: " << f);
}

BOOST_AUTO_TEST_SUITE_END()
