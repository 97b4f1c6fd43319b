// StateWriter: the head's only path to the state store for job and node
// records, with leveldb's rule for write errors: a failed write is sticky.
//
// Once a write of the state store fails, nobody can know what reached the
// disk, so the head stops accepting mutations: every later write is refused
// with the first error, /api/health answers 503 with the reason, and the API
// refuses submit/stop/delete/upload with 503 until the head is restarted
// (which reloads the store from what is on disk).
//
// Not thread-safe: owned by the Cluster under its control lock (writes) --
// except failure()/healthy(), which read an atomic copy and may be called
// from any thread (the health route).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cohort/common/status.h"
#include "cohort/head/state_store.h"

namespace cohort::head {

class StateWriter {
 public:
  explicit StateWriter(StateStore* store) : store_(store) {}

  Status PutJob(const std::string& id, const std::string& status, int64_t start_ms, std::optional<int64_t> end_ms,
                const std::string& record_json);
  Status PutJobAndEvent(const std::string& id, const std::string& status, int64_t start_ms, std::optional<int64_t> end_ms,
                        const std::string& record_json, int64_t event_ms, const std::string& event_message);
  Status DeleteJob(const std::string& id);
  Status PutNode(const std::string& node_id, const std::string& address, const std::string& state,
                 int64_t first_seen_ms, int64_t last_seen_ms, const std::string& info_json);
  Status AppendMetrics(const std::string& id, const std::vector<MetricsReport>& reports);

  // OK, or the first failed write (sticky). Any thread.
  Status failure() const;
  bool healthy() const { return !failed_.load(); }

  StateStore* store() const { return store_; }

  // Tests: make every later write fail as if the disk did.
  void TEST_FailWrites(const std::string& why);

 private:
  Status Check(Status st, const std::string& what);

  StateStore* const store_;
  std::atomic<bool> failed_{false};
  mutable std::mutex failure_mu_;  // guards failure_ (read from the health route)
  Status failure_;
  std::string injected_;  // TEST_FailWrites
};

}  // namespace cohort::head
