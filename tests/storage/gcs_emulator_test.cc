// GcsStore against a real third-party GCS server: firebase-tools' Cloud
// Storage emulator (pinned 15.34.2), installed by
// tools/emulators/gcs/ensure.sh into ${COHORT_NPM_CACHE:-~/.cache/cohort/npm}/gcs
// (about 2 minutes the first time) and started with its gcs-emu.js launcher
// on a free port with its own TMPDIR (spec storage.md §5.1). One emulator per
// test process; it is killed by PID at the end.
//
// The emulator covers the wire shape: media upload, resumable start + one
// PUT, download + Range, metadata, list paging + delimiter, delete, the 404
// error JSON, odd names. It lacks chunked resumable uploads, preconditions
// and hash checks (those are covered against tests/storage/fake_gcs.h).
// Skips (not fails) when node/npm are missing or the npm registry is unreachable.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "backends.h"
#include "cohort/storage/crc32c.h"
#include "gcs/gcs_store.h"
#include "storage/storage_testing.h"

namespace cohort::storage::gcs {
namespace {

using std::chrono::milliseconds;
namespace fs = std::filesystem;
using storage::testing::FreePort;
using storage::testing::PortAccepts;
using storage::testing::RandomData;
using storage::testing::ReadLocalFile;

class GcsEmulatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // 1. Install (or find) firebase-tools.
    const std::string script = std::string(COHORT_SOURCE_DIR) + "/tools/emulators/gcs/ensure.sh";
    FILE* p = ::popen(("/bin/bash '" + script + "'").c_str(), "r");
    if (p == nullptr) {
      skip_reason_ = new std::string("cannot run " + script);
      return;
    }
    std::string out;
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int status = ::pclose(p);
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc == 2) {
      skip_reason_ = new std::string("node/npm not found: cannot run the firebase-tools GCS emulator");
      return;
    }
    if (rc == 3) {
      skip_reason_ = new std::string(
          "installing firebase-tools failed (npm registry unreachable?): see ensure.sh's stderr above");
      return;
    }
    if (rc != 0) {
      setup_error_ = new std::string(script + " exited with " + std::to_string(rc));
      return;
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    const std::string cache = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);

    // 2. Start it on a free port with its own TMPDIR (instances sharing one delete each other's blobs).
    char tmpl[] = "/tmp/gcs_emu.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      setup_error_ = new std::string("mkdtemp failed");
      return;
    }
    tmpdir_ = new std::string(tmpl);
    const std::string log = *tmpdir_ + "/emulator.log";
    for (int attempt = 0; attempt < 3 && port_ == 0; ++attempt) {
      const int port = FreePort();
      pid_t pid = ::fork();
      if (pid == 0) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::setenv("PORT", std::to_string(port).c_str(), 1);
        ::setenv("HOST", "127.0.0.1", 1);
        ::setenv("TMPDIR", tmpdir_->c_str(), 1);
        if (::chdir(cache.c_str()) != 0) ::_exit(126);
        ::execlp("node", "node", "gcs-emu.js", static_cast<char*>(nullptr));
        ::_exit(127);
      }
      pid_ = pid;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      bool up = false, died = false;
      while (std::chrono::steady_clock::now() < deadline) {
        if (PortAccepts(port)) {
          up = true;
          break;
        }
        int st;
        if (::waitpid(pid, &st, WNOHANG) == pid) {
          died = true;
          break;
        }
        std::this_thread::sleep_for(milliseconds(50));
      }
      if (up) {
        port_ = port;
        break;
      }
      if (!died) Stop();
      pid_ = 0;
    }
    if (port_ == 0) setup_error_ = new std::string("the GCS emulator did not start within 10 s:\n" + ReadLocalFile(log));
  }

  static void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);  // the launcher stops the emulator and deletes its blobs
    for (int i = 0; i < 100; ++i) {
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = 0;
        return;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

  static void TearDownTestSuite() {
    Stop();
    if (tmpdir_) {
      std::error_code ec;
      fs::remove_all(*tmpdir_, ec);
    }
  }

  void SetUp() override {
    if (skip_reason_) GTEST_SKIP() << *skip_reason_;
    ASSERT_EQ(setup_error_, nullptr) << *setup_error_;
    endpoint_ = "http://127.0.0.1:" + std::to_string(port_);
    store_ = MakeStore(8ull << 20, 8ull << 20);
    bucket_ = "bkt-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (char& c : bucket_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    dir_ = fs::path(*tmpdir_) / ("t-" + bucket_);
    fs::create_directories(dir_);
  }

  std::shared_ptr<BlobStore> MakeStore(uint64_t threshold, uint64_t chunk) {
    GcsStoreOptions o;
    o.endpoint = "127.0.0.1:" + std::to_string(port_);  // no scheme: http is implied
    o.resumable_threshold = threshold;
    o.chunk_size = chunk;
    o.retry.initial_backoff = milliseconds(10);
    o.retry.total_deadline = milliseconds(5000);
    auto s = NewGcsStore(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return *s;
  }

  static inline std::string* skip_reason_ = nullptr;
  static inline std::string* setup_error_ = nullptr;
  static inline std::string* tmpdir_ = nullptr;
  static inline pid_t pid_ = 0;
  static inline int port_ = 0;

  std::string endpoint_, bucket_;
  std::shared_ptr<BlobStore> store_;
  fs::path dir_;
};

TEST_F(GcsEmulatorTest, MediaUploadDownloadAndMetadata) {
  PutOptions put;
  put.content_type = "text/plain";
  auto info = store_->PutBuffer(bucket_, "dir/hello.txt", "hello world", put);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->crc32c, "yZRlqg==");  // computed by the emulator, checked by the store
  EXPECT_EQ(info->size_bytes, 11u);
  EXPECT_GT(info->generation, 0);

  auto data = store_->GetToBuffer(bucket_, "dir/hello.txt", {});
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(*data, "hello world");

  auto stat = store_->Stat(bucket_, "dir/hello.txt");
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(stat->size_bytes, 11u);
  EXPECT_EQ(stat->crc32c, "yZRlqg==");
  EXPECT_EQ(stat->generation, info->generation);

  const std::string dst = (dir_ / "hello.txt").string();
  auto file = store_->GetToFile(bucket_, "dir/hello.txt", dst, {});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->crc32c, "yZRlqg==");  // x-goog-hash was present and matched
  EXPECT_EQ(ReadLocalFile(dst), "hello world");

  auto empty = store_->PutBuffer(bucket_, "empty", "", {});
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(empty->crc32c, "AAAAAA==");
  EXPECT_EQ(*store_->GetToBuffer(bucket_, "empty", {}), "");
}

TEST_F(GcsEmulatorTest, SinglePutResumableUpload) {
  // Above the threshold, within one chunk: session start + one PUT, which the emulator supports.
  auto store = MakeStore(256 * 1024, 8ull << 20);
  const std::string data = RandomData(3 * 1024 * 1024 + 17, 1);
  const std::string src = (dir_ / "src.bin").string();
  std::ofstream(src, std::ios::binary) << data;
  auto info = store->PutFile(bucket_, "ckpt/step1.bin", src, {});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->size_bytes, data.size());
  EXPECT_EQ(info->crc32c, Crc32cToBase64(Crc32c(data)));
  const std::string dst = (dir_ / "dst.bin").string();
  auto got = store->GetToFile(bucket_, "ckpt/step1.bin", dst, {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(ReadLocalFile(dst) == data);
}

TEST_F(GcsEmulatorTest, ChunkedResumableIsNotReportedAsWritten) {
  // The emulator finalises a chunked upload at its first chunk (spec §5.1).
  // The store must notice (size/CRC32C check) and not report the object.
  auto store = MakeStore(256 * 1024, 256 * 1024);
  auto r = store->PutBuffer(bucket_, "chunked.bin", RandomData(600 * 1024, 2), {});
  ASSERT_EQ(r.status().code(), StatusCode::kInternal) << r.status().ToString();
  EXPECT_NE(r.status().message().find("mismatch"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("not written"), std::string::npos);
  EXPECT_EQ(store->Stat(bucket_, "chunked.bin").status().code(), StatusCode::kNotFound);
}

TEST_F(GcsEmulatorTest, RangeReads) {
  ASSERT_TRUE(store_->PutBuffer(bucket_, "r", "hello world", {}).ok());
  GetOptions g;
  g.offset = 6;
  g.length = 5;
  auto part = store_->GetToBuffer(bucket_, "r", g);
  ASSERT_TRUE(part.ok()) << part.status().ToString();
  EXPECT_EQ(*part, "world");
  g.offset = 2;
  g.length.reset();
  EXPECT_EQ(*store_->GetToBuffer(bucket_, "r", g), "llo world");
}

TEST_F(GcsEmulatorTest, ListPagingAndDelimiter) {
  for (const char* k : {"runs/r1/a", "runs/r1/b", "runs/r1/c", "runs/r1/d", "runs/r1/e", "runs/r2/x", "runs/top"})
    ASSERT_TRUE(store_->PutBuffer(bucket_, k, k, {}).ok()) << k;
  ListOptions dirs;
  dirs.prefix = "runs/";
  dirs.delimiter = "/";
  auto top = store_->List(bucket_, dirs);
  ASSERT_TRUE(top.ok()) << top.status().ToString();
  EXPECT_EQ(top->prefixes, (std::vector<std::string>{"runs/r1/", "runs/r2/"}));
  ASSERT_EQ(top->objects.size(), 1u);
  EXPECT_EQ(top->objects[0].key, "runs/top");

  ListOptions paged;
  paged.prefix = "runs/r1/";
  paged.max_results = 2;
  std::vector<std::string> keys;
  int pages = 0;
  do {
    auto page = store_->List(bucket_, paged);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    ++pages;
    for (const auto& o : page->objects) keys.push_back(o.key);
    paged.page_token = page->next_page_token;
  } while (!paged.page_token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(keys, (std::vector<std::string>{"runs/r1/a", "runs/r1/b", "runs/r1/c", "runs/r1/d", "runs/r1/e"}));
}

TEST_F(GcsEmulatorTest, DeleteAndNotFound) {
  ASSERT_TRUE(store_->PutBuffer(bucket_, "gone/soon", "x", {}).ok());
  EXPECT_TRUE(store_->Delete(bucket_, "gone/soon").ok());
  EXPECT_TRUE(store_->Delete(bucket_, "gone/soon").ok());  // 404 is fine
  auto stat = store_->Stat(bucket_, "gone/soon");
  ASSERT_EQ(stat.status().code(), StatusCode::kNotFound) << stat.status().ToString();
  const std::string uri = "gs://" + bucket_ + "/gone/soon";
  EXPECT_NE(stat.status().message().find(uri), std::string::npos) << stat.status().message();
  EXPECT_NE(stat.status().message().find("(notFound)"), std::string::npos) << stat.status().message();
  auto get = store_->GetToFile(bucket_, "gone/soon", (dir_ / "x").string(), {});
  EXPECT_EQ(get.status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

TEST_F(GcsEmulatorTest, OddNamesRoundTrip) {
  for (const std::string key : {"odd/a b+c%é.txt", "q?x#y&z=1", "~tilde-._"}) {
    ASSERT_TRUE(store_->PutBuffer(bucket_, key, "v:" + key, {}).ok()) << key;
    auto got = store_->GetToBuffer(bucket_, key, {});
    ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
    EXPECT_EQ(*got, "v:" + key);
    auto stat = store_->Stat(bucket_, key);
    ASSERT_TRUE(stat.ok()) << key;
    EXPECT_EQ(stat->key, key);
  }
  ListOptions l;
  l.prefix = "odd/";
  auto listed = store_->List(bucket_, l);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->objects.size(), 1u);
  EXPECT_EQ(listed->objects[0].key, "odd/a b+c%é.txt");
}

TEST_F(GcsEmulatorTest, StoreFromEnvironmentUsesTheEmulator) {
  ::setenv("STORAGE_EMULATOR_HOST", endpoint_.c_str(), 1);
  auto store = NewGcsStoreFromEnv();
  ::unsetenv("STORAGE_EMULATOR_HOST");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->PutBuffer(bucket_, "env", "from env", {}).ok());
  EXPECT_EQ(*store_->GetToBuffer(bucket_, "env", {}), "from env");
}

}  // namespace
}  // namespace cohort::storage::gcs
