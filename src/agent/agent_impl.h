// Agent::Impl: the agent's state and threads, shared by agent.cc (life
// cycle, state dir, preparation of workers) and session.cc (the head stream).
//
// Threads and what they own:
//   session thread  SessionLoop(): connect, register, read HeadMessages and
//                   dispatch them; reconnects with backoff while not stopping.
//   writer thread   one per session (WriterLoop): sends Register, waits for
//                   Registered, then heartbeats and the Outbox; the only
//                   thread that Write()s to the stream.
//   prep thread     PrepLoop(): directories, working_dir package download and
//                   extraction, environment; hands SpawnRequests to the
//                   supervisor.
//   supervisor      Supervisor's own thread: processes, pipes, reports.
//
// Ordering between StartWorker and StopWorkers: both are handled under
// prep_mu_, and a prepared worker is handed to the supervisor under prep_mu_
// too, so a StopWorkers either cancels a worker still being prepared (it is
// then reported as never started) or reaches the supervisor after its spawn
// (and stops it).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cohort.pb.h"
#include "cohort/agent/agent.h"
#include "cohort/rpc/agent_client.h"
#include "gpu_probe.h"
#include "outbox.h"
#include "supervisor.h"

namespace cohort::agent {

class Agent::Impl {
 public:
  explicit Impl(Options options);
  ~Impl();

  Status Start();
  void Stop(bool kill_workers);
  Status Wait(Deadline deadline);

  std::string node_id() const;
  std::string advertise_address() const;
  Resources resources() const;
  std::vector<GpuStatus> gpus() const;
  bool connected() const;
  size_t num_running_workers() const;
  size_t unacknowledged_log_bytes() const { return outbox_.unacked_bytes(); }
  size_t acknowledged_log_bytes() const { return outbox_.acked_bytes(); }

 private:
  struct PrepItem {
    WorkerKey key;
    rpc::StartWorker start;
  };
  // One session's writer/reader handshake.
  struct SessionSync {
    std::mutex mu;
    std::condition_variable cv;
    bool registered = false;          // GUARDED_BY(mu)
    std::atomic<bool> ended{false};   // the reader is done with the stream
  };

  // --- agent.cc
  Status PrepareStateDir();
  void PrepLoop();
  Result<SpawnRequest> Prepare(const rpc::StartWorker& start);
  Result<std::string> EnsureWorkingDir(const std::string& job_id, const std::string& uri);
  void SetFatal(Status status);

  // --- session.cc
  void SessionLoop();
  // Returns whether the head accepted the registration.
  bool RunSession(rpc::HeadStream& stream);
  void WriterLoop(rpc::HeadStream& stream, const rpc::AgentMessage& registration,
                  SessionSync& sync);
  // false: end the session.
  bool Dispatch(const rpc::HeadMessage& msg);
  void EnqueueStart(const rpc::StartWorker& start);
  void HandleStop(const rpc::StopWorkers& stop);
  rpc::AgentMessage BuildRegister() const;
  rpc::AgentMessage BuildHeartbeat() const;
  void AdoptRegistration(const rpc::Registered& registered);
  // Sleeps up to `d`; returns early when stopping or failed.
  void SleepUnlessStopping(std::chrono::milliseconds d);

  // Constant after Start().
  Options options_;
  std::string hostname_;
  std::string address_;
  std::string iface_;  // the interface holding address_ ("" if none was found)
  Resources resources_;
  std::vector<std::string> gpu_devices_;
  std::unique_ptr<GpuProbe> gpu_probe_;  // sampled by BuildHeartbeat (the session thread)
  mutable std::mutex gpus_mu_;
  mutable std::vector<GpuStatus> last_gpus_;  // GUARDED_BY(gpus_mu_)
  std::map<std::string, std::string> base_env_;  // the agent's environment at Start()
  int lock_fd_ = -1;
  std::unique_ptr<rpc::HeadClient> client_;
  Outbox outbox_;
  std::unique_ptr<Supervisor> supervisor_;

  // Life cycle.
  std::mutex stop_mu_;  // serializes Start/Stop
  bool started_ = false;   // GUARDED_BY(stop_mu_)
  std::atomic<bool> stopping_{false};
  std::atomic<bool> draining_{false};  // Stop(true): goodbye once the outbox is empty
  std::atomic<uint32_t> heartbeat_interval_ms_{1000};
  std::thread session_thread_;
  std::thread prep_thread_;

  mutable std::mutex state_mu_;
  std::condition_variable state_cv_;
  std::string node_id_;                      // GUARDED_BY(state_mu_)
  bool registered_once_ = false;             // GUARDED_BY(state_mu_)
  bool connected_ = false;                   // GUARDED_BY(state_mu_)
  bool failed_ = false;                      // GUARDED_BY(state_mu_)
  Status fatal_;                             // GUARDED_BY(state_mu_)
  Status last_connect_error_;                // GUARDED_BY(state_mu_)
  bool session_done_ = false;                // GUARDED_BY(state_mu_)
  bool stopped_ = false;                     // GUARDED_BY(state_mu_)
  rpc::HeadStream* current_stream_ = nullptr;  // GUARDED_BY(state_mu_)

  // Preparation.
  mutable std::mutex prep_mu_;
  std::condition_variable prep_cv_;
  std::deque<PrepItem> prep_queue_;        // GUARDED_BY(prep_mu_)
  std::optional<WorkerKey> prep_current_;  // GUARDED_BY(prep_mu_)
  int prep_current_stop_signal_ = 0;       // GUARDED_BY(prep_mu_): != 0 once cancelled
  bool prep_stop_ = false;                 // GUARDED_BY(prep_mu_)
};

}  // namespace cohort::agent
