// See log_writer.h.
#include "log_writer.h"

#include <set>
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

void LogWriter::Enqueue(Item item) NO_THREAD_SAFETY_ANALYSIS {
  std::unique_lock<std::mutex> lock(mu_.native());
  drained_.wait(lock, [&]() NO_THREAD_SAFETY_ANALYSIS { return queued_bytes_ < kMaxQueuedBytes || stopping_; });
  queued_bytes_ += item.text.size();
  queue_.push_back(std::move(item));
  ++appended_;
  lock.unlock();
  cv_.notify_one();
}

void LogWriter::Append(std::string job_id, std::string text) {
  if (text.empty()) return;
  Item item;
  item.job_id = std::move(job_id);
  item.text = std::move(text);
  Enqueue(std::move(item));
}

void LogWriter::AppendChunk(std::string node_id, std::string job_id, int32_t attempt, int32_t rank, uint64_t offset,
                            std::string data) {
  if (data.empty()) return;
  Item item;
  item.job_id = std::move(job_id);
  item.text = std::move(data);
  item.chunk = true;
  item.node_id = std::move(node_id);
  item.attempt = attempt;
  item.rank = rank;
  item.offset = offset;
  Enqueue(std::move(item));
}

std::vector<LogWriter::Ack> LogWriter::TakeAcks() {
  std::map<std::tuple<std::string, std::string, int32_t, int32_t>, uint64_t> acks;
  {
    MutexLock lock(&mu_);
    acks.swap(acks_);
  }
  std::vector<Ack> out;
  out.reserve(acks.size());
  for (auto& [key, offset] : acks) {
    out.push_back(Ack{std::get<0>(key), std::get<1>(key), std::get<2>(key), std::get<3>(key), offset});
  }
  return out;
}

void LogWriter::Flush() NO_THREAD_SAFETY_ANALYSIS {
  std::unique_lock<std::mutex> lock(mu_.native());
  const uint64_t target = appended_;
  drained_.wait(lock, [&]() NO_THREAD_SAFETY_ANALYSIS { return written_ >= target; });
}

LogWriter::JobMarks& LogWriter::MarksFor(const std::string& job_id) {
  auto it = marks_.find(job_id);
  if (it != marks_.end()) return it->second;
  if (marks_.size() >= kMaxCachedJobMarks) marks_.clear();  // loaded again from the files when needed
  JobMarks& jm = marks_[job_id];
  auto loaded = store_->ReadMarks(job_id);
  if (!loaded.ok()) {
    COHORT_LOG(WARN) << "job=" << job_id << " log marks unreadable (" << loaded.status().ToString()
                     << "); chunks sent again may be written twice";
    return jm;
  }
  for (size_t slot = 0; slot < loaded->size(); ++slot) {
    const LogStore::Mark& m = (*loaded)[slot];
    WorkerMark& wm = jm.workers[{m.attempt, m.rank}];
    if (m.offset >= wm.offset) wm = WorkerMark{slot, m.offset};
  }
  jm.next_slot = loaded->size();
  return jm;
}

std::string LogWriter::Dedup(Item& item) {
  JobMarks& jm = MarksFor(item.job_id);
  auto [it, fresh] = jm.workers.try_emplace({item.attempt, item.rank});
  WorkerMark& wm = it->second;
  if (fresh) wm.slot = jm.next_slot++;
  const uint64_t end = item.offset + item.text.size();
  std::string text;
  if (end <= wm.offset) return text;  // all of it is in the log already
  if (item.offset < wm.offset) {
    text = item.text.substr(static_cast<size_t>(wm.offset - item.offset));
  } else {
    if (item.offset > wm.offset) {
      text = "cohort: " + std::to_string(item.offset - wm.offset) + " bytes of rank " + std::to_string(item.rank) +
             "'s output (attempt " + std::to_string(item.attempt) + ") never reached the head\n";
    }
    text += item.text;
  }
  wm.offset = end;
  return text;
}

void LogWriter::Run() {
  std::unique_lock<std::mutex> lock(mu_.native());
  for (;;) {
    cv_.wait(lock, [&]() NO_THREAD_SAFETY_ANALYSIS { return stopping_ || !queue_.empty(); });
    if (queue_.empty() && stopping_) return;
    std::deque<Item> batch;
    batch.swap(queue_);
    lock.unlock();
    size_t bytes = 0;
    for (const Item& item : batch) bytes += item.text.size();
    // Consecutive items of one job become one write; their workers' marks
    // are written after it.
    std::map<std::tuple<std::string, std::string, int32_t, int32_t>, uint64_t> acks;
    for (size_t i = 0; i < batch.size();) {
      const std::string job_id = batch[i].job_id;
      std::string text;
      std::set<std::pair<int32_t, int32_t>> marked;
      std::map<std::pair<int32_t, int32_t>, std::string> nodes;
      size_t j = i;
      for (; j < batch.size() && batch[j].job_id == job_id; ++j) {
        Item& item = batch[j];
        if (!item.chunk) {
          text += item.text;
          continue;
        }
        text += Dedup(item);
        marked.insert({item.attempt, item.rank});
        nodes[{item.attempt, item.rank}] = item.node_id;
      }
      Status st = store_->Append(job_id, text);
      if (!st.ok()) {
        COHORT_LOG(WARN) << "job=" << job_id << " log append failed: " << st.ToString();
        marks_.erase(job_id);  // back to the marks on disk: a resend is not taken for a duplicate
      } else if (!marked.empty()) {
        JobMarks& jm = MarksFor(job_id);
        for (const auto& key : marked) {
          const WorkerMark& wm = jm.workers[key];
          Status ms = store_->WriteMark(job_id, wm.slot, LogStore::Mark{key.first, key.second, wm.offset});
          if (!ms.ok()) {
            COHORT_LOG(WARN) << "job=" << job_id << " log mark write failed: " << ms.ToString();
            continue;
          }
          acks[{nodes[key], job_id, key.first, key.second}] = wm.offset;
        }
      }
      i = j;
    }
    lock.lock();
    for (auto& [key, offset] : acks) acks_[key] = offset;
    queued_bytes_ -= std::min(queued_bytes_, bytes);
    written_ += batch.size();
    drained_.notify_all();
  }
}

}  // namespace cohort::head
