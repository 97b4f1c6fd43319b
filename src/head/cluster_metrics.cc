// Cluster's Prometheus side: the families behind the head's GET /metrics
// (the API request counts and process_* are added by head_server.cc): nodes
// here; jobs, placement latencies (JobManager::WritePrometheus) and the
// trainers' last reported values (MetricsIngest::Write). docs/cluster.md
// "Metrics".
#include <set>

#include "cluster.h"

namespace cohort::head {

using jobs::JobStatus;
using prom::Type;

void Cluster::WritePrometheus(prom::Writer& w) {
  MutexLock lock(&mu_);
  size_t alive = 0, dead = 0;
  for (const auto& [id, node] : nodes_.nodes()) (node.alive ? alive : dead)++;
  if (w.Family("cohort_nodes", Type::kGauge, "Nodes known to the head, by state.")) {
    w.Sample({{"state", "alive"}}, static_cast<double>(alive));
    w.Sample({{"state", "dead"}}, static_cast<double>(dead));
  }
  const auto snapshot = nodes_.Snapshot(jobs_.Used(), options_.head_node_id, std::chrono::milliseconds::max());
  if (w.Family("cohort_node_info", Type::kGauge, "One series per node known to the head (value 1).")) {
    for (const auto& s : snapshot) {
      const Node& n = *nodes_.Find(s.node_id);
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
  if (w.Family("cohort_node_memory_used_bytes", Type::kGauge,
               "Memory in use on each node's machine (MemTotal - MemAvailable), from its agent's heartbeats.")) {
    for (const auto& [id, node] : nodes_.nodes())
      if (node.alive) w.Sample({{"node", id}}, static_cast<double>(node.memory_used_bytes));
  }
  std::vector<prom::GpuGauge> gpus;
  for (const auto& [id, node] : nodes_.nodes())
    if (node.alive)
      for (const NodeGpu& g : node.gpus)
        gpus.push_back({{{"node", id}, {"gpu", std::to_string(g.index)}, {"model", g.name}},
                        g.utilization_percent,
                        static_cast<double>(g.memory_used_bytes),
                        static_cast<double>(g.memory_total_bytes)});
  prom::WriteGpuFamilies(w, gpus);
  if (w.Family("cohort_node_last_heartbeat_timestamp_seconds", Type::kGauge,
               "When the head last heard from each node's agent (unix time).")) {
    for (const auto& [id, node] : nodes_.nodes())
      w.Sample({{"node", id}}, static_cast<double>(node.last_seen_ms) / 1000.0);
  }
  jobs_.WritePrometheus(w);
  metrics_.Write(w, [this](const std::string& id, bool* known) NO_THREAD_SAFETY_ANALYSIS {
    auto t = jobs_.IsTerminal(id);  // called under mu_, inside Write
    *known = t.ok();
    return t.ok() && *t;
  });
}

void JobManager::WritePrometheus(prom::Writer& w) const {
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
  if (w.Family("cohort_job_memory_rss_bytes", Type::kGauge,
               "Resident memory of each running job's workers, summed (from the agents' heartbeats).")) {
    for (const auto& [id, job] : jobs_) {
      if (job.record.status != JobStatus::kRunning) continue;
      int64_t rss = 0;
      for (const Worker& wk : job.workers)
        if (wk.live) rss += wk.rss_bytes;
      w.Sample({{"job", id}}, static_cast<double>(rss));
    }
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
}

}  // namespace cohort::head
