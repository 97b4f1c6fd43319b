// Number formatting and UTF-8 repair for src/jobs (see json_util.h).
#include "json_util.h"

#include <cstdio>

#include "cohort/common/json.h"

namespace cohort::jobs::internal {

std::string FormatNumber(double v) {
  char buf[32];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) {
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
  } else {
    std::snprintf(buf, sizeof(buf), "%.6g", v);
  }
  return buf;
}

std::string SanitizeUtf8(std::string_view text) { return cohort::SanitizeUtf8(text); }

}  // namespace cohort::jobs::internal
