// See state_writer.h.
#include "state_writer.h"

#include "cohort/common/logging.h"

namespace cohort::head {

Status StateWriter::Check(Status st, const std::string& what) {
  if (st.ok()) return st;
  if (!failed_.exchange(true)) {
    std::lock_guard<std::mutex> lock(failure_mu_);
    failure_ = Status::Unavailable("the head's state store failed (" + what + ": " + st.ToString() +
                                   "); the head refuses changes until it is restarted, since nobody can "
                                   "know what reached the disk");
    COHORT_LOG(ERROR) << failure_.message();
  }
  return failure();
}

Status StateWriter::failure() const {
  if (!failed_.load()) return Status::Ok();
  std::lock_guard<std::mutex> lock(failure_mu_);
  return failure_;
}

void StateWriter::TEST_FailWrites(const std::string& why) { injected_ = why; }

#define COHORT_STATE_WRITE(what, call)                              \
  do {                                                              \
    if (!healthy()) return failure();                               \
    if (!injected_.empty()) return Check(Status::IoError(injected_), what); \
    return Check(call, what);                                       \
  } while (0)

Status StateWriter::PutJob(const std::string& id, const std::string& status, int64_t start_ms, std::optional<int64_t> end_ms,
                           const std::string& record_json) {
  COHORT_STATE_WRITE("job " + id, store_->PutJob(id, status, start_ms, end_ms, record_json));
}

Status StateWriter::PutJobAndEvent(const std::string& id, const std::string& status, int64_t start_ms,
                                   std::optional<int64_t> end_ms, const std::string& record_json, int64_t event_ms,
                                   const std::string& event_message) {
  COHORT_STATE_WRITE("job " + id,
                     store_->PutJobAndEvent(id, status, start_ms, end_ms, record_json, event_ms, event_message));
}

Status StateWriter::DeleteJob(const std::string& id) {
  COHORT_STATE_WRITE("delete of job " + id, store_->DeleteJob(id));
}

Status StateWriter::PutNode(const std::string& node_id, const std::string& address, const std::string& state,
                            int64_t first_seen_ms, int64_t last_seen_ms, const std::string& info_json) {
  COHORT_STATE_WRITE("node " + node_id,
                     store_->PutNode(node_id, address, state, first_seen_ms, last_seen_ms, info_json));
}

Status StateWriter::AppendMetrics(const std::string& id, const std::vector<MetricsReport>& reports) {
  COHORT_STATE_WRITE("metrics of job " + id, store_->AppendMetrics(id, reports));
}

#undef COHORT_STATE_WRITE

}  // namespace cohort::head
