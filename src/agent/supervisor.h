// Supervisor: runs and watches the agent's worker processes.
//
// One thread (started by Start(), ended by Shutdown()) owns every worker: it
// spawns them (SpawnWorker, so the death signal is tied to this thread),
// reads their stdout/stderr pipes and their report channel (a Unix socket,
// or a file when no socket can be made), batches output into LogChunk and
// report lines into MetricReport at least every flush_interval, reaps them
// (their pids only, when their pidfd says they exited) and signals their
// process groups. Everything
// it has to say to the head goes into the Outbox, per worker in order:
// WorkerStarted, LogChunk/MetricReport..., WorkerExited.
//
// Other threads talk to it through Spawn/Stop/Shutdown, which queue a
// command and wake the poll loop through a pipe, and read Snapshot().
//
// Worker output: stdout and stderr are separate pipes, so lines never mix;
// each complete line (a line over 64 KiB is cut) gets "[rank R] " when the
// job has more than one worker, goes to the head and is appended to
// <scratch>/output.log. When a worker's main process exits, what is left of
// its process group is SIGKILLed, the pipes and report channel are drained,
// and WorkerExited follows its last output.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <compare>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cohort.pb.h"
#include "cohort/agent/agent.h"
#include "cohort/common/deadline.h"
#include "cohort/common/status.h"
#include "outbox.h"
#include "spawn.h"

namespace cohort::agent {

struct WorkerKey {
  std::string job_id;
  int attempt = 0;
  int rank = 0;
  auto operator<=>(const WorkerKey&) const = default;
  // "job=J attempt=A rank=R", for logs.
  std::string ToString() const;
};

// Which workers a StopWorkers applies to: job_id "" = all jobs, attempt -1 =
// all attempts.
struct WorkerFilter {
  std::string job_id;
  int attempt = -1;
  bool Matches(const WorkerKey& key) const;
};

struct SpawnRequest {
  WorkerKey key;
  std::string entrypoint;
  // The whole environment but COHORT_REPORT_PATH, which the supervisor adds.
  std::map<std::string, std::string> env;
  std::string cwd;
  std::string scratch_dir;  // exists
  Resources resources;
  bool prefix_lines = false;  // "[rank R] " on every line
};

struct SupervisorSnapshot {
  std::vector<rpc::RunningWorker> workers;
  Resources used;  // sum of the running workers' SpawnRequest::resources
};

// WorkerExited for a worker that never started.
rpc::AgentMessage NeverStarted(const WorkerKey& key, int signal, const std::string& message);

class Supervisor {
 public:
  struct Options {
    std::string run_dir;  // where report sockets go (exists)
    std::chrono::milliseconds flush_interval{100};
  };

  Supervisor(Options options, Outbox* outbox);
  ~Supervisor();  // Shutdown(false) if still running
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  Status Start();

  // Starts a worker (a duplicate key is logged and ignored). Any thread.
  void Spawn(SpawnRequest request);
  // `signo` (0: SIGTERM) to every matching worker's process group now,
  // SIGKILL after `grace`. Any thread.
  void Stop(const WorkerFilter& filter, int signo, std::chrono::milliseconds grace);
  // Ends the thread. kill: SIGTERM every worker, SIGKILL after `grace`, and
  // return once all were reaped and reported (at most grace + 2 s). !kill:
  // return at once; the workers die of their death signal as the thread ends
  // and are reaped here, unreported. Idempotent; any thread but its own.
  void Shutdown(bool kill, std::chrono::milliseconds grace);

  SupervisorSnapshot Snapshot() const;
  size_t num_running() const;

 private:
  struct Worker;
  struct Command {
    enum Kind { kSpawn, kStop, kShutdown } kind = kSpawn;
    SpawnRequest spawn;
    WorkerFilter filter;
    int signo = 0;
    std::chrono::milliseconds grace{0};
    bool kill = false;
  };

  void Post(Command command);
  void Loop();
  void HandleCommands();
  void DoSpawn(SpawnRequest request);
  void DoStop(const WorkerFilter& filter, int signo, std::chrono::milliseconds grace);
  bool SetUpReportChannel(Worker& w, const std::string& scratch_dir);
  void ReadOutput(Worker& w, bool is_err, bool drain);
  void AppendOutput(Worker& w, std::string& pending, bool at_eof);
  void AcceptReports(Worker& w);
  void ReadReports(Worker& w, size_t conn, bool drain);
  void TailReportFile(Worker& w);
  void TakeReportLines(Worker& w, std::string& pending, bool at_eof);
  void Flush(Worker& w);
  // Reaps the workers that exited: those whose exit descriptor fired (or
  // that have none), or every worker when `all`.
  void ReapAll(bool all);
  // Collects the last output and returns the WorkerExited to send.
  rpc::AgentMessage Finalize(Worker& w, int wait_status);
  void PublishSnapshot();
  // Messages for the head go out in Commit(), once per loop iteration, after
  // the snapshot has been published once for all of that iteration's starts
  // and exits (so whoever hears of one finds the snapshot agreeing); one
  // queue keeps each worker's order: started, output..., exited.
  void Emit(rpc::AgentMessage msg);
  void Commit();

  const Options options_;
  Outbox* const outbox_;
  int wake_read_ = -1;
  int wake_write_ = -1;
  std::thread thread_;

  mutable std::mutex mu_;
  std::deque<Command> commands_;  // GUARDED_BY(mu_)
  SupervisorSnapshot snapshot_;   // GUARDED_BY(mu_)
  // Spawn() requests not yet taken by the supervisor thread: listed by
  // Snapshot() as running (pid 0), so a registration never misses them.
  std::vector<WorkerKey> pending_spawns_;  // GUARDED_BY(mu_)
  bool shutdown_requested_ = false;  // GUARDED_BY(mu_)

  // Supervisor thread only (and Shutdown() after the thread ended).
  std::map<WorkerKey, std::unique_ptr<Worker>> workers_;
  Spawner spawner_;
  std::vector<rpc::AgentMessage> emitted_;
  bool snapshot_dirty_ = false;
  uint64_t report_seq_ = 0;
  bool shutting_down_ = false;
  bool kill_on_shutdown_ = false;
  Deadline shutdown_until_ = Deadline::Never();
};

}  // namespace cohort::agent
