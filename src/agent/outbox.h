// Outbox: the agent's queue of messages for the head, kept across
// reconnections.
//
// The supervisor and the preparation thread Push() (worker started/exited,
// logs, metrics); the session's writer thread takes them from the front,
// writes them to the head stream, and puts one back at the front if the write
// failed, so a message queued while the head is unreachable is sent after the
// next registration. Bounded: when the droppable messages (LogChunk,
// MetricReport) exceed max_bytes, the oldest of them are dropped and counted;
// WorkerStarted/WorkerExited are never dropped (they are small and few).
//
// Log chunks the writer sent (those with LogChunk.offset) are kept until the
// head's LogAck covers them (Sent/Ack); at the next registration Requeue()
// puts those still kept back at the front, so chunks lost in flight with a
// broken stream or a killed head are sent again. Also bounded: past
// kMaxUnackedBytes the oldest are forgotten (the head notes the gap).
//
// Thread-safe (one mutex). Invariant: droppable_bytes_ == sum of the sizes of
// the droppable entries in queue_; unacked_bytes_ == sum over unacked_.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cohort.pb.h"
#include "cohort/common/deadline.h"

namespace cohort::agent {

class Outbox {
 public:
  explicit Outbox(size_t max_bytes) : max_bytes_(max_bytes) {}

  void Push(rpc::AgentMessage msg);
  // Puts back a message the writer took but could not send.
  void PushFront(rpc::AgentMessage msg);

  // Waits until a message is queued, `deadline` passes, or Interrupt() was
  // called after the last Take(); nullopt unless a message was taken.
  std::optional<rpc::AgentMessage> Take(Deadline deadline);
  // Wakes a Take() in progress (and makes the next one return at once).
  void Interrupt();

  // Waits until the queue is empty or `deadline` passes; true when empty.
  bool WaitEmpty(Deadline deadline);

  // A LogChunk with an offset that the writer has written to the stream.
  void Sent(rpc::AgentMessage msg);
  // Forgets the sent chunks the marks cover.
  void Ack(const rpc::LogAck& ack);
  // The sent chunks not acknowledged go back to the front of the queue, in
  // the order they were sent. Call before the first Take()
  // on a new stream.
  void Requeue();
  static constexpr size_t kMaxUnackedBytes = size_t{16} << 20;
  size_t unacked_bytes() const;
  // Log bytes acknowledged by the head, in all (for tests and diagnostics).
  size_t acked_bytes() const;

  size_t size() const;
  // Droppable messages dropped for lack of room so far.
  uint64_t dropped() const;
  // The last kMaxRecentExits WorkerExited messages pushed, oldest first: sent
  // again at every registration, so an exit the head never received is not
  // lost when its stream or the head dies.
  static constexpr size_t kMaxRecentExits = 1024;
  // Of those, the newest this many keep WorkerExited.results.
  static constexpr size_t kRecentExitsWithResults = 32;
  std::vector<rpc::WorkerExited> RecentExits() const;

 private:
  struct Entry {
    rpc::AgentMessage msg;
    size_t bytes = 0;
    bool droppable = false;
  };
  static Entry MakeEntry(rpc::AgentMessage msg);
  void TrimLocked();

  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;     // GUARDED_BY(mu_)
  size_t droppable_bytes_ = 0;  // GUARDED_BY(mu_)
  uint64_t dropped_ = 0;        // GUARDED_BY(mu_)
  bool interrupted_ = false;    // GUARDED_BY(mu_)
  std::deque<rpc::WorkerExited> recent_exits_;  // GUARDED_BY(mu_)
  struct SentChunk {
    uint64_t seq = 0;  // order of sending, across workers
    rpc::AgentMessage msg;
    size_t bytes = 0;
  };
  using WorkerKey = std::tuple<std::string, int32_t, int32_t>;  // job, attempt, rank
  std::map<WorkerKey, std::deque<SentChunk>> unacked_;         // GUARDED_BY(mu_)
  size_t unacked_bytes_ = 0;                                    // GUARDED_BY(mu_)
  size_t acked_bytes_ = 0;                                      // GUARDED_BY(mu_)
  uint64_t sent_seq_ = 0;                                       // GUARDED_BY(mu_)
};

}  // namespace cohort::agent
