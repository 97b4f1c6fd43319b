// Factories of the BlobStore backends (internal to storage/). OpenStore()
// in store_registry.cc picks one by scheme.
#pragma once

#include <memory>

#include "cohort/storage/blob_store.h"

namespace cohort::storage {

// file://: keys are paths under root ("/" for file URIs).
std::shared_ptr<BlobStore> NewFileStore(std::string root = "/");
// mem://: in-process, for tests.
std::shared_ptr<BlobStore> NewMemoryBlobStore();
// gs:// configured from the environment (emulator host, metadata server,
// service-account key), see gcs/gcs_store.h.
Result<std::shared_ptr<BlobStore>> NewGcsStoreFromEnv();
// s3:// configured from AWS_* variables, see s3/s3_store.h.
Result<std::shared_ptr<BlobStore>> NewS3StoreFromEnv();

}  // namespace cohort::storage
