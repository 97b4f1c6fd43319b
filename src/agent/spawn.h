// Spawner: starts worker processes so that none of them outlives the agent.
//
// Process tree:
//   agent ── /bin/sh -c <entrypoint> (group leader, pid reported to the head)
//   │           └── whatever it starts (same process group)
//   └── guard (one per Spawner)
// A worker is started the way posix_spawn starts a program: a child that
// shares the agent's memory (clone with CLONE_VM | CLONE_VFORK, so the
// agent's page tables are never copied, whatever its size) makes only
// system calls and then execs /bin/sh. Before the exec it leads a new process
// group, asks for SIGKILL when the spawning thread ends (PR_SET_PDEATHSIG;
// that thread lives as long as the agent's supervisor) and registers its
// group with the guard.
//
// The guard: a process forked once, which keeps the set of live worker
// groups (registered by each child before its exec, removed by Forget once
// the group is gone) and waits on a Unix socket only the agent writes to.
// When that socket closes (the agent died, even by SIGKILL, or Abandon()) or
// the spawning thread ends (its own death signal), it SIGKILLs every group it
// still knows and exits. Why a guard: the death signal of the shell alone
// would not reach the programs the shell starts (the flag is not inherited
// across fork), so `sh -c 'a; b'` would leave `b` running after an agent crash.
// If the guard itself dies, RestartGuard() starts another and re-registers.
//
// Cost per worker: one exec of /bin/sh and no copy of the agent's memory
// (the shell's own start-up is what remains; bench/control_plane.sh).
//
// Every member function is called from the one thread that spawns (the
// supervisor's): the death signals are tied to it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::agent {

struct SpawnSpec {
  std::string entrypoint;        // shell command
  std::vector<std::string> env;  // "KEY=VALUE", the whole environment
  std::string cwd;
  int stdout_fd = -1;  // the child's ends; the caller closes them afterwards
  int stderr_fd = -1;
};

class Spawner {
 public:
  Spawner() = default;
  ~Spawner();  // Abandon()
  Spawner(const Spawner&) = delete;
  Spawner& operator=(const Spawner&) = delete;

  // Starts the guard. Without one (this failed, logged), workers still die
  // with the agent, but what they started may not.
  Status Start();

  // The shell's pid (== its process group id). An exec failure is exit code
  // 127 of the worker; a cwd that cannot be entered is 126 with a message on
  // the worker's stderr.
  Result<pid_t> Spawn(const SpawnSpec& spec);

  // The group of `pgid` is gone (its leader reaped, its members killed): the
  // guard forgets it, so a later process that reuses the number is safe.
  void Forget(pid_t pgid);

  // False once the guard has exited (it is reaped here), or if none started.
  bool guard_alive();
  // Starts a new guard and registers the `live` groups with it.
  void RestartGuard(const std::vector<pid_t>& live);

  // Closes the guard's socket: it SIGKILLs every group still registered and
  // exits; then reaps it (waits at most `wait_ms`). Idempotent.
  void Abandon(int wait_ms = 2000);

  pid_t guard_pid() const { return guard_pid_; }

 private:
  void Send(int record);

  pid_t guard_pid_ = -1;
  int guard_fd_ = -1;   // the agent's end of the guard's socket (O_CLOEXEC)
  void* stack_ = nullptr;  // the spawning child's stack (one child at a time: CLONE_VFORK)
  bool warned_full_ = false;
  bool warned_start_ = false;
};

}  // namespace cohort::agent
