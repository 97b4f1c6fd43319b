// NewPrefixStore: a Store decorator that puts "<prefix>/" in front of every
// key, so several communicators can share one store. As thread-safe as the
// base store (all stores are).
#include <string>
#include <utility>

#include "cohort/comm/store.h"
#include "cohort/common/logging.h"

namespace cohort::comm {
namespace {

class PrefixStore : public Store {
 public:
  PrefixStore(std::string prefix, std::shared_ptr<Store> base)
      : prefix_(std::move(prefix) + "/"), base_(std::move(base)) {}

  Status Set(const std::string& key, const std::string& value) override {
    return base_->Set(prefix_ + key, value);
  }
  Result<std::string> Get(const std::string& key, Deadline deadline) override {
    return base_->Get(prefix_ + key, deadline);
  }
  Result<int64_t> Add(const std::string& key, int64_t delta) override {
    return base_->Add(prefix_ + key, delta);
  }
  std::string LocalAddress() const override { return base_->LocalAddress(); }

 private:
  const std::string prefix_;  // includes the trailing '/'
  const std::shared_ptr<Store> base_;
};

}  // namespace

std::shared_ptr<Store> NewPrefixStore(std::string prefix, std::shared_ptr<Store> base) {
  COHORT_CHECK(base != nullptr) << "NewPrefixStore(\"" << prefix << "\") needs a base store";
  return std::make_shared<PrefixStore>(std::move(prefix), std::move(base));
}

}  // namespace cohort::comm
