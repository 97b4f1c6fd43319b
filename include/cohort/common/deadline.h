// Deadline: an absolute point on the steady clock that every blocking call takes.
#pragma once

#include <chrono>

namespace cohort {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Deadline(Clock::time_point when) : when_(when) {}
  static Deadline After(std::chrono::milliseconds timeout) { return Deadline(Clock::now() + timeout); }
  static Deadline Never() { return Deadline(Clock::time_point::max()); }

  Clock::time_point when() const { return when_; }
  bool Expired() const { return Clock::now() >= when_; }
  // Milliseconds left, clamped to [0, INT_MAX]; for poll(2).
  int RemainingMsForPoll() const;

 private:
  Clock::time_point when_;
};

inline int Deadline::RemainingMsForPoll() const {
  if (when_ == Clock::time_point::max()) return 1 << 30;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(when_ - Clock::now()).count();
  if (left <= 0) return 0;
  return left > (1 << 30) ? (1 << 30) : static_cast<int>(left);
}

}  // namespace cohort
