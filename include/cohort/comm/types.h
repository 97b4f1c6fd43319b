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
// rounded to bfloat16 at every hop (half the bytes; every addition stays in
// float32, and every rank ends with the same values). Shared memory between
// ranks of one host always carries float32.
enum class WireFormat : uint8_t { kNative, kBFloat16 };
std::string_view WireFormatName(WireFormat wire);

inline size_t DTypeSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }
std::string_view DTypeName(DType dtype);

// bfloat16 <-> float32, round-to-nearest-even (NaN stays NaN).
float BFloat16ToFloat(uint16_t v);
uint16_t FloatToBFloat16(float f);

}  // namespace cohort::comm
