// DType helpers and bfloat16 conversion; see include/cohort/comm/types.h.
#include "cohort/comm/types.h"

#include <cstring>

#include "cohort/comm/communicator.h"

namespace cohort::comm {

std::string_view DTypeName(DType dtype) {
  return dtype == DType::kFloat32 ? "float32" : "bfloat16";
}

std::string_view WireFormatName(WireFormat wire) {
  switch (wire) {
    case WireFormat::kNative: return "native";
    case WireFormat::kBFloat16: return "bfloat16";
    case WireFormat::kFloat16: return "float16";
  }
  return "?";
}

float BFloat16ToFloat(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays a (quiet) NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);                  // round to nearest, ties to even
  return static_cast<uint16_t>(bits >> 16);
}

float Float16ToFloat(uint16_t v) {
  _Float16 h;
  std::memcpy(&h, &v, sizeof(h));
  return static_cast<float>(h);
}

uint16_t FloatToFloat16(float f) {
  constexpr float kMax = 65504.0f;
  if (!(f != f)) f = f > kMax ? kMax : (f < -kMax ? -kMax : f);  // NaN stays NaN
  _Float16 h = static_cast<_Float16>(f);
  uint16_t v;
  std::memcpy(&v, &h, sizeof(v));
  return v;
}

std::string_view TransportName(TransportKind kind) {
  switch (kind) {
    case TransportKind::kAuto: return "auto";
    case TransportKind::kShm: return "shm";
    case TransportKind::kTcp: return "tcp";
  }
  return "?";
}

Result<TransportKind> ParseTransport(std::string_view name) {
  if (name == "auto") return TransportKind::kAuto;
  if (name == "shm") return TransportKind::kShm;
  if (name == "tcp") return TransportKind::kTcp;
  return Status::InvalidArgument("unknown transport '" + std::string(name) +
                                 "': expected auto, shm or tcp");
}

}  // namespace cohort::comm
