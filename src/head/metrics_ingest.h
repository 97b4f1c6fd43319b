// MetricsIngest: the trainers' report lines, as agents relay them (each line
// one JSON object a worker wrote with cohort.report / the C++ Reporter).
//
// Every line is untrusted: ParseReportLine refuses oversized, deeply nested,
// non-object or mistyped lines with a reason (logged by the caller, the line
// dropped) and fixes up what the head stores: "rank" (an integer within the
// job's world, else the relaying worker's rank), "attempt", and "time" (a
// finite number, else now). The last numeric value of every (job, rank, key)
// is kept for Prometheus (cohort_job_metric), for running jobs and the newest
// kMaxFinishedJobs finished ones, at most kMaxSeriesPerJob per job.
//
// Not thread-safe: owned by the Cluster under its control lock.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "cohort/common/prometheus.h"
#include "cohort/common/status.h"

namespace cohort::head {

struct ParsedReport {
  int rank = 0;
  double time_s = 0;
  nlohmann::json json;  // the line with rank/attempt/time fixed up
};

inline constexpr size_t kMaxReportLineBytes = 64 * 1024;
inline constexpr int kMaxReportDepth = 16;

// `rank`: the relaying worker's rank; `world`: the job's number of workers.
Result<ParsedReport> ParseReportLine(std::string_view line, int rank, int world, int attempt, double now_s);

class MetricsIngest {
 public:
  static constexpr size_t kMaxFinishedJobs = 10;
  static constexpr size_t kMaxSeriesPerJob = 1000;

  // Remembers the numeric values of `report` (skips rank/time/attempt, keys
  // over 200 bytes; null counts as NaN). `is_terminal(job_id)` says whether a
  // job has finished (false for unknown ids means: forget it).
  void Record(const std::string& job_id, int rank, const nlohmann::json& report,
              const std::function<bool(const std::string&, bool* known)>& is_terminal);
  void Forget(const std::string& job_id);
  // cohort_job_metric samples: running jobs plus the newest finished ones.
  void Write(prom::Writer& w, const std::function<bool(const std::string&, bool* known)>& is_terminal) const;

 private:
  std::map<std::string, std::map<std::pair<int, std::string>, double>> last_;  // by job id
  std::deque<std::string> order_;  // jobs with values, oldest first
};

}  // namespace cohort::head
