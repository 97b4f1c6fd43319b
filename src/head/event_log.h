// EventLog: the cluster's recent events (node joined/left/dead, job status
// changes) for GET /api/events and the dashboard, newest last; in memory,
// the last kMaxEvents. Not thread-safe: the Cluster owns it under its
// control lock.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include <nlohmann/json.hpp>

namespace cohort::head {

class EventLog {
 public:
  static constexpr size_t kMaxEvents = 1000;

  // `message` may hold anything a job or agent sent; it is stored as valid
  // UTF-8 (invalid sequences replaced) and cut at 4 KiB.
  void Add(int64_t time_ms, const std::string& kind, const std::string& id, const std::string& message);
  // {"events": [...seq > since...], "next": last seq}
  nlohmann::json Since(int64_t since) const;
  size_t size() const { return events_.size(); }

 private:
  struct Event {
    int64_t seq;
    int64_t time_ms;
    std::string kind;  // "node" | "job"
    std::string id;    // node_id or job id
    std::string message;
  };
  std::deque<Event> events_;
  int64_t next_seq_ = 1;
};

}  // namespace cohort::head
