// Placeholder: the gs:// backend is being written.
#include "backends.h"
namespace cohort::storage {
Result<std::shared_ptr<BlobStore>> NewGcsStoreFromEnv() { return Status::Unavailable("gs:// is not built yet"); }
}  // namespace cohort::storage
