// Reduction kernels; see reduce.h.
//
// The float loops are written so GCC vectorises them; target_clones builds an
// AVX2 variant next to the baseline SSE2 one and picks at load time, so the
// binary still runs on any x86-64. Work proceeds in blocks of kBlock elements
// through a float accumulator on the stack, which keeps every source read
// once and the destination written once per block.
#include "reduce.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace cohort::comm {
namespace {

constexpr size_t kBlock = 2048;  // elements per accumulator block (8 KiB of float)

#if defined(__x86_64__) && !defined(__clang__)
#define COHORT_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define COHORT_MULTIVERSION
#endif

COHORT_MULTIVERSION
void AddFloat(float* __restrict acc, const float* __restrict src, size_t n) {
  for (size_t i = 0; i < n; ++i) acc[i] += src[i];
}

COHORT_MULTIVERSION
void Sum2Float(float* dst, const float* a, const float* b, size_t n, float scale) {
  // dst may equal a or b: each element is read before it is written.
  if (scale == 1.0f) {
    for (size_t i = 0; i < n; ++i) dst[i] = a[i] + b[i];
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = (a[i] + b[i]) * scale;
  }
}

COHORT_MULTIVERSION
void ScaleCopyFloat(float* __restrict dst, const float* __restrict acc, size_t n, float scale) {
  if (scale == 1.0f) {
    std::memcpy(dst, acc, n * sizeof(float));
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = acc[i] * scale;
  }
}

COHORT_MULTIVERSION
void WidenBf16(float* __restrict out, const uint16_t* __restrict in, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits = static_cast<uint32_t>(in[i]) << 16;
    std::memcpy(&out[i], &bits, 4);
  }
}

COHORT_MULTIVERSION
void AddBf16(float* __restrict acc, const uint16_t* __restrict in, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits = static_cast<uint32_t>(in[i]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    acc[i] += f;
  }
}

void NarrowBf16(uint16_t* out, const float* acc, size_t n, float scale) {
  for (size_t i = 0; i < n; ++i) out[i] = FloatToBFloat16(acc[i] * scale);
}

// FloatToBFloat16 (types.cc) written branch-free, so that it vectorises:
// NaN inputs become a quiet NaN, everything else rounds to nearest even.
COHORT_MULTIVERSION
void NarrowBf16Fast(uint16_t* __restrict out, const float* __restrict in, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &in[i], 4);
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    out[i] = static_cast<uint16_t>(nan ? 0x7fc0u : rounded);
  }
}

// IEEE half. Scalar versions through _Float16 (libgcc's conversions), and
// F16C versions, 8 lanes at a time, chosen once at run time.
void NarrowF16Scalar(uint16_t* out, const float* in, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = FloatToFloat16(in[i]);
}
void WidenF16Scalar(float* out, const uint16_t* in, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = Float16ToFloat(in[i]);
}
void AddF16Scalar(float* acc, const uint16_t* in, size_t n) {
  for (size_t i = 0; i < n; ++i) acc[i] += Float16ToFloat(in[i]);
}

#if defined(__x86_64__) && !defined(__clang__)
#define COHORT_HAVE_F16C_PATH 1
__attribute__((target("avx,f16c"))) void NarrowF16C(uint16_t* out, const float* in, size_t n) {
  const __m256 hi = _mm256_set1_ps(65504.0f), lo = _mm256_set1_ps(-65504.0f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // min/max return their second operand when either is NaN: NaN stays NaN.
    __m256 v = _mm256_max_ps(lo, _mm256_min_ps(hi, _mm256_loadu_ps(in + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  NarrowF16Scalar(out + i, in + i, n - i);
}
__attribute__((target("avx,f16c"))) void WidenF16C(float* out, const uint16_t* in, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  WidenF16Scalar(out + i, in + i, n - i);
}
__attribute__((target("avx,f16c"))) void AddF16C(float* acc, const uint16_t* in, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 h = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), h));
  }
  AddF16Scalar(acc + i, in + i, n - i);
}
bool HaveF16C() {
  static const bool have = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return have;
}
#endif

}  // namespace

void NarrowToFloat16(uint16_t* out, const float* in, size_t count) {
#ifdef COHORT_HAVE_F16C_PATH
  if (HaveF16C()) return NarrowF16C(out, in, count);
#endif
  NarrowF16Scalar(out, in, count);
}
void WidenFromFloat16(float* out, const uint16_t* in, size_t count) {
#ifdef COHORT_HAVE_F16C_PATH
  if (HaveF16C()) return WidenF16C(out, in, count);
#endif
  WidenF16Scalar(out, in, count);
}
void AddFloat16Into(float* acc, const uint16_t* in, size_t count) {
#ifdef COHORT_HAVE_F16C_PATH
  if (HaveF16C()) return AddF16C(acc, in, count);
#endif
  AddF16Scalar(acc, in, count);
}

void QuantizeWithErrorFeedback(WireFormat wire, float* values, float* residual, size_t count) {
  if (wire == WireFormat::kNative) return;
  constexpr size_t kPiece = 4096;
  uint16_t half[kPiece];
  float rounded[kPiece];
  for (size_t base = 0; base < count; base += kPiece) {
    const size_t n = std::min(kPiece, count - base);
    float* g = values + base;
    float* e = residual + base;
    for (size_t j = 0; j < n; ++j) g[j] += e[j];
    if (wire == WireFormat::kBFloat16) {
      NarrowBf16Fast(half, g, n);
      WidenBf16(rounded, half, n);
    } else {
      NarrowToFloat16(half, g, n);
      WidenFromFloat16(rounded, half, n);
    }
    for (size_t j = 0; j < n; ++j) {
      // A NaN stays a NaN, and so does its residual.
      e[j] = g[j] - rounded[j];
      g[j] = rounded[j];
    }
  }
}

void ReduceSum(DType dtype, void* dst, const void* const* srcs, int num_srcs, size_t count,
               float scale) {
  if (count == 0 || num_srcs <= 0) return;
  if (dtype == DType::kFloat32) {
    auto* out = static_cast<float*>(dst);
    if (num_srcs == 1) {
      if (dst != srcs[0]) std::memmove(dst, srcs[0], count * 4);
      if (scale != 1.0f) Scale(dtype, dst, count, scale);
      return;
    }
    if (num_srcs == 2) {
      Sum2Float(out, static_cast<const float*>(srcs[0]), static_cast<const float*>(srcs[1]), count,
                scale);
      return;
    }
    alignas(64) float acc[kBlock];
    for (size_t base = 0; base < count; base += kBlock) {
      size_t n = count - base < kBlock ? count - base : kBlock;
      std::memcpy(acc, static_cast<const float*>(srcs[0]) + base, n * 4);
      for (int k = 1; k < num_srcs; ++k) AddFloat(acc, static_cast<const float*>(srcs[k]) + base, n);
      ScaleCopyFloat(out + base, acc, n, scale);
    }
    return;
  }
  auto* out = static_cast<uint16_t*>(dst);
  alignas(64) float acc[kBlock];
  for (size_t base = 0; base < count; base += kBlock) {
    size_t n = count - base < kBlock ? count - base : kBlock;
    WidenBf16(acc, static_cast<const uint16_t*>(srcs[0]) + base, n);
    for (int k = 1; k < num_srcs; ++k) AddBf16(acc, static_cast<const uint16_t*>(srcs[k]) + base, n);
    NarrowBf16(out + base, acc, n, scale);
  }
}

void Scale(DType dtype, void* data, size_t count, float scale) {
  if (scale == 1.0f) return;
  if (dtype == DType::kFloat32) {
    auto* p = static_cast<float*>(data);
    for (size_t i = 0; i < count; ++i) p[i] *= scale;
    return;
  }
  auto* p = static_cast<uint16_t*>(data);
  for (size_t i = 0; i < count; ++i) p[i] = FloatToBFloat16(BFloat16ToFloat(p[i]) * scale);
}

void NarrowToBFloat16(uint16_t* out, const float* in, size_t count) { NarrowBf16Fast(out, in, count); }
void WidenFromBFloat16(float* out, const uint16_t* in, size_t count) { WidenBf16(out, in, count); }
void AddBFloat16Into(float* acc, const uint16_t* in, size_t count) { AddBf16(acc, in, count); }

}  // namespace cohort::comm
