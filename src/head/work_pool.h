// WorkPool: a fixed set of threads for the head's slow work (bucket
// listings, package writes and zip checks), so that none of it runs on the
// HTTP loop, the gRPC threads or under the control lock.
//
// Bounded: at most `max_queued` tasks wait; TrySubmit refuses more (the
// caller answers 503 or retries later), so a flood of uploads cannot grow
// memory without limit. A task that blocks (a hung bucket) holds one thread;
// the callers enforce their own deadlines on the answer (ResultsFinalizer).
//
// Thread-safe. Stop() (or the destructor) finishes the running tasks, drops
// the queued ones and joins.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "cohort/common/thread_annotations.h"

namespace cohort::head {

class WorkPool {
 public:
  WorkPool(size_t threads, size_t max_queued);
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // Queues `task`; false when the queue is full or the pool stopped.
  bool TrySubmit(std::function<void()> task) EXCLUDES(mu_);
  void Stop() EXCLUDES(mu_);
  size_t queued() const EXCLUDES(mu_);

 private:
  // Waits on cv_ with mu_'s native mutex, which the analysis cannot follow.
  void Run() NO_THREAD_SAFETY_ANALYSIS;

  const size_t max_queued_;
  mutable Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // constant after construction (joined by Stop)
};

}  // namespace cohort::head
