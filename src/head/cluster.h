// Cluster: the head's control state behind one lock, and the entry points
// every other thread uses to reach it.
//
// The parts (each in its own file, each with its own tests):
//   NodeTable        node_table.h        agents, resources, liveness
//   JobManager       job_manager.h       job lifecycle, placement, restarts
//   EventLog         event_log.h         recent cluster events
//   MetricsIngest    metrics_ingest.h    trainers' report lines, last values
//   StateWriter      state_writer.h      state-store writes, sticky failure
//   PackageStore     package_store.h     working_dir packages (own locking)
//   ResultsFinalizer results_finalizer.h bucket listings on the work pool
//   WorkPool         work_pool.h         threads for slow work
//   LogWriter        log_writer.h        job-log appends off the control lock
//   JobTokens        job_tokens.h        per-job credentials
//   Clock            clock.h             time (FakeClock in tests)
//
// THREADING CONTRACT
//   - One mutex, mu_ (the control lock), guards the node table, the job
//     manager, the event log and the metrics ingest. clang's -Wthread-safety
//     checks it (GUARDED_BY below; tests/head/thread_safety.sh is a ctest).
//   - Callers: gRPC threads (agent messages), the HTTP loop (API), and the
//     head's tick thread (Tick). Each takes mu_ for the state change only.
//   - Nothing blocks while holding mu_: agent sends are queued by the
//     sessions; log appends are queued (LogWriter); bucket listings,
//     package checks and writes, and log reads run
//     without it (work pool / the caller's thread), and their results come
//     back through Tick (ResultsFinalizer::Take) or the HTTP responder.
//   - Lock order: mu_ before the leaf locks of ResultsFinalizer, WorkPool,
//     StateWriter and LogStore; none of those calls back into the Cluster.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "clock.h"
#include "cohort/common/prometheus.h"
#include "cohort/common/thread_annotations.h"
#include "cohort/head/head_server.h"
#include "cohort/head/log_store.h"
#include "cohort/head/state_store.h"
#include "event_log.h"
#include "job_manager.h"
#include "job_tokens.h"
#include "log_writer.h"
#include "metrics_ingest.h"
#include "cohort/rpc/head_server.h"
#include "node_table.h"
#include "package_store.h"
#include "results_finalizer.h"
#include "state_writer.h"
#include "work_pool.h"

namespace cohort::head {

// What the Cluster takes from outside, for tests to replace.
struct ClusterDeps {
  const Clock* clock = RealClock();
  // Lists a results URI (default: storage::ListAll, recursive).
  ResultsFinalizer::Lister lister;
  std::chrono::milliseconds listing_deadline{180000};
  size_t pool_threads = 4;
  size_t pool_queue = 256;
};


class Cluster : public rpc::HeadHandler {
 public:
  using json_t = nlohmann::json;

  using Deps = ClusterDeps;

  Cluster(HeadOptions options, StateStore* state, LogStore* logs, Deps deps = {});
  ~Cluster() override;

  // Loads jobs and nodes persisted by a previous head process.
  Status Recover() EXCLUDES(mu_);

  // --- rpc::HeadHandler (gRPC threads) --------------------------------------
  rpc::HeadMessage OnRegister(const rpc::Register& reg,
                              const std::shared_ptr<rpc::AgentSession>& session) override EXCLUDES(mu_);
  void OnMessage(rpc::AgentSession& session, const rpc::AgentMessage& msg) override EXCLUDES(mu_);
  void OnDisconnect(rpc::AgentSession& session, const Status& why) override EXCLUDES(mu_);
  Status GetPackage(const rpc::GetPackageRequest& request, std::string* zip_bytes) override;

  // --- API (HTTP loop) --------------------------------------------------------
  // The HTTP status (HttpStatusOf for errors) and body of each route; see
  // docs/api.md. `admin`: the caller holds the cluster token (job tokens see
  // runtime_env.env_vars values hidden).
  struct Reply {
    int status = 200;
    std::string body;
    bool json = true;
  };
  Reply Submit(const std::string& body) EXCLUDES(mu_);
  Reply GetJob(const std::string& id, bool admin = true) EXCLUDES(mu_);
  Reply ListJobs(bool admin = true) EXCLUDES(mu_);
  Reply StopJob(const std::string& id) EXCLUDES(mu_);
  Reply DeleteJob(const std::string& id) EXCLUDES(mu_);
  Reply JobLogs(const std::string& id) EXCLUDES(mu_);
  Reply JobMetrics(const std::string& id, int64_t since) EXCLUDES(mu_);
  Reply ClusterStatus() EXCLUDES(mu_);
  Reply Events(int64_t since) EXCLUDES(mu_);
  // 200 {"ok":true}, or 503 {"ok":false,"reason":...} once the state store
  // failed (sticky; see state_writer.h).
  Reply Health() const;
  void WritePrometheus(prom::Writer& w) EXCLUDES(mu_);  // cluster_metrics.cc
  Reply PackageExists(const std::string& name);
  // Checks and stores a package: slow, call it off the HTTP loop (the head
  // runs it on pool()).
  Reply PutPackage(const std::string& name, const std::string& body);
  // For the log tail: OK + terminal flag, or NotFound.
  Result<bool> JobIsTerminal(const std::string& id) EXCLUDES(mu_);

  // Periodic work (tick thread): node timeouts, finished listings, stop and
  // re-attach deadlines, placement of pending jobs.
  void Tick() EXCLUDES(mu_);

  WorkPool& pool() { return *pool_; }
  const JobTokens* tokens() const { return &tokens_; }
  StateWriter& state_writer() { return writer_; }
  // Tests.
  std::set<int> TEST_PortsInUse() EXCLUDES(mu_);

 private:
  static Reply FromStatus(const Status& st);
  static Reply JsonReply(int status, const json_t& body);
  // The log writer's acknowledgements, one LogAck per node (tick thread).
  void SendLogAcks() REQUIRES(mu_);

  const HeadOptions options_;
  const Deps deps_;
  LogStore* const logs_;
  StateStore* const store_;
  StateWriter writer_;  // own synchronisation (see state_writer.h)
  PackageStore packages_;  // thread-safe
  JobTokens tokens_;  // set by Recover() before any other call; immutable after
  // Thread-safe. ~Cluster stops the pool first: its tasks use finalizer_.
  std::unique_ptr<WorkPool> pool_;
  std::unique_ptr<ResultsFinalizer> finalizer_;
  std::unique_ptr<LogWriter> log_writer_;  // thread-safe

  mutable Mutex mu_;  // the control lock
  EventLog events_ GUARDED_BY(mu_);
  NodeTable nodes_ GUARDED_BY(mu_);
  MetricsIngest metrics_ GUARDED_BY(mu_);
  JobManager jobs_ GUARDED_BY(mu_);
};

}  // namespace cohort::head
