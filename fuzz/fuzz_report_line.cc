// fuzz_report_line: the head's parser of the trainers' report lines
// (src/head/metrics_ingest.h: ParseReportLine, MetricsIngest), which every
// line a job writes to COHORT_REPORT_PATH goes through.
//
// Input: one report line (arbitrary bytes). The target checks that parsing
// never crashes or throws, that an accepted report is a JSON object whose
// "rank" is within the job's world, whose "time" is a finite number and
// whose "attempt" is the one given, that it serialises to valid UTF-8
// (stored in SQLite, served by GET /api/jobs/{id}/metrics), and that the
// last-values table and its Prometheus page accept it.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "cohort/common/json.h"
#include "fuzz_common.h"
#include "head/metrics_ingest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string line(reinterpret_cast<const char*>(data), size);
  const int world = 1 + static_cast<int>(size % 4);
  const int rank = static_cast<int>(size % static_cast<size_t>(world));
  auto parsed = cohort::head::ParseReportLine(line, rank, world, /*attempt=*/2, /*now_s=*/1.7e9);
  if (!parsed.ok()) {
    FUZZ_CHECK(cohort::fuzz::IsValidUtf8(parsed.status().message()), "refusal is not UTF-8");
    return 0;
  }
  const auto& j = parsed->json;
  FUZZ_CHECK(j.is_object(), "accepted a report that is not an object");
  FUZZ_CHECK(parsed->rank >= 0 && parsed->rank < world, "rank outside the world: " + std::to_string(parsed->rank));
  FUZZ_CHECK(j["rank"] == parsed->rank, "stored rank differs");
  FUZZ_CHECK(j["attempt"] == 2, "stored attempt differs");
  FUZZ_CHECK(std::isfinite(parsed->time_s), "time is not finite");
  const std::string stored = cohort::DumpJson(j);
  FUZZ_CHECK(cohort::IsValidUtf8(stored), "stored report is not UTF-8");
  auto back = cohort::ParseJson(stored);
  FUZZ_CHECK(back.ok() && back->is_object(), "stored report does not parse back: " + stored);

  cohort::head::MetricsIngest ingest;
  auto running = [](const std::string&, bool* known) {
    *known = true;
    return false;
  };
  ingest.Record("job", parsed->rank, j, running);
  cohort::prom::Writer w;
  ingest.Write(w, running);
  FUZZ_CHECK(cohort::IsValidUtf8(w.Take()), "Prometheus page is not UTF-8");
  return 0;
}
