// RealClock; see clock.h.
#include "clock.h"

namespace cohort::head {
namespace {
class SystemClock : public Clock {
 public:
  Steady::time_point Now() const override { return Steady::now(); }
  int64_t WallMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};
}  // namespace

Clock* RealClock() {
  static SystemClock* clock = new SystemClock();
  return clock;
}

}  // namespace cohort::head
