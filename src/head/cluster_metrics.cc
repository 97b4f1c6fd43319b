// Cluster's Prometheus side: the families behind the head's GET /metrics
// (the API request counts and process_* are added by head_server.cc), the
// trainers' last reported values and the placement latency histograms.
// See cluster.h and docs/cluster.md "Metrics".
#include <cmath>
#include <limits>
#include <set>

#include "cluster.h"

namespace cohort::head {

using jobs::JobStatus;
using prom::Type;

void Cluster::RecordLastMetrics(Job& job, int rank, const json_t& report) {
  if (!report.is_object()) return;
  const bool first = job.last_metrics.empty();
  for (const auto& [key, v] : report.items()) {
    if (key == "rank" || key == "time" || key == "attempt" || key.empty() || key.size() > 200) continue;
    double value;
    if (v.is_number()) value = v.get<double>();
    else if (v.is_null()) value = std::numeric_limits<double>::quiet_NaN();  // NaN/inf are sent as null
    else continue;
    auto k = std::make_pair(rank, key);
    auto it = job.last_metrics.find(k);
    if (it != job.last_metrics.end()) it->second = value;
    else if (job.last_metrics.size() < kMaxMetricSeriesPerJob) job.last_metrics.emplace(std::move(k), value);
  }
  if (!first || job.last_metrics.empty()) return;
  const std::string& id = job.record.spec.submission_id;
  std::erase(metric_jobs_, id);
  metric_jobs_.push_back(id);
  // Forget the values of finished (or deleted) jobs beyond the newest
  // kMaxFinishedMetricJobs finished ones.
  std::deque<std::string> kept;
  size_t finished = 0;
  for (auto it = metric_jobs_.rbegin(); it != metric_jobs_.rend(); ++it) {
    Job* j = FindJob(*it);
    if (j == nullptr) continue;
    if (jobs::IsTerminal(j->record.status) && ++finished > kMaxFinishedMetricJobs) {
      j->last_metrics.clear();
      continue;
    }
    kept.push_front(*it);
  }
  metric_jobs_.swap(kept);
}

void Cluster::ObservePlacement(const Job& job) {
  const auto& rec = job.record;
  const int64_t now = NowMs();
  if (rec.attempt == 0) submit_to_running_.Observe(static_cast<double>(now - rec.start_time_ms) / 1000.0);
  // A restart's wait counts from the failure; a first attempt's from the
  // submission. (A restarted job recovered from the state store: unknown.)
  const int64_t since = job.pending_since_ms != 0 ? job.pending_since_ms : rec.attempt == 0 ? rec.start_time_ms : 0;
  if (since != 0) placement_wait_.Observe(static_cast<double>(std::max<int64_t>(0, now - since)) / 1000.0);
}

void Cluster::WritePrometheus(prom::Writer& w) {
  std::lock_guard<std::mutex> lock(mu_);

  // --- nodes
  size_t alive = 0, dead = 0;
  for (const auto& [id, node] : nodes_) (node.alive ? alive : dead)++;
  if (w.Family("cohort_nodes", Type::kGauge, "Nodes known to the head, by state.")) {
    w.Sample({{"state", "alive"}}, static_cast<double>(alive));
    w.Sample({{"state", "dead"}}, static_cast<double>(dead));
  }
  const auto snapshot = Snapshot();
  if (w.Family("cohort_node_info", Type::kGauge, "One series per node known to the head (value 1).")) {
    for (const auto& s : snapshot) {
      const Node& n = nodes_.at(s.node_id);
      w.Sample({{"node", s.node_id},
                {"address", n.address},
                {"hostname", n.hostname},
                {"state", n.alive ? "alive" : "dead"},
                {"is_head_node", s.is_head ? "true" : "false"}},
               1);
    }
  }
  if (w.Family("cohort_node_resources",
               Type::kGauge, "Resources of each node: what it offers (kind=total) and what live workers hold "
                             "(kind=used). CPU in cores, GPU in devices, memory in bytes.")) {
    for (const auto& s : snapshot) {
      std::set<std::string> names;
      for (const auto& [k, v] : s.total.amounts) names.insert(k);
      for (const auto& [k, v] : s.used.amounts) names.insert(k);
      for (const auto& name : names) {
        w.Sample({{"node", s.node_id}, {"resource", name}, {"kind", "total"}}, s.total.Get(name));
        w.Sample({{"node", s.node_id}, {"resource", name}, {"kind", "used"}}, s.used.Get(name));
      }
    }
  }
  if (w.Family("cohort_node_last_heartbeat_timestamp_seconds", Type::kGauge,
               "When the head last heard from each node's agent (unix time).")) {
    for (const auto& [id, node] : nodes_)
      w.Sample({{"node", id}}, static_cast<double>(node.last_seen_ms) / 1000.0);
  }

  // --- jobs
  std::map<JobStatus, size_t> by_status;
  size_t pending_bundles = 0;
  jobs::Resources pending_resources;
  for (const auto& [id, job] : jobs_) {
    ++by_status[job.record.status];
    if (job.record.status != JobStatus::kPending) continue;
    const auto& spec = job.record.spec;
    const int n = spec.scaling ? spec.scaling->num_workers : 1;
    const jobs::Resources per = spec.scaling ? spec.scaling->resources_per_worker : spec.entrypoint_resources.ToDemand();
    pending_bundles += static_cast<size_t>(n);
    for (int i = 0; i < n; ++i) pending_resources.Add(per);
  }
  if (w.Family("cohort_jobs", Type::kGauge, "Jobs the head holds, by status.")) {
    for (JobStatus st : {JobStatus::kPending, JobStatus::kRunning, JobStatus::kStopped, JobStatus::kSucceeded,
                         JobStatus::kFailed})
      w.Sample({{"status", std::string(jobs::JobStatusName(st))}}, static_cast<double>(by_status[st]));
  }
  if (w.Family("cohort_jobs_submitted_total", Type::kCounter, "Jobs submitted since the head started."))
    w.Sample({}, static_cast<double>(jobs_submitted_));
  if (w.Family("cohort_job_restarts_total", Type::kCounter,
               "Worker-group restarts after a failure (max_failures) since the head started."))
    w.Sample({}, static_cast<double>(job_restarts_));
  if (w.Family("cohort_job_submit_to_running_seconds", Type::kHistogram,
               "Time from a job's submission to its placement (RUNNING), first attempts."))
    w.Histogram({}, submit_to_running_.Snapshot());
  if (w.Family("cohort_job_placement_wait_seconds", Type::kHistogram,
               "Time a job waited PENDING before its workers were placed, every attempt (restarts included)."))
    w.Histogram({}, placement_wait_.Snapshot());
  if (w.Family("cohort_pending_demand_bundles", Type::kGauge,
               "Worker bundles of PENDING jobs waiting for placement."))
    w.Sample({}, static_cast<double>(pending_bundles));
  if (w.Family("cohort_pending_demand_resources", Type::kGauge,
               "Resources the PENDING jobs' bundles ask for, summed (CPU in cores, GPU in devices, memory in bytes).")) {
    for (const auto& [k, v] : pending_resources.amounts) w.Sample({{"resource", k}}, v);
  }

  // --- the trainers' last reported values: running (and pending, restarting)
  // jobs, plus the newest kMaxFinishedMetricJobs finished ones.
  if (w.Family("cohort_job_metric", Type::kGauge,
               "The last value of each numeric key a job's trainer reported (cohort.report / the C++ "
               "Reporter), by job, rank and key (name). NaN when it reported NaN or an infinity.")) {
    std::vector<const Job*> shown;
    std::set<std::string> seen;
    size_t finished = 0;
    for (auto it = metric_jobs_.rbegin(); it != metric_jobs_.rend(); ++it) {
      auto j = jobs_.find(*it);
      if (j == jobs_.end() || !seen.insert(*it).second) continue;
      if (jobs::IsTerminal(j->second.record.status) && ++finished > kMaxFinishedMetricJobs) continue;
      shown.push_back(&j->second);
    }
    for (auto it = shown.rbegin(); it != shown.rend(); ++it)
      for (const auto& [key, value] : (*it)->last_metrics)
        w.Sample({{"job", (*it)->record.spec.submission_id}, {"rank", std::to_string(key.first)}, {"name", key.second}},
                 value);
  }
}

}  // namespace cohort::head
