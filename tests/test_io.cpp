// File formats: safetensors (round trips, conversions, every kind of malformed header), atomic
// writes, checkpoints by Hugging Face name, config.json, PEFT adapter directories, merged export.
#include <boost/test/unit_test.hpp>
#include <sys/stat.h>
#include <thread>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "bodies/scenarios.hpp"
#include "peft/io/checkpoint.hpp"
#include "peft/io/json_config.hpp"
#include "peft/io/output_dir.hpp"
#include "peft/models/bert/config.hpp"
#include "peft/models/llama/config.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/train/report.hpp"
#include "peft/train/transfer.hpp"
#include "support/backends.hpp"
#include "support/temp_dir.hpp"

using namespace peft;
using test::temp_dir;
namespace fs = std::filesystem;

namespace {
/// A fresh empty directory under the system temp dir, removed at scope exit.

std::vector<std::byte> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), {});
  std::vector<std::byte> out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}
void write_bytes(const fs::path& p, const std::vector<std::byte>& bytes) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}
std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// A safetensors buffer with a hand-written header and `data_bytes` zero bytes.
std::vector<std::byte> raw_file(const std::string& header, std::size_t data_bytes, std::uint64_t claimed = 0) {
  std::vector<std::byte> out(8 + header.size() + data_bytes);
  const std::uint64_t n = claimed ? claimed : header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

void expect_rejected(const std::vector<std::byte>& bytes, const std::string& fragment) {
  try {
    io::safetensors_file::parse_buffer(bytes, "case.safetensors");
    BOOST_ERROR("accepted a file that should fail with '" << fragment << "'");
  } catch (const io::io_error& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("case.safetensors") != std::string::npos, what);
    BOOST_TEST(what.find(fragment) != std::string::npos, "'" << what << "' lacks '" << fragment << "'");
  }
}

using B = test::eigen_d;
using lora_qv = plan<methods::lora<roles::query, roles::value>>;
using lora_bitfit = plan<methods::lora<roles::query, roles::value>, methods::bitfit>;

/// Element-wise closeness for results that passed through an F32 file from a double model.
void expect_close(const std::vector<double>& a, const std::vector<double>& b, double tol = 1e-5) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) BOOST_TEST(a[i] == b[i], boost::test_tools::tolerance(tol));
}

std::vector<double> logits_of(B::context& ctx, auto& m) {
  ctx.training = false;
  return B::copy_to_host(ctx, m.forward(ctx, test::tiny_batch()));
}
}  // namespace

BOOST_AUTO_TEST_SUITE(safetensors_format)

BOOST_AUTO_TEST_CASE(round_trip_with_metadata) {
  temp_dir dir;
  const std::vector<float> a{1.5f, -2.f, 3.25f, 0.f, 1e-30f, 7.f};
  io::write_safetensors(dir.path / "x.safetensors",
                        {io::tensor_to_write::f32<float>("layer.weight", {2, 3}, a),
                         io::tensor_to_write::f32<float>("scalar", {}, std::vector<float>{42.f}),
                         io::tensor_to_write::f32<float>("empty", {0, 4}, std::vector<float>{})},
                        {{"format", "pt"}});
  const auto f = io::safetensors_file::open(dir.path / "x.safetensors");
  BOOST_TEST(f.tensors().size() == 3u);
  BOOST_TEST(f.metadata().at("format") == "pt");
  const auto* t = f.find("layer.weight");
  BOOST_REQUIRE(t);
  BOOST_TEST((t->shape == std::vector<std::size_t>{2, 3}));
  const auto view = f.f32_view(*t);
  BOOST_REQUIRE(view.has_value());  // F32 is used in place
  BOOST_TEST(std::vector<float>(view->begin(), view->end()) == a, boost::test_tools::per_element());
  BOOST_TEST(f.read<double>(*f.find("scalar"))[0] == 42.0);
  BOOST_TEST(f.find("empty")->numel() == 0u);
  // The header is padded to 8 bytes, so data starts aligned.
  std::ifstream in(dir.path / "x.safetensors", std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  BOOST_TEST(n % 8 == 0u);
}

BOOST_AUTO_TEST_CASE(half_and_bfloat16_are_converted_exactly) {
  const std::vector<std::uint16_t> halves{0x3C00, 0xC000, 0x3800, 0x0001, 0x7C00, 0x7BFF};
  const std::vector<std::uint16_t> bf16{0x3F80, 0xC040, 0x0000};
  std::string header = R"({"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[12,18]}})";
  auto bytes = raw_file(header, 18);
  std::memcpy(bytes.data() + 8 + header.size(), halves.data(), 12);
  std::memcpy(bytes.data() + 8 + header.size() + 12, bf16.data(), 6);
  const auto f = io::safetensors_file::parse_buffer(bytes);
  const auto h = f.read<float>(*f.find("h"));
  BOOST_TEST(h[0] == 1.0f);
  BOOST_TEST(h[1] == -2.0f);
  BOOST_TEST(h[2] == 0.5f);
  BOOST_TEST(h[3] == 5.9604644775390625e-08f);  // smallest subnormal half
  BOOST_TEST(std::isinf(h[4]));
  BOOST_TEST(h[5] == 65504.0f);
  const auto b = f.read<double>(*f.find("b"));
  BOOST_TEST(b[0] == 1.0);
  BOOST_TEST(b[1] == -3.0);
  BOOST_TEST(b[2] == 0.0);
  BOOST_TEST(!f.f32_view(*f.find("h")).has_value());
}

BOOST_AUTO_TEST_CASE(malformed_files_are_rejected_with_a_reason) {
  expect_rejected(std::vector<std::byte>(5), "too short");
  expect_rejected(raw_file("{}", 0, 1000), "header length 1000 exceeds");
  expect_rejected(raw_file("{\"a\":", 0), "not valid JSON");
  expect_rejected(raw_file("[1,2]", 0), "not a JSON object");
  expect_rejected(raw_file(R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4), "unknown dtype 'F33'");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}})", 4), "shape entry");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "shape entry");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4), "reversed");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4), "data_offsets");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "beyond the data region");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}})", 8), "needs 16 bytes");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8),
                  "more than SIZE_MAX");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                  "overlaps");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap in the data region between bytes 0 and 4");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12), "cover 4 bytes but the data region has 12");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                  "duplicate tensor name 'a'");
  expect_rejected(raw_file("{\"a\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "not valid JSON");
  expect_rejected(raw_file(R"({"__metadata__":{"format":1}})", 0), "__metadata__ value for 'format'");
  expect_rejected(raw_file(R"({"a":[1,2]})", 0), "entry 'a' is not an object");
  expect_rejected(raw_file("{}", 0, (100u << 20) + 1), "exceeds");
}

BOOST_AUTO_TEST_CASE(missing_and_non_regular_files) {
  temp_dir dir;
  BOOST_CHECK_THROW(io::safetensors_file::open(dir.path / "absent.safetensors"), io::io_error);
  BOOST_CHECK_THROW(io::safetensors_file::open(dir.path), io::io_error);
  std::ofstream(dir.path / "empty.safetensors").close();
  BOOST_CHECK_THROW(io::safetensors_file::open(dir.path / "empty.safetensors"), io::io_error);
}

BOOST_AUTO_TEST_CASE(writes_are_atomic) {
  temp_dir dir;
  const auto target = dir.path / "file.txt";
  io::write_text_atomically(target, "first");
  // A write that fails (its directory does not exist) leaves nothing behind; an earlier file stays.
  BOOST_CHECK_THROW(io::write_text_atomically(dir.path / "missing" / "file.txt", "x"), io::io_error);
  // Serialisation errors happen before the file is touched.
  BOOST_CHECK_THROW(io::write_safetensors(target, {io::tensor_to_write{"a", io::dtype::F32, {2}, std::vector<std::byte>(4)}}),
                    io::io_error);
  std::ifstream in(target);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  BOOST_TEST(content == "first");
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
  BOOST_TEST(files == 1u);  // no temporary left over
}

BOOST_AUTO_TEST_CASE(only_regular_files_are_replaced) {
  temp_dir dir;
  // A symbolic link keeps pointing at its file, which gets the new content.
  const auto real = dir.path / "real.txt", link = dir.path / "link.txt";
  io::write_text_atomically(real, "old");
  fs::create_symlink(real, link);
  io::write_text_atomically(link, "new");
  BOOST_TEST(fs::is_symlink(fs::symlink_status(link)));
  std::ifstream in(real);
  BOOST_TEST(std::string((std::istreambuf_iterator<char>(in)), {}) == "new");
  // A FIFO is written to, not replaced: its reader gets the bytes and it is still a FIFO afterwards.
  const auto fifo = dir.path / "pipe";
  BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::string got;
  std::thread reader([&] {
    std::ifstream r(fifo);
    got.assign((std::istreambuf_iterator<char>(r)), {});
  });
  io::write_text_atomically(fifo, "through the pipe");
  reader.join();
  BOOST_TEST(got == "through the pipe");
  BOOST_TEST(fs::is_fifo(fs::status(fifo)));
  // /dev/null stays a device; a directory is refused with its name.
  io::write_text_atomically("/dev/null", "discarded");
  BOOST_TEST(fs::is_character_file(fs::status("/dev/null")));
  try {
    io::write_text_atomically(dir.path, "x");
    BOOST_ERROR("a directory was accepted as a file");
  } catch (const io::io_error& e) {
    BOOST_TEST(std::string(e.what()).find("is a directory") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_CASE(non_finite_values_are_neither_written_nor_loaded) {
  // The exponent test catches NaN and both infinities in every float width, and nothing else.
  const float f32[] = {1.f, -0.f, std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
                       std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()};
  const auto counted = io::count_non_finite(io::dtype::F32, std::as_bytes(std::span(f32)));
  BOOST_TEST(counted.count == 2u);
  BOOST_TEST(counted.first == 4u);
  const std::uint16_t f16[] = {0x3c00, 0x7bff, 0x7c00, 0xfe00}, bf16[] = {0x3f80, 0x7f7f, 0xff80, 0x7fc1};
  BOOST_TEST(io::count_non_finite(io::dtype::F16, std::as_bytes(std::span(f16))).count == 2u);
  BOOST_TEST(io::count_non_finite(io::dtype::BF16, std::as_bytes(std::span(bf16))).count == 2u);
  const double f64[] = {1e308, std::numeric_limits<double>::signaling_NaN()};
  BOOST_TEST(io::count_non_finite(io::dtype::F64, std::as_bytes(std::span(f64))).first == 1u);
  const std::int32_t ints[] = {-1, 0x7f800000};
  BOOST_TEST(!io::count_non_finite(io::dtype::I32, std::as_bytes(std::span(ints))));

  // Writing refuses, and leaves no file.
  temp_dir dir;
  const std::vector<float> bad = {0.f, std::numeric_limits<float>::infinity()};
  try {
    io::write_safetensors(dir.path / "bad.safetensors", {io::tensor_to_write::f32<float>("w", {2}, bad)});
    BOOST_ERROR("a tensor with an infinity was written");
  } catch (const numeric_error& e) {
    BOOST_TEST(std::string(e.what()).find("refusing to write tensor 'w': 1 of its 2 values") != std::string::npos, e.what());
  }
  BOOST_TEST(!fs::exists(dir.path / "bad.safetensors"));

  // Loading refuses a checkpoint with a NaN, naming the tensor, and changes nothing.
  B::context ctx;
  models::bert_for_sequence_classification<B, lora_qv> a(ctx, test::tiny_bert_config(), {.num_labels = 2, .seed = 1});
  io::save_checkpoint(ctx, a, dir.path / "model.safetensors");
  auto bytes = read_bytes(dir.path / "model.safetensors");
  const auto file = io::safetensors_file::parse_buffer(bytes);
  const auto* t = file.find("bert.encoder.layer.1.output.dense.weight");
  BOOST_REQUIRE(t);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bytes.data() + (file.bytes(*t).data() - bytes.data()) + 4 * 5, &nan, 4);
  write_bytes(dir.path / "nan.safetensors", bytes);
  models::bert_for_sequence_classification<B, lora_qv> b(ctx, test::tiny_bert_config(), {.num_labels = 2, .seed = 2});
  const auto before = logits_of(ctx, b);
  try {
    io::load_checkpoint(ctx, b, dir.path / "nan.safetensors");
    BOOST_ERROR("a NaN weight was loaded");
  } catch (const numeric_error& e) {
    BOOST_TEST(std::string(e.what()).find("tensor 'bert.encoder.layer.1.output.dense.weight' holds 1 NaN or infinite value(s) "
                                          "(the first at element 5)") != std::string::npos, e.what());
  }
  expect_close(before, logits_of(ctx, b));
}

BOOST_AUTO_TEST_CASE(output_directories_swap_lock_and_clean_up) {
  temp_dir dir;
  // replace_with: a new directory takes the old one's place in one step; the old content is gone.
  fs::create_directories(dir.path / "result");
  io::write_text_atomically(dir.path / "result" / "a.txt", "old");
  {
    io::staging_directory staged(dir.path / "result", "test");
    BOOST_TEST(staged.path().parent_path() == dir.path);
    io::write_text_atomically(staged.path() / "b.txt", "new");
    staged.commit();
  }
  BOOST_TEST(!fs::exists(dir.path / "result" / "a.txt"));
  BOOST_TEST(fs::exists(dir.path / "result" / "b.txt"));
  // A staging directory that is not committed disappears with its contents.
  {
    io::staging_directory staged(dir.path / "result", "test");
    io::write_text_atomically(staged.path() / "c.txt", "abandoned");
  }
  BOOST_TEST(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);  // only result/
  // exchange_paths swaps two files.
  io::write_text_atomically(dir.path / "x", "1");
  io::write_text_atomically(dir.path / "y", "2");
  io::exchange_paths(dir.path / "x", dir.path / "y");
  BOOST_TEST(read_text(dir.path / "x") == "2");
  BOOST_TEST(read_text(dir.path / "y") == "1");
  // A lock is exclusive while held, and free again once released.
  {
    io::directory_lock held(dir.path / "result", "test owner");
    BOOST_TEST(!io::directory_lock::is_free(dir.path / "result"));
  }
  BOOST_TEST(io::directory_lock::is_free(dir.path / "result"));
  // Only the temporary files of atomic writes are removed as stale.
  for (const char* name : {".model.safetensors.tmp.Ab12Cd", "keep.tmp.Ab12Cd", ".notes", ".x.tmp.short"})
    io::write_text_atomically(dir.path / "result" / name, "");
  BOOST_TEST(io::remove_stale_temporaries(dir.path / "result") == 1u);
  BOOST_TEST(!fs::exists(dir.path / "result" / ".model.safetensors.tmp.Ab12Cd"));
  BOOST_TEST(fs::exists(dir.path / "result" / "keep.tmp.Ab12Cd"));
  BOOST_TEST(fs::exists(dir.path / "result" / ".x.tmp.short"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(checkpoints)

BOOST_AUTO_TEST_CASE(config_json_round_trip_and_errors) {
  temp_dir dir;
  auto c = test::tiny_bert_config();
  c.hidden_act = activation::gelu_tanh;
  io::write_json_file(dir.path / "config.json", c.to_json("BertForSequenceClassification", {"neg", "pos"}));
  const auto back = models::bert_config::read(dir.path / "config.json");
  BOOST_TEST(back.hidden_size == 16u);
  BOOST_TEST(back.num_attention_heads == 2u);
  BOOST_TEST((back.hidden_act == activation::gelu_tanh));
  auto expect = [](const std::string& text, const char* fragment) {
    try {
      (void)models::bert_config::from_json(io::json_config::parse(text, "cfg.json"));
      BOOST_ERROR("accepted " << text);
    } catch (const io::io_error& e) {
      BOOST_TEST(std::string(e.what()).find(fragment) != std::string::npos, e.what());
    }
  };
  expect(R"({"hidden_size": "384"})", "'hidden_size' must be a non-negative integer, got \"384\"");
  expect(R"({"hidden_size": -1})", "'hidden_size'");
  expect(R"({"layer_norm_eps": "small"})", "'layer_norm_eps' must be a number");
  expect(R"({"hidden_act": "mish"})", "unsupported hidden_act 'mish'");
  expect(R"({"model_type": "gpt2"})", "model_type 'gpt2'");
  expect(R"({"hidden_size": 10, "num_attention_heads": 3})", "not a multiple");
  expect("{", "not valid JSON");
}

BOOST_AUTO_TEST_CASE(sizes_beyond_limits_are_refused_before_allocation) {
  auto refused = [](const std::string& json, const std::string& fragment) {
    try {
      models::bert_config::from_json(io::json_config::parse(json, "config.json"));
      BOOST_ERROR("accepted " << json);
    } catch (const io::io_error& e) {
      BOOST_TEST(std::string(e.what()).find(fragment) != std::string::npos, e.what());
    }
  };
  refused(R"({"intermediate_size": 1000000000000})", "config.json: bert_config: intermediate_size 1000000000000 exceeds the limit");
  refused(R"({"num_hidden_layers": 1000000000})", "num_hidden_layers 1000000000 exceeds the limit of 1024");
  refused(R"({"vocab_size": 100000000})", "vocab_size 100000000 exceeds the limit");
  models::llama_config big;
  big.hidden_size = std::size_t(1) << 20;
  BOOST_CHECK_THROW(big.validate(), config_error);
  adapter_config wide;
  wide.bottleneck = 100;
  BOOST_CHECK_THROW(methods::adapter_bottleneck(wide, 32, "layer"), config_error);
  BOOST_TEST(methods::adapter_bottleneck(wide, 100, "layer") == 100u);
}

BOOST_AUTO_TEST_CASE(save_and_load_by_hugging_face_name) {
  temp_dir dir;
  B::context ctx;
  models::bert_for_sequence_classification<B, lora_qv> a(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1});
  test::randomize_parameters(ctx, a, 3, 0.3);
  io::save_checkpoint(ctx, a, dir.path / "model.safetensors");
  models::bert_for_sequence_classification<B, lora_qv> b(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 2});
  const auto report = io::load_checkpoint(ctx, b, dir.path / "model.safetensors");
  BOOST_TEST(report.missing.empty(), report.str());
  BOOST_TEST(report.method_parameters == 8u);  // LoRA A and B on query and value of two layers: not loaded
  BOOST_TEST(report.unexpected.size() == 8u);  // ... and therefore unused in the file
  // Copy the LoRA matrices too, then both models compute the same logits (up to float32 storage).
  copy_parameters<B>(ctx, a, b);
  expect_close(logits_of(ctx, a), logits_of(ctx, b));
}

BOOST_AUTO_TEST_CASE(prefixes_legacy_names_and_mismatches) {
  temp_dir dir;
  B::context ctx;
  models::bert_for_sequence_classification<B, plan<methods::full>> m(ctx, test::tiny_bert_config(), {.num_labels = 2});
  // A BertModel-style file: no "bert." prefix, legacy LayerNorm gamma/beta, an extra MLM head tensor.
  auto tensors = io::collect_tensors(ctx, m, [](const std::string& n, const auto&) { return n.rfind("bert.", 0) == 0; });
  for (auto& t : tensors) {
    t.name = t.name.substr(5);
    if (t.name == "embeddings.LayerNorm.weight") t.name = "embeddings.LayerNorm.gamma";
  }
  tensors.push_back(io::tensor_to_write::f32<float>("cls.predictions.bias", {3}, std::vector<float>{1, 2, 3}));
  io::write_safetensors(dir.path / "base.safetensors", tensors);
  const auto r = io::load_checkpoint(ctx, m, dir.path / "base.safetensors");
  BOOST_TEST((r.missing == std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  BOOST_TEST((r.unexpected == std::vector<std::string>{"cls.predictions.bias"}));
  // A wrong shape names the key and both shapes, and nothing is loaded.
  for (auto& t : tensors)
    if (t.name == "encoder.layer.1.attention.self.query.weight")
      t = io::tensor_to_write::f32<float>(t.name, {16, 8}, std::vector<float>(128));
  io::write_safetensors(dir.path / "bad.safetensors", tensors);
  const auto before = logits_of(ctx, m);
  try {
    io::load_checkpoint(ctx, m, dir.path / "bad.safetensors");
    BOOST_ERROR("no error for a wrong shape");
  } catch (const shape_error& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("'encoder.layer.1.attention.self.query.weight' has shape [16, 8]") != std::string::npos, what);
    BOOST_TEST(what.find("[16, 16]") != std::string::npos, what);
  }
  BOOST_TEST(logits_of(ctx, m) == before, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(peft_adapters)

BOOST_AUTO_TEST_CASE(lora_adapter_in_hf_peft_layout_round_trips) {
  temp_dir dir;
  B::context ctx;
  method_config cfg{lora_config{.r = 4, .alpha = 8, .dropout = 0.05, .rank_pattern = {{"value", 2}}}};
  models::bert_for_sequence_classification<B, lora_qv> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  test::randomize_parameters(ctx, m, 4, 0.3);
  io::save_peft_adapter(ctx, m, dir.path, {.base_model_name_or_path = "tiny-bert", .task_type = "SEQ_CLS", .methods = cfg});

  std::ifstream in(dir.path / "adapter_config.json");
  const auto j = nlohmann::json::parse(in);
  BOOST_TEST(j["peft_type"] == "LORA");
  BOOST_TEST(j["r"] == 4);
  BOOST_TEST(j["lora_alpha"] == 8);
  BOOST_TEST(j["task_type"] == "SEQ_CLS");
  BOOST_TEST(j["inference_mode"] == true);
  BOOST_TEST((j["target_modules"] == nlohmann::json::array({"query", "value"})));
  BOOST_TEST((j["modules_to_save"] == nlohmann::json::array({"classifier"})));
  BOOST_TEST(j["rank_pattern"]["value"] == 2);
  BOOST_TEST(j["bias"] == "none");
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  BOOST_TEST(std::is_sorted(keys.begin(), keys.end()));

  const auto f = io::safetensors_file::open(dir.path / "adapter_model.safetensors");
  BOOST_TEST(f.metadata().at("format") == "pt");
  BOOST_TEST(f.tensors().size() == 2u * 2u * 2u + 2u);
  const auto* a = f.find("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight");
  BOOST_REQUIRE(a);
  BOOST_TEST((a->shape == std::vector<std::size_t>{4, 16}));
  BOOST_TEST((f.find("base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight")->shape ==
              std::vector<std::size_t>{16, 2}));
  BOOST_TEST(f.find("base_model.model.classifier.weight"));

  // Read it back into a model built from the directory's configuration.
  const auto info = io::read_peft_adapter_config<lora_qv>(dir.path);
  BOOST_TEST(info.options.get<lora_config>().r == 4u);
  BOOST_TEST(info.options.get<lora_config>().rank_pattern.size() == 1u);
  models::bert_for_sequence_classification<B, lora_qv> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1},
                                                         info.options);
  // Same base weights (same seed), adapter from the file.
  copy_parameters<B>(ctx, m, n);  // base and adapter...
  test::randomize_parameters(ctx, n, 99, 0.3);  // ...then scramble everything,
  io::load_checkpoint(ctx, n, [&] {           // restore the base,
    io::save_checkpoint(ctx, m, dir.path / "base.safetensors");
    return dir.path / "base.safetensors";
  }());
  const auto r = io::load_peft_adapter(ctx, n, dir.path);  // and load the adapter.
  BOOST_TEST(r.loaded == 10u);
  expect_close(logits_of(ctx, m), logits_of(ctx, n));
}

BOOST_AUTO_TEST_CASE(rslora_alpha_pattern_and_in_memory_key_names) {
  temp_dir dir;
  B::context ctx;
  method_config cfg{lora_config{.r = 4, .alpha = 8, .use_rslora = true, .alpha_pattern = {{"value", 2}}}};
  models::bert_for_sequence_classification<B, lora_qv> m(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  test::randomize_parameters(ctx, m, 8, 0.3);
  io::save_peft_adapter(ctx, m, dir.path, {.methods = cfg});
  // Rewrite the tensor names as PEFT's in-memory state dict spells them (".lora_A.default.weight").
  const auto f = io::safetensors_file::open(dir.path / "adapter_model.safetensors");
  std::vector<io::tensor_to_write> renamed;
  for (const auto& t : f.tensors()) {
    std::string name = std::regex_replace(t.name, std::regex(R"(\.(lora_[AB])\.weight$)"), ".$1.default.weight");
    const auto v = f.read<float>(t);
    renamed.push_back(io::tensor_to_write::f32<float>(name, t.shape, v));
  }
  BOOST_TEST(std::count_if(renamed.begin(), renamed.end(),
                           [](const auto& t) { return t.name.find(".default.weight") != std::string::npos; }) == 8);
  io::write_safetensors(dir.path / "adapter_model.safetensors", renamed, {{"format", "pt"}});
  const auto info = io::read_peft_adapter_config<lora_qv>(dir.path);
  BOOST_TEST(info.options.get<lora_config>().use_rslora);
  BOOST_REQUIRE(info.options.get<lora_config>().alpha_pattern.size() == 1u);
  models::bert_for_sequence_classification<B, lora_qv> n(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1},
                                                         info.options);
  auto& att = n.encoder().layer(0).attention();
  BOOST_TEST(att.query().scaling() == 4.0);  // rsLoRA: 8 / sqrt(4)
  BOOST_TEST(att.value().scaling() == 1.0);  // alpha_pattern: 2 / sqrt(4)
  io::save_checkpoint(ctx, m, dir.path / "base.safetensors");
  io::load_checkpoint(ctx, n, dir.path / "base.safetensors");
  test::randomize_parameters(ctx, n.classifier(), 3, 0.3);
  const auto r = io::load_peft_adapter(ctx, n, dir.path);
  BOOST_TEST(r.loaded == 10u);
  expect_close(logits_of(ctx, m), logits_of(ctx, n));
}

BOOST_AUTO_TEST_CASE(run_time_target_modules_narrow_the_roles_and_round_trip) {
  // LoRA compiled for query, key and value; the run-time expression keeps query and value only.
  using lora_qkv = plan<methods::lora<roles::query, roles::key, roles::value>>;
  temp_dir dir;
  B::context ctx;
  method_config cfg{lora_config{.r = 2, .alpha = 4, .target_modules = R"(.*\.attention\.self\.(query|value))"}};
  models::bert_for_sequence_classification<B, lora_qkv> m(ctx, test::tiny_bert_config(), {.num_labels = 2, .seed = 5}, cfg);
  test::randomize_parameters(ctx, m, 6, 0.3);
  std::vector<std::string> lora_names;
  m.visit_parameters("", [&](const std::string& name, const auto& p) {
    if (std::remove_cvref_t<decltype(p)>::group::name == groups::lora_a::name) lora_names.push_back(name);
  });
  BOOST_TEST(lora_names.size() == 4u);  // 2 layers x {query, value}
  for (const auto& n : lora_names) BOOST_TEST(n.find(".key.") == std::string::npos, n);

  io::save_peft_adapter(ctx, m, dir.path, {.methods = cfg});
  const auto info = io::read_peft_adapter_config<lora_qkv>(dir.path);
  BOOST_TEST((info.json["target_modules"] == nlohmann::json::array({"query", "value"})));
  BOOST_TEST(info.options.get<lora_config>().target_modules == R"((.*\.)?(query|value))");
  models::bert_for_sequence_classification<B, lora_qkv> n(ctx, test::tiny_bert_config(), {.num_labels = 2, .seed = 5},
                                                          info.options);
  io::save_checkpoint(ctx, m, dir.path / "base.safetensors");  // the same (randomised) base weights
  io::load_checkpoint(ctx, n, dir.path / "base.safetensors");
  BOOST_TEST(io::load_peft_adapter(ctx, n, dir.path).loaded == 4u * 2u + 2u);
  expect_close(logits_of(ctx, m), logits_of(ctx, n));

  // A regular expression that selects nothing leaves no LoRA; a malformed one is a clear error.
  method_config none{lora_config{.r = 2, .target_modules = "nothing"}};
  models::bert_for_sequence_classification<B, lora_qkv> plain(ctx, test::tiny_bert_config(), {.num_labels = 2}, none);
  BOOST_TEST(count_parameters(plain).trainable == 16u * 2u + 2u);  // the classifier only
  method_config broken{lora_config{.r = 2, .target_modules = "(query"}};
  BOOST_CHECK_EXCEPTION((models::bert_for_sequence_classification<B, lora_qkv>(ctx, test::tiny_bert_config(), {}, broken)),
                        config_error, [](const config_error& e) {
                          return std::string(e.what()).find("target_modules '(query' is not a valid regular expression") !=
                                 std::string::npos;
                        });
}

BOOST_AUTO_TEST_CASE(target_modules_are_exact) {
  using methods::detail::target_modules_for;
  const std::set<std::string> linears{"encoder.layer.0.attention.output.dense", "encoder.layer.0.output.dense",
                                      "encoder.layer.1.attention.output.dense", "encoder.layer.1.output.dense",
                                      "encoder.layer.0.attention.self.query", "encoder.layer.1.attention.self.query"};
  // FFN output only: "output.dense" would also catch attention.output.dense.
  auto t = target_modules_for({"encoder.layer.0.output.dense", "encoder.layer.1.output.dense"}, linears, {});
  BOOST_TEST((t == nlohmann::json::array({"0.output.dense", "1.output.dense"})), t.dump());
  t = target_modules_for({"encoder.layer.0.attention.self.query", "encoder.layer.1.attention.self.query"}, linears, {});
  BOOST_TEST((t == nlohmann::json::array({"query"})), t.dump());
  // With layers_to_transform = {1}, "query" selects only layer 1's query, as PEFT does.
  t = target_modules_for({"encoder.layer.1.attention.self.query"}, linears, {1});
  BOOST_TEST((t == nlohmann::json::array({"query"})), t.dump());
}

BOOST_AUTO_TEST_CASE(bad_adapter_directories) {
  temp_dir dir;
  B::context ctx;
  method_config cfg{lora_config{.r = 4, .alpha = 8}};
  models::bert_for_sequence_classification<B, lora_qv> m(ctx, test::tiny_bert_config(), {.num_labels = 3}, cfg);
  io::save_peft_adapter(ctx, m, dir.path, {.methods = cfg});
  // A model built with another rank: the message names the key and both shapes.
  models::bert_for_sequence_classification<B, lora_qv> other(ctx, test::tiny_bert_config(), {.num_labels = 3},
                                                             {lora_config{.r = 2, .alpha = 8}});
  try {
    io::load_peft_adapter(ctx, other, dir.path);
    BOOST_ERROR("no error for a rank mismatch");
  } catch (const shape_error& e) {
    BOOST_TEST(std::string(e.what()).find("lora_A.weight' has shape [4, 16]") != std::string::npos, e.what());
  }
  // A model whose plan does not target value: the value tensors match nothing.
  models::bert_for_sequence_classification<B, plan<methods::lora<roles::query>>> fewer(ctx, test::tiny_bert_config(),
                                                                                       {.num_labels = 3}, cfg);
  BOOST_CHECK_THROW(io::load_peft_adapter(ctx, fewer, dir.path), io::io_error);
  // Wrong JSON types in the config.
  io::write_text_atomically(dir.path / "adapter_config.json", R"({"peft_type": "LORA", "r": "8"})");
  try {
    io::read_peft_adapter_config<lora_qv>(dir.path);
    BOOST_ERROR("no error for r as a string");
  } catch (const io::io_error& e) {
    BOOST_TEST(std::string(e.what()).find("'r' must be a positive integer") != std::string::npos, e.what());
  }
  io::write_text_atomically(dir.path / "adapter_config.json", R"({"peft_type": "PREFIX_TUNING", "r": 8})");
  BOOST_CHECK_THROW(io::read_peft_adapter_config<lora_qv>(dir.path), io::io_error);
  // Combined (PEFT_CPP) files: a malformed method list or method section is named in the error.
  auto refused = [&](const char* text, const char* fragment) {
    io::write_text_atomically(dir.path / "adapter_config.json", text);
    try {
      (void)io::read_peft_adapter_config<lora_qv>(dir.path);
      BOOST_ERROR("accepted " << text);
    } catch (const io::io_error& e) {
      BOOST_TEST(std::string(e.what()).find(fragment) != std::string::npos, e.what());
    }
  };
  refused(R"({"peft_type": "PEFT_CPP", "peft_cpp": {"methods": "lora"}})", "'peft_cpp.methods' must be a list");
  refused(R"({"peft_type": "PEFT_CPP", "peft_cpp": {"methods": ["lora"], "lora": 5}})", "peft_cpp.lora: not a JSON object");
  refused(R"({"peft_type": "PEFT_CPP", "peft_cpp": {"methods": ["lora"], "lora": {"r": -2}}})",
          "peft_cpp.lora: 'r' must be a positive integer");
  refused(R"({"peft_type": 7})", "'peft_type' must be a string");
  refused(R"([1, 2])", "not a JSON object");
  // Full fine-tuning is not an adapter.
  models::bert_for_sequence_classification<B, plan<methods::full>> full(ctx, test::tiny_bert_config(), {.num_labels = 3});
  BOOST_CHECK_THROW(io::save_peft_adapter(ctx, full, dir.path / "full", {}), config_error);
}

BOOST_AUTO_TEST_CASE(bitfit_and_adapters_use_our_documented_layout) {
  temp_dir dir;
  B::context ctx;
  const method_config cfg{lora_config{.r = 2, .alpha = 4}, adapter_config{.bottleneck = 4}};
  using p = plan<methods::lora<roles::query>, methods::bitfit, methods::pfeiffer_adapter>;
  models::bert_for_sequence_classification<B, p> m(ctx, test::tiny_bert_config(), {.num_labels = 2}, cfg);
  test::randomize_parameters(ctx, m, 5, 0.3);
  io::save_peft_adapter(ctx, m, dir.path, {.methods = cfg});
  std::ifstream in(dir.path / "adapter_config.json");
  BOOST_TEST(nlohmann::json::parse(in)["peft_type"] == "PEFT_CPP");
  const auto f = io::safetensors_file::open(dir.path / "adapter_model.safetensors");
  BOOST_TEST(f.find("base_model.model.bert.encoder.layer.0.output.LayerNorm.bias_delta"));
  BOOST_TEST(f.find("base_model.model.bert.encoder.layer.1.output.dense.adapter.down.weight"));
  models::bert_for_sequence_classification<B, p> n(ctx, test::tiny_bert_config(), {.num_labels = 2}, cfg);
  io::save_checkpoint(ctx, m, dir.path / "all.safetensors");
  io::load_checkpoint(ctx, n, dir.path / "all.safetensors");  // base weights
  io::load_peft_adapter(ctx, n, dir.path);                    // deltas, adapters, LoRA, head
  expect_close(logits_of(ctx, m), logits_of(ctx, n));
}

BOOST_AUTO_TEST_CASE(merged_checkpoint_loads_as_a_plain_bert) {
  temp_dir dir;
  B::context ctx;
  const method_config cfg{lora_config{.r = 4, .alpha = 8}};
  models::bert_for_sequence_classification<B, lora_bitfit> m(ctx, test::tiny_bert_config(), {.num_labels = 3}, cfg);
  test::randomize_parameters(ctx, m, 6, 0.3);
  const auto expected = logits_of(ctx, m);
  io::save_merged_checkpoint(ctx, m, dir.path / "merged",
                             test::tiny_bert_config().to_json("BertForSequenceClassification", {"a", "b", "c"}));
  expect_close(logits_of(ctx, m), expected, 1e-12);  // the model is unchanged (merge + unmerge, to rounding)
  const auto c = models::bert_config::read(dir.path / "merged" / "config.json");
  models::bert_for_sequence_classification<B, plan<methods::full>> plain(ctx, c, {.num_labels = 3, .seed = 77});
  const auto r = io::load_checkpoint(ctx, plain, dir.path / "merged" / "model.safetensors");
  BOOST_TEST(r.missing.empty(), r.str());
  BOOST_TEST(r.unexpected.empty(), r.str());
  expect_close(logits_of(ctx, plain), expected);  // equal up to the file's float32 rounding
  // Adapters cannot be merged: an error, and nothing is written.
  models::bert_for_sequence_classification<B, plan<methods::houlsby_adapter>> ad(ctx, test::tiny_bert_config(), {.num_labels = 3},
                                                                                {adapter_config{.bottleneck = 2}});
  BOOST_CHECK_THROW(io::save_merged_checkpoint(ctx, ad, dir.path / "nope", test::tiny_bert_config().to_json("BertForSequenceClassification")),
                    config_error);
  BOOST_TEST(!fs::exists(dir.path / "nope"));
}

BOOST_AUTO_TEST_SUITE_END()
