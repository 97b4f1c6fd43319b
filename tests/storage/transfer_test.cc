// CopyFile / CopyTree / RemoveTree / ListAll (cohort/storage/transfer.h)
// between local paths and mem:// (a stand-in for any remote store, in this
// process), including remote -> remote and paging past 1000 objects.
#include "cohort/storage/transfer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "backends.h"
#include "cohort/storage/crc32c.h"
#include "storage/storage_testing.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using testing::PatternBytes;
using testing::ReadLocalFile;
using testing::ScratchDir;
using testing::WriteLocalFile;

class TransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    mem_ = NewMemoryBlobStore();
    SetStoreForScheme("mem", mem_);
  }
  void TearDown() override { SetStoreForScheme("mem", nullptr); }

  std::string MemGet(const std::string& bucket, const std::string& key) {
    Result<std::string> r = mem_->GetToBuffer(bucket, key, {});
    EXPECT_TRUE(r.ok()) << key << ": " << r.status().ToString();
    return r.ok() ? *r : "<missing>";
  }
  void MakeTree(const std::string& root) {
    fs::create_directories(root + "/sub/deeper");
    fs::create_directories(root + "/empty");
    WriteLocalFile(root + "/a.txt", "A");
    WriteLocalFile(root + "/sub/b.bin", PatternBytes(1500000, 3));
    WriteLocalFile(root + "/sub/deeper/c", "CCC");
  }
  std::vector<std::string> Keys(const std::vector<ObjectInfo>& infos) {
    std::vector<std::string> out;
    for (const auto& i : infos) out.push_back(i.key);
    return out;
  }

  ScratchDir dir_;
  std::shared_ptr<BlobStore> mem_;
};

TEST_F(TransferTest, CopyFileInEveryDirection) {
  const std::string data = PatternBytes(2500000, 5);
  WriteLocalFile(dir_ / "src.bin", data);
  uint64_t last_done = 0, last_total = 0;
  auto progress = [&](uint64_t done, uint64_t total) {
    last_done = done;
    last_total = total;
  };
  // local -> remote
  ASSERT_TRUE(CopyFile(dir_ / "src.bin", "mem://b/x/up.bin", progress).ok());
  EXPECT_EQ(MemGet("b", "x/up.bin"), data);
  EXPECT_EQ(last_done, data.size());
  EXPECT_EQ(last_total, data.size());
  // remote -> local (parents created)
  ASSERT_TRUE(CopyFile("mem://b/x/up.bin", dir_ / "down/here.bin", progress).ok());
  EXPECT_EQ(ReadLocalFile(dir_ / "down/here.bin"), data);
  // remote -> remote (through a temp file)
  last_done = 0;
  ASSERT_TRUE(CopyFile("mem://b/x/up.bin", "mem://other/copy.bin", progress).ok());
  EXPECT_EQ(MemGet("other", "copy.bin"), data);
  EXPECT_EQ(last_done, data.size());
  // local -> local, also via a file:// URI
  ASSERT_TRUE(CopyFile("file://" + (dir_ / "src.bin"), dir_ / "local_copy.bin").ok());
  EXPECT_EQ(ReadLocalFile(dir_ / "local_copy.bin"), data);
}

TEST_F(TransferTest, CopyFileIntoADirectoryKeepsTheBaseName) {
  WriteLocalFile(dir_ / "model.pt", "weights");
  ASSERT_TRUE(CopyFile(dir_ / "model.pt", "mem://b/runs/r1/").ok());
  EXPECT_EQ(MemGet("b", "runs/r1/model.pt"), "weights");
  ASSERT_TRUE(CopyFile(dir_ / "model.pt", "mem://b").ok());
  EXPECT_EQ(MemGet("b", "model.pt"), "weights");
  fs::create_directories(dir_ / "into");
  ASSERT_TRUE(CopyFile("mem://b/runs/r1/model.pt", dir_ / "into").ok());
  EXPECT_EQ(ReadLocalFile(dir_ / "into/model.pt"), "weights");
}

TEST_F(TransferTest, CopyFileErrorsNameTheSource) {
  Status missing = CopyFile(dir_ / "nope.bin", "mem://b/x");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing.ToString();
  EXPECT_NE(missing.message().find(dir_ / "nope.bin"), std::string::npos) << missing.ToString();
  Status remote_missing = CopyFile("mem://b/none", dir_ / "out");
  EXPECT_EQ(remote_missing.code(), StatusCode::kNotFound) << remote_missing.ToString();
  EXPECT_NE(remote_missing.message().find("mem://b/none"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  Status a_dir = CopyFile(dir_.path(), "mem://b/x");
  EXPECT_EQ(a_dir.code(), StatusCode::kInvalidArgument) << a_dir.ToString();
  EXPECT_EQ(CopyFile("bogus://x/y", "mem://b/x").code(), StatusCode::kInvalidArgument);
}

TEST_F(TransferTest, CopyTreeUpAndBackDown) {
  MakeTree(dir_ / "tree");
  WriteLocalFile(dir_ / "tree/sub/.b.bin.tmp.deadbeef", "debris");  // skipped
  std::vector<ObjectInfo> copied;
  uint64_t last_done = 0, last_total = 0;
  Status up = CopyTree(dir_ / "tree", "mem://b/runs/r1",
                       [&](uint64_t done, uint64_t total) {
                         EXPECT_GE(done, last_done);
                         last_done = done;
                         last_total = total;
                       },
                       &copied);
  ASSERT_TRUE(up.ok()) << up.ToString();
  EXPECT_EQ(Keys(copied),
            (std::vector<std::string>{"runs/r1/a.txt", "runs/r1/sub/b.bin", "runs/r1/sub/deeper/c"}));
  EXPECT_EQ(last_total, 1u + 1500000u + 3u);
  EXPECT_EQ(last_done, last_total);
  EXPECT_EQ(MemGet("b", "runs/r1/sub/deeper/c"), "CCC");
  EXPECT_EQ(copied[1].crc32c, Crc32cToBase64(Crc32c(PatternBytes(1500000, 3))));

  // Back down into a new directory; a trailing '/' on the source is the same tree.
  copied.clear();
  ASSERT_TRUE(CopyTree("mem://b/runs/r1/", dir_ / "back", nullptr, &copied).ok());
  EXPECT_EQ(copied.size(), 3u);
  EXPECT_EQ(ReadLocalFile(dir_ / "back/a.txt"), "A");
  EXPECT_EQ(ReadLocalFile(dir_ / "back/sub/b.bin"), PatternBytes(1500000, 3));
  EXPECT_EQ(ReadLocalFile(dir_ / "back/sub/deeper/c"), "CCC");
  EXPECT_FALSE(fs::exists(dir_ / "back/sub/.b.bin.tmp.deadbeef"));

  // Remote -> remote, and local -> local.
  ASSERT_TRUE(CopyTree("mem://b/runs/r1", "mem://c/mirror", nullptr, nullptr).ok());
  EXPECT_EQ(MemGet("c", "mirror/sub/deeper/c"), "CCC");
  ASSERT_TRUE(CopyTree(dir_ / "tree", dir_ / "tree2", nullptr, nullptr).ok());
  EXPECT_EQ(ReadLocalFile(dir_ / "tree2/sub/deeper/c"), "CCC");
}

TEST_F(TransferTest, CopyTreeOfOneObjectOrNothing) {
  WriteLocalFile(dir_ / "single", "1");
  std::vector<ObjectInfo> copied;
  ASSERT_TRUE(CopyTree(dir_ / "single", "mem://b/d/", nullptr, &copied).ok());
  EXPECT_EQ(Keys(copied), std::vector<std::string>{"d/single"});
  Status none = CopyTree("mem://b/nothing", dir_ / "x", nullptr, nullptr);
  EXPECT_EQ(none.code(), StatusCode::kNotFound) << none.ToString();
  fs::create_directories(dir_ / "empty_dir");
  EXPECT_TRUE(CopyTree(dir_ / "empty_dir", "mem://b/e", nullptr, nullptr).ok());
}

TEST_F(TransferTest, ListAllOneLevelOrRecursive) {
  MakeTree(dir_ / "t");
  Result<std::vector<ObjectInfo>> level = ListAll(dir_ / "t", false);
  ASSERT_TRUE(level.ok()) << level.status().ToString();
  std::string base = (dir_ / "t").substr(1) + "/";
  EXPECT_EQ(Keys(*level), (std::vector<std::string>{base + "a.txt", base + "sub/"}));
  EXPECT_EQ((*level)[0].size_bytes, 1u);
  Result<std::vector<ObjectInfo>> all = ListAll(dir_ / "t/", true);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(Keys(*all),
            (std::vector<std::string>{base + "a.txt", base + "sub/b.bin", base + "sub/deeper/c"}));
  Result<std::vector<ObjectInfo>> one = ListAll(dir_ / "t/a.txt", false);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].crc32c, Crc32cToBase64(Crc32c("A")));
  Result<std::vector<ObjectInfo>> empty = ListAll(dir_ / "t/empty", false);
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->empty());
  EXPECT_EQ(ListAll(dir_ / "t/none", false).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ListAll("mem://b/none", true).status().code(), StatusCode::kNotFound);
  Result<std::vector<ObjectInfo>> bucket_root = ListAll("mem://emptybucket", false);
  ASSERT_TRUE(bucket_root.ok());
  EXPECT_TRUE(bucket_root->empty());
}

TEST_F(TransferTest, PagingPastOneThousandObjects) {
  for (int i = 0; i < 1205; ++i)
    ASSERT_TRUE(mem_->PutBuffer("b", "many/k" + std::to_string(i), "x", {}).ok());
  ASSERT_TRUE(mem_->PutBuffer("b", "many/sub/z", "z", {}).ok());
  Result<std::vector<ObjectInfo>> all = ListAll("mem://b/many", true);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1206u);
  Result<std::vector<ObjectInfo>> level = ListAll("mem://b/many/", false);
  ASSERT_TRUE(level.ok());
  EXPECT_EQ(level->size(), 1206u);  // 1205 objects + "many/sub/"
  ASSERT_TRUE(RemoveTree("mem://b/many").ok());
  Result<ListResult> left = mem_->List("b", {});
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->objects.empty());
}

TEST_F(TransferTest, RemoveTree) {
  MakeTree(dir_ / "t");
  ASSERT_TRUE(RemoveTree(dir_ / "t/sub").ok());
  EXPECT_FALSE(fs::exists(dir_ / "t/sub"));  // emptied directories go too
  EXPECT_TRUE(fs::exists(dir_ / "t/a.txt"));
  ASSERT_TRUE(RemoveTree(dir_ / "t").ok());
  EXPECT_FALSE(fs::exists(dir_ / "t"));
  EXPECT_EQ(RemoveTree(dir_ / "t").code(), StatusCode::kNotFound);
  EXPECT_EQ(RemoveTree("file:///").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(RemoveTree("/").code(), StatusCode::kInvalidArgument);
  // Remote: the prefix and an object of the same name.
  ASSERT_TRUE(mem_->PutBuffer("b", "p", "obj", {}).ok());
  ASSERT_TRUE(mem_->PutBuffer("b", "p/q", "under", {}).ok());
  ASSERT_TRUE(mem_->PutBuffer("b", "pq", "sibling", {}).ok());
  ASSERT_TRUE(RemoveTree("mem://b/p").ok());
  EXPECT_EQ(mem_->Stat("b", "p").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(mem_->Stat("b", "p/q").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(mem_->Stat("b", "pq").ok());
  EXPECT_EQ(RemoveTree("mem://b/p").code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace cohort::storage
