// Outbox implementation; see outbox.h.
#include "outbox.h"

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

size_t Outbox::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

uint64_t Outbox::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace cohort::agent
