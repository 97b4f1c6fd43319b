// The local launcher behind `cohort launch -n N -- PROGRAM ARGS...`.
//
// Launch() starts N copies of a program on this machine, one per rank, with
// the torchrun-style environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
// LOCAL_RANK, ...), forwards their output line by line with a "[rank R] "
// prefix, and supervises them: the first rank to fail (non-zero exit or a
// signal) stops the others, SIGTERM first and SIGKILL after a grace period.
// The ranks share a job token (COHORT_JOB_TOKEN) with which their rendezvous
// authenticates peers: the launcher's own COHORT_JOB_TOKEN when it is set and
// not empty, otherwise a fresh random one per Launch().
// Called by the `cohort` CLI and by tests. Launch() blocks the calling thread
// until every rank has been reaped; while it runs it owns the process-wide
// dispositions of SIGCHLD, SIGINT, SIGTERM, SIGHUP and SIGPIPE (restored on
// return), so only one Launch() may run in a process at a time.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::launch {

struct LaunchOptions {
  // Number of ranks (processes) to start; >= 1.
  int num_ranks = 1;
  // The program and its arguments; argv[0] is looked up in PATH (execvp).
  std::vector<std::string> argv;
  // Where rank 0 hosts the rendezvous store.
  std::string master_addr = "127.0.0.1";
  // 0 = pick a free TCP port.
  int master_port = 0;
  // Set in every rank's environment after (and over) the launcher's own.
  std::map<std::string, std::string> extra_env;
  // How long stopped ranks get between SIGTERM (or the forwarded signal) and SIGKILL.
  std::chrono::milliseconds kill_grace{5000};
  // true: ranks write to pipes and the launcher copies each line to out_fd/err_fd
  // as "[rank R] line". false: ranks write straight to out_fd/err_fd.
  bool prefix_output = true;
  int out_fd = 1;
  int err_fd = 2;
  // Forward SIGINT/SIGTERM/SIGHUP received by this process to the ranks (and
  // then return 128+signo). Signals this process ignores at entry stay ignored.
  bool forward_signals = true;
};

// Runs the ranks to completion and returns the exit code `cohort launch`
// should exit with: 0 when every rank exits 0; the first failing rank's code
// (128+signal when it was killed); 127 (126) when the program cannot be found
// (executed); 128+signo when the launcher itself got SIGINT/SIGTERM/SIGHUP.
// The reason for a non-zero code is written as one line to err_fd. A non-OK
// Status means the launch could not be attempted (bad options, no pipes, ...);
// no rank is left running either way.
Result<int> Launch(const LaunchOptions& options);

// Binds a TCP socket to port 0 on all IPv4 interfaces, reads the port the
// kernel picked and closes the socket. Racy by nature (someone may take the
// port before rank 0 binds it) but good enough on one machine.
Result<int> PickFreePort();

// A new random job token: 32 lowercase hex characters (128 bits from the
// kernel's CSPRNG). IoError when no randomness can be had.
Result<std::string> NewJobToken();

// max(1, usable CPUs / num_ranks): the OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
// each rank gets unless the launcher's environment already sets them.
int ThreadsPerRank(int num_ranks);

}  // namespace cohort::launch
