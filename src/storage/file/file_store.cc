// Placeholder: the file:// backend is being written.
#include "backends.h"
namespace cohort::storage {
std::shared_ptr<BlobStore> NewFileStore(std::string) { return nullptr; }
}  // namespace cohort::storage
