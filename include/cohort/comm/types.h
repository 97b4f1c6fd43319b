// Element types and reduction operators understood by the collectives.
// comm never sees at::Tensor: callers pass (void*, count, DType).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cohort::comm {

enum class DType : uint8_t { kFloat32, kBFloat16 };
enum class ReduceOp : uint8_t { kSum, kAverage };

// How float32 data of an all-reduce crosses the network (TCP): as is, or
// rounded to a 16-bit float at every hop (half the bytes; every addition
// stays in float32, and every rank ends with the same values). Shared memory
// between ranks of one host always carries float32.
//   kBFloat16: float32's range, 8 bits of mantissa.
//   kFloat16:  IEEE half: 11 bits of mantissa, but magnitudes above 65504
//              saturate to +-65504 and below 2^-24 round to zero.
enum class WireFormat : uint8_t { kNative, kBFloat16, kFloat16 };
std::string_view WireFormatName(WireFormat wire);

inline size_t DTypeSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }
std::string_view DTypeName(DType dtype);

// bfloat16 <-> float32, round-to-nearest-even (NaN stays NaN).
float BFloat16ToFloat(uint16_t v);
uint16_t FloatToBFloat16(float f);

// IEEE half <-> float32, round-to-nearest-even; magnitudes beyond 65504
// (infinity included) saturate to +-65504, NaN stays NaN: the kFloat16 wire.
float Float16ToFloat(uint16_t v);
uint16_t FloatToFloat16(float f);

// Error feedback for a 16-bit wire format, over count float32 values:
//   v = values[i] + residual[i]; values[i] = v rounded as `wire` rounds it;
//   residual[i] = v - values[i].
// The rounded values then cross the first hop exactly, and what rounding
// took off goes into the next call instead of being lost. kNative: no-op.
void QuantizeWithErrorFeedback(WireFormat wire, float* values, float* residual, size_t count);

}  // namespace cohort::comm
