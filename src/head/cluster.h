// Cluster: the head's state -- nodes and jobs -- and every decision about
// them: registration and liveness of agents, gang placement of jobs, worker
// starts and exits, restarts after failures, stops, and persistence.
//
// Callers: the gRPC threads (through the rpc::HeadHandler methods), the HTTP
// loop (the API methods), and the head's tick thread (Tick()). All state is
// guarded by mu_; nothing blocks on the network while holding it (sends are
// queued by AgentSession::Send).
//
// Invariants:
//   1. jobs_[id].record is what the state store holds for id (written on
//      every change, before the change is visible through the API).
//   2. A RUNNING job's workers are those of record.attempt; messages of older
//      attempts only update logs.
//   3. A node's used resources are the sum of the live (not exited) workers
//      placed on it.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cohort/common/prometheus.h"
#include "cohort/head/head_server.h"
#include "cohort/head/log_store.h"
#include "cohort/head/state_store.h"
#include "cohort/jobs/job.h"
#include "cohort/scheduler/scheduler.h"
#include "net/rpc/head_server.h"

namespace cohort::head {

class Cluster : public rpc::HeadHandler {
 public:
  using json_t = nlohmann::json;
  using Clock = std::chrono::steady_clock;

  Cluster(HeadOptions options, StateStore* state, LogStore* logs);

  // Loads jobs and nodes persisted by a previous head process.
  Status Recover();

  // --- rpc::HeadHandler (gRPC threads) --------------------------------------
  rpc::HeadMessage OnRegister(const rpc::Register& reg,
                              const std::shared_ptr<rpc::AgentSession>& session) override;
  void OnMessage(rpc::AgentSession& session, const rpc::AgentMessage& msg) override;
  void OnDisconnect(rpc::AgentSession& session, const Status& why) override;
  Status GetPackage(const rpc::GetPackageRequest& request, std::string* zip_bytes) override;

  // --- API (HTTP loop) --------------------------------------------------------
  // The HTTP status and body for each Ray route; see docs/api.md.
  struct Reply {
    int status = 200;
    std::string body;
    bool json = true;
  };
  Reply Submit(const std::string& body);
  Reply GetJob(const std::string& id);
  Reply ListJobs();
  Reply StopJob(const std::string& id);
  Reply DeleteJob(const std::string& id);
  Reply JobLogs(const std::string& id);
  Reply JobMetrics(const std::string& id, int64_t since);
  Reply ClusterStatus();
  // Cluster events (node joined/left/dead, job status changes), newest last;
  // kept in memory, the last kMaxEvents.
  Reply Events(int64_t since);
  static constexpr size_t kMaxEvents = 1000;
  // The cluster's Prometheus families (nodes, jobs, placement latencies, the
  // trainers' last reported values); see docs/cluster.md "Metrics". In
  // cluster_metrics.cc.
  void WritePrometheus(prom::Writer& w);
  Reply PackageExists(const std::string& name);
  Reply PutPackage(const std::string& name, const std::string& body);
  // For the log tail: OK + terminal flag, or NotFound.
  Result<bool> JobIsTerminal(const std::string& id);

  // Periodic work (tick thread): node timeouts, stop deadlines, re-attach
  // deadlines, placement of pending jobs; then the results listings of
  // jobs that finished (object-store I/O, done without holding mu_).
  void Tick();

 private:
  struct Node {
    std::string node_id;
    std::string address;
    std::string hostname;
    jobs::Resources total;
    std::map<std::string, std::string> labels;
    bool alive = false;
    Clock::time_point last_seen;
    int64_t first_seen_ms = 0;
    int64_t last_seen_ms = 0;
    std::shared_ptr<rpc::AgentSession> session;  // null while disconnected
  };
  struct Worker {  // one rank of a job's current attempt
    std::string node_id;
    jobs::Resources resources;
    std::vector<int> gpu_ids;  // the node's GPUs this worker holds
    bool live = false;    // started and not yet exited (holds resources)
    bool exited = false;
    int exit_code = 0;
    int signal = 0;
  };
  struct Job {
    jobs::JobRecord record;
    std::vector<Worker> workers;                   // by rank, current attempt
    int failures = 0;                              // restarts consumed
    std::optional<Clock::time_point> stop_deadline;   // SIGKILL sent by agents after grace
    std::optional<Clock::time_point> reattach_deadline;
    std::string checkpoint_dir, results_dir;
    // Every worker succeeded and the results in results_uri are being listed;
    // the job turns SUCCEEDED (with the listing) or FAILED after that.
    bool finalizing = false;
    int64_t pending_since_ms = 0;  // when a restart made it PENDING again (0: not restarted here)
    // The last value of each numeric key its trainer reported, by (rank, key)
    // (cluster_metrics.cc; at most kMaxMetricSeriesPerJob).
    std::map<std::pair<int, std::string>, double> last_metrics;
  };

  // All REQUIRE mu_ held.
  void Persist(Job& job, const std::string& event_message = "");
  void AppendLog(const std::string& id, const std::string& text);
  void TrySchedule();
  bool TryPlace(Job& job);
  void StartWorkers(Job& job, const std::vector<std::string>& node_of_rank);
  void OnWorkerStarted(const rpc::WorkerStarted& m);
  void OnWorkerExited(const rpc::WorkerExited& m);
  void FailAttempt(Job& job, const std::string& cause, std::optional<int> exit_code);
  void StopAttemptWorkers(Job& job, int attempt);
  void FinishStopped(Job& job);
  void MarkNodeDead(Node& node, const std::string& why);
  void PersistNode(const Node& node);
  void FinishResultListings();  // REQUIRES: mu_ NOT held
  void TickLocked();
  json_t Details(const Job& job) const;
  std::vector<scheduler::NodeSnapshot> Snapshot() const;
  Job* FindJob(const std::string& id);
  std::string PackagePath(const std::string& name) const;
  int PickMasterPort();
  static int64_t NowMs();

  const HeadOptions options_;
  StateStore* const state_;
  LogStore* const logs_;

  mutable std::mutex mu_;
  std::map<std::string, Node> nodes_;       // GUARDED_BY(mu_)
  std::map<std::string, Job> jobs_;         // GUARDED_BY(mu_)
  std::vector<std::string> job_order_;      // GUARDED_BY(mu_): submission order
  std::set<int> ports_in_use_;              // GUARDED_BY(mu_)
  std::vector<std::string> pending_listings_;  // GUARDED_BY(mu_): finalizing job ids
  struct Event {
    int64_t seq;
    int64_t time_ms;
    std::string kind;  // "node" | "job"
    std::string id;    // node_id or job id
    std::string message;
  };
  std::deque<Event> events_;  // GUARDED_BY(mu_)
  int64_t next_event_seq_ = 1;  // GUARDED_BY(mu_)
  void AddEvent(const std::string& kind, const std::string& id, const std::string& message);
  uint64_t next_node_serial_ = 1;           // GUARDED_BY(mu_)

  // Prometheus (cluster_metrics.cc). All REQUIRE mu_ held.
  void RecordLastMetrics(Job& job, int rank, const json_t& report);
  void ObservePlacement(const Job& job);  // as a job turns RUNNING
  uint64_t jobs_submitted_ = 0;           // GUARDED_BY(mu_)
  uint64_t job_restarts_ = 0;             // GUARDED_BY(mu_)
  prom::Histogram submit_to_running_{prom::Histogram::LatencyBuckets()};
  prom::Histogram placement_wait_{prom::Histogram::LatencyBuckets()};
  std::deque<std::string> metric_jobs_;   // GUARDED_BY(mu_): jobs with last_metrics, oldest first
  static constexpr size_t kMaxFinishedMetricJobs = 10;  // finished jobs whose values are kept
  static constexpr size_t kMaxMetricSeriesPerJob = 1000;
};

}  // namespace cohort::head
