// See results_finalizer.h.
#include "results_finalizer.h"

#include "cohort/common/json.h"
#include "cohort/common/logging.h"

namespace cohort::head {

ResultsFinalizer::ResultsFinalizer(WorkPool* pool, const Clock* clock, Lister lister,
                                   std::chrono::milliseconds deadline)
    : pool_(pool), clock_(clock), lister_(std::move(lister)), deadline_(deadline) {}

Result<nlohmann::json> ResultsFinalizer::ToListing(const std::string& uri,
                                                   const Result<std::vector<storage::ObjectInfo>>& objects) {
  if (!objects.ok()) return objects.status();
  if (objects->empty()) return Status::NotFound("no objects were written there");
  auto listing = nlohmann::json::array();
  auto base = storage::ParseUri(uri);
  for (const auto& o : *objects) {
    storage::Uri object_uri = base.ok() ? *base : storage::Uri{};
    object_uri.key = o.key;
    listing.push_back({{"uri", SanitizeUtf8(object_uri.ToString())},
                       {"size_bytes", o.size_bytes},
                       {"crc32c", SanitizeUtf8(o.crc32c)}});
  }
  return listing;
}

void ResultsFinalizer::Start(const std::string& job_id, const std::string& uri) {
  MutexLock lock(&mu_);
  Flight& f = flights_[job_id];
  f.uri = uri;
  f.started = clock_->Now();
  f.generation = next_generation_++;
  f.submitted = false;
  Submit(job_id, f);
}

void ResultsFinalizer::Submit(const std::string& job_id, Flight& f) {
  const uint64_t generation = f.generation;
  const std::string uri = f.uri;
  f.submitted = pool_->TrySubmit([this, job_id, uri, generation] {
    auto listing = ToListing(uri, lister_(uri));
    MutexLock lock(&mu_);
    auto it = flights_.find(job_id);
    if (it == flights_.end() || it->second.generation != generation) return;  // timed out or restarted
    flights_.erase(it);
    done_.push_back(Outcome{job_id, uri, std::move(listing)});
  });
}

std::vector<ResultsFinalizer::Outcome> ResultsFinalizer::Take() {
  MutexLock lock(&mu_);
  const auto now = clock_->Now();
  for (auto it = flights_.begin(); it != flights_.end();) {
    if (now - it->second.started > deadline_) {
      done_.push_back(Outcome{it->first, it->second.uri,
                              Status::DeadlineExceeded("listing took longer than " +
                                                       std::to_string(deadline_.count() / 1000) + " s")});
      it = flights_.erase(it);
      continue;
    }
    if (!it->second.submitted) Submit(it->first, it->second);
    ++it;
  }
  std::vector<Outcome> out;
  out.swap(done_);
  return out;
}

size_t ResultsFinalizer::in_flight() const {
  MutexLock lock(&mu_);
  return flights_.size();
}

}  // namespace cohort::head
