// Retry policy shared by the cloud backends: truncated exponential backoff
// with jitter, bounded by a total deadline, honouring Retry-After.
//
// Which failures are transient: HTTP 408, 429 and 5xx, and transport
// failures (Unavailable from net::SendHttp). Every other 4xx is final.
// Whether a step may be repeated is the caller's decision (idempotency).
#pragma once

#include <chrono>
#include <random>
#include <string>

#include "cohort/common/status.h"

namespace cohort::storage {

struct RetryPolicy {
  std::chrono::milliseconds initial_backoff{1000};
  double multiplier = 2.0;
  std::chrono::milliseconds max_backoff{32000};
  std::chrono::milliseconds total_deadline{120000};  // from the first attempt
  int max_attempts = 1000;                           // deadline usually ends it first
};

bool IsRetryableHttpStatus(long status);

// Tracks one logical operation's attempts. Usage:
//   RetryState retry(policy);
//   while (true) { ...attempt...; if (ok) break;
//     if (!retryable || !retry.WaitBeforeNext(retry_after_header)) return error + retry.Summary(); }
class RetryState {
 public:
  explicit RetryState(const RetryPolicy& policy);
  // Sleeps the next backoff (or Retry-After seconds, if given and shorter
  // than the deadline); false when the deadline or attempt limit is reached.
  bool WaitBeforeNext(const std::string& retry_after = "");
  // Progress was made (e.g. a resumable chunk was accepted): start the
  // backoff over.
  void ResetBackoff() { attempt_in_streak_ = 0; }
  int attempts() const { return attempts_; }
  // " after N attempts"
  std::string Summary() const;

 private:
  RetryPolicy policy_;
  std::chrono::steady_clock::time_point start_;
  int attempts_ = 1;
  int attempt_in_streak_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace cohort::storage
