// JobTokens: the per-job credential. Every worker of a job gets
// COHORT_JOB_TOKEN in its environment (never the cluster's admin token);
// with it a job can read its own record, logs and metrics over the API and
// nothing else, and its ranks authenticate each other in the rendezvous
// (docs/comm.md "Authentication").
//
// A token is "cohort-job.<hex HMAC-SHA256(secret, job id)>.<job id>": it
// names its job and is checked without a lookup, and it stays valid across
// head restarts because the secret is kept in <state_dir>/job_secret (0600,
// 32 random bytes, created on first start).
//
// Thread-safe (immutable after Load).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cohort/common/status.h"

namespace cohort::head {

class JobTokens {
 public:
  // Reads <state_dir>/job_secret, creating it when missing.
  static Result<JobTokens> Load(const std::string& state_dir);
  explicit JobTokens(std::string secret) : secret_(std::move(secret)) {}
  // A secret of 32 random bytes, not stored (until Load replaces it).
  static JobTokens Random();

  std::string TokenFor(std::string_view job_id) const;
  // The job a token belongs to, when its MAC is right (constant-time).
  std::optional<std::string> JobOf(std::string_view token) const;

 private:
  std::string Mac(std::string_view job_id) const;  // lower-case hex
  std::string secret_;
};

// What a job's token may do: GET its own job (/api/jobs/<id>), its logs
// (/api/jobs/<id>/logs, .../logs/tail) and its metrics (/api/jobs/<id>/metrics).
bool JobTokenMayAccess(std::string_view job_id, std::string_view method, std::string_view path);

}  // namespace cohort::head
