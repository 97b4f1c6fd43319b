// S3Store against a real third-party S3 server: s3rver 3.7.1 (npm), started
// per test suite on a free 127.0.0.1 port with its own data directory and
// stopped by PID (spec section 5.2). Covers put/get, multipart, Range, HEAD,
// ListObjectsV2 (prefix, delimiter, paging), delete, errors and odd keys.
// Skipped with a message when node/npm or the npm registry are unavailable.
// s3rver does not check signatures; sigv4_test.cc covers those.
#include "s3/s3_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "backends.h"
#include "cohort/storage/blob_store.h"
#include "cohort/storage/crc32c.h"
#include "s3/sigv4.h"
#include "storage/s3_testing.h"

namespace cohort::storage {
namespace {

namespace t = storage::testing;
constexpr char kBucket[] = "test-bucket";

class S3StoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = new std::string;
    const std::string tools = t::EnsureS3Tools(skip_reason_);
    if (tools.empty()) return;
    server_ = new t::S3rver(tools, kBucket);
    if (!server_->running()) {
      *skip_reason_ = server_->error();
      FAIL() << *skip_reason_;
    }
    port_ = server_->port();
    t::BypassProxyForLoopback();
    ::setenv("AWS_ENDPOINT_URL", ("http://127.0.0.1:" + std::to_string(port_)).c_str(), 1);
    ::setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    ::setenv("AWS_REGION", "us-east-1", 1);
    ::unsetenv("AWS_ENDPOINT_URL_S3");
    ::unsetenv("AWS_SESSION_TOKEN");
    ::unsetenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
  }

  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete skip_reason_;
    skip_reason_ = nullptr;
  }

  void SetUp() override {
    if (server_ == nullptr || !server_->running()) GTEST_SKIP() << *skip_reason_;
    auto store = NewS3StoreFromEnv();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    env_store_ = *store;
    auto options = S3OptionsFromEnv();
    ASSERT_TRUE(options.ok()) << options.status().ToString();
    // Small parts so multipart paths run on modest data; fail fast.
    options->multipart_threshold = 5 << 20;
    options->part_size = 5 << 20;
    options->retry.initial_backoff = std::chrono::milliseconds(20);
    options->retry.total_deadline = std::chrono::milliseconds(3000);
    auto small = NewS3Store(*options);
    ASSERT_TRUE(small.ok()) << small.status().ToString();
    store_ = *small;
  }

  std::string LocalPath(const std::string& name) const { return local_.path() + "/" + name; }

  static inline std::string* skip_reason_ = nullptr;
  static inline t::S3rver* server_ = nullptr;
  static inline int port_ = 0;
  std::shared_ptr<BlobStore> env_store_;
  std::shared_ptr<BlobStore> store_;
  t::TempDir local_;
};

TEST_F(S3StoreTest, PutAndGetSmallObject) {
  auto put = env_store_->PutBuffer(kBucket, "small/hello.txt", "hello world", {});
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->key, "small/hello.txt");
  EXPECT_EQ(put->size_bytes, 11u);
  EXPECT_EQ(put->crc32c, "yZRlqg==");
  EXPECT_EQ(put->etag, "5eb63bbbe01eeed093cb22bb8f5acdc3");  // MD5 of "hello world"

  auto got = env_store_->GetToBuffer(kBucket, "small/hello.txt", {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "hello world");

  const std::string path = LocalPath("sub/dir/hello.txt");
  auto file = env_store_->GetToFile(kBucket, "small/hello.txt", path, {});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(t::ReadFileOrEmpty(path), "hello world");
  EXPECT_EQ(file->size_bytes, 11u);
  EXPECT_EQ(file->crc32c, "yZRlqg==");
  EXPECT_EQ(file->etag, put->etag);
  EXPECT_FALSE(file->updated.empty());

  auto stat = env_store_->Stat(kBucket, "small/hello.txt");
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->size_bytes, 11u);
  EXPECT_EQ(stat->etag, put->etag);
  EXPECT_EQ(stat->updated.size(), 20u) << stat->updated;  // 2024-01-02T03:04:05Z
}

TEST_F(S3StoreTest, EmptyObject) {
  auto put = env_store_->PutBuffer(kBucket, "small/empty", "", {});
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->crc32c, "AAAAAA==");
  auto got = env_store_->GetToBuffer(kBucket, "small/empty", {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "");
  auto stat = env_store_->Stat(kBucket, "small/empty");
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->size_bytes, 0u);
}

TEST_F(S3StoreTest, MultipartFileRoundTripIsByteExact) {
  const std::string data = t::PatternBytes((11 << 20) + 12345, 7);  // 3 parts of <= 5 MiB
  const std::string src = LocalPath("big.bin");
  std::ofstream(src, std::ios::binary) << data;
  std::vector<uint64_t> progress;
  PutOptions put_options;
  put_options.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_EQ(total, data.size());
    progress.push_back(done);
  };
  auto put = store_->PutFile(kBucket, "multi/big.bin", src, put_options);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->size_bytes, data.size());
  EXPECT_EQ(put->crc32c, Crc32cToBase64(Crc32c(data)));
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), data.size());
  EXPECT_GE(progress.size(), 4u);  // start + one per part

  const std::string dst = LocalPath("big.out");
  auto got = store_->GetToFile(kBucket, "multi/big.bin", dst, {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->size_bytes, data.size());
  EXPECT_EQ(got->crc32c, put->crc32c);
  EXPECT_TRUE(t::ReadFileOrEmpty(dst) == data) << "downloaded bytes differ";

  auto stat = store_->Stat(kBucket, "multi/big.bin");
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->size_bytes, data.size());
}

TEST_F(S3StoreTest, MultipartBufferRoundTrip) {
  const std::string data = t::PatternBytes((10 << 20) + 1, 9);  // parts: 5 MiB, 5 MiB, 1 byte
  auto put = store_->PutBuffer(kBucket, "multi/buffer.bin", data, {});
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->crc32c, Crc32cToBase64(Crc32c(data)));
  auto got = store_->GetToBuffer(kBucket, "multi/buffer.bin", {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == data);
}

TEST_F(S3StoreTest, RangeReads) {
  const std::string data = "0123456789abcdefghij";
  ASSERT_TRUE(env_store_->PutBuffer(kBucket, "range/obj", data, {}).ok());
  GetOptions o;
  o.offset = 5;
  o.length = 4;
  auto got = env_store_->GetToBuffer(kBucket, "range/obj", o);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "5678");

  o.length.reset();
  got = env_store_->GetToBuffer(kBucket, "range/obj", o);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data.substr(5));

  o.offset = 15;
  o.length = 100;  // past the end: clipped
  const std::string path = LocalPath("range.out");
  auto file = env_store_->GetToFile(kBucket, "range/obj", path, o);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(t::ReadFileOrEmpty(path), "fghij");
  EXPECT_EQ(file->size_bytes, data.size());  // the object's size
  EXPECT_TRUE(file->crc32c.empty());

  o.offset = 0;
  o.length = 3;
  got = env_store_->GetToBuffer(kBucket, "range/obj", o);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "012");

  o.offset = data.size();  // exactly at the end: empty
  o.length.reset();
  got = env_store_->GetToBuffer(kBucket, "range/obj", o);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "");

  o.offset = data.size() + 5;
  got = env_store_->GetToBuffer(kBucket, "range/obj", o);
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument) << got.status().ToString();
}

TEST_F(S3StoreTest, ListWithPrefixDelimiterAndPaging) {
  const std::vector<std::string> keys = {"list/a/1", "list/a/2", "list/b/1", "list/c", "list/d.txt", "listx"};
  for (const auto& k : keys) ASSERT_TRUE(env_store_->PutBuffer(kBucket, k, k, {}).ok()) << k;

  ListOptions o;
  o.prefix = "list/";
  o.delimiter = "/";
  auto page = env_store_->List(kBucket, o);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  std::vector<std::string> names;
  for (const auto& obj : page->objects) names.push_back(obj.key);
  EXPECT_EQ(names, (std::vector<std::string>{"list/c", "list/d.txt"}));
  EXPECT_EQ(page->prefixes, (std::vector<std::string>{"list/a/", "list/b/"}));
  EXPECT_TRUE(page->next_page_token.empty());
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].size_bytes, 6u);
  EXPECT_EQ(page->objects[0].etag, s3::HexEncode(s3::Md5("list/c")));
  EXPECT_FALSE(page->objects[0].updated.empty());

  // Paging without a delimiter: 5 keys, 2 per page.
  o.delimiter.clear();
  o.max_results = 2;
  std::vector<std::string> all;
  int pages = 0;
  do {
    page = env_store_->List(kBucket, o);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    EXPECT_LE(page->objects.size(), 2u);
    for (const auto& obj : page->objects) all.push_back(obj.key);
    o.page_token = page->next_page_token;
    ASSERT_LT(++pages, 10);
  } while (!o.page_token.empty());
  EXPECT_EQ(all, (std::vector<std::string>{"list/a/1", "list/a/2", "list/b/1", "list/c", "list/d.txt"}));
  EXPECT_GE(pages, 3);

  o = ListOptions();
  o.prefix = "list/zzz";
  page = env_store_->List(kBucket, o);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_TRUE(page->objects.empty());
  EXPECT_TRUE(page->prefixes.empty());
}

TEST_F(S3StoreTest, DeleteIsIdempotent) {
  ASSERT_TRUE(env_store_->PutBuffer(kBucket, "del/x", "x", {}).ok());
  EXPECT_TRUE(env_store_->Delete(kBucket, "del/x").ok());
  EXPECT_EQ(env_store_->Stat(kBucket, "del/x").status().code(), StatusCode::kNotFound);
  Status again = env_store_->Delete(kBucket, "del/x");
  EXPECT_TRUE(again.ok()) << again.ToString();
}

TEST_F(S3StoreTest, MissingObjectIsNotFoundNamingTheUri) {
  auto got = env_store_->GetToBuffer(kBucket, "missing/key.bin", {});
  ASSERT_EQ(got.status().code(), StatusCode::kNotFound) << got.status().ToString();
  EXPECT_NE(got.status().message().find("s3://test-bucket/missing/key.bin"), std::string::npos)
      << got.status().message();
  EXPECT_NE(got.status().message().find("NoSuchKey"), std::string::npos) << got.status().message();

  auto stat = env_store_->Stat(kBucket, "missing/key.bin");
  ASSERT_EQ(stat.status().code(), StatusCode::kNotFound) << stat.status().ToString();
  EXPECT_NE(stat.status().message().find("s3://test-bucket/missing/key.bin"), std::string::npos);

  // A failed download leaves nothing behind.
  const std::string path = LocalPath("dl/missing.bin");
  auto file = env_store_->GetToFile(kBucket, "missing/key.bin", path, {});
  EXPECT_EQ(file.status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(LocalPath("dl")));

  auto bucket = env_store_->GetToBuffer("no-such-bucket", "k", {});
  ASSERT_EQ(bucket.status().code(), StatusCode::kNotFound) << bucket.status().ToString();
  EXPECT_NE(bucket.status().message().find("NoSuchBucket"), std::string::npos);
  EXPECT_EQ(env_store_->Delete("no-such-bucket", "k").code(), StatusCode::kNotFound);
}

TEST_F(S3StoreTest, OddKeysRoundTrip) {
  const std::vector<std::string> keys = {"odd/a b+c%é.txt", "odd/日本語/ключ", "odd/x~y(1)!*'@$,;:=&?#[].bin",
                                         "odd/trailing space ", "odd/%2F%20literal"};
  for (const auto& k : keys) {
    SCOPED_TRACE(k);
    auto put = env_store_->PutBuffer(kBucket, k, "data:" + k, {});
    ASSERT_TRUE(put.ok()) << put.status().ToString();
    auto got = env_store_->GetToBuffer(kBucket, k, {});
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, "data:" + k);
    auto stat = env_store_->Stat(kBucket, k);
    ASSERT_TRUE(stat.ok()) << stat.status().ToString();
    EXPECT_EQ(stat->size_bytes, 5 + k.size());
  }
  ListOptions o;
  o.prefix = "odd/";
  auto list = env_store_->List(kBucket, o);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  std::set<std::string> listed;
  for (const auto& obj : list->objects) listed.insert(obj.key);
  EXPECT_EQ(listed, std::set<std::string>(keys.begin(), keys.end()));
  for (const auto& k : keys) EXPECT_TRUE(env_store_->Delete(kBucket, k).ok()) << k;
  list = env_store_->List(kBucket, o);
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->objects.empty());
}

TEST_F(S3StoreTest, InvalidKeysAreRejectedLocally) {
  EXPECT_EQ(env_store_->PutBuffer(kBucket, "", "x", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(env_store_->PutBuffer(kBucket, "a/../b", "x", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(env_store_->Stat(kBucket, std::string(1025, 'k')).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(S3StoreTest, OpenStoreUsesTheEnvironment) {
  SetStoreForScheme("s3", nullptr);
  auto uri = ParseUri("s3://test-bucket/registry/obj");
  ASSERT_TRUE(uri.ok());
  auto store = OpenStore(*uri);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->scheme(), "s3");
  ASSERT_TRUE((*store)->PutBuffer(uri->bucket, uri->key, "via registry", {}).ok());
  auto got = (*store)->GetToBuffer(uri->bucket, uri->key, {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "via registry");
  SetStoreForScheme("s3", nullptr);
}

}  // namespace
}  // namespace cohort::storage
