// Helpers to run N ranks of a collective test, as threads (fast, shared
// MemoryStore) or as forked processes (real: separate address spaces, a
// TcpStore on loopback, deaths and stalls).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cohort/comm/communicator.h"

namespace cohort::testing {

// Runs body(comm) on `world_size` threads, each with its own Communicator.
// Returns each rank's final status (creation failure or body's result).
std::vector<Status> RunRankThreads(int world_size, comm::Options options,
                                   const std::function<Status(comm::Communicator&)>& body);

struct ProcessResult {
  int exit_code = -1;       // the child's exit status (or 128 + signal)
  std::string message;      // what the child wrote with ReportFromChild
  double seconds = 0;       // wall time from fork to exit
};

// Forks `world_size` children; each builds a Communicator through a TcpStore
// hosted by the parent and runs body(rank, comm). A child exits 0 if body
// returns OK, 1 otherwise (writing the status message for the parent). A rank
// for which `skip_comm(rank)` is true gets no communicator: body(rank, nullptr).
// Children still alive after `kill_after_s` are killed (exit 137).
std::vector<ProcessResult> RunRankProcesses(
    int world_size, comm::Options options,
    const std::function<Status(int rank, comm::Communicator* comm)>& body,
    double kill_after_s = 60, const std::function<bool(int)>& skip_comm = {});

}  // namespace cohort::testing
