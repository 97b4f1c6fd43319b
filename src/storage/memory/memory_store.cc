// Placeholder: the mem:// backend is being written.
#include "backends.h"
namespace cohort::storage {
std::shared_ptr<BlobStore> NewMemoryBlobStore() { return nullptr; }
}  // namespace cohort::storage
