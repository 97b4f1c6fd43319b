// The head's clock: every timeout, deadline and timestamp of the control
// plane reads time through this interface (leveldb's Env, for time only),
// so heartbeat timeouts, restarts and pending deadlines are unit-tested with
// FakeClock instead of sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace cohort::head {

class Clock {
 public:
  using Steady = std::chrono::steady_clock;
  virtual ~Clock() = default;
  // Monotonic time, for timeouts and deadlines.
  virtual Steady::time_point Now() const = 0;
  // Wall time in ms since the epoch, for records shown to users.
  virtual int64_t WallMs() const = 0;
};

// The process's clocks. Thread-safe; never destroyed.
Clock* RealClock();

// A clock that moves only when told. Thread-safe.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t wall_ms = 1'700'000'000'000) : steady_ms_(1'000'000), wall_ms_(wall_ms) {}
  Steady::time_point Now() const override {
    return Steady::time_point(std::chrono::milliseconds(steady_ms_.load()));
  }
  int64_t WallMs() const override { return wall_ms_.load(); }
  void Advance(std::chrono::milliseconds d) {
    steady_ms_ += d.count();
    wall_ms_ += d.count();
  }

 private:
  std::atomic<int64_t> steady_ms_;
  std::atomic<int64_t> wall_ms_;
};

}  // namespace cohort::head
