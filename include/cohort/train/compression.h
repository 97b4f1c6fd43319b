// Gradient compression on the wire: how a job's gradients cross the network
// between hosts. Ranks of one host exchange float32 through shared memory
// whatever this says.
//
//   none     float32 (the default)
//   bf16     bfloat16 on the wire, float32 additions (comm::WireFormat::kBFloat16):
//            half the bytes per step; each value loses the low 16 bits of its
//            mantissa at every hop (relative error <= 2^-8 per rounding)
//   bf16-ef  bf16 plus error feedback: each rank adds what rounding its own
//            gradients took off in the last step back into this step's, so the
//            rounding of the local contribution does not accumulate over steps
//   fp16     IEEE half on the wire (comm::WireFormat::kFloat16): 3 more bits
//            of mantissa than bf16 (relative error <= 2^-11), but magnitudes
//            above 65504 saturate and below 2^-24 become 0
//   fp16-ef  fp16 plus error feedback (which also carries what saturation or
//            underflow took off into the next step)
//
// Chosen per job: GradientSyncOptions::compression (C++), else the
// COHORT_GRAD_COMPRESSION environment variable (`cohort job submit
// --grad-compression bf16` sets it for every worker), else none.
#pragma once

#include <string_view>

#include "cohort/common/status.h"

namespace cohort::train {

enum class GradCompression { kNone, kBFloat16, kBFloat16ErrorFeedback, kFloat16, kFloat16ErrorFeedback };

// "none" | "bf16" | "bf16-ef" | "fp16" | "fp16-ef"; anything else is InvalidArgument.
Result<GradCompression> ParseGradCompression(std::string_view name);
std::string_view GradCompressionName(GradCompression c);
// COHORT_GRAD_COMPRESSION, or kNone when it is unset or empty; a bad value
// is InvalidArgument naming the variable.
Result<GradCompression> GradCompressionFromEnv();

}  // namespace cohort::train
