// See include/cohort/train/compression.h.
#include "cohort/train/compression.h"

#include <cstdlib>
#include <string>

namespace cohort::train {

Result<GradCompression> ParseGradCompression(std::string_view name) {
  if (name == "none") return GradCompression::kNone;
  if (name == "bf16") return GradCompression::kBFloat16;
  if (name == "bf16-ef") return GradCompression::kBFloat16ErrorFeedback;
  if (name == "fp16") return GradCompression::kFloat16;
  if (name == "fp16-ef") return GradCompression::kFloat16ErrorFeedback;
  return Status::InvalidArgument("unknown gradient compression '" + std::string(name) +
                                 "': expected none, bf16, bf16-ef, fp16 or fp16-ef");
}

std::string_view GradCompressionName(GradCompression c) {
  switch (c) {
    case GradCompression::kNone: return "none";
    case GradCompression::kBFloat16: return "bf16";
    case GradCompression::kBFloat16ErrorFeedback: return "bf16-ef";
    case GradCompression::kFloat16: return "fp16";
    case GradCompression::kFloat16ErrorFeedback: return "fp16-ef";
  }
  return "?";
}

Result<GradCompression> GradCompressionFromEnv() {
  const char* v = std::getenv("COHORT_GRAD_COMPRESSION");
  if (v == nullptr || *v == '\0') return GradCompression::kNone;
  Result<GradCompression> c = ParseGradCompression(v);
  if (!c.ok()) return c.status().WithPrefix("COHORT_GRAD_COMPRESSION");
  return c;
}

}  // namespace cohort::train
