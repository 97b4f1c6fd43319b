// S3Store against FakeS3 (fake_s3.h), a strict scripted server, for what
// s3rver cannot show: multipart failure -> AbortMultipartUpload, retries on
// 503/500, If-None-Match: * -> 412, 200-with-<Error> on Complete, ETag and
// CRC32C mismatches, error mapping, credentials and addressing from the
// environment. Every test also asserts that the fake saw only well-formed
// SigV4 requests (signed headers, payload hash, Content-MD5).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include "backends.h"
#include "cohort/storage/blob_store.h"
#include "cohort/storage/crc32c.h"
#include "s3/s3_store.h"
#include "storage/fake_s3.h"
#include "storage/s3_testing.h"

namespace cohort::storage {
namespace {

namespace t = storage::testing;
using t::FakeS3;
constexpr char kBucket[] = "bkt";
constexpr uint64_t kMiB = 1 << 20;
const bool kNoProxy = (t::BypassProxyForLoopback(), true);

S3Options FastOptions(const std::string& endpoint) {
  S3Options o;
  o.endpoint = endpoint;
  o.region = "us-east-1";
  o.credentials = {"AKIDFAKE", "fake-secret", ""};
  o.retry.initial_backoff = std::chrono::milliseconds(5);
  o.retry.max_backoff = std::chrono::milliseconds(20);
  o.retry.total_deadline = std::chrono::milliseconds(5000);
  o.retry.max_attempts = 4;
  o.multipart_threshold = 5 * kMiB;
  o.part_size = 5 * kMiB;
  o.connect_timeout = std::chrono::milliseconds(2000);
  return o;
}

std::shared_ptr<BlobStore> MustStore(S3Options o) {
  auto s = NewS3Store(std::move(o));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : nullptr;
}

class S3FaultsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const auto& v : fake_.violations()) ADD_FAILURE() << "malformed request: " << v;
  }
  bool Contains(const Status& s, const std::string& text) {
    return s.message().find(text) != std::string::npos;
  }

  FakeS3 fake_;
  std::shared_ptr<BlobStore> store_ = MustStore(FastOptions(fake_.endpoint()));
  t::TempDir local_;
};

TEST_F(S3FaultsTest, WellFormedRequestsForEveryOperation) {
  const std::string big = t::PatternBytes(11 * kMiB, 3);
  ASSERT_TRUE(store_->PutBuffer(kBucket, "a/small obj", "hello world", {}).ok());
  ASSERT_TRUE(store_->PutBuffer(kBucket, "a/big", big, {}).ok());
  EXPECT_EQ(fake_.Object(kBucket, "a/big"), big);
  auto got = store_->GetToBuffer(kBucket, "a/small obj", {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "hello world");
  GetOptions range;
  range.offset = 6;
  range.length = 5;
  got = store_->GetToBuffer(kBucket, "a/small obj", range);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "world");
  auto stat = store_->Stat(kBucket, "a/big");
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->size_bytes, big.size());
  EXPECT_EQ(stat->updated, "2015-10-21T07:28:00Z");
  EXPECT_TRUE(store_->Delete(kBucket, "a/small obj").ok());

  // What went over the wire.
  bool saw_put = false, saw_range = false, saw_checksum_mode = false;
  for (const auto& r : fake_.requests()) {
    if (r.method == "PUT" && r.key == "a/small obj") {
      saw_put = true;
      EXPECT_EQ(r.target, "/bkt/a/small%20obj");
      EXPECT_EQ(r.headers.at("x-amz-checksum-crc32c"), "yZRlqg==");
      EXPECT_EQ(r.headers.at("content-md5"), "XrY7u+Ae7tCTyyK7j1rNww==");
      EXPECT_EQ(r.headers.at("content-type"), "application/octet-stream");
      EXPECT_EQ(r.headers.count("if-none-match"), 0u);
    }
    if (r.method == "GET" && r.headers.count("range")) {
      saw_range = true;
      EXPECT_EQ(r.headers.at("range"), "bytes=6-10");
    }
    if (r.method == "GET" && r.headers.count("x-amz-checksum-mode")) saw_checksum_mode = true;
  }
  EXPECT_TRUE(saw_put && saw_range && saw_checksum_mode);
  EXPECT_EQ(fake_.Count("PUT", "partNumber"), 3);
  EXPECT_EQ(fake_.Count("POST", "uploads"), 1);
  EXPECT_EQ(fake_.Count("POST", "uploadId"), 1);
}

TEST(S3FaultsSessionTest, SessionTokenIsSentAndSigned) {
  FakeS3 fake("ASIATEMP", "eu-west-1", "session-token/+=");
  S3Options o = FastOptions(fake.endpoint());
  o.region = "eu-west-1";
  o.credentials = {"ASIATEMP", "secret", "session-token/+="};
  auto store = MustStore(o);
  ASSERT_TRUE(store->PutBuffer(kBucket, "k", "v", {}).ok());
  ASSERT_TRUE(store->Stat(kBucket, "k").ok());
  EXPECT_TRUE(fake.violations().empty()) << fake.violations().front();
  for (const auto& r : fake.requests()) {
    EXPECT_EQ(r.headers.at("x-amz-security-token"), "session-token/+=");
    EXPECT_NE(r.headers.at("authorization").find("x-amz-security-token"), std::string::npos);
  }
}

TEST_F(S3FaultsTest, PartFailingPermanentlyAbortsTheUpload) {
  fake_.SetHook([](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    if (r.method == "PUT" && r.Has("partNumber") && r.query.at("partNumber") == "2")
      return FakeS3::Reply{500, FakeS3::ErrorXml("InternalError", "We encountered an internal error"), {}};
    return std::nullopt;
  });
  const std::string data = t::PatternBytes(11 * kMiB, 5);
  auto put = store_->PutBuffer(kBucket, "runs/ckpt.bin", data, {});
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.status().code(), StatusCode::kUnavailable) << put.status().ToString();
  EXPECT_TRUE(Contains(put.status(), "s3://bkt/runs/ckpt.bin")) << put.status().message();
  EXPECT_TRUE(Contains(put.status(), "UploadPart 2/3")) << put.status().message();
  EXPECT_TRUE(Contains(put.status(), "after 4 attempts")) << put.status().message();
  EXPECT_TRUE(Contains(put.status(), "InternalError")) << put.status().message();

  int part2 = 0;
  for (const auto& r : fake_.requests())
    if (r.Has("partNumber") && r.query.at("partNumber") == "2") ++part2;
  EXPECT_EQ(part2, 4);                              // retried per part
  EXPECT_EQ(fake_.Count("PUT", "partNumber"), 5);   // part 1 once, part 2 four times, no part 3
  EXPECT_EQ(fake_.Count("DELETE", "uploadId"), 1);  // AbortMultipartUpload
  EXPECT_EQ(fake_.Count("POST", "uploadId"), 0);    // never completed
  EXPECT_EQ(fake_.open_uploads(), 0u);
  EXPECT_FALSE(fake_.Object(kBucket, "runs/ckpt.bin").has_value());
}

TEST_F(S3FaultsTest, RejectedPartIsNotRetriedAndAbortFailureIsIgnored) {
  fake_.SetAbortStatus(405);  // like s3rver
  fake_.SetHook([](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    if (r.method == "PUT" && r.Has("partNumber") && r.query.at("partNumber") == "1")
      return FakeS3::Reply{403, FakeS3::ErrorXml("AccessDenied", "Access Denied"), {}};
    return std::nullopt;
  });
  const std::string src = local_.path() + "/big.bin";
  std::ofstream(src, std::ios::binary) << t::PatternBytes(6 * kMiB, 1);
  auto put = store_->PutFile(kBucket, "x/y", src, {});
  ASSERT_FALSE(put.ok());
  // The part's error, not the Abort's 405.
  EXPECT_EQ(put.status().code(), StatusCode::kFailedPrecondition) << put.status().ToString();
  EXPECT_TRUE(Contains(put.status(), "AccessDenied")) << put.status().message();
  EXPECT_TRUE(Contains(put.status(), "AWS_ACCESS_KEY_ID")) << put.status().message();
  EXPECT_FALSE(Contains(put.status(), "MethodNotAllowed")) << put.status().message();
  EXPECT_EQ(fake_.Count("PUT", "partNumber"), 1);
  EXPECT_EQ(fake_.Count("DELETE", "uploadId"), 1);
}

TEST_F(S3FaultsTest, ServiceUnavailableTwiceThenOkSucceeds) {
  std::atomic<int> puts{0}, gets{0};
  fake_.SetHook([&](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    const FakeS3::Reply slow{503, FakeS3::ErrorXml("SlowDown", "Please reduce your request rate."), {}};
    if (r.method == "PUT" && ++puts <= 2) return slow;
    if (r.method == "GET" && ++gets <= 2) return slow;
    return std::nullopt;
  });
  auto put = store_->PutBuffer(kBucket, "retry/obj", "payload", {});
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(fake_.Count("PUT"), 3);
  EXPECT_EQ(fake_.Object(kBucket, "retry/obj"), "payload");

  const std::string path = local_.path() + "/out.bin";
  auto got = store_->GetToFile(kBucket, "retry/obj", path, {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(t::ReadFileOrEmpty(path), "payload");
  EXPECT_EQ(fake_.Count("GET"), 3);
}

TEST_F(S3FaultsTest, PartRetriedThenMultipartSucceeds) {
  std::atomic<int> part2{0};
  fake_.SetHook([&](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    if (r.Has("partNumber") && r.query.at("partNumber") == "2" && ++part2 <= 2)
      return FakeS3::Reply{503, FakeS3::ErrorXml("ServiceUnavailable", "busy"), {}};
    return std::nullopt;
  });
  const std::string data = t::PatternBytes(10 * kMiB + 7, 11);
  auto put = store_->PutBuffer(kBucket, "mp/ok", data, {});
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->crc32c, Crc32cToBase64(Crc32c(data)));
  EXPECT_EQ(fake_.Object(kBucket, "mp/ok"), data);
  EXPECT_EQ(fake_.Count("DELETE", "uploadId"), 0);
}

TEST_F(S3FaultsTest, RetriesExhaustedIsUnavailable) {
  fake_.SetHook([](const FakeS3::Request&) -> std::optional<FakeS3::Reply> {
    return FakeS3::Reply{503, FakeS3::ErrorXml("SlowDown", "slow"), {}};
  });
  auto stat = store_->Stat(kBucket, "k");
  EXPECT_EQ(stat.status().code(), StatusCode::kUnavailable) << stat.status().ToString();
  EXPECT_TRUE(Contains(stat.status(), "after 4 attempts")) << stat.status().message();
  EXPECT_EQ(fake_.Count("HEAD"), 4);
}

TEST_F(S3FaultsTest, CreateOnlyOnExistingKeyIsFailedPrecondition) {
  fake_.PutObject(kBucket, "runs/r1/config.json", "old");
  PutOptions create_only;
  create_only.create_only = true;
  auto put = store_->PutBuffer(kBucket, "runs/r1/config.json", "new", create_only);
  ASSERT_EQ(put.status().code(), StatusCode::kFailedPrecondition) << put.status().ToString();
  EXPECT_TRUE(Contains(put.status(), "s3://bkt/runs/r1/config.json")) << put.status().message();
  EXPECT_EQ(fake_.Object(kBucket, "runs/r1/config.json"), "old");
  EXPECT_EQ(fake_.requests().back().headers.at("if-none-match"), "*");

  auto fresh = store_->PutBuffer(kBucket, "runs/r2/config.json", "new", create_only);
  EXPECT_TRUE(fresh.ok()) << fresh.status().ToString();

  // Multipart: the precondition goes on CompleteMultipartUpload.
  fake_.PutObject(kBucket, "big", "old");
  auto big = store_->PutBuffer(kBucket, "big", t::PatternBytes(6 * kMiB, 2), create_only);
  ASSERT_EQ(big.status().code(), StatusCode::kFailedPrecondition) << big.status().ToString();
  EXPECT_EQ(fake_.Object(kBucket, "big"), "old");
  EXPECT_EQ(fake_.Count("DELETE", "uploadId"), 1);
  bool complete_had_precondition = false;
  for (const auto& r : fake_.requests())
    if (r.method == "POST" && r.Has("uploadId"))
      complete_had_precondition = r.headers.count("if-none-match") > 0;
  EXPECT_TRUE(complete_had_precondition);
}

TEST_F(S3FaultsTest, CompleteAnswering200WithAnErrorIsRetried) {
  std::atomic<int> completes{0};
  fake_.SetHook([&](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    if (r.method == "POST" && r.Has("uploadId") && ++completes == 1)
      return FakeS3::Reply{200, FakeS3::ErrorXml("InternalError", "try again"), {}};
    return std::nullopt;
  });
  const std::string data = t::PatternBytes(5 * kMiB + 1, 4);
  auto put = store_->PutBuffer(kBucket, "c", data, {});
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(completes.load(), 2);
  EXPECT_EQ(fake_.Object(kBucket, "c"), data);
  EXPECT_NE(put->etag.find("-2"), std::string::npos) << put->etag;
}

TEST_F(S3FaultsTest, EtagThatIsNotTheMd5IsAnError) {
  fake_.SetHook([](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    if (r.method == "PUT") return FakeS3::Reply{200, "", {{"ETag", "\"00000000000000000000000000000000\""}}};
    return std::nullopt;
  });
  auto put = store_->PutBuffer(kBucket, "e", "data", {});
  EXPECT_EQ(put.status().code(), StatusCode::kInternal) << put.status().ToString();
  EXPECT_TRUE(Contains(put.status(), "ETag")) << put.status().message();

  auto part = store_->PutBuffer(kBucket, "e2", t::PatternBytes(5 * kMiB, 1), {});
  EXPECT_EQ(part.status().code(), StatusCode::kInternal) << part.status().ToString();
  EXPECT_EQ(fake_.Count("DELETE", "uploadId"), 1);
}

TEST_F(S3FaultsTest, EchoedCrc32cMismatchIsAnError) {
  fake_.SetHook([](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    if (r.method == "PUT")
      return FakeS3::Reply{200,
                           "",
                           {{"ETag", "\"" + FakeS3::DigestHex(EVP_md5(), r.body) + "\""},
                            {"x-amz-checksum-crc32c", "AAAAAA=="}}};
    return std::nullopt;
  });
  auto put = store_->PutBuffer(kBucket, "crc", "hello world", {});
  EXPECT_EQ(put.status().code(), StatusCode::kInternal) << put.status().ToString();
  EXPECT_TRUE(Contains(put.status(), "CRC32C")) << put.status().message();
}

TEST_F(S3FaultsTest, DownloadWithWrongStoredCrc32cLeavesNoFile) {
  fake_.PutObject(kBucket, "d", "hello world");
  fake_.SetHook([](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    if (r.method == "GET") return FakeS3::Reply{200, "hello world", {{"x-amz-checksum-crc32c", "AAAAAA=="}}};
    return std::nullopt;
  });
  const std::string path = local_.path() + "/dl/d.bin";
  auto got = store_->GetToFile(kBucket, "d", path, {});
  EXPECT_EQ(got.status().code(), StatusCode::kInternal) << got.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(local_.path() + "/dl"));

  // The right checksum passes (and a composite "-N" one is not compared).
  fake_.SetHook([](const FakeS3::Request& r) -> std::optional<FakeS3::Reply> {
    if (r.method == "GET") return FakeS3::Reply{200, "hello world", {{"x-amz-checksum-crc32c", "yZRlqg=="}}};
    return std::nullopt;
  });
  got = store_->GetToFile(kBucket, "d", path, {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->crc32c, "yZRlqg==");
}

TEST_F(S3FaultsTest, ListDecodesAwsUrlEncodedKeysAcrossPages) {
  // AWS writes a space as '+' and a literal '+' as %2B under encoding-type=url.
  const std::vector<std::string> keys = {"l/a b.txt",    "l/a+b.txt",         "l/100%.csv",
                                         "l/한글/x.txt", "l/run books/x.txt", std::string("l/ctl\x01char"),
                                         "l/amp&<lt>"};
  for (const auto& k : keys) fake_.PutObject(kBucket, k, "v:" + k);
  ListOptions o;
  o.prefix = "l/";
  o.max_results = 2;
  std::vector<std::string> objects, prefixes;
  int pages = 0;
  do {
    auto page = store_->List(kBucket, o);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    for (const auto& obj : page->objects) objects.push_back(obj.key);
    o.page_token = page->next_page_token;
    ASSERT_LT(++pages, 20);
  } while (!o.page_token.empty());
  std::vector<std::string> want = keys;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(objects, want);
  EXPECT_EQ(pages, 4);

  o = ListOptions();
  o.prefix = "l/";
  o.delimiter = "/";
  auto page = store_->List(kBucket, o);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ(page->prefixes, (std::vector<std::string>{"l/run books/", "l/한글/"}));
  ASSERT_EQ(page->objects.size(), 5u);
  EXPECT_EQ(page->objects[0].key, std::string("l/100%.csv"));
  EXPECT_EQ(page->objects[0].size_bytes, 12u);
  EXPECT_EQ(page->objects[0].etag.size(), 32u);
  for (const auto& r : fake_.requests()) {
    EXPECT_EQ(r.query.at("encoding-type"), "url");
    EXPECT_EQ(r.target.rfind("/bkt?", 0), 0u) << r.target;
  }
}

TEST_F(S3FaultsTest, ErrorCodesMapToStatuses) {
  struct Case {
    int http;
    std::string code;
    StatusCode want;
    std::string hint;
  };
  const std::vector<Case> cases = {
      {403, "InvalidAccessKeyId", StatusCode::kFailedPrecondition, "AWS_SECRET_ACCESS_KEY"},
      {403, "SignatureDoesNotMatch", StatusCode::kFailedPrecondition, "AWS_ACCESS_KEY_ID"},
      {404, "NoSuchBucket", StatusCode::kNotFound, "NoSuchBucket"},
      {301, "PermanentRedirect", StatusCode::kFailedPrecondition, "AWS_REGION"},
      {400, "InvalidArgument", StatusCode::kInvalidArgument, "InvalidArgument"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.code);
    fake_.SetHook([&](const FakeS3::Request&) -> std::optional<FakeS3::Reply> {
      return FakeS3::Reply{c.http, FakeS3::ErrorXml(c.code, "message for " + c.code), {}};
    });
    auto got = store_->GetToBuffer(kBucket, "some/key", {});
    EXPECT_EQ(got.status().code(), c.want) << got.status().ToString();
    EXPECT_TRUE(Contains(got.status(), "s3://bkt/some/key")) << got.status().message();
    EXPECT_TRUE(Contains(got.status(), c.hint)) << got.status().message();
  }
  // Deleting a missing key is fine; a missing bucket is not.
  fake_.SetHook([](const FakeS3::Request&) -> std::optional<FakeS3::Reply> {
    return FakeS3::Reply{404, FakeS3::ErrorXml("NoSuchKey", "gone"), {}};
  });
  EXPECT_TRUE(store_->Delete(kBucket, "gone").ok());
  fake_.SetHook([](const FakeS3::Request&) -> std::optional<FakeS3::Reply> {
    return FakeS3::Reply{404, FakeS3::ErrorXml("NoSuchBucket", "no bucket"), {}};
  });
  EXPECT_EQ(store_->Delete(kBucket, "gone").code(), StatusCode::kNotFound);
}

TEST(S3FaultsStandaloneTest, TransportFailureIsUnavailableAfterRetries) {
  const int port = t::FreePort();  // nothing listens here
  auto store = MustStore(FastOptions("http://127.0.0.1:" + std::to_string(port)));
  auto got = store->GetToBuffer(kBucket, "k", {});
  EXPECT_EQ(got.status().code(), StatusCode::kUnavailable) << got.status().ToString();
  EXPECT_NE(got.status().message().find("after 4 attempts"), std::string::npos) << got.status().message();
  EXPECT_NE(got.status().message().find("s3://bkt/k"), std::string::npos) << got.status().message();
}

TEST(S3FaultsStandaloneTest, MissingCredentialsAreAClearError) {
  FakeS3 fake;
  S3Options o = FastOptions(fake.endpoint());
  o.credentials = {};
  auto store = MustStore(o);
  auto put = store->PutBuffer(kBucket, "k", "v", {});
  EXPECT_EQ(put.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(put.status().message().find("AWS_ACCESS_KEY_ID"), std::string::npos) << put.status().message();
  EXPECT_NE(put.status().message().find("s3://bkt/k"), std::string::npos) << put.status().message();
  EXPECT_TRUE(fake.requests().empty());
}

class EnvGuard {
 public:
  EnvGuard() {
    for (const char* name : kNames) {
      const char* v = std::getenv(name);
      saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
      ::unsetenv(name);
    }
  }
  ~EnvGuard() {
    for (const auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }

 private:
  static constexpr const char* kNames[] = {"AWS_ENDPOINT_URL_S3",
                                           "AWS_ENDPOINT_URL",
                                           "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
                                           "AWS_REGION",
                                           "AWS_DEFAULT_REGION",
                                           "AWS_ACCESS_KEY_ID",
                                           "AWS_SECRET_ACCESS_KEY",
                                           "AWS_SESSION_TOKEN"};
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(S3FaultsStandaloneTest, OptionsFromEnvironment) {
  EnvGuard guard;
  auto o = S3OptionsFromEnv();
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->endpoint, "");
  EXPECT_EQ(o->region, "us-east-1");
  EXPECT_TRUE(o->credentials.access_key_id.empty());

  ::setenv("AWS_ENDPOINT_URL", "http://generic:1", 1);
  ::setenv("AWS_ENDPOINT_URL_S3", "http://s3only:2", 1);
  ::setenv("AWS_DEFAULT_REGION", "eu-west-2", 1);
  ::setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
  o = S3OptionsFromEnv();
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->endpoint, "http://s3only:2");
  EXPECT_EQ(o->region, "eu-west-2");
  EXPECT_NE(o->credentials_error.find("AWS_SECRET_ACCESS_KEY"), std::string::npos);

  ::setenv("AWS_REGION", "ap-south-1", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "SECRET", 1);
  ::setenv("AWS_SESSION_TOKEN", "TOKEN", 1);
  ::unsetenv("AWS_ENDPOINT_URL_S3");
  o = S3OptionsFromEnv();
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->endpoint, "http://generic:1");
  EXPECT_EQ(o->region, "ap-south-1");
  EXPECT_EQ(o->credentials.session_token, "TOKEN");
  EXPECT_TRUE(o->credentials_error.empty());

  ::setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true", 1);
  o = S3OptionsFromEnv();
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->endpoint, "");

  ::unsetenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
  ::setenv("AWS_ENDPOINT_URL", "ftp://nope", 1);
  EXPECT_EQ(S3OptionsFromEnv().status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(NewS3StoreFromEnv().status().code(), StatusCode::kInvalidArgument);
}

TEST(S3FaultsStandaloneTest, Addressing) {
  S3Options aws;
  aws.region = "eu-west-1";
  auto a = ResolveS3Address(aws, "my-bucket");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->base_url, "https://my-bucket.s3.eu-west-1.amazonaws.com");
  EXPECT_EQ(a->host, "my-bucket.s3.eu-west-1.amazonaws.com");
  EXPECT_EQ(a->path_prefix, "");

  a = ResolveS3Address(aws, "dotted.bucket.name");  // the wildcard certificate would not match
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->base_url, "https://s3.eu-west-1.amazonaws.com");
  EXPECT_EQ(a->path_prefix, "/dotted.bucket.name");

  S3Options custom;
  custom.endpoint = "http://minio.local:9000/base/";
  a = ResolveS3Address(custom, "b");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->base_url, "http://minio.local:9000");
  EXPECT_EQ(a->host, "minio.local:9000");
  EXPECT_EQ(a->path_prefix, "/base/b");

  custom.endpoint = "storage.example.com";  // no scheme: https
  custom.addressing = S3AddressingStyle::kVirtualHost;
  a = ResolveS3Address(custom, "b");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->base_url, "https://b.storage.example.com");
  EXPECT_EQ(a->path_prefix, "");

  custom.endpoint = "http://";
  EXPECT_EQ(ResolveS3Address(custom, "b").status().code(), StatusCode::kInvalidArgument);
}

TEST(S3FaultsStandaloneTest, PartSizeBelowFiveMiBIsRejected) {
  S3Options o;
  o.part_size = 1 << 20;
  EXPECT_EQ(NewS3Store(o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cohort::storage
