// See log_writer.h.
#include "log_writer.h"

#include <vector>

#include "cohort/common/logging.h"

namespace cohort::head {

LogWriter::LogWriter(LogStore* store) : store_(store) { thread_ = std::thread([this] { Run(); }); }

LogWriter::~LogWriter() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void LogWriter::Append(std::string job_id, std::string text) NO_THREAD_SAFETY_ANALYSIS {
  if (text.empty()) return;
  std::unique_lock<std::mutex> lock(mu_.native());
  drained_.wait(lock, [&]() NO_THREAD_SAFETY_ANALYSIS { return queued_bytes_ < kMaxQueuedBytes || stopping_; });
  queued_bytes_ += text.size();
  queue_.push_back(Item{std::move(job_id), std::move(text)});
  ++appended_;
  lock.unlock();
  cv_.notify_one();
}

void LogWriter::Flush() NO_THREAD_SAFETY_ANALYSIS {
  std::unique_lock<std::mutex> lock(mu_.native());
  const uint64_t target = appended_;
  drained_.wait(lock, [&]() NO_THREAD_SAFETY_ANALYSIS { return written_ >= target; });
}

void LogWriter::Run() {
  std::unique_lock<std::mutex> lock(mu_.native());
  for (;;) {
    cv_.wait(lock, [&]() NO_THREAD_SAFETY_ANALYSIS { return stopping_ || !queue_.empty(); });
    if (queue_.empty() && stopping_) return;
    std::deque<Item> batch;
    batch.swap(queue_);
    lock.unlock();
    // Consecutive items of one job become one write.
    size_t bytes = 0;
    for (size_t i = 0; i < batch.size();) {
      std::string text = std::move(batch[i].text);
      size_t j = i + 1;
      for (; j < batch.size() && batch[j].job_id == batch[i].job_id; ++j) text += batch[j].text;
      bytes += text.size();
      Status st = store_->Append(batch[i].job_id, text);
      if (!st.ok()) COHORT_LOG(WARN) << "job=" << batch[i].job_id << " log append failed: " << st.ToString();
      i = j;
    }
    lock.lock();
    queued_bytes_ -= std::min(queued_bytes_, bytes);
    written_ += batch.size();
    drained_.notify_all();
  }
}

}  // namespace cohort::head
