// Reduction kernels shared by the collective algorithms (ring and direct).
//
// Type-erased on purpose (as gloo does): callers pass void* and a DType and
// the dispatch happens here, so no template bloat crosses headers. Float
// accumulation for every dtype: bfloat16 inputs are widened, summed in
// float32 and rounded once. Thread-compatible; no state.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cohort/comm/types.h"

namespace cohort::comm {

// dst[i] = scale * sum_{k < num_srcs} srcs[k][i], for i in [0, count).
// dst may alias any srcs[k] exactly (same pointer), not partially.
// scale == 1.0f skips the multiplication.
void ReduceSum(DType dtype, void* dst, const void* const* srcs, int num_srcs, size_t count,
               float scale);

// data[i] *= scale.
void Scale(DType dtype, void* data, size_t count, float scale);

// Float32 <-> bfloat16 arrays (round to nearest even), and acc[i] += in[i]
// with bfloat16 `in`: the kernels of the bfloat16 wire format.
void NarrowToBFloat16(uint16_t* out, const float* in, size_t count);
void WidenFromBFloat16(float* out, const uint16_t* in, size_t count);
void AddBFloat16Into(float* acc, const uint16_t* in, size_t count);

// The same for IEEE half (FloatToFloat16's rounding and saturation), with
// F16C instructions where the CPU has them.
void NarrowToFloat16(uint16_t* out, const float* in, size_t count);
void WidenFromFloat16(float* out, const uint16_t* in, size_t count);
void AddFloat16Into(float* acc, const uint16_t* in, size_t count);

}  // namespace cohort::comm
