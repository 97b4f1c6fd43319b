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
// Workers' output with an offset (AppendChunk): the writer keeps, per worker,
// how much of its stream the log holds (LogStore marks, loaded lazily after a
// restart), drops what it already holds (a chunk an agent sent again after a
// reconnection), notes a gap in the log, writes the mark after the bytes, and
// queues an acknowledgement for the agent (TakeAcks; the head's tick sends
// them). A head killed between the append and the mark write leaves that
// chunk to be written twice, never lost.
//
// Back-pressure: when more than kMaxQueuedBytes wait, Append blocks until the
// writer catches up, so a flood of output slows its sender instead of growing
// memory or dropping lines. Thread-safe; the destructor writes what is queued.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

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
  // A worker's output chunk starting at `offset` of its stream (LogChunk),
  // sent by the agent of `node_id`.
  void AppendChunk(std::string node_id, std::string job_id, int32_t attempt, int32_t rank, uint64_t offset,
                   std::string data) EXCLUDES(mu_);

  struct Ack {
    std::string node_id;
    std::string job_id;
    int32_t attempt = 0;
    int32_t rank = 0;
    uint64_t offset = 0;  // the log holds the worker's stream up to here
  };
  // The acknowledgements due since the last call (one per worker, the newest).
  std::vector<Ack> TakeAcks() EXCLUDES(mu_);
  // Returns once everything appended before the call is in the store.
  void Flush() EXCLUDES(mu_);

 private:
  struct Item {
    std::string job_id;
    std::string text;
    bool chunk = false;  // AppendChunk: the fields below are set
    std::string node_id;
    int32_t attempt = 0;
    int32_t rank = 0;
    uint64_t offset = 0;
  };
  // Writer thread only: each job's marks as loaded or written.
  struct WorkerMark {
    size_t slot = 0;
    uint64_t offset = 0;
  };
  struct JobMarks {
    std::map<std::pair<int32_t, int32_t>, WorkerMark> workers;  // (attempt, rank)
    size_t next_slot = 0;
  };
  static constexpr size_t kMaxCachedJobMarks = 4096;
  void Enqueue(Item item) EXCLUDES(mu_);
  void Run() NO_THREAD_SAFETY_ANALYSIS;  // waits on cv_ with mu_'s native mutex
  JobMarks& MarksFor(const std::string& job_id);
  // Trims or drops a chunk by its worker's mark (advanced past it); returns
  // the text to append.
  std::string Dedup(Item& item);

  LogStore* const store_;
  Mutex mu_;
  std::condition_variable cv_;     // work arrived / stopping
  std::condition_variable drained_;  // written_ advanced
  std::deque<Item> queue_ GUARDED_BY(mu_);
  size_t queued_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t appended_ GUARDED_BY(mu_) = 0;  // items ever queued
  uint64_t written_ GUARDED_BY(mu_) = 0;   // items ever written
  bool stopping_ GUARDED_BY(mu_) = false;
  std::map<std::tuple<std::string, std::string, int32_t, int32_t>, uint64_t> acks_ GUARDED_BY(mu_);
  std::unordered_map<std::string, JobMarks> marks_;  // writer thread only
  std::thread thread_;
};

}  // namespace cohort::head
