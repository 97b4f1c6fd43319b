// See metrics_ingest.h.
#include "metrics_ingest.h"

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "cohort/common/json.h"

namespace cohort::head {

using json = nlohmann::json;

Result<ParsedReport> ParseReportLine(std::string_view line, int rank, int world, int attempt, double now_s) {
  if (line.size() > kMaxReportLineBytes)
    return Status::InvalidArgument("report line of " + std::to_string(line.size()) + " bytes is over the " +
                                   std::to_string(kMaxReportLineBytes) + "-byte limit");
  auto parsed = ParseJson(line, kMaxReportDepth);
  if (!parsed.ok()) return Status::InvalidArgument("report line is not JSON: " + parsed.status().message());
  if (!parsed->is_object()) return Status::InvalidArgument("report line is not a JSON object");
  ParsedReport r;
  r.json = std::move(parsed).value();
  r.rank = rank;
  if (auto it = r.json.find("rank"); it != r.json.end() && it->is_number_integer()) {
    const int64_t claimed = it->get<int64_t>();
    if (claimed >= 0 && claimed < std::max(world, 1)) r.rank = static_cast<int>(claimed);
  }
  r.time_s = now_s;
  if (auto it = r.json.find("time"); it != r.json.end() && it->is_number()) {
    const double t = it->get<double>();
    if (std::isfinite(t) && t >= 0 && t < 1e11) r.time_s = t;
  }
  r.json["rank"] = r.rank;
  r.json["attempt"] = attempt;
  r.json["time"] = r.time_s;
  return r;
}

void MetricsIngest::Record(const std::string& job_id, int rank, const json& report,
                           const std::function<bool(const std::string&, bool*)>& is_terminal) {
  if (!report.is_object()) return;
  auto& series = last_[job_id];
  const bool first = series.empty();
  for (const auto& [key, v] : report.items()) {
    if (key == "rank" || key == "time" || key == "attempt" || key.empty() || key.size() > 200) continue;
    double value;
    if (v.is_number()) value = v.get<double>();
    else if (v.is_null()) value = std::numeric_limits<double>::quiet_NaN();  // NaN/inf are sent as null
    else continue;
    auto k = std::make_pair(rank, SanitizeUtf8(key));
    auto it = series.find(k);
    if (it != series.end()) it->second = value;
    else if (series.size() < kMaxSeriesPerJob) series.emplace(std::move(k), value);
  }
  if (series.empty()) {
    last_.erase(job_id);
    return;
  }
  if (!first) return;
  std::erase(order_, job_id);
  order_.push_back(job_id);
  // Forget the values of finished (or deleted) jobs beyond the newest
  // kMaxFinishedJobs finished ones.
  std::deque<std::string> kept;
  size_t finished = 0;
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    bool known = false;
    const bool terminal = is_terminal(*it, &known);
    if (!known || (terminal && ++finished > kMaxFinishedJobs)) {
      last_.erase(*it);
      continue;
    }
    kept.push_front(*it);
  }
  order_.swap(kept);
}

void MetricsIngest::Forget(const std::string& job_id) {
  last_.erase(job_id);
  std::erase(order_, job_id);
}

void MetricsIngest::Write(prom::Writer& w, const std::function<bool(const std::string&, bool*)>& is_terminal) const {
  if (!w.Family("cohort_job_metric", prom::Type::kGauge,
                "The last value of each numeric key a job's trainer reported (cohort.report / the C++ "
                "Reporter), by job, rank and key (name). NaN when it reported NaN or an infinity."))
    return;
  std::vector<const std::string*> shown;
  std::set<std::string> seen;
  size_t finished = 0;
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    bool known = false;
    const bool terminal = is_terminal(*it, &known);
    if (!known || !last_.count(*it) || !seen.insert(*it).second) continue;
    if (terminal && ++finished > kMaxFinishedJobs) continue;
    shown.push_back(&*it);
  }
  for (auto it = shown.rbegin(); it != shown.rend(); ++it)
    for (const auto& [key, value] : last_.at(**it))
      w.Sample({{"job", **it}, {"rank", std::to_string(key.first)}, {"name", key.second}}, value);
}

}  // namespace cohort::head
