// RendezvousConfigFromEnv: parses and validates the torchrun environment
// (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)
// and picks up the job token (COHORT_JOB_TOKEN).
// Stateless; thread-safe as long as the lookup is (std::getenv is, absent
// concurrent setenv).
#include <charconv>
#include <cstdlib>
#include <optional>
#include <string>
#include <system_error>

#include "cohort/comm/rendezvous.h"

namespace cohort::comm {
namespace {

constexpr const char* kAllVariables =
    "torchrun-style rendezvous needs MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, "
    "LOCAL_WORLD_SIZE";

std::optional<std::string> GetEnv(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

Status NotSet(const std::string& name) {
  return Status::InvalidArgument(name + " is not set (" + kAllVariables + ")");
}

// Parses a whole decimal integer ("2x", "", " 2" and overflow are errors).
// `expected` says what the value should be, for the message.
Result<int> ParseInt(const std::string& name, const std::string& text, const char* expected) {
  int value = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec == std::errc::result_out_of_range) {
    return Status::InvalidArgument(name + "=" + text + " is out of range: must be " + expected);
  }
  if (text.empty() || ec != std::errc() || ptr != end) {
    return Status::InvalidArgument(name + "=\"" + text + "\" is not a decimal integer: must be " +
                                   expected);
  }
  return value;
}

// The checks below format "NAME=value is out of range: must be ...".
Status OutOfRange(const std::string& name, int value, const std::string& expected) {
  return Status::InvalidArgument(name + "=" + std::to_string(value) +
                                 " is out of range: must be " + expected);
}

Status ValidateRanks(const RendezvousConfig& c) {
  if (c.world_size < 1) return OutOfRange("WORLD_SIZE", c.world_size, ">= 1");
  const std::string ws = std::to_string(c.world_size);
  if (c.rank < 0 || c.rank >= c.world_size) {
    return OutOfRange("RANK", c.rank, "in [0, WORLD_SIZE=" + ws + ")");
  }
  if (c.local_world_size < 1 || c.local_world_size > c.world_size) {
    return OutOfRange("LOCAL_WORLD_SIZE", c.local_world_size, "in [1, WORLD_SIZE=" + ws + "]");
  }
  if (c.local_rank < 0 || c.local_rank >= c.local_world_size) {
    return OutOfRange("LOCAL_RANK", c.local_rank,
                      "in [0, LOCAL_WORLD_SIZE=" + std::to_string(c.local_world_size) + ")");
  }
  return Status::Ok();
}

}  // namespace

Result<RendezvousConfig> RendezvousConfigFromEnv(const EnvLookup& lookup) {
  const EnvLookup get = lookup ? lookup : EnvLookup(&GetEnv);
  const std::string auth_secret = get("COHORT_JOB_TOKEN").value_or("");
  const std::optional<std::string> master_addr = get("MASTER_ADDR");
  const std::optional<std::string> master_port = get("MASTER_PORT");
  const std::optional<std::string> rank = get("RANK");
  const std::optional<std::string> world_size = get("WORLD_SIZE");
  const std::optional<std::string> local_rank = get("LOCAL_RANK");
  const std::optional<std::string> local_world_size = get("LOCAL_WORLD_SIZE");

  // Not launched by torchrun (or launched as a single rank without a master):
  // run alone. Any other variable that is set must agree with that.
  const bool single_world = !world_size.has_value() || *world_size == "1";
  if (!master_addr.has_value() && single_world) {
    const bool none_set = !world_size && !master_port && !rank && !local_rank && !local_world_size;
    if (none_set || world_size.has_value()) {
      RendezvousConfig config;
      config.master_addr = "127.0.0.1";
      config.master_port = 0;
      if (rank) {
        COHORT_ASSIGN_OR_RETURN(config.rank, ParseInt("RANK", *rank, "in [0, WORLD_SIZE=1)"));
      }
      if (local_world_size) {
        COHORT_ASSIGN_OR_RETURN(
            config.local_world_size,
            ParseInt("LOCAL_WORLD_SIZE", *local_world_size, "in [1, WORLD_SIZE=1]"));
      }
      if (local_rank) {
        COHORT_ASSIGN_OR_RETURN(config.local_rank,
                                ParseInt("LOCAL_RANK", *local_rank, "in [0, LOCAL_WORLD_SIZE)"));
      }
      COHORT_RETURN_IF_ERROR(ValidateRanks(config));
      config.auth_secret = auth_secret;
      return config;
    }
    // e.g. RANK set without WORLD_SIZE: a half-configured launch, not a
    // single-rank run; fall through and report the first missing variable.
  }

  if (!master_addr) return NotSet("MASTER_ADDR");
  if (!master_port) return NotSet("MASTER_PORT");
  if (!rank) return NotSet("RANK");
  if (!world_size) return NotSet("WORLD_SIZE");
  if (!local_rank) return NotSet("LOCAL_RANK");
  if (!local_world_size) return NotSet("LOCAL_WORLD_SIZE");

  RendezvousConfig config;
  if (master_addr->empty()) {
    return Status::InvalidArgument(
        "MASTER_ADDR is empty: must be the host name or IP address of rank 0");
  }
  config.master_addr = *master_addr;
  COHORT_ASSIGN_OR_RETURN(config.master_port,
                          ParseInt("MASTER_PORT", *master_port, "a port number in [1, 65535]"));
  if (config.master_port < 1 || config.master_port > 65535) {
    return OutOfRange("MASTER_PORT", config.master_port, "in [1, 65535]");
  }
  COHORT_ASSIGN_OR_RETURN(config.world_size,
                          ParseInt("WORLD_SIZE", *world_size, "an integer >= 1"));
  COHORT_ASSIGN_OR_RETURN(config.rank, ParseInt("RANK", *rank, "an integer in [0, WORLD_SIZE)"));
  COHORT_ASSIGN_OR_RETURN(
      config.local_world_size,
      ParseInt("LOCAL_WORLD_SIZE", *local_world_size, "an integer in [1, WORLD_SIZE]"));
  COHORT_ASSIGN_OR_RETURN(
      config.local_rank,
      ParseInt("LOCAL_RANK", *local_rank, "an integer in [0, LOCAL_WORLD_SIZE)"));
  COHORT_RETURN_IF_ERROR(ValidateRanks(config));
  config.auth_secret = auth_secret;
  return config;
}

}  // namespace cohort::comm
