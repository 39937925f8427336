#pragma once
/// \file Storage formats of frozen weights: how a matrix is laid out in memory, independent of the
/// type the math runs in. fp32 math reads fp32, fp16, bf16 or a block-quantized format (GGML's
/// Q4_0, Q4_1, Q8_0, Q4_K, Q6_K) and dequantizes on the fly.
///
/// Dequantization is bit-exact with the `gguf` Python package's `dequantize` (and so with GGML's
/// reference kernels): every product and sum is rounded to float as numpy rounds it, in the same
/// order. The block functions are compiled without floating-point contraction (no fused
/// multiply-add), since contraction would change the last bit.

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace peft {

/// A storage format. The numbering is private; GGUF's type ids are mapped in io/gguf.hpp.
enum class storage_format : std::uint8_t { f32, f16, bf16, q4_0, q4_1, q8_0, q4_k, q6_k };

/// The block structure of a format: `block_elements` consecutive elements of a row take
/// `block_bytes` bytes. Plain formats have blocks of one element.
struct storage_format_traits {
  std::string_view name;
  std::size_t block_elements;
  std::size_t block_bytes;
  bool quantized;
};

constexpr storage_format_traits format_traits(storage_format f) noexcept {
  switch (f) {
    case storage_format::f32: return {"F32", 1, 4, false};
    case storage_format::f16: return {"F16", 1, 2, false};
    case storage_format::bf16: return {"BF16", 1, 2, false};
    case storage_format::q4_0: return {"Q4_0", 32, 18, true};
    case storage_format::q4_1: return {"Q4_1", 32, 20, true};
    case storage_format::q8_0: return {"Q8_0", 32, 34, true};
    case storage_format::q4_k: return {"Q4_K", 256, 144, true};
    case storage_format::q6_k: return {"Q6_K", 256, 210, true};
  }
  return {"?", 1, 1, false};
}

/// Every format, for parsers and tests.
inline constexpr storage_format all_storage_formats[] = {storage_format::f32,  storage_format::f16,  storage_format::bf16,
                                                         storage_format::q4_0, storage_format::q4_1, storage_format::q8_0,
                                                         storage_format::q4_k, storage_format::q6_k};

/// The format spelled `name` ("F32", "BF16", "Q4_1", ... in any case), if any.
inline std::optional<storage_format> parse_storage_format(std::string_view name) {
  for (storage_format f : all_storage_formats) {
    const std::string_view n = format_traits(f).name;
    if (n.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < n.size() && same; ++i) {
      char c = name[i];
      if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
      same = c == n[i];
    }
    if (same) return f;
  }
  return std::nullopt;
}

/// Bytes taken by `elements` consecutive elements in format `f`, or nullopt when `elements` is not
/// a whole number of blocks or the count overflows.
constexpr std::optional<std::size_t> storage_bytes(storage_format f, std::size_t elements) noexcept {
  const auto t = format_traits(f);
  if (elements % t.block_elements != 0) return std::nullopt;
  const std::size_t blocks = elements / t.block_elements;
  if (blocks != 0 && t.block_bytes > SIZE_MAX / blocks) return std::nullopt;
  return blocks * t.block_bytes;
}

/// IEEE half to float (exact for every input: normals, subnormals, zeros, infinities, NaN payloads).
/// Branch-free: a normal half's exponent and mantissa are moved into place and the exponent bias
/// corrected by one multiplication by 2^-112; a subnormal is scaled through the mantissa of 0.5
/// (2^-1 + m 2^-24 - 0.5 = m 2^-24). Infinities and NaN take a separate (rare) branch, so that a
/// signalling NaN keeps its payload as numpy keeps it.
inline float half_to_float(std::uint16_t h) noexcept {
  if ((h & 0x7C00u) == 0x7C00u)  // infinities and NaN, payload kept bit for bit (no quieting)
    return std::bit_cast<float>((std::uint32_t(h & 0x8000u) << 16) | 0x7F800000u | (std::uint32_t(h & 0x3FFu) << 13));
  const std::uint32_t w = std::uint32_t(h) << 16;
  const std::uint32_t sign = w & 0x80000000u;
  const std::uint32_t two_w = w + w;  // drops the sign
  const float normalized = std::bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = std::bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
  const std::uint32_t bits = two_w < (1u << 27) ? std::bit_cast<std::uint32_t>(denormalized) : std::bit_cast<std::uint32_t>(normalized);
  return std::bit_cast<float>(sign | bits);
}
/// bfloat16 to float (exact).
inline float bf16_to_float(std::uint16_t b) noexcept { return std::bit_cast<float>(std::uint32_t(b) << 16); }
/// float to bfloat16, rounding to nearest even, NaN kept quiet (as GGML's ggml_compute_fp32_to_bf16).
inline std::uint16_t float_to_bf16(float f) noexcept {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 64u);
  return std::uint16_t((std::uint64_t(u) + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
/// float to IEEE half, rounding to nearest even (overflow to infinity, subnormals kept).
inline std::uint16_t float_to_half(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return std::uint16_t(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds to infinity
  if (abs < 0x38800000u) {                                       // subnormal or zero in half
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;  // 2^24: half subnormal units
    return std::uint16_t(sign | std::uint32_t(std::nearbyint(scaled)));
  }
  const std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return std::uint16_t(sign | ((rounded - (112u << 23)) >> 13));
}

namespace detail {
inline std::uint16_t load_u16(const std::byte* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float load_half(const std::byte* p) noexcept { return half_to_float(load_u16(p)); }
inline std::uint8_t byte_at(const std::byte* p, std::size_t i) noexcept { return std::to_integer<std::uint8_t>(p[i]); }
/// The 6-bit scale and min of sub-block `sb` (0-7) of a Q4_K block from its 12 packed bytes `s`:
/// sub-blocks 0-3 in the low 6 bits of bytes 0-7, sub-blocks 4-7 split between bytes 8-11 and the
/// top 2 bits of bytes 0-7.
inline void q4_k_scale_min(const std::byte* s, std::size_t sb, std::uint8_t& scale, std::uint8_t& min) noexcept {
  if (sb < 4) {
    scale = byte_at(s, sb) & 0x3F;
    min = byte_at(s, sb + 4) & 0x3F;
  } else {
    scale = std::uint8_t((byte_at(s, sb + 4) & 0x0F) | ((byte_at(s, sb - 4) >> 2) & 0x30));
    min = std::uint8_t((byte_at(s, sb + 4) >> 4) | ((byte_at(s, sb) >> 2) & 0x30));
  }
}
}  // namespace detail

// Bit-exactness needs the products and sums below rounded one by one.
#if defined(__clang__)
#define PEFT_NO_CONTRACT_BEGIN _Pragma("clang fp contract(off)")
#define PEFT_NO_CONTRACT_END
#elif defined(__GNUC__) && !defined(__CUDACC__)
#define PEFT_NO_CONTRACT_BEGIN _Pragma("GCC push_options") _Pragma("GCC optimize(\"fp-contract=off\")")
#define PEFT_NO_CONTRACT_END _Pragma("GCC pop_options")
#else
#define PEFT_NO_CONTRACT_BEGIN
#define PEFT_NO_CONTRACT_END
#endif

#if !defined(__clang__)
PEFT_NO_CONTRACT_BEGIN
#endif

/// Writes the `blocks * block_elements` values of `blocks` consecutive blocks of format `f` at `src`
/// to `dst`, converted to T. `src` needs no alignment.
template <class T>
void dequantize_blocks(storage_format f, const std::byte* src, std::size_t blocks, T* dst) noexcept {
#if defined(__clang__)
  PEFT_NO_CONTRACT_BEGIN
#endif
  using detail::byte_at;
  using detail::load_half;
  switch (f) {
    case storage_format::f32:
      for (std::size_t i = 0; i < blocks; ++i) {
        float v;
        std::memcpy(&v, src + 4 * i, 4);
        dst[i] = T(v);
      }
      return;
    case storage_format::f16:
      for (std::size_t i = 0; i < blocks; ++i) dst[i] = T(load_half(src + 2 * i));
      return;
    case storage_format::bf16:
      for (std::size_t i = 0; i < blocks; ++i) dst[i] = T(bf16_to_float(detail::load_u16(src + 2 * i)));
      return;
    case storage_format::q4_0:  // fp16 d, 16 bytes of nibbles: w = d * (q - 8)
      for (std::size_t b = 0; b < blocks; ++b, src += 18, dst += 32) {
        const float d = load_half(src);
        for (std::size_t j = 0; j < 16; ++j) {
          const std::uint8_t q = byte_at(src + 2, j);
          dst[j] = T(d * float(int(q & 0x0F) - 8));
          dst[j + 16] = T(d * float(int(q >> 4) - 8));
        }
      }
      return;
    case storage_format::q4_1:  // fp16 d, fp16 m, nibbles: w = d * q + m
      for (std::size_t b = 0; b < blocks; ++b, src += 20, dst += 32) {
        const float d = load_half(src), m = load_half(src + 2);
        for (std::size_t j = 0; j < 16; ++j) {
          const std::uint8_t q = byte_at(src + 4, j);
          const float lo = d * float(q & 0x0F), hi = d * float(q >> 4);
          dst[j] = T(lo + m);
          dst[j + 16] = T(hi + m);
        }
      }
      return;
    case storage_format::q8_0:  // fp16 d, 32 int8: w = q * d
      for (std::size_t b = 0; b < blocks; ++b, src += 34, dst += 32) {
        const float d = load_half(src);
        for (std::size_t j = 0; j < 32; ++j) dst[j] = T(float(std::int8_t(byte_at(src + 2, j))) * d);
      }
      return;
    case storage_format::q4_k:  // fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
      for (std::size_t b = 0; b < blocks; ++b, src += 144, dst += 256) {
        const float d = load_half(src), dmin = load_half(src + 2);
        const std::byte* s = src + 4;
        const std::byte* qs = src + 16;
        for (std::size_t sb = 0; sb < 8; ++sb) {
          std::uint8_t sc, mn;
          detail::q4_k_scale_min(s, sb, sc, mn);
          const float ds = d * float(sc), dm = dmin * float(mn);
          const std::byte* q = qs + (sb / 2) * 32;
          const int shift = (sb % 2) * 4;
          for (std::size_t j = 0; j < 32; ++j) {
            const float p = ds * float((byte_at(q, j) >> shift) & 0x0F);
            dst[sb * 32 + j] = T(p - dm);
          }
        }
      }
      return;
    case storage_format::q6_k:  // 128 bytes low nibbles, 64 bytes high 2 bits, 16 int8 scales, fp16 d
      for (std::size_t b = 0; b < blocks; ++b, src += 210, dst += 256) {
        const std::byte* ql = src;
        const std::byte* qh = src + 128;
        const std::byte* sc = src + 192;
        const float d = load_half(src + 208);
        for (std::size_t e = 0; e < 256; ++e) {
          const std::size_t half = e / 128, r = e % 128;
          const std::uint8_t lo = (byte_at(ql, half * 64 + r % 64) >> ((r / 64) * 4)) & 0x0F;
          const std::uint8_t hi = (byte_at(qh, half * 32 + r % 32) >> ((r / 32) * 2)) & 0x03;
          const int q = int(lo | (hi << 4)) - 32;
          const float ds = d * float(std::int8_t(byte_at(sc, e / 16)));
          dst[e] = T(ds * float(q));
        }
      }
      return;
  }
}

#if !defined(__clang__)
PEFT_NO_CONTRACT_END
#endif

/// Elements found non-finite (NaN or infinite) in stored data: how many, and the index of the first.
struct non_finite_count {
  std::size_t count = 0;
  std::size_t first = 0;
  explicit operator bool() const noexcept { return count != 0; }
};

/// The elements of `blocks` consecutive blocks of format `f` at `src` that are, or dequantize to,
/// NaN or infinity, found without dequantizing. A plain element is non-finite when its exponent
/// field is all ones. A quantized block's integers are bounded, so its values are non-finite exactly
/// when one of its fp16 scales is: then every element of the block is (a non-finite scale times a
/// zero quant is NaN, times anything else infinite; a non-finite offset or minimum is added to all).
inline non_finite_count count_non_finite(storage_format f, const std::byte* src, std::size_t blocks) noexcept {
  non_finite_count r;
  const auto t = format_traits(f);
  auto found = [&](std::size_t block) {
    if (r.count == 0) r.first = block * t.block_elements;
    r.count += t.block_elements;
  };
  auto half_bad = [](const std::byte* p) { return (detail::load_u16(p) & 0x7C00u) == 0x7C00u; };
  // The byte offsets of a block's fp16 fields (at most two), for the quantized formats.
  std::size_t fields[2] = {0, 0}, field_count = 1;
  switch (f) {
    case storage_format::f32:
      for (std::size_t i = 0; i < blocks; ++i) {
        std::uint32_t v;
        std::memcpy(&v, src + 4 * i, 4);
        if ((v & 0x7F800000u) == 0x7F800000u) found(i);
      }
      return r;
    case storage_format::f16:
      for (std::size_t i = 0; i < blocks; ++i)
        if (half_bad(src + 2 * i)) found(i);
      return r;
    case storage_format::bf16:
      for (std::size_t i = 0; i < blocks; ++i)
        if ((detail::load_u16(src + 2 * i) & 0x7F80u) == 0x7F80u) found(i);
      return r;
    case storage_format::q4_0: case storage_format::q8_0: break;                       // d
    case storage_format::q4_1: case storage_format::q4_k: fields[1] = 2, field_count = 2; break;  // d, m / dmin
    case storage_format::q6_k: fields[0] = 208; break;                                 // d after the quants
  }
  for (std::size_t b = 0; b < blocks; ++b, src += t.block_bytes)
    if (half_bad(src + fields[0]) || (field_count == 2 && half_bad(src + fields[1]))) found(b);
  return r;
}

/// Encodes `blocks * block_elements` floats into format `f`: the plain formats and Q8_0 (GGML's
/// reference rounding). The other quantized formats are read-only here: returns false for them and
/// writes nothing.
inline bool quantize_blocks(storage_format f, const float* src, std::size_t blocks, std::byte* dst) noexcept {
  switch (f) {
    case storage_format::f32: std::memcpy(dst, src, blocks * 4); return true;
    case storage_format::f16:
      for (std::size_t i = 0; i < blocks; ++i) {
        const std::uint16_t h = float_to_half(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return true;
    case storage_format::bf16:
      for (std::size_t i = 0; i < blocks; ++i) {
        const std::uint16_t h = float_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return true;
    case storage_format::q8_0:
      for (std::size_t b = 0; b < blocks; ++b, src += 32, dst += 34) {
        float amax = 0;
        for (std::size_t j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(src[j]));
        const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        const std::uint16_t h = float_to_half(d);
        std::memcpy(dst, &h, 2);
        for (std::size_t j = 0; j < 32; ++j) dst[2 + j] = std::byte(std::uint8_t(std::int8_t(std::round(src[j] * id))));
      }
      return true;
    default: return false;
  }
}

}  // namespace peft
