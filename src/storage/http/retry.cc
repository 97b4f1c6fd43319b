// RetryState; see retry.h.
#include "http/retry.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <thread>

namespace cohort::storage {

bool IsRetryableHttpStatus(long status) { return status == 408 || status == 429 || status >= 500; }

RetryState::RetryState(const RetryPolicy& policy)
    : policy_(policy), start_(std::chrono::steady_clock::now()), rng_(std::random_device{}()) {}

bool RetryState::WaitBeforeNext(const std::string& retry_after) {
  if (attempts_ >= policy_.max_attempts) return false;
  using namespace std::chrono;
  const double base = static_cast<double>(policy_.initial_backoff.count()) *
                      std::pow(policy_.multiplier, attempt_in_streak_);
  auto delay = milliseconds(static_cast<int64_t>(std::min<double>(base, policy_.max_backoff.count())));
  // Jitter: up to the initial backoff on top (Google's recipe uses 0-1000 ms with a 1 s initial).
  std::uniform_int_distribution<int64_t> jitter(0, std::max<int64_t>(1, policy_.initial_backoff.count()));
  delay += milliseconds(jitter(rng_));
  if (!retry_after.empty()) {
    char* end = nullptr;
    long secs = std::strtol(retry_after.c_str(), &end, 10);
    if (end != retry_after.c_str() && secs >= 0) delay = std::max(delay, milliseconds(secs * 1000));
  }
  const auto elapsed = duration_cast<milliseconds>(steady_clock::now() - start_);
  if (elapsed + delay >= policy_.total_deadline) return false;
  std::this_thread::sleep_for(delay);
  ++attempts_;
  ++attempt_in_streak_;
  return true;
}

std::string RetryState::Summary() const {
  return " after " + std::to_string(attempts_) + (attempts_ == 1 ? " attempt" : " attempts");
}

}  // namespace cohort::storage
