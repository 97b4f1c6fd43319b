// Tests for checkpoint directory management: commit and find, skipping
// temp and incomplete directories, replacing an epoch, keep-N removal.
#include "cohort/train/checkpoint_dir.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

namespace cohort::train {
namespace {

namespace fs = std::filesystem;

class CheckpointDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/ckpt_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    root_ = base_ + "/run/checkpoints";  // not created yet: Begin makes it
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  // Begin, write one payload file, commit.
  void Save(int64_t epoch, const std::string& payload) {
    auto temp = BeginCheckpoint(root_, epoch);
    ASSERT_TRUE(temp.ok()) << temp.status().ToString();
    ASSERT_TRUE(WriteFileAtomic(*temp + "/model.bin", payload).ok());
    Status s = CommitCheckpoint(root_, *temp, epoch,
                                "{\"epoch\":" + std::to_string(epoch) + "}");
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::set<std::string> Names() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(root_)) out.insert(e.path().filename().string());
    return out;
  }

  std::string base_;
  std::string root_;
};

TEST_F(CheckpointDirTest, NoRootMeansNoCheckpoint) {
  auto r = FindLatestCheckpoint(root_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->has_value());
}

TEST_F(CheckpointDirTest, DirName) {
  EXPECT_EQ(CheckpointDirName(12), "checkpoint_000012");
  EXPECT_EQ(CheckpointDirName(0), "checkpoint_000000");
  EXPECT_EQ(CheckpointDirName(1234567), "checkpoint_1234567");
}

TEST_F(CheckpointDirTest, BeginMakesFreshTempDir) {
  auto temp = BeginCheckpoint(root_, 3);
  ASSERT_TRUE(temp.ok()) << temp.status().ToString();
  EXPECT_EQ(fs::path(*temp).filename().string(),
            ".tmp_checkpoint_3_" + std::to_string(::getpid()));
  EXPECT_TRUE(fs::is_directory(*temp));
  ASSERT_TRUE(WriteFileAtomic(*temp + "/stale", "x").ok());
  auto again = BeginCheckpoint(root_, 3);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *temp);
  EXPECT_TRUE(fs::is_empty(*again));
  EXPECT_EQ(BeginCheckpoint(root_, -1).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(CheckpointDirTest, CommitThenFindLatest) {
  Save(1, "one");
  Save(2, "two");
  auto r = FindLatestCheckpoint(root_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->has_value());
  const CheckpointInfo& info = **r;
  EXPECT_EQ(info.epoch, 2);
  EXPECT_EQ(info.path, root_ + "/checkpoint_000002");
  EXPECT_EQ(info.state_json, "{\"epoch\":2}");
  auto payload = ReadFile(info.path + "/model.bin");
  ASSERT_TRUE(payload.ok());
  EXPECT_EQ(*payload, "two");
  // Nothing temporary is left behind.
  EXPECT_EQ(Names(), (std::set<std::string>{"checkpoint_000001", "checkpoint_000002"}));
  for (const auto& e : fs::directory_iterator(info.path)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  }
}

TEST_F(CheckpointDirTest, IgnoresTempAndIncompleteDirs) {
  Save(4, "four");
  // An uncommitted temp dir of a later epoch, complete-looking inside.
  auto temp = BeginCheckpoint(root_, 9);
  ASSERT_TRUE(temp.ok());
  ASSERT_TRUE(WriteFileAtomic(*temp + "/state.json", "{}").ok());
  // A final-named dir without state.json, and one with a broken state.json.
  fs::create_directories(root_ + "/checkpoint_000007");
  fs::create_directories(root_ + "/checkpoint_000006");
  ASSERT_TRUE(WriteFileAtomic(root_ + "/checkpoint_000006/state.json", "{\"epo").ok());
  // Unrelated names.
  fs::create_directories(root_ + "/checkpoint_abc");
  ASSERT_TRUE(WriteFileAtomic(root_ + "/checkpoint_000008", "a file, not a dir").ok());

  auto r = FindLatestCheckpoint(root_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->epoch, 4);
}

TEST_F(CheckpointDirTest, ReplacesExistingEpoch) {
  Save(5, "old");
  Save(5, "new");
  auto r = FindLatestCheckpoint(root_);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->epoch, 5);
  EXPECT_EQ(*ReadFile((*r)->path + "/model.bin"), "new");
  EXPECT_EQ(Names(), (std::set<std::string>{"checkpoint_000005"}));
}

TEST_F(CheckpointDirTest, ReplacedDirIsFallbackUntilFinalExists) {
  // As left by a crash between the two renames of the non-exchange path.
  Save(3, "three");
  fs::rename(root_ + "/checkpoint_000003", root_ + "/.replaced_checkpoint_3_99");
  auto r = FindLatestCheckpoint(root_);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->epoch, 3);
  EXPECT_EQ(*ReadFile((*r)->path + "/model.bin"), "three");
  // Once a final one exists it wins, and cleanup removes the leftover.
  Save(3, "three again");
  r = FindLatestCheckpoint(root_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*ReadFile((*r)->path + "/model.bin"), "three again");
  ASSERT_TRUE(RemoveOldCheckpoints(root_, 5).ok());
  EXPECT_EQ(Names(), (std::set<std::string>{"checkpoint_000003"}));
}

TEST_F(CheckpointDirTest, CommitRejectsBadStateAndMissingTemp) {
  auto temp = BeginCheckpoint(root_, 1);
  ASSERT_TRUE(temp.ok());
  EXPECT_EQ(CommitCheckpoint(root_, *temp, 1, "{broken").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CommitCheckpoint(root_, root_ + "/.tmp_nope", 1, "{}").code(),
            StatusCode::kNotFound);
  auto r = FindLatestCheckpoint(root_);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
}

TEST_F(CheckpointDirTest, RemoveOldKeepsNewestN) {
  for (int64_t e : {1, 2, 3, 10, 11}) Save(e, std::to_string(e * 7));
  fs::create_directories(root_ + "/checkpoint_000000");  // incomplete, old
  fs::create_directories(root_ + "/.deleting_checkpoint_0_1/x");  // interrupted delete
  auto temp = BeginCheckpoint(root_, 12);  // in progress: untouched
  ASSERT_TRUE(temp.ok());

  ASSERT_TRUE(RemoveOldCheckpoints(root_, 2).ok());
  EXPECT_EQ(Names(), (std::set<std::string>{"checkpoint_000010", "checkpoint_000011",
                                            fs::path(*temp).filename().string()}));
  auto r = FindLatestCheckpoint(root_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->epoch, 11);

  ASSERT_TRUE(RemoveOldCheckpoints(root_, 5).ok());  // fewer than keep: no-op
  EXPECT_EQ(Names().size(), 3u);
  EXPECT_EQ(RemoveOldCheckpoints(root_, 0).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(RemoveOldCheckpoints(root_, 1).ok());
  EXPECT_EQ(Names().count("checkpoint_000010"), 0u);
  EXPECT_EQ(Names().count("checkpoint_000011"), 1u);
}

TEST_F(CheckpointDirTest, WriteFileAtomicAndReadFile) {
  fs::create_directories(base_ + "/f");
  const std::string path = base_ + "/f/data.txt";
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomic(path, std::string("sec\0ond", 7)).ok());
  auto r = ReadFile(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, std::string("sec\0ond", 7));
  EXPECT_EQ(std::distance(fs::directory_iterator(base_ + "/f"), fs::directory_iterator()), 1);
  EXPECT_EQ(ReadFile(base_ + "/f/missing").status().code(), StatusCode::kNotFound);
  Status s = WriteFileAtomic(base_ + "/nodir/x", "y");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(base_ + "/nodir/x"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace cohort::train
