// GcsStore against the in-process FakeGcsServer (tests/storage/fake_gcs.h):
// media and resumable round trips, resuming after dropped connections and
// 503s, preconditions, retries, CRC32C checks, errors, list paging.
#include "gcs/gcs_store.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "storage/fake_gcs.h"
#include "storage/storage_testing.h"

namespace cohort::storage::gcs {
namespace {

using fake::FakeGcsServer;
using Op = FakeGcsServer::Op;
namespace fs = std::filesystem;
using storage::testing::FreePort;
using storage::testing::RandomData;
using storage::testing::ReadLocalFile;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kChunk = 256 * kKiB;

RetryPolicy FastRetry() {
  RetryPolicy p;
  p.initial_backoff = std::chrono::milliseconds(1);
  p.max_backoff = std::chrono::milliseconds(5);
  p.total_deadline = std::chrono::milliseconds(5000);
  p.max_attempts = 6;
  return p;
}

class GcsStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gcs_store_test." + std::to_string(::getpid()) + "." +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    store_ = MakeStore();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::shared_ptr<BlobStore> MakeStore(GcsStoreOptions o = {}) {
    o.endpoint = fake_.endpoint();
    o.retry = FastRetry();
    o.resumable_threshold = 512 * kKiB;
    o.chunk_size = kChunk;
    auto s = NewGcsStore(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return *s;
  }

  // Chunk PUTs (not status queries) whose Content-Range starts at `first`.
  int ChunksStartingAt(uint64_t first) {
    int n = 0;
    for (const auto& l : fake_.log())
      if (l.op == Op::kChunk && l.content_range.rfind("bytes " + std::to_string(first) + "-", 0) == 0) ++n;
    return n;
  }

  std::vector<std::string> FilesInDir() {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    return names;
  }

  FakeGcsServer fake_;
  std::shared_ptr<BlobStore> store_;
  fs::path dir_;
};

TEST_F(GcsStoreTest, SmallObjectRoundTripUsesMediaUpload) {
  PutOptions put;
  put.content_type = "text/plain";
  auto info = store_->PutBuffer("bkt", "dir/hello.txt", "hello world", put);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->key, "dir/hello.txt");
  EXPECT_EQ(info->size_bytes, 11u);
  EXPECT_EQ(info->crc32c, "yZRlqg==");
  EXPECT_GT(info->generation, 0);

  auto log = fake_.log();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].op, Op::kMediaUpload);
  EXPECT_EQ(log[0].target, "/upload/storage/v1/b/bkt/o?uploadType=media&name=dir%2Fhello.txt");
  EXPECT_EQ(fake_.GetObject("bkt", "dir/hello.txt")->content_type, "text/plain");

  auto data = store_->GetToBuffer("bkt", "dir/hello.txt", {});
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(*data, "hello world");
  EXPECT_EQ(fake_.log().back().target, "/storage/v1/b/bkt/o/dir%2Fhello.txt?alt=media");

  auto stat = store_->Stat("bkt", "dir/hello.txt");
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->size_bytes, 11u);
  EXPECT_EQ(stat->crc32c, "yZRlqg==");
  EXPECT_EQ(stat->generation, info->generation);
}

TEST_F(GcsStoreTest, EmptyObjectRoundTrip) {
  auto info = store_->PutBuffer("bkt", "empty", "", {});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->crc32c, "AAAAAA==");
  auto data = store_->GetToBuffer("bkt", "empty", {});
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(*data, "");
}

TEST_F(GcsStoreTest, LargeObjectUsesResumableChunks) {
  const std::string data = RandomData(3 * 1024 * kKiB + 123, 1);
  std::vector<uint64_t> progress;
  PutOptions put;
  put.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_EQ(total, data.size());
    progress.push_back(done);
  };
  auto info = store_->PutBuffer("bkt", "ckpt/step1.bin", data, put);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->size_bytes, data.size());
  EXPECT_EQ(info->crc32c, Crc32cToBase64(Crc32c(data)));
  ASSERT_TRUE(fake_.GetObject("bkt", "ckpt/step1.bin"));
  EXPECT_EQ(fake_.GetObject("bkt", "ckpt/step1.bin")->data, data);

  EXPECT_EQ(fake_.Count(Op::kResumableInit), 1);
  EXPECT_EQ(fake_.Count(Op::kChunk), 13);  // 12 full 256 KiB chunks + 123 bytes
  EXPECT_EQ(fake_.Count(Op::kStatusQuery), 0);
  for (const auto& l : fake_.log()) {
    if (l.op != Op::kChunk) continue;
    if (l.body_size == kChunk) EXPECT_EQ(l.content_range.back(), '*') << l.content_range;
    else EXPECT_EQ(l.content_range, "bytes 3145728-3145850/3145851");
  }
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), data.size());
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));

  auto back = store_->GetToBuffer("bkt", "ckpt/step1.bin", {});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == data);
}

TEST_F(GcsStoreTest, FileRoundTripLeavesNoTempFiles) {
  const std::string data = RandomData(1536 * kKiB + 7, 2);
  const std::string src = (dir_ / "src.bin").string(), dst = (dir_ / "sub" / "dst.bin").string();
  std::ofstream(src, std::ios::binary) << data;
  auto put = store_->PutFile("bkt", "files/a.bin", src, {});
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(fake_.Count(Op::kChunk), 7);
  auto got = store_->GetToFile("bkt", "files/a.bin", dst, {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->size_bytes, data.size());
  EXPECT_EQ(got->crc32c, put->crc32c);
  EXPECT_TRUE(ReadLocalFile(dst) == data);
  EXPECT_EQ(FilesInDir().size(), 2u);  // src.bin, sub/
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "sub"), fs::directory_iterator()), 1);

  // Small files go as one media upload.
  std::ofstream(src, std::ios::binary | std::ios::trunc) << "tiny";
  ASSERT_TRUE(store_->PutFile("bkt", "files/tiny", src, {}).ok());
  EXPECT_EQ(fake_.log().back().op, Op::kMediaUpload);
  auto missing = store_->PutFile("bkt", "files/x", (dir_ / "nope").string(), {});
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST_F(GcsStoreTest, ResumesAfterDroppedConnectionWithoutRestarting) {
  const std::string data = RandomData(2 * 1024 * kKiB + 5000, 3);
  bool injected = false;
  PutOptions put;
  put.progress = [&](uint64_t done, uint64_t) {
    // After the second chunk is confirmed: the next chunk keeps 100 KiB, then the connection drops.
    if (!injected && done >= 2 * kChunk) {
      injected = true;
      fake_.DropNextChunks(1, 100 * kKiB);
    }
  };
  auto info = store_->PutBuffer("bkt", "ckpt/drop.bin", data, put);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  ASSERT_TRUE(injected);
  EXPECT_EQ(fake_.GetObject("bkt", "ckpt/drop.bin")->data, data);

  EXPECT_EQ(fake_.Count(Op::kResumableInit), 1);
  EXPECT_EQ(ChunksStartingAt(0), 1) << "restarted from byte 0";
  // The dropped chunk, then a status query (308 Range bytes=0-(2*256+100) KiB - 1),
  // then the next chunk from exactly there.
  auto log = fake_.log();
  auto dropped = std::find_if(log.begin(), log.end(), [](const auto& l) { return l.status == 0; });
  ASSERT_NE(dropped, log.end());
  EXPECT_EQ(dropped->content_range.rfind("bytes 524288-", 0), 0u) << dropped->content_range;
  ASSERT_NE(dropped + 1, log.end());
  EXPECT_EQ((dropped + 1)->op, Op::kStatusQuery);
  EXPECT_EQ((dropped + 1)->content_range, "bytes */" + std::to_string(data.size()));
  EXPECT_EQ((dropped + 1)->status, 308);
  ASSERT_NE(dropped + 2, log.end());
  EXPECT_EQ((dropped + 2)->content_range.rfind("bytes " + std::to_string(2 * kChunk + 100 * kKiB) + "-", 0), 0u)
      << (dropped + 2)->content_range;
}

TEST_F(GcsStoreTest, ResumesAfter503sWithStatusQueries) {
  const std::string data = RandomData(1024 * kKiB + 99, 4);
  bool injected = false;
  PutOptions put;
  put.progress = [&](uint64_t done, uint64_t) {
    if (!injected && done >= kChunk) {
      injected = true;
      fake_.FailNext(Op::kChunk, 2, 503);
    }
  };
  auto info = store_->PutBuffer("bkt", "ckpt/503.bin", data, put);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(fake_.GetObject("bkt", "ckpt/503.bin")->data, data);
  EXPECT_EQ(fake_.Count(Op::kResumableInit), 1);
  EXPECT_EQ(fake_.Count(Op::kStatusQuery), 2);  // one after each 503
  EXPECT_EQ(ChunksStartingAt(0), 1);
  EXPECT_EQ(ChunksStartingAt(kChunk), 3);  // 503, 503, accepted
}

TEST_F(GcsStoreTest, ResendsTheUnpersistedTailOfAChunk) {
  const std::string data = RandomData(1024 * kKiB, 5);
  fake_.PersistOnlyNextChunk(1000);  // 308 Range: bytes=0-999 for the first chunk
  auto info = store_->PutBuffer("bkt", "partial.bin", data, {});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(fake_.GetObject("bkt", "partial.bin")->data, data);
  EXPECT_EQ(ChunksStartingAt(1000), 1);
  EXPECT_EQ(ChunksStartingAt(0), 1);
}

TEST_F(GcsStoreTest, ExpiredSessionStartsANewOne) {
  const std::string data = RandomData(600 * kKiB, 6);
  fake_.FailNext(Op::kChunk, 1, 404);
  auto info = store_->PutBuffer("bkt", "expired.bin", data, {});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(fake_.Count(Op::kResumableInit), 2);
  EXPECT_EQ(fake_.GetObject("bkt", "expired.bin")->data, data);
}

TEST_F(GcsStoreTest, CreateOnlyFailsWhenTheObjectExists) {
  PutOptions create;
  create.create_only = true;
  auto first = store_->PutBuffer("bkt", "once", "v1", create);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_NE(fake_.log().back().target.find("&ifGenerationMatch=0"), std::string::npos);
  auto second = store_->PutBuffer("bkt", "once", "v2", create);
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition) << second.status().ToString();
  EXPECT_NE(second.status().message().find("gs://bkt/once"), std::string::npos);
  EXPECT_EQ(fake_.GetObject("bkt", "once")->data, "v1");

  // Resumable: the precondition rides on the initiating POST.
  auto big = store_->PutBuffer("bkt", "once", RandomData(600 * kKiB, 7), create);
  EXPECT_EQ(big.status().code(), StatusCode::kFailedPrecondition) << big.status().ToString();
  EXPECT_NE(fake_.log().back().target.find("uploadType=resumable&ifGenerationMatch=0"), std::string::npos);
  EXPECT_EQ(fake_.Count(Op::kChunk), 0);

  // Plain puts overwrite.
  ASSERT_TRUE(store_->PutBuffer("bkt", "once", "v3", {}).ok());
  EXPECT_EQ(fake_.GetObject("bkt", "once")->data, "v3");
}

TEST_F(GcsStoreTest, CreateOnlyRetryAfterALostResponseSucceeds) {
  fake_.LoseNextUploadResponses(1);
  PutOptions create;
  create.create_only = true;
  auto info = store_->PutBuffer("bkt", "lost", "payload", create);
  ASSERT_TRUE(info.ok()) << info.status().ToString();  // the retry's 412 is resolved by comparing CRC32C
  EXPECT_EQ(info->crc32c, Crc32cToBase64(Crc32c("payload")));
  EXPECT_EQ(fake_.Count(Op::kMediaUpload), 2);
  EXPECT_EQ(fake_.Count(Op::kMetadata), 1);
}

TEST_F(GcsStoreTest, TransientErrorsAreRetried) {
  fake_.FailNext(Op::kMediaUpload, 2, 503);
  ASSERT_TRUE(store_->PutBuffer("bkt", "k", "v", {}).ok());
  EXPECT_EQ(fake_.Count(Op::kMediaUpload), 3);
  fake_.FailNext(Op::kMetadata, 1, 500);
  fake_.FailNext(Op::kDownload, 1, 502);
  fake_.FailNext(Op::kList, 1, 408);
  fake_.FailNext(Op::kDelete, 1, 504);
  EXPECT_TRUE(store_->Stat("bkt", "k").ok());
  EXPECT_TRUE(store_->GetToBuffer("bkt", "k", {}).ok());
  EXPECT_TRUE(store_->List("bkt", {}).ok());
  EXPECT_TRUE(store_->Delete("bkt", "k").ok());
  EXPECT_FALSE(fake_.GetObject("bkt", "k"));
}

TEST_F(GcsStoreTest, RetriesExhaustedIsUnavailableAfterNAttempts) {
  fake_.PutObject("bkt", "k", "v");
  fake_.FailNext(Op::kMetadata, 100, 503);
  auto r = store_->Stat("bkt", "k");
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("after 6 attempts"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("gs://bkt/k"), std::string::npos) << r.status().message();
  EXPECT_EQ(fake_.Count(Op::kMetadata), 6);

  // A resumable upload whose chunks keep failing gives up too, with the count.
  fake_.FailNext(Op::kChunk, 100, 503);
  auto up = store_->PutBuffer("bkt", "big", RandomData(600 * kKiB, 8), {});
  ASSERT_EQ(up.status().code(), StatusCode::kUnavailable) << up.status().ToString();
  EXPECT_NE(up.status().message().find("attempts"), std::string::npos);
  EXPECT_FALSE(fake_.GetObject("bkt", "big"));
}

TEST_F(GcsStoreTest, HonoursRetryAfter) {
  fake_.PutObject("bkt", "k", "v");
  fake_.FailNext(Op::kDownload, 1, 429, "1");
  const auto start = std::chrono::steady_clock::now();
  auto r = store_->GetToBuffer("bkt", "k", {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(950));
}

TEST_F(GcsStoreTest, FinalErrorsAreNotRetried) {
  fake_.FailNext(Op::kMetadata, 1, 400);
  EXPECT_EQ(store_->Stat("bkt", "k").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fake_.Count(Op::kMetadata), 1);
  fake_.FailNext(Op::kMetadata, 1, 403);
  auto denied = store_->Stat("bkt", "k");
  EXPECT_EQ(denied.status().code(), StatusCode::kIoError);
  EXPECT_NE(denied.status().message().find("credentials"), std::string::npos) << denied.status().message();
  EXPECT_NE(denied.status().message().find("injected failure 403"), std::string::npos);
}

TEST_F(GcsStoreTest, UnconditionalWritesAreNotRetriedWhenConfiguredSo) {
  GcsStoreOptions o;
  o.retry_unconditional_writes = false;
  auto store = MakeStore(o);
  fake_.FailNext(Op::kMediaUpload, 1, 503);
  auto r = store->PutBuffer("bkt", "k", "v", {});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("after 1 attempt"), std::string::npos) << r.status().message();
  fake_.FailNext(Op::kMediaUpload, 1, 503);
  PutOptions create;
  create.create_only = true;  // carries a precondition: retried
  EXPECT_TRUE(store->PutBuffer("bkt", "k", "v", create).ok());
}

TEST_F(GcsStoreTest, UploadCrcMismatchIsAnErrorAndTheObjectIsRemoved) {
  fake_.CorruptNextUploadCrc();
  auto r = store_->PutBuffer("bkt", "bad", "some text\n", {});
  ASSERT_EQ(r.status().code(), StatusCode::kInternal) << r.status().ToString();
  EXPECT_NE(r.status().message().find("CRC32C mismatch"), std::string::npos);
  EXPECT_NE(r.status().message().find("not written"), std::string::npos);
  EXPECT_NE(r.status().message().find("gs://bkt/bad"), std::string::npos);
  EXPECT_FALSE(fake_.GetObject("bkt", "bad"));
  EXPECT_EQ(store_->Stat("bkt", "bad").status().code(), StatusCode::kNotFound);
  // The delete named the generation, so it cannot remove a newer object.
  auto log = fake_.log();
  auto del = std::find_if(log.begin(), log.end(), [](const auto& l) { return l.op == Op::kDelete; });
  ASSERT_NE(del, log.end());
  EXPECT_EQ(del->target, "/storage/v1/b/bkt/o/bad?ifGenerationMatch=" + std::to_string(1000));

  fake_.CorruptNextUploadCrc();
  auto big = store_->PutBuffer("bkt", "bad-big", RandomData(700 * kKiB, 9), {});
  ASSERT_EQ(big.status().code(), StatusCode::kInternal) << big.status().ToString();
  EXPECT_NE(big.status().message().find("CRC32C mismatch"), std::string::npos);
  EXPECT_FALSE(fake_.GetObject("bkt", "bad-big"));
}

TEST_F(GcsStoreTest, UploadsSendTheirCrcSoTheServerCanReject) {
  // The fake checks x-goog-hash as GCS does (400 on a mismatch).
  ASSERT_TRUE(store_->PutBuffer("bkt", "k", "data", {}).ok());
  EXPECT_EQ(fake_.log().back().goog_hash, "crc32c=rth90Q==");  // CRC32C("data")
  fake_.ClearLog();
  const std::string big = RandomData(600 * kKiB, 13);
  ASSERT_TRUE(store_->PutBuffer("bkt", "big", big, {}).ok());
  auto log = fake_.log();
  ASSERT_EQ(log.back().op, Op::kChunk);
  EXPECT_EQ(log.back().goog_hash, "crc32c=" + Crc32cToBase64(Crc32c(big)));  // on the final chunk only
  EXPECT_EQ(log[log.size() - 2].goog_hash, "");
}

TEST_F(GcsStoreTest, LostFinalChunkResponseIsResolvedByTheStatusQuery) {
  const std::string data = RandomData(2 * kChunk + 10, 14);
  bool injected = false;
  PutOptions put;
  put.progress = [&](uint64_t done, uint64_t) {
    if (!injected && done == 2 * kChunk) {
      injected = true;
      fake_.DropNextChunks(1, 1 << 20);  // the last chunk is stored and finalised; its reply is lost
    }
  };
  auto info = store_->PutBuffer("bkt", "final.bin", data, put);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->size_bytes, data.size());
  auto log = fake_.log();
  EXPECT_EQ(log.back().op, Op::kStatusQuery);
  EXPECT_EQ(log.back().status, 200);
  EXPECT_EQ(fake_.Count(Op::kChunk), 3);
}

TEST_F(GcsStoreTest, DownloadCrcMismatchIsAnErrorAndLeavesNoFile) {
  fake_.PutObject("bkt", "obj", RandomData(300 * kKiB, 10));
  fake_.CorruptNextDownloadHash(2);
  const std::string dst = (dir_ / "out.bin").string();
  auto r = store_->GetToFile("bkt", "obj", dst, {});
  ASSERT_EQ(r.status().code(), StatusCode::kInternal) << r.status().ToString();
  EXPECT_NE(r.status().message().find("CRC32C mismatch"), std::string::npos);
  EXPECT_NE(r.status().message().find("gs://bkt/obj"), std::string::npos);
  EXPECT_FALSE(fs::exists(dst));
  EXPECT_TRUE(FilesInDir().empty());
  EXPECT_EQ(store_->GetToBuffer("bkt", "obj", {}).status().code(), StatusCode::kInternal);
  // A ranged read cannot be checked against the whole-object hash; it is served.
  fake_.CorruptNextDownloadHash();
  GetOptions range;
  range.offset = 10;
  range.length = 20;
  EXPECT_TRUE(store_->GetToBuffer("bkt", "obj", range).ok());
}

TEST_F(GcsStoreTest, DownloadResumesAfterACutConnection) {
  const std::string data = RandomData(1024 * kKiB, 11);
  fake_.PutObject("bkt", "obj", data);
  const int64_t gen = fake_.GetObject("bkt", "obj")->generation;
  fake_.CutNextDownloadAfter(100000);
  const std::string dst = (dir_ / "out.bin").string();
  auto r = store_->GetToFile("bkt", "obj", dst, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->generation, gen);
  EXPECT_TRUE(ReadLocalFile(dst) == data);
  auto log = fake_.log();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1].range, "bytes=100000-");
  EXPECT_NE(log[1].target.find("generation=" + std::to_string(gen)), std::string::npos);
}

TEST_F(GcsStoreTest, NotFoundNamesTheUri) {
  auto stat = store_->Stat("bkt", "missing/key");
  ASSERT_EQ(stat.status().code(), StatusCode::kNotFound);
  EXPECT_NE(stat.status().message().find("gs://bkt/missing/key"), std::string::npos) << stat.status().message();
  EXPECT_NE(stat.status().message().find("No such object"), std::string::npos);
  EXPECT_EQ(store_->GetToBuffer("bkt", "missing/key", {}).status().code(), StatusCode::kNotFound);
  const std::string dst = (dir_ / "never").string();
  auto file = store_->GetToFile("bkt", "missing/key", dst, {});
  EXPECT_EQ(file.status().code(), StatusCode::kNotFound);
  EXPECT_NE(file.status().message().find("gs://bkt/missing/key"), std::string::npos);
  EXPECT_TRUE(FilesInDir().empty());
  EXPECT_TRUE(store_->Delete("bkt", "missing/key").ok());  // idempotent
  EXPECT_EQ(store_->Stat("", "k").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Stat("bkt", "").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(GcsStoreTest, RangeReads) {
  fake_.PutObject("bkt", "r", "hello world");
  GetOptions g;
  g.offset = 6;
  g.length = 5;
  EXPECT_EQ(*store_->GetToBuffer("bkt", "r", g), "world");
  EXPECT_EQ(fake_.log().back().range, "bytes=6-10");
  g.length.reset();
  g.offset = 4;
  EXPECT_EQ(*store_->GetToBuffer("bkt", "r", g), "o world");
  g.offset = 0;
  g.length = 5;
  EXPECT_EQ(*store_->GetToBuffer("bkt", "r", g), "hello");
  g.offset = 11;
  g.length.reset();
  auto at_end = store_->GetToBuffer("bkt", "r", g);
  ASSERT_TRUE(at_end.ok()) << at_end.status().ToString();
  EXPECT_EQ(*at_end, "");
  g.offset = 50;
  EXPECT_EQ(store_->GetToBuffer("bkt", "r", g).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(GcsStoreTest, ListPagingAndPrefixes) {
  for (const char* k : {"runs/r1/a", "runs/r1/b", "runs/r1/c", "runs/r1/d", "runs/r1/e", "runs/r2/x",
                        "runs/top.txt", "other"})
    fake_.PutObject("bkt", k, k);
  ListOptions dirs;
  dirs.prefix = "runs/";
  dirs.delimiter = "/";
  auto top = store_->List("bkt", dirs);
  ASSERT_TRUE(top.ok()) << top.status().ToString();
  EXPECT_EQ(top->prefixes, (std::vector<std::string>{"runs/r1/", "runs/r2/"}));
  ASSERT_EQ(top->objects.size(), 1u);
  EXPECT_EQ(top->objects[0].key, "runs/top.txt");
  EXPECT_EQ(top->objects[0].size_bytes, 12u);
  EXPECT_TRUE(top->next_page_token.empty());

  // Pages of 2 over runs/r1/: 2 + 2 + 1.
  ListOptions paged;
  paged.prefix = "runs/r1/";
  paged.max_results = 2;
  std::vector<std::string> keys;
  int pages = 0;
  do {
    auto page = store_->List("bkt", paged);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    ++pages;
    for (const auto& o : page->objects) keys.push_back(o.key);
    paged.page_token = page->next_page_token;
  } while (!paged.page_token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(keys, (std::vector<std::string>{"runs/r1/a", "runs/r1/b", "runs/r1/c", "runs/r1/d", "runs/r1/e"}));
  EXPECT_NE(fake_.log().back().target.find("maxResults=2"), std::string::npos);
  EXPECT_NE(fake_.log().back().target.find("pageToken="), std::string::npos);

  // Paging with a delimiter: prefixes count towards the page size.
  dirs.max_results = 1;
  dirs.page_token.clear();
  std::vector<std::string> entries;
  pages = 0;
  do {
    auto page = store_->List("bkt", dirs);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    ++pages;
    for (const auto& p : page->prefixes) entries.push_back(p);
    for (const auto& o : page->objects) entries.push_back(o.key);
    dirs.page_token = page->next_page_token;
  } while (!dirs.page_token.empty() && pages < 10);
  EXPECT_EQ(entries, (std::vector<std::string>{"runs/r1/", "runs/r2/", "runs/top.txt"}));

  auto all = store_->List("bkt", {});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->objects.size(), 8u);
  EXPECT_EQ(all->objects.front().key, "other");
}

TEST_F(GcsStoreTest, OddNamesArePercentEncoded) {
  for (const std::string key : {"odd/a b+c%é.txt", "q?x#y&z=1", "sp ace/", "~tilde-._"}) {
    auto put = store_->PutBuffer("bkt", key, "v:" + key, {});
    ASSERT_TRUE(put.ok()) << key << ": " << put.status().ToString();
    EXPECT_EQ(put->key, key);
    auto got = store_->GetToBuffer("bkt", key, {});
    ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
    EXPECT_EQ(*got, "v:" + key);
    ASSERT_TRUE(fake_.GetObject("bkt", key)) << key;
  }
  EXPECT_EQ(fake_.log().back().target, "/storage/v1/b/bkt/o/~tilde-._?alt=media");
  ListOptions l;
  l.prefix = "odd/a b";
  auto listed = store_->List("bkt", l);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->objects.size(), 1u);
  EXPECT_EQ(listed->objects[0].key, "odd/a b+c%é.txt");
  EXPECT_TRUE(store_->Delete("bkt", "odd/a b+c%é.txt").ok());
  EXPECT_FALSE(fake_.GetObject("bkt", "odd/a b+c%é.txt"));
}

TEST_F(GcsStoreTest, ConcurrentCallsAreSafe) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      const std::string data = RandomData(t % 2 ? 600 * kKiB : 1000, 100 + t);
      const std::string key = "conc/" + std::to_string(t);
      if (!store_->PutBuffer("bkt", key, data, {}).ok()) ++failures;
      auto got = store_->GetToBuffer("bkt", key, {});
      if (!got.ok() || *got != data) ++failures;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(GcsStoreTest, BearerTokenIsSent) {
  fake_.RequireBearer("ya29.test");
  GcsStoreOptions o;
  o.credentials = NewStaticTokenCredentials("ya29.test");
  auto store = MakeStore(o);
  ASSERT_TRUE(store->PutBuffer("bkt", "k", RandomData(600 * kKiB, 12), {}).ok());
  for (const auto& l : fake_.log()) EXPECT_EQ(l.authorization, "Bearer ya29.test");
  // Without the token: 401, reported with a hint about credentials.
  auto anon = store_->Stat("bkt", "k");
  EXPECT_EQ(anon.status().code(), StatusCode::kIoError);
  EXPECT_NE(anon.status().message().find("HTTP 401"), std::string::npos);
  EXPECT_NE(anon.status().message().find("credentials"), std::string::npos);
}

TEST(GcsStoreOptionsTest, ChunkSizeMustBeAMultipleOf256KiB) {
  GcsStoreOptions o;
  o.endpoint = "http://127.0.0.1:1";
  o.chunk_size = 100000;
  auto s = NewGcsStore(o);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("256 KiB"), std::string::npos);
  o.chunk_size = 512 * 1024;
  EXPECT_TRUE(NewGcsStore(o).ok());
  EXPECT_EQ((*NewGcsStore(o))->scheme(), "gs");
}

TEST(GcsStoreOptionsTest, EmulatorEndpointFromEnvironment) {
  ::unsetenv("CLOUD_STORAGE_EMULATOR_HOST");
  ::unsetenv("STORAGE_EMULATOR_HOST");
  EXPECT_EQ(EmulatorEndpointFromEnv(), "");
  ::setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9199", 1);
  EXPECT_EQ(EmulatorEndpointFromEnv(), "http://127.0.0.1:9199");
  ::setenv("STORAGE_EMULATOR_HOST", "http://localhost:9199/", 1);
  EXPECT_EQ(EmulatorEndpointFromEnv(), "http://localhost:9199");
  ::setenv("CLOUD_STORAGE_EMULATOR_HOST", "https://emu:1", 1);  // the C++ client's name wins
  EXPECT_EQ(EmulatorEndpointFromEnv(), "https://emu:1");
  ::unsetenv("CLOUD_STORAGE_EMULATOR_HOST");
  ::unsetenv("STORAGE_EMULATOR_HOST");
}

TEST(GcsStoreOptionsTest, TransportFailuresAreRetriedThenUnavailable) {
  // Nothing listens on this port: connection refused on every attempt.
  int port = FreePort();
  GcsStoreOptions o;
  o.endpoint = "127.0.0.1:" + std::to_string(port);
  o.retry = FastRetry();
  o.retry.max_attempts = 3;
  auto store = *NewGcsStore(o);
  auto r = store->Stat("bkt", "k");
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("after 3 attempts"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace cohort::storage::gcs
