// Crash safety of file:// puts: a writer SIGKILLed in the middle of PutFile
// (a forked child) must never leave a visible partial object. Either the
// object is absent (first write) or it is the previous version, complete; the
// dead writer's temp file may stay on disk but listings skip it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "backends.h"
#include "cohort/storage/crc32c.h"
#include "keys.h"
#include "storage/storage_testing.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using testing::PatternBytes;
using testing::ScratchDir;
using testing::WriteLocalFile;

constexpr size_t kBigBytes = size_t{64} << 20;

class FileCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(root_.path().empty());
    ASSERT_FALSE(src_dir_.path().empty());
    store_ = NewFileStore(root_.path());
    big_path_ = src_dir_ / "big.bin";
    big_ = PatternBytes(kBigBytes, 99);
    WriteLocalFile(big_path_, big_);
  }

  // The temp files in root/dir (size of the largest, or -1 if none).
  int64_t LargestTempFile(const std::string& dir) {
    int64_t largest = -1;
    std::error_code ec;
    for (fs::directory_iterator it(root_ / dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (!IsTempFileName(it->path().filename().string())) continue;
      std::error_code size_ec;
      auto size = fs::file_size(it->path(), size_ec);
      if (!size_ec) largest = std::max<int64_t>(largest, static_cast<int64_t>(size));
    }
    return largest;
  }

  // Forks a child that PutFile()s big.bin to key and, once `stall_after`
  // bytes are written, stalls in its progress callback; waits until the
  // temp file holds that much, then SIGKILLs the child.
  void KillPutMidway(const std::string& key, bool create_only, uint64_t stall_after) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      PutOptions options;
      options.create_only = create_only;
      options.progress = [stall_after](uint64_t done, uint64_t) {
        if (done >= stall_after) ::sleep(60);
      };
      Result<ObjectInfo> r = store_->PutFile("", key, big_path_, options);
      ::_exit(r.ok() ? 0 : 3);
    }
    std::string dir = fs::path(key).parent_path().string();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    bool seen = false;
    while (std::chrono::steady_clock::now() < deadline) {
      // Poll for the temp file, then for it to be at least stall_after long.
      if (LargestTempFile(dir) >= static_cast<int64_t>(stall_after)) {
        seen = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(seen) << "the child's temp file never reached " << stall_after << " bytes";
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child finished before it was killed";
  }

  std::vector<std::string> ListKeys(const std::string& prefix) {
    ListOptions options;
    options.prefix = prefix;
    Result<ListResult> r = store_->List("", options);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    std::vector<std::string> out;
    if (r.ok())
      for (const auto& o : r->objects) out.push_back(o.key);
    return out;
  }

  ScratchDir root_;
  ScratchDir src_dir_;
  std::shared_ptr<BlobStore> store_;
  std::string big_path_;
  std::string big_;
};

TEST_F(FileCrashTest, KilledFirstPutLeavesNoObject) {
  KillPutMidway("ckpt/model.bin", /*create_only=*/false, 8 << 20);
  Result<ObjectInfo> st = store_->Stat("", "ckpt/model.bin");
  EXPECT_EQ(st.status().code(), StatusCode::kNotFound) << st.status().ToString();
  EXPECT_FALSE(fs::exists(root_ / "ckpt/model.bin"));
  EXPECT_TRUE(ListKeys("").empty());
  EXPECT_GE(LargestTempFile("ckpt"), 8 << 20);  // the debris is there, just invisible
  // A later put succeeds next to the debris.
  Result<ObjectInfo> put = store_->PutFile("", "ckpt/model.bin", big_path_, {});
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->crc32c, Crc32cToBase64(Crc32c(big_)));
  EXPECT_EQ(ListKeys(""), std::vector<std::string>{"ckpt/model.bin"});
}

TEST_F(FileCrashTest, KilledOverwriteKeepsTheOldVersionIntact) {
  const std::string old_data = PatternBytes(3 << 20, 1);
  Result<ObjectInfo> v1 = store_->PutBuffer("", "ckpt/latest.bin", old_data, {});
  ASSERT_TRUE(v1.ok()) << v1.status().ToString();
  KillPutMidway("ckpt/latest.bin", /*create_only=*/false, 16 << 20);
  Result<ObjectInfo> st = store_->Stat("", "ckpt/latest.bin");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->size_bytes, old_data.size());
  EXPECT_EQ(st->crc32c, v1->crc32c);
  EXPECT_EQ(st->generation, v1->generation);
  Result<std::string> data = store_->GetToBuffer("", "ckpt/latest.bin", {});
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_TRUE(*data == old_data);
  EXPECT_EQ(ListKeys("ckpt/"), std::vector<std::string>{"ckpt/latest.bin"});
}

TEST_F(FileCrashTest, KilledCreateOnlyPutLeavesNoObject) {
  KillPutMidway("shard/0", /*create_only=*/true, 4 << 20);
  EXPECT_EQ(store_->Stat("", "shard/0").status().code(), StatusCode::kNotFound);
  // The dead writer's temp file does not block the next create-only put.
  PutOptions options;
  options.create_only = true;
  ASSERT_TRUE(store_->PutBuffer("", "shard/0", "done", options).ok());
  EXPECT_EQ(store_->PutBuffer("", "shard/0", "again", options).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(FileCrashTest, KillsAtRandomMomentsNeverExposeAPartialObject) {
  // Versions of distinct sizes and contents; the child rewrites them in a loop.
  std::vector<std::string> versions;
  std::set<std::string> crcs;
  for (int v = 0; v < 3; ++v) {
    versions.push_back(PatternBytes((size_t{2} << 20) + v * 4096, 1000 + v));
    crcs.insert(Crc32cToBase64(Crc32c(versions.back())));
    WriteLocalFile(src_dir_ / ("v" + std::to_string(v)), versions.back());
  }
  std::mt19937 rng(12345);
  bool ever_present = false;
  for (int round = 0; round < 12; ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (int i = 0;; ++i) {
        Result<ObjectInfo> r = store_->PutFile("", "loop/obj", src_dir_ / ("v" + std::to_string(i % 3)), {});
        if (!r.ok()) ::_exit(3);
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 60000)(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer failed: exit " << WEXITSTATUS(status);
    Result<std::string> data = store_->GetToBuffer("", "loop/obj", {});
    if (!data.ok()) {
      ASSERT_EQ(data.status().code(), StatusCode::kNotFound) << data.status().ToString();
      ASSERT_FALSE(ever_present) << "an object that existed disappeared";
      continue;
    }
    ever_present = true;
    EXPECT_EQ(crcs.count(Crc32cToBase64(Crc32c(*data))), 1u) << "round " << round << ": partial object";
    Result<ObjectInfo> st = store_->Stat("", "loop/obj");
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(crcs.count(st->crc32c), 1u);
    EXPECT_EQ(ListKeys("loop/"), std::vector<std::string>{"loop/obj"});
  }
}

}  // namespace
}  // namespace cohort::storage
