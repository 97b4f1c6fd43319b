// See event_log.h.
#include "event_log.h"

#include "cohort/common/json.h"

namespace cohort::head {

void EventLog::Add(int64_t time_ms, const std::string& kind, const std::string& id, const std::string& message) {
  constexpr size_t kMaxMessage = 4096;
  events_.push_back(Event{next_seq_++, time_ms, kind, SanitizeUtf8(id),
                          SanitizeUtf8(std::string_view(message).substr(0, kMaxMessage))});
  while (events_.size() > kMaxEvents) events_.pop_front();
}

nlohmann::json EventLog::Since(int64_t since) const {
  auto out = nlohmann::json::array();
  int64_t next = since;
  for (const auto& e : events_) {
    if (e.seq <= since) continue;
    out.push_back({{"seq", e.seq}, {"time_ms", e.time_ms}, {"kind", e.kind}, {"id", e.id}, {"message", e.message}});
    next = e.seq;
  }
  return {{"events", out}, {"next", next}};
}

}  // namespace cohort::head
