// ResultsFinalizer: a job with a results_uri succeeds only once its results
// are listed back from the bucket (objects and their CRC32C in the job's
// details). Listing is network I/O with retries, so it runs on the head's
// work pool, never on the tick thread or under the control lock: a hung or
// slow bucket delays only its own job, never heartbeats or scheduling.
//
// Start() queues a listing; Take() returns the listings that completed and
// those that passed their deadline (as DeadlineExceeded; a late answer is
// then dropped). The Cluster calls Take() on its tick and applies the
// outcomes under its control lock. Object keys are turned into valid UTF-8
// here (a job may write any file name), so a listing can always be stored
// and served.
//
// Thread-safe (own leaf lock, never held while calling out).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clock.h"
#include "cohort/common/status.h"
#include "cohort/common/thread_annotations.h"
#include "cohort/storage/blob_store.h"
#include "work_pool.h"

namespace cohort::head {

class ResultsFinalizer {
 public:
  using Lister = std::function<Result<std::vector<storage::ObjectInfo>>(const std::string& uri)>;
  struct Outcome {
    std::string job_id;
    std::string uri;
    // [{"uri", "size_bytes", "crc32c"}...] (non-empty), or why not.
    Result<nlohmann::json> listing = Status::Internal("unset");
  };

  ResultsFinalizer(WorkPool* pool, const Clock* clock, Lister lister, std::chrono::milliseconds deadline);

  // Lists `uri` for `job_id` (again, if one is in flight: the older answer is
  // dropped). When the pool is full, the listing is retried on later ticks.
  void Start(const std::string& job_id, const std::string& uri) EXCLUDES(mu_);
  std::vector<Outcome> Take() EXCLUDES(mu_);
  size_t in_flight() const EXCLUDES(mu_);

  // The listing as stored: full URIs, sizes, CRC32C; InvalidArgument when empty.
  static Result<nlohmann::json> ToListing(const std::string& uri,
                                          const Result<std::vector<storage::ObjectInfo>>& objects);

 private:
  struct Flight {
    std::string uri;
    Clock::Steady::time_point started;
    uint64_t generation = 0;
    bool submitted = false;  // on the pool (else waits for room)
  };
  void Submit(const std::string& job_id, Flight& flight) REQUIRES(mu_);

  WorkPool* const pool_;
  const Clock* const clock_;
  const Lister lister_;
  const std::chrono::milliseconds deadline_;
  mutable Mutex mu_;
  std::map<std::string, Flight> flights_ GUARDED_BY(mu_);
  std::vector<Outcome> done_ GUARDED_BY(mu_);
  uint64_t next_generation_ GUARDED_BY(mu_) = 1;
};

}  // namespace cohort::head
