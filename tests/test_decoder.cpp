// The decoder path: GGUF reading (a catalogue of corrupt files, bit-exact dequantization against
// the `gguf` Python package), storage formats and packed products, the Llama decoder (gradients on
// both CPU backends, the KV cache against the full forward, batched generation against one prompt at
// a time), the byte-level BPE tokenizer against Hugging Face's ids, and the real SmolLM2 checkpoint
// when it is installed.
#include <boost/test/unit_test.hpp>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "peft/core/frozen_storage.hpp"
#include "peft/generate/generator.hpp"
#include "peft/loss/cross_entropy.hpp"
#include "peft/models/bert/model.hpp"
#include "peft/io/gguf.hpp"
#include "peft/io/gguf_checkpoint.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/train/transfer.hpp"
#include "peft/methods/full.hpp"
#include "peft/methods/ln_tuning.hpp"
#include "peft/methods/lora.hpp"
#include "peft/models/llama/model.hpp"
#include "peft/text/gguf_vocabulary.hpp"
#include "bodies/scenarios.hpp"
#include "support/backends.hpp"
#include "support/gradcheck.hpp"
#include "support/temp_dir.hpp"

using namespace peft;
namespace fs = std::filesystem;
using test::eigen_d;
using test::eigen_f;
using test::xtensor_d;

namespace {

/// Writes GGUF bytes field by field, for valid and deliberately broken files.
struct gguf_builder {
  std::vector<std::byte> b;
  template <class T>
  gguf_builder& put(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  gguf_builder& str(std::string_view s) {
    put<std::uint64_t>(s.size());
    for (char c : s) b.push_back(std::byte(c));
    return *this;
  }
  gguf_builder& kv_string(std::string_view k, std::string_view v) { return str(k).put<std::uint32_t>(8).str(v); }
  gguf_builder& kv_u32(std::string_view k, std::uint32_t v) { return str(k).put<std::uint32_t>(4).put(v); }
  gguf_builder& tensor(std::string_view name, std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t offset) {
    str(name).put<std::uint32_t>(std::uint32_t(ne.size()));
    for (auto e : ne) put(e);
    return put(type).put(offset);
  }
  gguf_builder& pad(std::size_t alignment = 32) {
    while (b.size() % alignment) b.push_back(std::byte(0));
    return *this;
  }
  gguf_builder& data(std::size_t n, std::uint8_t fill = 0) {
    b.insert(b.end(), n, std::byte(fill));
    return *this;
  }
};

/// A valid file: metadata of several types, an F32 2 x 32 tensor and a Q8_0 2 x 32 tensor.
gguf_builder valid_file() {
  gguf_builder g;
  g.b = {std::byte('G'), std::byte('G'), std::byte('U'), std::byte('F')};
  g.put<std::uint32_t>(3).put<std::uint64_t>(2).put<std::uint64_t>(4);
  g.kv_string("general.architecture", "llama").kv_u32("llama.block_count", 2);
  g.str("llama.rope.freq_base").put<std::uint32_t>(6).put(10000.0f);
  g.str("tokenizer.ggml.tokens").put<std::uint32_t>(9).put<std::uint32_t>(8).put<std::uint64_t>(2).str("a").str("b");
  g.tensor("f", {32, 2}, 0, 0).tensor("q", {32, 2}, 8, 256).pad();
  std::vector<float> f(64);
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = float(i) * 0.5f;
  for (float v : f) g.put(v);
  g.data(256 - 64 * 4);
  for (int blk = 0; blk < 2; ++blk) {
    g.put<std::uint16_t>(0x3800);  // fp16 0.5
    for (int j = 0; j < 32; ++j) g.put<std::int8_t>(std::int8_t(j - 16));
  }
  return g;
}

io::gguf_file parse(const gguf_builder& g) { return io::gguf_file::parse_buffer(g.b, "test.gguf"); }

/// Expects parsing to fail with a message naming the file and containing `what`.
void expect_bad(const gguf_builder& g, const std::string& what) {
  try {
    parse(g);
    BOOST_ERROR("accepted a file that should fail with '" << what << "'");
  } catch (const io::io_error& e) {
    const std::string m = e.what();
    BOOST_TEST((m.find("test.gguf") != std::string::npos && m.find(what) != std::string::npos),
               "message '" << m << "' lacks '" << what << "'");
  }
}

std::optional<fs::path> smollm2() {
  const char* p = std::getenv("PEFT_SMOLLM2_GGUF");
  if (p && fs::is_regular_file(p)) return fs::path(p);
  return std::nullopt;
}

/// A tiny Llama: 2 blocks, hidden 16, 4 query / 2 key-value heads, SwiGLU 24, vocab 11.
models::llama_config tiny_llama(rope_pairing pairing = rope_pairing::adjacent) {
  models::llama_config c;
  c.vocab_size = 11, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 64;
  c.rope_theta = 10000, c.pairing = pairing, c.initializer_range = 0.3;
  return c;
}

/// Random bytes for `blocks` blocks of format f with every fp16 scale finite (as the Python fixture).
std::vector<std::byte> random_blocks(storage_format f, std::size_t blocks, std::uint64_t seed) {
  const auto t = format_traits(f);
  init_rng rng(seed);
  std::vector<std::byte> out(blocks * t.block_bytes);
  for (auto& b : out) b = std::byte(std::uint8_t(rng.uniform(0, 256)));
  std::vector<std::size_t> halfs;
  if (f == storage_format::q4_0 || f == storage_format::q8_0) halfs = {0};
  if (f == storage_format::q4_1 || f == storage_format::q4_k) halfs = {0, 2};
  if (f == storage_format::q6_k) halfs = {208};
  if (f == storage_format::f16 || f == storage_format::bf16)
    for (std::size_t i = 0; i < blocks; ++i) halfs.push_back(2 * i);
  for (std::size_t blk = 0; blk < (t.quantized ? blocks : 1); ++blk)
    for (auto off : halfs) {
      const float v = float(rng.normal(0, 0.05));
      const std::uint16_t h = f == storage_format::bf16 ? float_to_bf16(v) : float_to_half(v);
      std::memcpy(out.data() + (t.quantized ? blk * t.block_bytes : 0) + off, &h, 2);
    }
  if (f == storage_format::f32)
    for (std::size_t i = 0; i < blocks; ++i) {
      const float v = float(rng.normal(0, 1));
      std::memcpy(out.data() + 4 * i, &v, 4);
    }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(gguf)

BOOST_AUTO_TEST_CASE(reads_metadata_and_tensors) {
  const auto g = valid_file();
  const auto f = parse(g);
  BOOST_TEST(f.version() == 3u);
  BOOST_TEST(f.get_string("general.architecture") == "llama");
  BOOST_TEST(f.get_uint("llama.block_count") == 2u);
  BOOST_TEST(f.get_float("llama.rope.freq_base") == 10000.0);
  BOOST_TEST((f.get_string_array("tokenizer.ggml.tokens") == std::vector<std::string>{"a", "b"}));
  BOOST_CHECK_THROW(f.get_string("llama.block_count"), io::io_error);  // wrong type
  BOOST_CHECK_THROW((void)f.get_uint("missing.key"), io::io_error);
  BOOST_TEST(!f.get_uint_or("missing.key"));
  const auto* t = f.find_tensor("f");
  BOOST_REQUIRE(t);
  BOOST_TEST((t->shape == std::vector<std::size_t>{2, 32}));
  BOOST_TEST(f.dequantize(*t)[63] == 31.5f);
  const auto q = f.dequantize(*f.find_tensor("q"));
  BOOST_TEST(q[0] == -8.0f);   // (0 - 16) * 0.5
  BOOST_TEST(q[63] == 7.5f);   // (31 - 16) * 0.5
  const packed_matrix m = f.matrix(*f.find_tensor("q"));
  BOOST_TEST(m.rows() == 2u);
  BOOST_TEST(m.cols() == 32u);
  BOOST_TEST((m.format() == storage_format::q8_0));
}

BOOST_AUTO_TEST_CASE(bad_files_are_refused_with_the_reason) {
  const auto good = valid_file();
  auto with = [&](std::size_t at, auto value) {
    gguf_builder g = good;
    std::memcpy(g.b.data() + at, &value, sizeof(value));
    return g;
  };
  auto cut = [&](std::size_t n) {
    gguf_builder g = good;
    g.b.resize(n);
    return g;
  };
  expect_bad(cut(3), "not a GGUF file");
  expect_bad(with(0, std::uint8_t('X')), "not a GGUF file");
  expect_bad(with(4, std::uint32_t(1)), "version 1 is not supported");
  expect_bad(with(4, std::uint32_t(7)), "version 7");
  expect_bad(with(8, std::uint64_t(1) << 40), "tensor count");
  expect_bad(with(16, std::uint64_t(1) << 40), "metadata count");
  expect_bad(with(24, std::uint64_t(1) << 50), "string length");           // first key's length
  expect_bad(cut(60), "truncated");  // inside the first value
  expect_bad(cut(good.b.size() - 10), "runs past the end");                   // the last tensor's data
  // The first value type (after the 8-byte length and 20 key bytes).
  expect_bad(with(24 + 8 + 20, std::uint32_t(99)), "unknown value type 99");

  auto header = [](std::uint64_t tensors, std::uint64_t kvs) {
    gguf_builder g;
    g.b = {std::byte('G'), std::byte('G'), std::byte('U'), std::byte('F')};
    g.put<std::uint32_t>(3).put(tensors).put(kvs);
    return g;
  };
  expect_bad(header(0, 2).kv_u32("a", 1).kv_u32("a", 2), "duplicate metadata key 'a'");
  expect_bad(header(0, 1).str("b").put<std::uint32_t>(7).put<std::uint8_t>(2), "bool value 2");
  expect_bad(header(0, 1).str("arr").put<std::uint32_t>(9).put<std::uint32_t>(4).put<std::uint64_t>(1u << 30),
             "does not fit");
  expect_bad(header(0, 1).kv_u32("general.alignment", 3), "power of two");
  expect_bad(header(1, 0).tensor("t", {}, 0, 0).pad(), "rank 0");
  expect_bad(header(1, 0).tensor("t", {1, 1, 1, 1, 1}, 0, 0).pad(), "rank 5");
  expect_bad(header(1, 0).tensor("t", {32, 0}, 0, 0).pad(), "invalid or overflowing extent 0");
  expect_bad(header(1, 0).tensor("t", {1u << 30, 1u << 30}, 0, 0).pad(), "overflowing extent");
  expect_bad(header(1, 0).tensor("t", {32}, 6, 0).pad().data(64), "type Q5_0, which this reader does not take");
  expect_bad(header(1, 0).tensor("t", {32}, 99, 0).pad().data(64), "type 99");
  expect_bad(header(1, 0).tensor("t", {33}, 8, 0).pad().data(64), "not whole 32-element blocks");
  expect_bad(header(1, 0).tensor("t", {8}, 0, 4).pad().data(64), "not a multiple of the alignment");
  expect_bad(header(1, 0).tensor("t", {8}, 0, 64).pad().data(64), "runs past the end");
  expect_bad(header(2, 0).tensor("t", {8}, 0, 0).tensor("t", {8}, 0, 32).pad().data(64), "duplicate tensor name 't'");
  expect_bad(header(2, 0).tensor("t", {16}, 0, 0).tensor("u", {8}, 0, 32).pad().data(96), "overlap");
}

BOOST_AUTO_TEST_CASE(dequantizes_bit_exactly_as_the_gguf_package) {
  // The fixture is written by tests/gguf/make_dequant_fixture.py (ctest gguf.dequant_python);
  // without it (no Python `gguf` package) this case has nothing to compare against.
  const char* dir = std::getenv("PEFT_DEQUANT_FIXTURE");
  if (!dir) {
    BOOST_TEST_MESSAGE("PEFT_DEQUANT_FIXTURE not set: run through ctest's gguf.dequant_python");
    return;
  }
  const auto f = io::gguf_file::open(fs::path(dir) / "dequant.gguf");
  std::set<storage_format> seen;
  for (const auto& t : f.tensors()) {
    const auto got = f.dequantize(t);
    std::ifstream in(fs::path(dir) / (t.name + ".f32"), std::ios::binary);
    std::vector<float> want(got.size());
    in.read(reinterpret_cast<char*>(want.data()), std::streamsize(want.size() * 4));
    BOOST_REQUIRE_MESSAGE(in.gcount() == std::streamsize(want.size() * 4), "reference for " << t.name);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &want[i], 4) != 0;
    BOOST_TEST(differ == 0u, t.name << ": " << differ << " of " << got.size() << " values differ in some bit");
    seen.insert(t.format);
  }
  BOOST_TEST(seen.size() == std::size(all_storage_formats));
}

BOOST_AUTO_TEST_CASE(non_finite_tensors_are_refused_before_loading) {
  using B = eigen_f;
  B::context ctx;
  models::llama_for_causal_lm<B, plan<methods::frozen>> m(ctx, tiny_llama());
  auto norm_of = [&] {
    std::vector<float> v;
    m.visit_parameters("", [&](const std::string& name, const auto& p) {
      if (name == "model.norm.weight") v = B::copy_to_host(ctx, p.value);
    });
    return v;
  };
  const auto before = norm_of();
  // An F16 norm of ones and an F32 norm of halves (16 values each), with a NaN or infinity at
  // element `f16_bad` of the first or `f32_bad` of the second (none when out of range).
  auto file = [](std::size_t f16_bad, std::uint16_t bad_half, std::size_t f32_bad, float bad) {
    gguf_builder g;
    g.b = {std::byte('G'), std::byte('G'), std::byte('U'), std::byte('F')};
    g.put<std::uint32_t>(3).put<std::uint64_t>(2).put<std::uint64_t>(0);
    g.tensor("blk.0.attn_norm.weight", {16}, 1, 0).tensor("output_norm.weight", {16}, 0, 32).pad();
    for (std::size_t i = 0; i < 16; ++i) g.put<std::uint16_t>(i == f16_bad ? bad_half : std::uint16_t(0x3C00));
    for (std::size_t i = 0; i < 16; ++i) g.put<float>(i == f32_bad ? bad : 0.5f);
    return g;
  };
  auto expect_refused = [&](const gguf_builder& g, const std::string& tensor, const std::string& element) {
    try {
      (void)io::load_gguf(ctx, m, parse(g));
      BOOST_ERROR("loaded a non-finite '" << tensor << "'");
    } catch (const numeric_error& e) {
      const std::string msg = e.what();
      BOOST_TEST((msg.find("test.gguf") != std::string::npos && msg.find("'" + tensor + "'") != std::string::npos &&
                  msg.find("the first at element " + element) != std::string::npos),
                 msg);
    }
    BOOST_TEST(norm_of() == before);  // nothing was loaded
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  expect_refused(file(99, 0, 3, nan), "output_norm.weight", "3");
  expect_refused(file(99, 0, 15, -inf), "output_norm.weight", "15");
  expect_refused(file(7, 0x7C00, 99, 0), "blk.0.attn_norm.weight", "7");  // fp16 infinity
  expect_refused(file(0, 0xFE01, 99, 0), "blk.0.attn_norm.weight", "0");  // fp16 NaN
  const auto r = io::load_gguf(ctx, m, parse(file(99, 0, 99, 0)));
  BOOST_TEST(r.loaded == 2u);
  BOOST_TEST(norm_of() == std::vector<float>(16, 0.5f));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(storage)

BOOST_AUTO_TEST_CASE(non_finite_scan_agrees_with_dequantization) {
  for (storage_format f : all_storage_formats) {
    const auto t = format_traits(f);
    const std::size_t blocks = t.quantized ? 5 : 5 * 32;
    auto bytes = random_blocks(f, blocks, 11);
    // Reference: dequantize and look at every value.
    auto reference = [&] {
      std::vector<float> v(blocks * t.block_elements);
      dequantize_blocks(f, bytes.data(), blocks, v.data());
      non_finite_count r;
      for (std::size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i]) && r.count++ == 0) r.first = i;
      return r;
    };
    auto agree = [&](const char* what) {
      const auto scan = count_non_finite(f, bytes.data(), blocks), want = reference();
      BOOST_TEST((scan.count == want.count && scan.first == want.first),
                 t.name << " " << what << ": scan " << scan.count << " from " << scan.first << ", dequantized "
                        << want.count << " from " << want.first);
      return scan;
    };
    BOOST_TEST(!agree("finite"));
    // Every fp16 field (and, for the plain formats, every element) poisoned in turn, with NaN and
    // both infinities, in block 3 (a later block is poisoned too, so `first` must pick block 3).
    const std::vector<std::size_t> fields = f == storage_format::q6_k                                   ? std::vector<std::size_t>{208}
                                            : (f == storage_format::q4_1 || f == storage_format::q4_k) ? std::vector<std::size_t>{0, 2}
                                                                                                        : std::vector<std::size_t>{0};
    for (std::size_t field : fields)
      for (std::uint32_t special : {0x7F800001u, 0x7F800000u, 0xFF800000u}) {
        auto poisoned = random_blocks(f, blocks, 11);
        for (std::size_t blk : {std::size_t(3), std::size_t(4)}) {
          std::byte* at = poisoned.data() + blk * t.block_bytes + field;
          if (f == storage_format::f32) std::memcpy(at, &special, 4);
          else {
            const float v = std::bit_cast<float>(special);
            const std::uint16_t h = f == storage_format::bf16 ? float_to_bf16(v) : float_to_half(v);
            std::memcpy(at, &h, 2);
          }
        }
        bytes.swap(poisoned);
        const auto scan = agree("poisoned");
        BOOST_TEST(scan.count == 2 * t.block_elements, t.name);
        BOOST_TEST(scan.first == 3 * t.block_elements, t.name);
        bytes.swap(poisoned);
      }
  }
}

BOOST_AUTO_TEST_CASE(formats_round_trip_within_their_precision) {
  BOOST_TEST((parse_storage_format("q4_1") == storage_format::q4_1));
  BOOST_TEST(!parse_storage_format("q5_0"));
  BOOST_TEST(!storage_bytes(storage_format::q4_k, 255));
  BOOST_TEST(*storage_bytes(storage_format::q6_k, 512) == 420u);
  init_rng rng(3);
  std::vector<float> v(4 * 64);
  for (auto& x : v) x = float(rng.normal(0, 1));
  for (auto [f, tol] : {std::pair{storage_format::f32, 0.0}, {storage_format::f16, 1e-3}, {storage_format::bf16, 8e-3},
                        {storage_format::q8_0, 1.5e-2}}) {
    const auto m = packed_matrix::encode(v, 4, 64, f, "m");
    const auto back = m.dequantize<float>();
    double worst = 0;
    for (std::size_t i = 0; i < v.size(); ++i) worst = std::max(worst, double(std::abs(back[i] - v[i])) / (1 + std::abs(v[i])));
    BOOST_TEST(worst <= tol, format_traits(f).name << ": worst relative error " << worst);
  }
  BOOST_TEST(float_to_half(65504.0f) == 0x7bffu);
  BOOST_TEST(float_to_half(1e6f) == 0x7c00u);
  BOOST_TEST(half_to_float(float_to_half(5.9604645e-8f)) == 5.9604645e-8f);  // the smallest subnormal
  BOOST_CHECK_THROW(packed_matrix::encode(v, 1, 256, storage_format::q4_k), config_error);  // read-only format
  BOOST_CHECK_THROW(packed_matrix::encode(v, 4, 64, storage_format::q4_k), shape_error);    // not whole blocks
  BOOST_CHECK_THROW(packed_matrix::encode(v, 4, 60, storage_format::f32), shape_error);     // wrong count
}

using packed_backends = boost::mpl::list<eigen_f, test::xtensor_d>;
BOOST_AUTO_TEST_CASE_TEMPLATE(packed_products_equal_dense_ones, B, packed_backends) {
  using T = typename B::value_type;
  typename B::context ctx;
  if constexpr (requires { ctx.bf16_dot; }) ctx.bf16_dot = false;  // widened to fp32: exact (the bf16 kernels round a)
  for (storage_format f : all_storage_formats) {
    const std::size_t be = format_traits(f).block_elements, n = 37, k = 2 * std::max<std::size_t>(be, 64);
    const auto bytes = random_blocks(f, n * k / be, 11 + std::size_t(f));
    const packed_matrix w(f, n, k, bytes, nullptr, "w");
    const auto dense_host = w.dequantize<T>();
    typename B::tensor dense;
    B::copy_from_host(ctx, dense_host, shape{n, k}, dense);
    for (std::size_t m : {1, 3, 70}) {
      const auto x = test::random_tensor<B>(ctx, {m, k}, 5);
      const auto dy = test::random_tensor<B>(ctx, {m, n}, 6);
      typename B::tensor y(shape{m, n}), y_ref(shape{m, n}), dx(shape{m, k}), dx_ref(shape{m, k});
      B::gemm_packed(ctx, op::t, T(1), x, w, T(0), y);
      B::gemm(ctx, op::n, op::t, T(1), x, dense, T(0), y_ref);
      B::gemm_packed(ctx, op::n, T(1), dy, w, T(0), dx);
      B::gemm(ctx, op::n, op::n, T(1), dy, dense, T(0), dx_ref);
      // Relative to the largest output: K-quant weights reach ~50, so sums of 512 products are large.
      double worst = 0, scale = 1;
      for (std::size_t i = 0; i < y.size(); ++i) worst = std::max(worst, double(std::abs(y[i] - y_ref[i]))), scale = std::max(scale, double(std::abs(y_ref[i])));
      for (std::size_t i = 0; i < dx.size(); ++i) worst = std::max(worst, double(std::abs(dx[i] - dx_ref[i]))), scale = std::max(scale, double(std::abs(dx_ref[i])));
      BOOST_TEST(worst / scale < 1e-5, format_traits(f).name << " m=" << m << ": worst difference " << worst << " of " << scale);
    }
    typename B::tensor wrong(shape{2, k + 1});
    typename B::tensor out(shape{2, n});
    BOOST_CHECK_THROW(B::gemm_packed(ctx, op::t, T(1), wrong, w, T(0), out), shape_error);
  }
}

namespace {
bool bf16_dot_here(boost::unit_test::test_unit_id) { return backend::bf16_dot_available(); }
}  // namespace

// The AVX512_BF16 products against an independent double-precision sum of the same bf16 values: the
// activations rounded to bf16 (nearest even), the weight as stored. Edges: odd reduction lengths,
// partial 32-column panels, row counts that are not multiples of the 8-row micro-kernel, alpha and beta.
BOOST_AUTO_TEST_CASE(bf16_dot_products_round_activations_and_sum_in_fp32,
                     *boost::unit_test::precondition(bf16_dot_here)) {
  using B = eigen_f;
  init_rng rng(21);
  for (auto [m, n, k] : {std::array<std::size_t, 3>{70, 37, 129}, {19, 64, 96}, {5, 33, 1}, {130, 100, 300}}) {
    std::vector<float> wv(n * k);
    for (auto& v : wv) v = float(rng.normal(0, 1));
    const auto w = packed_matrix::encode(wv, n, k, storage_format::bf16, "w");
    const auto wd = w.dequantize<float>();
    for (int threads : {1, 2}) {
      B::context ctx(threads);
      const auto x = test::random_tensor<B>(ctx, {m, k}, 1), dy = test::random_tensor<B>(ctx, {m, n}, 2);
      typename B::tensor y(shape{m, n}), dx(shape{m, k});
      B::fill(ctx, y, 1.f), B::fill(ctx, dx, 1.f);
      B::gemm_packed(ctx, op::t, 0.5f, x, w, 0.25f, y);
      B::gemm_packed(ctx, op::n, 0.5f, dy, w, 0.25f, dx);
      auto round = [](float v) { return double(bf16_to_float(float_to_bf16(v))); };
      double worst = 0;
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
          double sum = 0, size = 0;
          for (std::size_t t = 0; t < k; ++t) sum += round(x[i * k + t]) * wd[j * k + t], size += std::abs(round(x[i * k + t]) * wd[j * k + t]);
          worst = std::max(worst, std::abs(0.25 + 0.5 * sum - y[i * n + j]) / (1 + size));
        }
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < k; ++j) {
          double sum = 0, size = 0;
          for (std::size_t t = 0; t < n; ++t) sum += round(dy[i * n + t]) * wd[t * k + j], size += std::abs(round(dy[i * n + t]) * wd[t * k + j]);
          worst = std::max(worst, std::abs(0.25 + 0.5 * sum - dx[i * k + j]) / (1 + size));
        }
      BOOST_TEST(worst < 1e-6, "m " << m << " n " << n << " k " << k << " threads " << threads << ": worst " << worst);
    }
  }
}

// store_frozen_weights keeps a BERT's frozen linear weights as bf16: the model then computes what the
// same model with those bf16 values as dense fp32 weights computes (exactly when the bf16 products
// are off; within the activations' bf16 rounding when they are on), and LoRA still trains.
BOOST_AUTO_TEST_CASE(bert_with_bf16_frozen_weights_matches_its_dense_twin) {
  using B = eigen_f;
  using P = plan<methods::lora<roles::query, roles::value>>;
  B::context ctx;
  const method_config cfg{lora_config{.r = 2, .alpha = 4}};
  models::bert_for_sequence_classification<B, P> packed(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg),
      dense(ctx, test::tiny_bert_config(), {.num_labels = 3, .seed = 1}, cfg);
  const std::size_t n = store_frozen_weights<B>(ctx, packed, storage_format::bf16);
  std::size_t linears = 0, packed_count = 0;
  packed.visit_parameters("", [&](const std::string&, const auto& p) {
    using Pm = std::remove_cvref_t<decltype(p)>;
    if constexpr (std::is_same_v<typename Pm::group, groups::weight> && !Pm::trainable) ++linears, packed_count += p.is_packed();
  });
  BOOST_TEST(n == linears);  // every frozen linear weight, pooler included; the classifier trains
  BOOST_TEST(n == 13u);
  BOOST_TEST(packed_count == n);
  // The dense twin gets the bf16 values as fp32.
  dense.visit_parameters("", [&](const std::string&, auto& p) {
    using Pm = std::remove_cvref_t<decltype(p)>;
    if constexpr (std::is_same_v<typename Pm::group, groups::weight> && !Pm::trainable)
      for (std::size_t i = 0; i < p.value.size(); ++i) p.value[i] = bf16_to_float(float_to_bf16(p.value[i]));
  });
  BOOST_TEST(store_frozen_weights<B>(ctx, packed, storage_format::bf16) == 0u);  // already stored
  const models::encoder_batch b{.batch_size = 2, .seq_len = 5, .input_ids = {2, 7, 11, 5, 3, 2, 9, 4, 3, 0},
                                .attention_mask = {1, 1, 1, 1, 1, 1, 1, 1, 1, 0}};
  ctx.training = false;
  ctx.bf16_dot = false;
  const auto ref = B::copy_to_host(ctx, dense.forward(ctx, b));
  const auto exact = B::copy_to_host(ctx, packed.forward(ctx, b));
  double worst = 0, scale = 1;
  for (std::size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, double(std::abs(exact[i] - ref[i]))), scale = std::max(scale, double(std::abs(ref[i])));
  BOOST_TEST(worst / scale < 1e-5);
  if (backend::bf16_dot_available()) {
    ctx.bf16_dot = true;
    const auto fast = B::copy_to_host(ctx, packed.forward(ctx, b));
    double diff = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) diff = std::max(diff, double(std::abs(fast[i] - ref[i])));
    BOOST_TEST(diff / scale < 5e-2, "bf16 products: logits differ by " << diff);
  }
  // A training step reaches the LoRA parameters through the packed base.
  ctx.training = true;
  loss::softmax_cross_entropy<B> ce;
  ce.forward(ctx, packed.forward(ctx, b), std::vector<std::int32_t>{0, 2});
  packed.backward(ctx, ce.gradient());
  double grad = 0;
  packed.visit_parameters("", [&](const std::string& name, const auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
      if (name.find("lora_B") != std::string::npos) grad += B::sum_squares(ctx, p.grad);
  });
  BOOST_TEST(grad > 0);
}

BOOST_AUTO_TEST_CASE(frozen_linear_keeps_its_weight_packed_and_lora_merges_it_dense) {
  using B = eigen_f;
  B::context ctx;
  const std::size_t in = 64, out = 12;
  init_rng rng(9);
  std::vector<float> w(in * out);
  for (auto& v : w) v = float(rng.normal(0, 0.2));
  const auto q = packed_matrix::encode(w, out, in, storage_format::q8_0, "w");
  layers::linear<B> frozen(ctx, {.in_features = in, .out_features = out, .bias = false, .name = "l"});
  layers::linear<B> dense(ctx, {.in_features = in, .out_features = out, .bias = false, .name = "d"});
  frozen.set_weight(ctx, q);
  dense.set_weight(ctx, q);  // same values, but this one is compared as a dense product below
  BOOST_REQUIRE(frozen.packed_weight());
  BOOST_TEST(frozen.weight().value.empty());
  BOOST_TEST(frozen.weight().stored_elements() == in * out);
  const auto dq = q.dequantize<float>();
  B::copy_from_host(ctx, dq, shape{out, in}, dense.weight().dense_value(ctx));
  dense.weight().packed.reset();
  const auto x = test::random_tensor<B>(ctx, {3, 5, in}, 1);
  const auto y = frozen.forward(ctx, x);
  BOOST_TEST(test::max_abs_diff(y, dense.forward(ctx, x)) < 1e-5);
  const auto dy = test::random_tensor<B>(ctx, {3, 5, out}, 2);
  const auto dx = frozen.backward(ctx, dy);
  BOOST_TEST(test::max_abs_diff(dx, dense.backward(ctx, dy)) < 1e-5);
  BOOST_CHECK_THROW(frozen.set_weight(ctx, packed_matrix::encode(w, in, out, storage_format::f32)), shape_error);

  // LoRA over a packed base: trains, and merging makes the base dense with the update added.
  method_config cfg{lora_config{.r = 2, .alpha = 4}};
  methods::lora_linear<layers::linear<B>> lora(ctx, {.in_features = in, .out_features = out, .bias = false, .name = "q"}, cfg);
  lora.base_linear().set_weight(ctx, q);
  BOOST_REQUIRE(lora.base_linear().packed_weight());
  lora.visit_parameters("", [&](const std::string& name, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
      if (name.find("lora_B") != std::string::npos) B::copy(ctx, test::random_tensor<B>(ctx, p.value.shape(), 4), p.value);
  });
  const auto before = lora.forward(ctx, x);
  lora.merge(ctx);
  BOOST_TEST(!lora.base_linear().packed_weight());
  BOOST_TEST(test::max_abs_diff(lora.forward(ctx, x), before) < 1e-4);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(llama)

using lora_all = methods::lora<roles::query, roles::key, roles::value, roles::attention_output, roles::ffn_in, roles::ffn_out,
                               roles::ffn_gate>;

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_match_finite_differences, B, test::cpu_double_backends) {
  typename B::context ctx;
  for (rope_pairing pairing : {rope_pairing::adjacent, rope_pairing::half_split}) {
    auto cfg = tiny_llama(pairing);
    cfg.tie_word_embeddings = pairing == rope_pairing::adjacent;  // both head forms
    models::decoder_batch batch{.batch_size = 2, .seq_len = 5, .input_ids = {1, 4, 2, 9, 3, 7, 0, 5, 10, 6}, .labels = {}};
    {
      models::llama_for_causal_lm<B, plan<methods::full>> m(ctx, cfg, {}, 3);
      const auto err = test::check_model_gradients(ctx, m, batch, 1e-6);
      BOOST_TEST(err.empty(), "full fine-tuning: " << err);
    }
    {
      method_config mc{lora_config{.r = 2, .alpha = 4, .dropout = 0}};
      models::llama_for_causal_lm<B, plan<lora_all>> m(ctx, cfg, mc, 3);
      m.visit_parameters("", [&](const std::string&, auto& p) {  // nonzero B, so A's gradient is not trivially 0
        if constexpr (std::remove_cvref_t<decltype(p)>::trainable) B::copy(ctx, test::random_tensor<B>(ctx, p.value.shape(), 8, 0.3), p.value);
      });
      const auto err = test::check_model_gradients(ctx, m, batch, 1e-6);
      BOOST_TEST(err.empty(), "LoRA: " << err);
    }
  }
}

BOOST_AUTO_TEST_CASE(backends_agree_on_training_cache_and_merge) {
  auto a = test::llama_scenario<eigen_d>();
  const auto d = test::compare(a, test::llama_scenario<xtensor_d>(), 1e-10);
  BOOST_TEST(d.empty(), d);
  const auto f = test::compare(test::llama_scenario<eigen_f>(), a, 2e-4);
  BOOST_TEST(f.empty(), "float: " << f);
  // The loss falls, merging changes no logit, and the cached prompt ends where the full forward does.
  BOOST_TEST(a["loss"][2] < a["loss"][0]);
  for (std::size_t i = 0; i < a["eval:logits"].size(); ++i)
    BOOST_TEST(a["merged:logits"][i] == a["eval:logits"][i], boost::test_tools::tolerance(1e-10));
  const std::size_t v = 13;
  for (std::size_t j = 0; j < v; ++j) {
    BOOST_TEST(a["cached:prompt"][j] == a["eval:logits"][4 * v + j], boost::test_tools::tolerance(1e-10));
    BOOST_TEST(a["cached:prompt"][v + j] == a["eval:logits"][9 * v + j], boost::test_tools::tolerance(1e-10));
  }
  const auto targets = models::next_token_targets({.batch_size = 2, .seq_len = 3, .input_ids = {1, 2, 3, 4, 5, 6}, .labels = {}});
  BOOST_TEST((targets == std::vector<std::int32_t>{2, 3, -100, 5, 6, -100}));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(layer_norm_tuning_on_the_rms_norms, B, test::cpu_double_backends) {
  // PEFT's LN_TUNING defaults for Llama: input_layernorm, post_attention_layernorm and the final norm,
  // each with a trainable copy of its scale (RMS norms have no shift).
  typename B::context ctx;
  const models::decoder_batch batch{.batch_size = 2, .seq_len = 4, .input_ids = {1, 4, 2, 9, 3, 7, 0, 5}, .labels = {}};
  const method_config mc{ln_tuning_config{}};
  models::llama_for_causal_lm<B, plan<methods::ln_tuning>> m(ctx, tiny_llama(), mc, 3);
  models::llama_for_causal_lm<B, plan<methods::frozen>> base(ctx, tiny_llama(), {}, 3);
  std::vector<std::string> names;
  m.visit_parameters("", [&](const std::string& n, const auto& p) {
    if (std::string_view(std::remove_cvref_t<decltype(p)>::group::name) == "ln_tuning") names.push_back(n);
  });
  BOOST_REQUIRE_EQUAL(names.size(), 2u * tiny_llama().num_hidden_layers + 1u);
  BOOST_TEST(names.front() == "model.layers.0.input_layernorm.ln_tuning_layers.weight");
  BOOST_TEST(names.back() == "model.norm.ln_tuning_layers.weight");
  const auto y0 = B::copy_to_host(ctx, m.forward(ctx, batch));
  BOOST_TEST(y0 == B::copy_to_host(ctx, base.forward(ctx, batch)), boost::test_tools::per_element());  // starts as the base

  test::randomize_trainable(ctx, m, 5, 0.5);
  const auto e = test::check_model_gradients(ctx, m, batch, 1e-6);
  BOOST_TEST(e.empty(), e);
  const auto y = B::copy_to_host(ctx, m.forward(ctx, batch));
  BOOST_TEST(test::max_abs_diff(y, y0) > 1e-3);  // the tuned scales change the output
  m.merge(ctx);
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, m.forward(ctx, batch)), y) < 1e-12);
  m.unmerge(ctx);
  BOOST_TEST(B::copy_to_host(ctx, m.forward(ctx, batch)) == y, boost::test_tools::per_element());

  // PEFT's files, read back by the plan peft-train's decoder commands use (LoRA switched off).
  test::temp_dir dir;
  io::save_peft_adapter(ctx, m, dir.path, {.task_type = "CAUSAL_LM", .methods = mc, .modules_to_save = {}});
  const auto j = nlohmann::json::parse(std::ifstream(dir.path / "adapter_config.json"));
  BOOST_TEST(j["peft_type"] == "LN_TUNING");
  BOOST_TEST(j["target_modules"].dump() == R"(["input_layernorm","norm","post_attention_layernorm"])");
  using lm_plan = plan<lora_all, methods::ln_tuning>;
  auto info = io::read_peft_adapter_config<lm_plan>(dir.path);
  info.options.get<lora_config>().enabled = false;
  models::llama_for_causal_lm<B, lm_plan> loaded(ctx, tiny_llama(), info.options, 3);
  BOOST_TEST(io::load_peft_adapter(ctx, loaded, dir.path).loaded == names.size());
  BOOST_TEST(test::max_abs_diff(B::copy_to_host(ctx, loaded.forward(ctx, batch)), y) < 1e-5);  // F32 in the file
}

BOOST_AUTO_TEST_CASE(lora_adapter_round_trips_in_peft_format_and_merges) {
  // The adapter a LoRA on q_proj and v_proj writes, read back by the all-projection plan that
  // peft-train's decoder commands use, with the modules chosen at run time.
  using B = eigen_d;
  B::context ctx;
  const auto dir = fs::temp_directory_path() / ("peft_llama_adapter_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  using qv = plan<methods::lora<roles::query, roles::value>>;
  models::llama_for_causal_lm<B, qv> trained(ctx, tiny_llama(), {lora_config{.r = 2, .alpha = 8}}, 4);
  trained.visit_parameters("", [&](const std::string&, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable) B::copy(ctx, test::random_tensor<B>(ctx, p.value.shape(), 9, 0.3), p.value);
  });
  const models::decoder_batch batch{.batch_size = 1, .seq_len = 4, .input_ids = {2, 7, 1, 8}, .labels = {}};
  const auto want = B::copy_to_host(ctx, trained.forward(ctx, batch));
  io::save_peft_adapter(ctx, trained, dir,
                        {.base_model_name_or_path = "tiny", .task_type = "CAUSAL_LM",
                         .methods = {lora_config{.r = 2, .alpha = 8}}, .modules_to_save = {}});
  const auto j = nlohmann::json::parse(std::ifstream(dir / "adapter_config.json"));
  BOOST_TEST(j["peft_type"] == "LORA");
  BOOST_TEST(j["task_type"] == "CAUSAL_LM");
  const auto f = io::safetensors_file::open(dir / "adapter_model.safetensors");
  BOOST_TEST(f.find("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"));
  BOOST_TEST(f.tensors().size() == 2u * 2u * 2u);  // 2 layers x (q, v) x (A, B)

  using all = plan<lora_all>;
  const auto info = io::read_peft_adapter_config<all>(dir);
  models::llama_for_causal_lm<B, all> loaded(ctx, tiny_llama(), info.options, 4);
  std::size_t lora_tensors = 0;
  loaded.visit_parameters("", [&](const std::string&, const auto& p) { lora_tensors += io::is_method_parameter(p); });
  BOOST_TEST(lora_tensors == 8u);  // only q_proj and v_proj got LoRA
  BOOST_TEST(io::load_peft_adapter(ctx, loaded, dir).loaded == 8u);
  // Same base weights: copy them over (the adapter holds only LoRA tensors).
  copy_parameters<B>(ctx, trained, loaded);
  const auto got = B::copy_to_host(ctx, loaded.forward(ctx, batch));
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  BOOST_TEST(worst < 1e-12);
  loaded.merge(ctx);
  const auto merged = B::copy_to_host(ctx, loaded.forward(ctx, batch));
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(merged[i] - want[i]));
  BOOST_TEST(worst < 1e-10);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(names_follow_hugging_face_and_gguf) {
  using B = eigen_f;
  B::context ctx;
  auto cfg = tiny_llama();
  cfg.tie_word_embeddings = false;
  models::llama_for_causal_lm<B, plan<methods::frozen>> m(ctx, cfg);
  std::vector<std::string> names;
  m.visit_parameters("", [&](const std::string& n, const auto&) { names.push_back(n); });
  BOOST_TEST(names.size() == 1u + 2u * 9u + 2u);
  BOOST_TEST(names.front() == "model.embed_tokens.weight");
  BOOST_TEST(names[1] == "model.layers.0.input_layernorm.weight");
  BOOST_TEST(std::count(names.begin(), names.end(), "model.layers.1.mlp.gate_proj.weight") == 1);
  BOOST_TEST(names.back() == "lm_head.weight");
  using M = decltype(m);
  BOOST_TEST(*M::gguf_name("model.layers.12.self_attn.o_proj.weight") == "blk.12.attn_output.weight");
  BOOST_TEST(*M::gguf_name("model.layers.0.post_attention_layernorm.weight") == "blk.0.ffn_norm.weight");
  BOOST_TEST(*M::gguf_name("model.norm.weight") == "output_norm.weight");
  BOOST_TEST(!M::gguf_name("model.layers.0.self_attn.q_proj.lora_A.weight"));
}

BOOST_AUTO_TEST_CASE(kv_cache_steps_equal_the_full_forward) {
  using B = eigen_d;
  B::context ctx;
  models::llama_for_causal_lm<B, plan<methods::frozen>> m(ctx, tiny_llama(), {}, 5);
  const std::vector<std::int32_t> ids{3, 1, 4, 1, 5, 9, 2, 6};
  const auto& full = m.forward(ctx, {.batch_size = 1, .seq_len = ids.size(), .input_ids = ids, .labels = {}});
  const std::vector<double> all = B::copy_to_host(ctx, full);
  const std::size_t v = 11;
  // Prompt of 3 in one call, then one token at a time: the logits of each last position agree.
  auto cache = m.make_cache(1, 16);
  std::vector<double> got = B::copy_to_host(ctx, m.forward_cached(ctx, std::span(ids).first(3), 3, cache));
  for (std::size_t t = 3;; ++t) {
    double worst = 0;
    for (std::size_t j = 0; j < v; ++j) worst = std::max(worst, std::abs(got[j] - all[(t - 1) * v + j]));
    BOOST_TEST(worst < 1e-10, "position " << t - 1 << ": " << worst);
    if (t == ids.size()) break;
    got = B::copy_to_host(ctx, m.forward_cached(ctx, std::span(ids).subspan(t, 1), 1, cache));
  }
  BOOST_TEST(cache.length() == ids.size());
  BOOST_CHECK_THROW(m.forward_cached(ctx, std::span(ids), ids.size() + 1, cache), shape_error);  // ids vs count
  auto small = m.make_cache(1, 4);
  BOOST_CHECK_THROW(m.forward_cached(ctx, std::span(ids), ids.size(), small), shape_error);       // over capacity
  BOOST_CHECK_THROW(m.make_cache(1, 65), config_error);                                          // over the context
}

BOOST_AUTO_TEST_CASE(batched_generation_equals_one_prompt_at_a_time) {
  using B = eigen_d;
  B::context ctx;
  models::llama_for_causal_lm<B, plan<methods::frozen>> m(ctx, tiny_llama(), {}, 8);
  const std::vector<std::vector<std::int32_t>> prompts{{3, 1, 4, 1, 5}, {9, 2}, {6, 5, 3}};
  generate::generation_options o{.max_new_tokens = 6, .sampling = {}, .stop_tokens = {10}, .stop_strings = {}, .pad_token = 0};
  auto decode = [](std::span<const std::int32_t> ids) {
    std::string s;
    for (auto t : ids) s += char('a' + t);
    return s;
  };
  std::vector<std::string> streamed(prompts.size());
  const auto together = generate::generate(ctx, m, std::span(prompts), o, decode,
                                           [&](std::size_t i, std::string_view piece) { streamed[i] += piece; });
  auto chunked = o;
  chunked.prefill_chunk = 2;  // prompts of 5, 2 and 3 tokens in chunks of 2: same tokens
  const auto in_chunks = generate::generate(ctx, m, std::span(prompts), chunked, decode);
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    BOOST_TEST(in_chunks[i].tokens == together[i].tokens, "prompt " << i << " in chunks");
    const auto alone = generate::generate(ctx, m, std::span(prompts).subspan(i, 1), o, decode);
    BOOST_TEST(together[i].tokens == alone[0].tokens, "prompt " << i);
    BOOST_TEST(streamed[i] == together[i].text, "prompt " << i << " streamed '" << streamed[i] << "'");
    BOOST_TEST(!together[i].tokens.empty());
  }
  // A stop string cuts the text before it and ends the sequence; sampling repeats with its seed.
  auto stop = o;
  stop.stop_strings = {together[0].text.substr(1, 2)};
  const auto cut = generate::generate(ctx, m, std::span(prompts).first(1), stop, decode);
  BOOST_TEST(cut[0].text == together[0].text.substr(0, together[0].text.find(stop.stop_strings[0])));
  BOOST_TEST((cut[0].reason == generate::finish_reason::stop_string));
  auto sampled = o;
  sampled.sampling = {.temperature = 1.5, .top_k = 5, .top_p = 0.9, .repetition_penalty = 1.3, .seed = 42};
  const auto s1 = generate::generate(ctx, m, std::span(prompts), sampled, decode);
  const auto s2 = generate::generate(ctx, m, std::span(prompts), sampled, decode);
  for (std::size_t i = 0; i < prompts.size(); ++i) BOOST_TEST(s1[i].tokens == s2[i].tokens);
  auto none = o;
  none.max_new_tokens = 0;
  const auto nothing = generate::generate(ctx, m, std::span(prompts), none, decode);
  BOOST_TEST((nothing.size() == prompts.size() && nothing[0].tokens.empty() && nothing[0].text.empty()));
  const std::vector<std::vector<std::int32_t>> empty_prompt{{}};
  BOOST_CHECK_THROW(generate::generate(ctx, m, std::span(empty_prompt), o, decode), config_error);
  sampled.sampling.top_p = 0;
  BOOST_CHECK_THROW(generate::generate(ctx, m, std::span(prompts), sampled, decode), config_error);
}

BOOST_AUTO_TEST_CASE(greedy_sampler_and_penalty) {
  generate::sampler greedy({});
  const std::vector<float> values{0.5f, 2.0f, -1.0f, 1.9f};
  const std::span<const float> logits(values);
  BOOST_TEST(greedy.next(logits, {}) == 1);
  generate::sampler penalised({.repetition_penalty = 2.0});
  const std::vector<std::int32_t> seen{1};
  BOOST_TEST(penalised.next(logits, std::span<const std::int32_t>(seen)) == 3);  // 2.0 / 2 = 1.0 < 1.9
  generate::sampler top1({.temperature = 1.0, .top_k = 1, .seed = 5});
  for (int i = 0; i < 20; ++i) BOOST_TEST(top1.next(logits, {}) == 1);
  const std::vector<float> nan{0.0f, std::nanf("")};
  BOOST_CHECK_THROW(greedy.next(std::span<const float>(nan), {}), numeric_error);
}

BOOST_AUTO_TEST_CASE(smollm2_from_gguf_answers) {
  const auto path = smollm2();
  if (!path) {
    BOOST_TEST_MESSAGE("PEFT_SMOLLM2_GGUF not set: skipped (ctest sets it via scripts/find_smollm2.sh)");
    return;
  }
  using B = eigen_f;
  B::context ctx;
  const auto f = io::gguf_file::open(*path);
  const auto cfg = models::llama_config::from_gguf(f);
  BOOST_TEST(cfg.num_hidden_layers == 30u);
  BOOST_TEST(cfg.num_key_value_heads == 3u);
  BOOST_TEST(cfg.tie_word_embeddings);
  models::llama_for_causal_lm<B, plan<methods::frozen>> m(ctx, cfg, {}, 0, layers::weight_init::none);
  const auto r = io::load_gguf(ctx, m, f);
  BOOST_TEST(r.missing.empty(), r.str());
  BOOST_TEST(r.unexpected.empty(), r.str());
  std::size_t packed = 0;
  m.visit_parameters("", [&](const std::string&, const auto& p) { packed += p.is_packed(); });
  BOOST_TEST(packed == 1u + 30u * 7u);  // the embedding and every projection stay quantized

  const auto tok = text::bpe_tokenizer_from_gguf(f);
  const auto tmpl = text::chat_template_of(f);
  BOOST_REQUIRE(tmpl);
  const std::vector<text::chat_message> chat{{"user", "What is the capital of France?"}};
  const auto prompt = tok.encode(text::apply_chatml(chat, text::default_system_prompt_from_template(*tmpl)));
  generate::generation_options o{.max_new_tokens = 12, .sampling = {}, .stop_tokens = {*tok.vocabulary().eos},
                                 .stop_strings = {}, .pad_token = 0};
  const std::vector<std::vector<std::int32_t>> prompts{prompt};
  const auto out = generate::generate(ctx, m, std::span(prompts), o, [&](auto ids) { return tok.decode(ids); });
  BOOST_TEST(out[0].text.find("Paris") != std::string::npos, "answer: " << out[0].text);
}

BOOST_AUTO_TEST_CASE(bpe_matches_hugging_face_on_hard_strings) {
  const auto path = smollm2();
  if (!path) {
    BOOST_TEST_MESSAGE("PEFT_SMOLLM2_GGUF not set: skipped");
    return;
  }
  const auto tok = text::bpe_tokenizer_from_gguf(io::gguf_file::open(*path));
  std::ifstream in(fs::path(PEFT_TEST_FIXTURES) / "bpe" / "smollm2_reference.json");
  const auto ref = nlohmann::json::parse(in);
  std::size_t checked = 0;
  for (const auto& c : ref) {
    const std::string s = c["text"];
    const auto ids = tok.encode(s);
    BOOST_TEST(ids == c["ids"].get<std::vector<std::int32_t>>(), "ids differ for " << nlohmann::json(s).dump());
    BOOST_TEST(tok.decode(ids) == s, "round trip of " << nlohmann::json(s).dump());
    ++checked;
  }
  BOOST_TEST(checked >= 60u);
  BOOST_CHECK_THROW(tok.encode("bad \xff byte"), text::text_error);
}

BOOST_AUTO_TEST_SUITE_END()
