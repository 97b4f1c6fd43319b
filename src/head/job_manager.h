// JobManager: every job and every decision about one -- submission, gang
// placement, worker starts and exits, restarts after failures, stops,
// deletion, re-attachment after a head restart, and the state-store records
// that make all of it survive the head.
//
// State transitions happen here and only here (jobs::Transition), each one
// written to the state store before it is visible through the API.
//
// Threading: not thread-safe. The Cluster owns the JobManager under its
// control lock (cluster.h: `JobManager jobs_ GUARDED_BY(mu_)`), so every
// method runs with that lock held; nothing here blocks on the network (sends
// are queued by the agent sessions) or on a bucket (results listings run on
// the work pool through the ResultsFinalizer).
//
// Invariants:
//   1. jobs_[id].record is what the state store holds for id.
//   2. A RUNNING job's workers are those of record.attempt; messages of older
//      attempts only update logs.
//   3. A node's used resources are the sum of the live (not exited) workers
//      placed on it (Used()).
//   4. ports_in_use_ holds the rendezvous port of every RUNNING job,
//      including those recovered from the state store.
//   5. An agent's message about a worker counts only when that worker was
//      placed on the agent's node.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "clock.h"
#include "cohort/common/prometheus.h"
#include "cohort/head/head_server.h"
#include "cohort/head/log_store.h"
#include "cohort/jobs/job.h"
#include "event_log.h"
#include "job_tokens.h"
#include "log_writer.h"
#include "metrics_ingest.h"
#include "cohort/rpc/head_server.h"
#include "node_table.h"
#include "package_store.h"
#include "results_finalizer.h"
#include "state_writer.h"

namespace cohort::head {

// A StartWorker must fit in one gRPC message to the agent (4 MiB by default);
// a job whose entrypoint and env_vars do not is refused at submission.
inline constexpr size_t kMaxStartWorkerBytes = (size_t{4} << 20) - (size_t{64} << 10);

struct JobManagerDeps {
  HeadOptions options;
  const Clock* clock = nullptr;
  StateWriter* state = nullptr;
  LogStore* logs = nullptr;         // reads (the failure message's last lines)
  LogWriter* log_writer = nullptr;  // appends
  NodeTable* nodes = nullptr;
  EventLog* events = nullptr;
  MetricsIngest* metrics = nullptr;
  ResultsFinalizer* finalizer = nullptr;
  const JobTokens* tokens = nullptr;
  const PackageStore* packages = nullptr;
};

class JobManager {
 public:
  using json = nlohmann::json;

  explicit JobManager(JobManagerDeps deps) : d_(std::move(deps)) {}

  Status Recover(StateStore* store);

  // --- API ------------------------------------------------------------------
  Result<std::string> Submit(std::string_view body);  // the submission id
  // The job's details; runtime_env.env_vars values are shown only to admins.
  Result<json> Details(const std::string& id, bool admin) const;
  json List(bool admin) const;
  Result<bool> Stop(const std::string& id);  // true when a stop began
  Status Delete(const std::string& id);
  Result<bool> IsTerminal(const std::string& id) const;
  json ClusterStatus();

  // --- agents -------------------------------------------------------------------
  // After `node` registered: re-attach the workers it still runs; stop the
  // ones nobody wants.
  void OnRegistered(const Node& node, const rpc::Register& reg);
  // A heartbeat: the resident memory of the node's running workers.
  void OnHeartbeat(const std::string& node_id, const rpc::Heartbeat& hb);
  void OnWorkerStarted(const std::string& node_id, const rpc::WorkerStarted& m);
  void OnWorkerExited(const std::string& node_id, const rpc::WorkerExited& m);
  void OnLog(const std::string& node_id, const rpc::LogChunk& m);
  void OnMetrics(const std::string& node_id, const rpc::MetricReport& m);
  void OnNodeDead(const std::string& node_id, const std::string& why);

  // Periodic: stop and re-attach deadlines, finished results listings,
  // placement of pending jobs.
  void Tick();

  // Resources held by live workers, by node. O(jobs with live workers).
  std::map<std::string, jobs::Resources> Used();
  void WritePrometheus(prom::Writer& w) const;
  std::set<int> ports_in_use() const { return ports_in_use_; }

 private:
  struct Worker {  // one rank of a job's current attempt
    std::string node_id;
    jobs::Resources resources;
    std::vector<int> gpu_ids;  // the node's GPUs this worker holds
    bool live = false;         // started and not yet exited (holds resources)
    bool exited = false;
    int exit_code = 0;
    int signal = 0;
    int64_t rss_bytes = 0;     // resident memory of its process group, from heartbeats
  };
  struct Job {
    jobs::JobRecord record;
    std::vector<Worker> workers;  // by rank, current attempt
    std::set<std::string> worker_nodes;  // every node that ran a worker of any attempt
    std::optional<Clock::Steady::time_point> stop_deadline;
    std::optional<Clock::Steady::time_point> reattach_deadline;
    std::string checkpoint_dir, results_dir;
    bool finalizing = false;  // every worker succeeded; results are being listed
    int64_t pending_since_ms = 0;
    uint64_t seq = 0;  // submission order (recovery keeps the stored order)
  };

  // Stores what node_id listed in the job's local results directory.
  void RecordLocalResults(Job& job, const std::string& node_id, const rpc::LocalResults& results);
  Job* Find(const std::string& id);
  const Job* Find(const std::string& id) const;
  // The RUNNING jobs, taken from placed_ (a copy: callers may change states).
  // The nodes for the scheduler (NodeTable::Snapshot with the silence limit).
  std::vector<scheduler::NodeSnapshot> Schedulable();
  std::vector<Job*> RunningJobs();
  // The job, when one of its workers ever ran on `node_id`; else null (and a
  // warning: an agent spoke for a job that is not its own).
  Job* FindForNode(const std::string& node_id, const std::string& job_id, const char* what);
  void Persist(Job& job, const std::string& event_message = "");
  void AppendLog(const std::string& id, const std::string& text);
  void TrySchedule();
  bool TryPlace(Job& job, const std::vector<scheduler::NodeSnapshot>& nodes);
  void StartWorkers(Job& job, const std::vector<std::string>& node_of_rank);
  rpc::HeadMessage StartMessage(const Job& job, int rank, const std::vector<std::string>& node_of_rank,
                                const std::map<std::string, std::set<int>>& job_gpus, int port) const;
  void FailAttempt(Job& job, const std::string& cause, std::optional<int> exit_code, bool retryable = true);
  void StopAttemptWorkers(Job& job, int attempt);
  void FinishStopped(Job& job);
  void FinishListing(const ResultsFinalizer::Outcome& outcome);
  void ReleasePort(Job& job);
  int PickMasterPort();
  json DetailsOf(const Job& job, bool admin) const;
  void ObservePlacement(const Job& job);
  bool IsTerminalForMetrics(const std::string& id, bool* known) const;

  const JobManagerDeps d_;
  std::map<std::string, Job> jobs_;
  std::vector<std::string> job_order_;  // submission order (the list API)
  // PENDING jobs by submission order (a superset: entries of jobs that left
  // PENDING are dropped when met), so scheduling never walks finished jobs.
  std::map<uint64_t, std::string> pending_;
  uint64_t next_seq_ = 1;
  void MarkPending(const Job& job) { pending_.emplace(job.seq, job.record.spec.submission_id); }
  std::set<int> ports_in_use_;
  // Jobs that may hold live workers (a superset; Used() prunes it). Workers
  // turn live only in StartWorkers and on re-attach of recovered jobs.
  std::set<std::string> placed_;
  uint64_t jobs_submitted_ = 0;
  uint64_t job_restarts_ = 0;
  prom::Histogram submit_to_running_{prom::Histogram::LatencyBuckets()};
  prom::Histogram placement_wait_{prom::Histogram::LatencyBuckets()};
};

}  // namespace cohort::head
