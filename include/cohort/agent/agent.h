// Agent: the node agent behind `cohort start`. It registers this machine with
// the head, sends heartbeats, runs the workers the head asks for, and streams
// their logs, metrics and exit statuses back (protocol: src/proto/cohort.proto).
//
// Everything the agent keeps on disk lives under Options::state_dir, so
// several agents (each with its own state dir) can share one machine:
//   <state_dir>/agent.lock                  held (flock) while an agent runs there
//   <state_dir>/node_id                     the node's stable id
//   <state_dir>/packages/<name>             working_dir zips fetched from the head
//   <state_dir>/jobs/<job_id>/working_dir/  a job's extracted package (its cwd)
//   <state_dir>/jobs/<job_id>/attempt-<n>/rank-<r>/
//                                           a worker's scratch dir (cwd without a
//                                           package): output.log (its prefixed
//                                           output), report.jsonl (fallback)
//   <state_dir>/run/<n>.sock                workers' COHORT_REPORT_PATH sockets
//
// Workers: `/bin/sh -c <entrypoint>` in a process group of its own, with the
// agent's environment plus the head's env plus COHORT_REPORT_PATH. Workers
// never outlive their agent by more than a moment: if the agent process dies
// (even by SIGKILL) every worker's process group is SIGKILLed. When a worker's
// main process exits, whatever it left running in its group is SIGKILLed too.
//
// Threading: Start(), Stop() and Wait() may be called from any thread (Stop
// and Wait concurrently too); the accessors are thread-safe. Internally the
// agent runs a session thread (the head stream), a writer thread per session
// (heartbeats, queued messages), a preparation thread (directories, package
// download and extraction) and a supervisor thread (processes, pipes, report
// sockets). No gRPC or third-party types appear here.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::agent {

// Resource name -> amount: "CPU" (cores), "GPU" (devices), "memory" (bytes),
// and any custom names (Ray's vocabulary).
using Resources = std::map<std::string, double>;

// One of this node's GPUs as the agent last sampled it (src/agent/gpu_probe.h).
struct GpuStatus {
  int index = 0;                    // among the node's GPUs (0 = the first detected)
  std::string name;                 // "NVIDIA H200"; "" when unknown
  int64_t memory_used_bytes = -1;   // -1: unknown (no NVML)
  int64_t memory_total_bytes = -1;  // -1: unknown
  double utilization_percent = -1;  // 0-100 over the driver's last sample period; -1: unknown
};

// This machine's GPUs as the agent names them to workers: the entries of
// CUDA_VISIBLE_DEVICES when it is set (set but empty: none), else "0".."n-1"
// for the /dev/nvidia<N> device files.
std::vector<std::string> DetectGpuDevices();

// This machine: "CPU" = the cores this process may run on, "GPU" =
// DetectGpuDevices().size(), "memory" = MemTotal from /proc/meminfo in bytes.
Resources DetectResources();

class Agent {
 public:
  struct Options {
    std::string head_address;  // "host:port" of the head's agent port; required
    std::string cluster_token;  // the head's token; empty when it needs none
    std::string state_dir = "/tmp/cohort/agent";
    // Totals this node offers. "CPU", "GPU" and "memory" are detected
    // (DetectResources) when absent; give "GPU": 0 to offer none.
    Resources resources;
    std::map<std::string, std::string> labels;
    // The IP other nodes reach this one at (MASTER_ADDR when rank 0 runs
    // here). Empty: the local address of the route to the head; 127.0.0.1
    // when that cannot be found.
    std::string advertise_address;
    std::string cohort_version;  // empty: this build's version
    // Until the head's Registered says otherwise.
    std::chrono::milliseconds heartbeat_interval{1000};
    // One connection attempt, and the wait for Registered after it.
    std::chrono::milliseconds connect_timeout{10000};
    // Start() fails when the first registration has not succeeded by then.
    std::chrono::milliseconds start_timeout{30000};
    // Between reconnection attempts: doubles from min to max.
    std::chrono::milliseconds reconnect_backoff_min{100};
    std::chrono::milliseconds reconnect_backoff_max{5000};
    // Workers' output and metrics are sent at least this often.
    std::chrono::milliseconds log_flush_interval{100};
    // Logs and metrics kept while the head is unreachable; beyond it the
    // oldest are dropped (worker start and exit messages never are).
    size_t max_buffered_bytes = 64u << 20;
    // Stop(true): SIGTERM, then SIGKILL after this long.
    std::chrono::milliseconds stop_grace{3000};
    // One working_dir package download.
    std::chrono::milliseconds package_timeout{std::chrono::minutes(10)};
    // Where a worker of a job without a working_dir starts. Empty (a cluster
    // node): its own scratch dir. `cohort run` sets the directory the user
    // typed the command in, as torchrun and `cohort launch` do. Either way
    // the scratch dir is in the worker's COHORT_SCRATCH_DIR.
    std::string worker_cwd;
  };

  explicit Agent(Options options);
  ~Agent();  // Stop(true) unless stopped
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Takes the state dir (AlreadyExists when another agent holds it), starts
  // the threads, and blocks until the head accepted the first registration.
  // FailedPrecondition with the head's reason when it refused this agent
  // (e.g. another protocol version); Unavailable when it could not register
  // within start_timeout. On error everything started is stopped again.
  // Call once.
  Status Start();

  // Ends the agent; idempotent, blocks until its threads are gone.
  // kill_workers = true: SIGTERM to every worker's group, SIGKILL after
  //   stop_grace, their exits sent to the head (best effort, ~1 s), then a
  //   goodbye on the stream.
  // kill_workers = false: no grace and no goodbye, as if the agent crashed:
  //   the workers are SIGKILLed by the agent-death rule as its supervising
  //   thread ends, and the head notices the stream breaking.
  void Stop(bool kill_workers = true);

  // Blocks until the agent ended: OK after Stop(); the error that ended it
  // otherwise (FailedPrecondition when the head refused a re-registration;
  // the agent then stops itself, killing its workers). DeadlineExceeded when
  // it is still running at `deadline`.
  Status Wait(Deadline deadline = Deadline::Never());

  // The node's id (stable across restarts with the same state dir); empty
  // before Start().
  std::string node_id() const;
  // The address sent to the head as this node's; empty before Start().
  std::string advertise_address() const;
  // The totals sent to the head (after detection); empty before Start().
  Resources resources() const;
  // The GPUs as last sampled (at each heartbeat); empty without GPUs.
  std::vector<GpuStatus> gpus() const;
  // Whether a session with the head is registered right now.
  bool connected() const;
  // Workers whose process is running.
  size_t num_running_workers() const;
  // Log bytes sent to the head and not yet acknowledged by it (kept to be
  // sent again after a reconnection).
  size_t unacknowledged_log_bytes() const;
  // Log bytes the head acknowledged since Start(), in all.
  size_t acknowledged_log_bytes() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::agent
