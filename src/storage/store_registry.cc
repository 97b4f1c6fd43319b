// OpenStore / SetStoreForScheme; see include/cohort/storage/blob_store.h.
#include <map>
#include <mutex>

#include "backends.h"

namespace cohort::storage {
namespace {

std::mutex& RegistryMutex() {
  static std::mutex mu;
  return mu;
}
std::map<std::string, std::shared_ptr<BlobStore>>& Registry() {
  static std::map<std::string, std::shared_ptr<BlobStore>> stores;
  return stores;
}

}  // namespace

void SetStoreForScheme(const std::string& scheme, std::shared_ptr<BlobStore> store) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  if (store)
    Registry()[scheme] = std::move(store);
  else
    Registry().erase(scheme);
}

Result<std::shared_ptr<BlobStore>> OpenStore(const Uri& uri) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  auto& reg = Registry();
  if (auto it = reg.find(uri.scheme); it != reg.end()) return it->second;
  std::shared_ptr<BlobStore> store;
  if (uri.scheme == "file") {
    store = NewFileStore("/");
  } else if (uri.scheme == "mem") {
    store = NewMemoryBlobStore();
  } else if (uri.scheme == "gs") {
    COHORT_ASSIGN_OR_RETURN(store, NewGcsStoreFromEnv());
  } else if (uri.scheme == "s3") {
    COHORT_ASSIGN_OR_RETURN(store, NewS3StoreFromEnv());
  } else {
    return Status::InvalidArgument("unsupported storage scheme '" + uri.scheme + "'");
  }
  reg[uri.scheme] = store;
  return store;
}

}  // namespace cohort::storage
