// Runs the BlobStore contract (blob_store_contract.h) over the two stores
// that need no server: file:// (a fresh directory per test) and mem://.
#include "storage/blob_store_contract.h"

#include "backends.h"

namespace cohort::storage::testing {
namespace {

struct FileEnv {
  static constexpr const char* kName = "file";
  std::shared_ptr<BlobStore> store;
  std::string bucket;
  std::string key_prefix;
  ScratchDir root;
  void SetUp() {
    ASSERT_FALSE(root.path().empty());
    store = NewFileStore(root.path());
  }
  void TearDown() {}
};

struct MemEnv {
  static constexpr const char* kName = "mem";
  std::shared_ptr<BlobStore> store;
  std::string bucket = "bucket";
  std::string key_prefix;
  void SetUp() { store = NewMemoryBlobStore(); }
  void TearDown() {}
};

struct EnvNames {
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};

using Envs = ::testing::Types<FileEnv, MemEnv>;
INSTANTIATE_TYPED_TEST_SUITE_P(Local, BlobStoreContractTest, Envs, EnvNames);

}  // namespace
}  // namespace cohort::storage::testing
