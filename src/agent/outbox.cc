// Outbox implementation; see outbox.h.
#include "outbox.h"

#include <algorithm>

#include "cohort/common/logging.h"

namespace cohort::agent {

Outbox::Entry Outbox::MakeEntry(rpc::AgentMessage msg) {
  Entry e;
  e.droppable = msg.has_log() || msg.has_metrics();
  e.bytes = msg.ByteSizeLong();
  e.msg = std::move(msg);
  return e;
}

void Outbox::Push(rpc::AgentMessage msg) {
  std::lock_guard<std::mutex> lock(mu_);
  if (msg.has_worker_exited()) {
    recent_exits_.push_back(msg.worker_exited());
    while (recent_exits_.size() > kMaxRecentExits) recent_exits_.pop_front();
    // Only the newest keep their results listings: bounds a re-registration.
    if (recent_exits_.size() > kRecentExitsWithResults)
      recent_exits_[recent_exits_.size() - 1 - kRecentExitsWithResults].clear_results();
  }
  Entry e = MakeEntry(std::move(msg));
  if (e.droppable) droppable_bytes_ += e.bytes;
  queue_.push_back(std::move(e));
  TrimLocked();
  cv_.notify_all();
}

std::vector<rpc::WorkerExited> Outbox::RecentExits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {recent_exits_.begin(), recent_exits_.end()};
}

void Outbox::PushFront(rpc::AgentMessage msg) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e = MakeEntry(std::move(msg));
  if (e.droppable) droppable_bytes_ += e.bytes;
  queue_.push_front(std::move(e));
  TrimLocked();
  cv_.notify_all();
}

void Outbox::TrimLocked() {
  if (droppable_bytes_ <= max_bytes_) return;
  uint64_t before = dropped_;
  for (auto it = queue_.begin(); it != queue_.end() && droppable_bytes_ > max_bytes_;) {
    if (it->droppable) {
      droppable_bytes_ -= it->bytes;
      ++dropped_;
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  // Log the first drop of each thousand, not every one (this is a hot path
  // while the head is away and a worker keeps printing).
  if (before / 1000 != dropped_ / 1000 || before == 0) {
    COHORT_LOG(WARN) << "agent: the head is not taking messages fast enough; dropped "
                     << dropped_ << " log/metric messages so far (buffer "
                     << max_bytes_ << " bytes)";
  }
}

std::optional<rpc::AgentMessage> Outbox::Take(Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_until(lock, deadline.when(), [&] { return interrupted_ || !queue_.empty(); });
  if (interrupted_) {
    interrupted_ = false;
    return std::nullopt;
  }
  if (queue_.empty()) return std::nullopt;
  Entry e = std::move(queue_.front());
  queue_.pop_front();
  if (e.droppable) droppable_bytes_ -= e.bytes;
  cv_.notify_all();  // WaitEmpty()
  return std::move(e.msg);
}

void Outbox::Interrupt() {
  std::lock_guard<std::mutex> lock(mu_);
  interrupted_ = true;
  cv_.notify_all();
}

bool Outbox::WaitEmpty(Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, deadline.when(), [&] { return queue_.empty(); });
}

void Outbox::Sent(rpc::AgentMessage msg) {
  if (!msg.has_log() || !msg.log().has_offset()) return;
  std::lock_guard<std::mutex> lock(mu_);
  WorkerKey key{msg.log().job_id(), msg.log().attempt(), msg.log().rank()};
  SentChunk c;
  c.seq = ++sent_seq_;
  c.bytes = msg.log().data().size();
  c.msg = std::move(msg);
  unacked_bytes_ += c.bytes;
  unacked_[key].push_back(std::move(c));
  // Over the bound: forget the oldest sent chunk (of whichever worker).
  while (unacked_bytes_ > kMaxUnackedBytes) {
    auto oldest = unacked_.end();
    for (auto it = unacked_.begin(); it != unacked_.end(); ++it) {
      if (oldest == unacked_.end() || it->second.front().seq < oldest->second.front().seq) oldest = it;
    }
    unacked_bytes_ -= oldest->second.front().bytes;
    oldest->second.pop_front();
    if (oldest->second.empty()) unacked_.erase(oldest);
  }
}

void Outbox::Ack(const rpc::LogAck& ack) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const rpc::LogMark& mark : ack.marks()) {
    auto it = unacked_.find(WorkerKey{mark.job_id(), mark.attempt(), mark.rank()});
    if (it == unacked_.end()) continue;
    std::deque<SentChunk>& chunks = it->second;
    while (!chunks.empty() && chunks.front().msg.log().offset() + chunks.front().bytes <= mark.offset()) {
      unacked_bytes_ -= chunks.front().bytes;
      acked_bytes_ += chunks.front().bytes;
      chunks.pop_front();
    }
    if (chunks.empty()) unacked_.erase(it);
  }
}

void Outbox::Requeue() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<SentChunk*> all;
  for (auto& [key, chunks] : unacked_) {
    for (SentChunk& c : chunks) all.push_back(&c);
  }
  std::sort(all.begin(), all.end(), [](const SentChunk* a, const SentChunk* b) { return a->seq < b->seq; });
  for (auto it = all.rbegin(); it != all.rend(); ++it) {  // in the order they were sent
    Entry e = MakeEntry(std::move((*it)->msg));
    droppable_bytes_ += e.bytes;
    queue_.push_front(std::move(e));
  }
  unacked_.clear();
  unacked_bytes_ = 0;
  TrimLocked();
  cv_.notify_all();
}

size_t Outbox::acked_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return acked_bytes_;
}

size_t Outbox::unacked_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return unacked_bytes_;
}

size_t Outbox::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

uint64_t Outbox::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace cohort::agent
