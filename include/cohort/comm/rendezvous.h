// Rendezvous configuration from the environment torchrun uses.
//
// MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE.
// A missing or inconsistent variable is an InvalidArgument naming it.
// COHORT_JOB_TOKEN (optional) is the job's secret: the rendezvous store and
// the TCP mesh authenticate peers with it. Unset or empty: no authentication,
// as under plain torchrun.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "cohort/common/status.h"

namespace cohort::comm {

struct RendezvousConfig {
  std::string master_addr;
  int master_port = 0;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  // COHORT_JOB_TOKEN; empty = no authentication. Never logged.
  std::string auth_secret;
};

// getenv is injectable for tests; nullptr means "unset".
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// Reads and validates the variables. With WORLD_SIZE unset (or 1) and no
// MASTER_ADDR it returns a single-rank config, like running a script without
// torchrun. Otherwise all six must be present and consistent.
Result<RendezvousConfig> RendezvousConfigFromEnv(const EnvLookup& lookup = {});

}  // namespace cohort::comm
