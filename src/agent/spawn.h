// SpawnWorker: starts one worker process so that it cannot outlive the agent.
//
// Process tree per worker:
//   agent ── shim (group leader, pid reported to the head)
//              └── /bin/sh -c <entrypoint> ── whatever it starts
// The shim is a fork of the agent that only makes system calls: it leads a
// new process group, asks the kernel for a death signal when the agent
// thread that forked it ends (PR_SET_PDEATHSIG; that thread lives as long as
// the agent's supervisor), and on that signal SIGKILLs its whole group. It
// survives the signals sent to the group (StopWorkers) and exits as the
// shell did: same exit code, or killed by the same signal. Why a shim: a
// death signal set on the shell alone would not reach the programs the shell
// starts (the flag is not inherited across fork), so `sh -c 'a; b'` would
// leave `b` running after an agent crash.
//
// Called only from the supervisor thread (the death signal is tied to the
// calling thread). The child side makes only async-signal-safe calls, as
// required after fork() in a multithreaded process.
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

// The shim's pid (== its process group id). The shell's exec failure is exit
// code 127 of the shim; a cwd that cannot be entered is 126 with a message on
// the worker's stderr.
Result<pid_t> SpawnWorker(const SpawnSpec& spec);

}  // namespace cohort::agent
