// NewMemoryStore: an in-process Store (a map under a mutex) for ranks that are
// threads of one process. Thread-safe; Get blocks on a condition variable.
#include <charconv>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <system_error>

#include "cohort/comm/store.h"

namespace cohort::comm {
namespace {

class MemoryStore : public Store {
 public:
  Status Set(const std::string& key, const std::string& value) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      data_[key] = value;
    }
    cv_.notify_all();
    return Status::Ok();
  }

  Result<std::string> Get(const std::string& key, Deadline deadline) override {
    std::unique_lock<std::mutex> lock(mu_);
    auto present = [&] { return data_.count(key) > 0; };
    if (deadline.when() == Deadline::Clock::time_point::max()) {
      cv_.wait(lock, present);
    } else if (!cv_.wait_until(lock, deadline.when(), present)) {
      return Status::DeadlineExceeded("key '" + key +
                                      "' was not set in the in-memory store before the deadline");
    }
    return data_[key];
  }

  Result<int64_t> Add(const std::string& key, int64_t delta) override {
    int64_t result = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      int64_t current = 0;
      auto it = data_.find(key);
      if (it != data_.end()) {
        const std::string& text = it->second;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), current);
        if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
          return Status::InvalidArgument("cannot Add to key '" + key +
                                         "': its value is not an integer");
        }
      }
      if (__builtin_add_overflow(current, delta, &result)) {
        return Status::InvalidArgument("Add(" + std::to_string(delta) + ") to key '" + key +
                                       "' would overflow int64 (value " +
                                       std::to_string(current) + ")");
      }
      data_[key] = std::to_string(result);
    }
    cv_.notify_all();
    return result;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> data_;  // guarded by mu_
};

}  // namespace

std::shared_ptr<Store> NewMemoryStore() { return std::make_shared<MemoryStore>(); }

}  // namespace cohort::comm
