// Placeholder: the s3:// backend is being written.
#include "backends.h"
namespace cohort::storage {
Result<std::shared_ptr<BlobStore>> NewS3StoreFromEnv() { return Status::Unavailable("s3:// is not built yet"); }
}  // namespace cohort::storage
