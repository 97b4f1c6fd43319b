// LogWriter: the head's job-log appends, off the control lock.
//
// Log bytes arrive from agents (their workers' output) and from the head's
// own notes ("cohort: attempt 0 failed: ..."), both while the control lock is
// held. Writing them there made every state change wait for the file system
// (creating a job's log file costs an ext4 inode allocation), so they are
// queued here and one thread appends them to the LogStore, in order per job.
//
// Readers that must see everything appended so far (the log tail closing on
// a terminal job, a job's final log, the failure message built from its last
// lines) call Flush() first, without holding the control lock.
//
// Back-pressure: when more than kMaxQueuedBytes wait, Append blocks until the
// writer catches up, so a flood of output slows its sender instead of growing
// memory or dropping lines. Thread-safe; the destructor writes what is queued.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>

#include "cohort/common/thread_annotations.h"
#include "cohort/head/log_store.h"

namespace cohort::head {

class LogWriter {
 public:
  static constexpr size_t kMaxQueuedBytes = size_t{64} << 20;

  explicit LogWriter(LogStore* store);
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  void Append(std::string job_id, std::string text) EXCLUDES(mu_);
  // Returns once everything appended before the call is in the store.
  void Flush() EXCLUDES(mu_);

 private:
  struct Item {
    std::string job_id;
    std::string text;
  };
  void Run() NO_THREAD_SAFETY_ANALYSIS;  // waits on cv_ with mu_'s native mutex

  LogStore* const store_;
  Mutex mu_;
  std::condition_variable cv_;     // work arrived / stopping
  std::condition_variable drained_;  // written_ advanced
  std::deque<Item> queue_ GUARDED_BY(mu_);
  size_t queued_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t appended_ GUARDED_BY(mu_) = 0;  // items ever queued
  uint64_t written_ GUARDED_BY(mu_) = 0;   // items ever written
  bool stopping_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace cohort::head
