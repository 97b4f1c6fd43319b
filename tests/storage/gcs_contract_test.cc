// The BlobStore contract (blob_store_contract.h) over GcsStore talking to the
// in-process FakeGcsServer (fake_gcs.h). Small thresholds (256 KiB chunks,
// resumable above 1 MiB) so the contract's multi-MiB objects go through
// chunked resumable uploads. (The firebase-tools emulator is not used here:
// it ignores preconditions, which the contract checks.)
#include "storage/blob_store_contract.h"

#include "gcs/gcs_store.h"
#include "storage/fake_gcs.h"

namespace cohort::storage::testing {
namespace {

struct FakeGcsEnv {
  static constexpr const char* kName = "gcs_fake";
  std::shared_ptr<BlobStore> store;
  std::string bucket = "contract-bucket";
  std::string key_prefix = "pre fix/";  // a space: exercises percent-encoding everywhere
  std::unique_ptr<fake::FakeGcsServer> server;
  void SetUp() {
    server = std::make_unique<fake::FakeGcsServer>();
    gcs::GcsStoreOptions o;
    o.endpoint = server->endpoint();
    o.resumable_threshold = 1 << 20;
    o.chunk_size = 256 * 1024;
    o.retry.initial_backoff = std::chrono::milliseconds(1);
    o.retry.total_deadline = std::chrono::milliseconds(3000);
    auto s = gcs::NewGcsStore(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store = *s;
  }
  void TearDown() {
    store.reset();
    server.reset();
  }
};

struct EnvNames {
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Gcs, BlobStoreContractTest, ::testing::Types<FakeGcsEnv>, EnvNames);

}  // namespace
}  // namespace cohort::storage::testing
