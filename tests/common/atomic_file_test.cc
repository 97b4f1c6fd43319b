// Tests of WriteFileAtomically: contents and mode on success, replacing
// (files, symlinks), no temporary file left behind on success or failure,
// error texts, and concurrent writers seen by a reader only as whole files.
#include "cohort/common/atomic_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

namespace cohort {
namespace {

namespace fs = std::filesystem;

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/atomic_file_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }

  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static mode_t Mode(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }
  std::set<std::string> Names(const std::string& dir = "") const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(dir.empty() ? dir_ : dir)) {
      out.insert(e.path().filename().string());
    }
    return out;
  }

  std::string dir_;
};

TEST_F(AtomicFileTest, WritesThenReplacesLeavingNoTemporaryFile) {
  const std::string path = dir_ + "/state.json";
  ASSERT_TRUE(WriteFileAtomically(path, "first\n").ok());
  EXPECT_EQ(Read(path), "first\n");
  ASSERT_TRUE(WriteFileAtomically(path, "second, longer\n").ok());
  EXPECT_EQ(Read(path), "second, longer\n");
  ASSERT_TRUE(WriteFileAtomically(path, "3").ok());  // shorter: no old tail left
  EXPECT_EQ(Read(path), "3");
  EXPECT_EQ(Names(), std::set<std::string>{"state.json"});
}

TEST_F(AtomicFileTest, EmptyBinaryAndLargeContents) {
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/empty", "").ok());
  EXPECT_TRUE(fs::is_regular_file(dir_ + "/empty"));
  EXPECT_EQ(fs::file_size(dir_ + "/empty"), 0u);
  const std::string binary("a\0b\xff\n", 5);
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/binary", binary).ok());
  EXPECT_EQ(Read(dir_ + "/binary"), binary);
  std::string large(3 << 20, '\0');
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<char>(i * 131 % 251);
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/large", large).ok());
  EXPECT_TRUE(Read(dir_ + "/large") == large);
}

TEST_F(AtomicFileTest, ModeIsExactlyTheOneAskedForWhateverTheUmask) {
  const mode_t old_umask = ::umask(077);
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/public", "p").ok());
  EXPECT_EQ(Mode(dir_ + "/public"), 0644u);
  ::umask(022);
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/token", "t", 0600).ok());
  EXPECT_EQ(Mode(dir_ + "/token"), 0600u);
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/token", "t2", 0640).ok());  // a replacement gets the new mode
  EXPECT_EQ(Mode(dir_ + "/token"), 0640u);
  ::umask(old_umask);
}

TEST_F(AtomicFileTest, ReplacesASymlinkNotItsTarget) {
  const std::string target = dir_ + "/target";
  ASSERT_TRUE(WriteFileAtomically(target, "target").ok());
  fs::create_symlink(target, dir_ + "/link");
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/link", "new").ok());
  EXPECT_FALSE(fs::is_symlink(dir_ + "/link"));
  EXPECT_EQ(Read(dir_ + "/link"), "new");
  EXPECT_EQ(Read(target), "target");
}

TEST_F(AtomicFileTest, RelativeBareName) {
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(::chdir(dir_.c_str()), 0);
  Status s = WriteFileAtomically("bare.txt", "bare");
  ASSERT_EQ(::chdir(cwd), 0);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Read(dir_ + "/bare.txt"), "bare");
  EXPECT_EQ(Names(), std::set<std::string>{"bare.txt"});
}

TEST_F(AtomicFileTest, MissingDirectoryNamesThePathAndTheCause) {
  const std::string path = dir_ + "/nodir/x";
  Status s = WriteFileAtomically(path, "y");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(std::strerror(ENOENT)), std::string::npos) << s.message();
  EXPECT_TRUE(Names().empty());
}

TEST_F(AtomicFileTest, FailedRenameRemovesTheTemporaryFile) {
  const std::string path = dir_ + "/taken";
  fs::create_directories(path + "/child");  // a non-empty directory cannot be replaced
  Status s = WriteFileAtomically(path, "y");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message().rfind("cannot rename into place " + path + " (through " + path + ".tmp.", 0), 0u)
      << s.message();
  EXPECT_EQ(Names(), std::set<std::string>{"taken"});
  EXPECT_TRUE(fs::is_directory(path + "/child"));
}

TEST_F(AtomicFileTest, UnwritableDirectoryIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes into read-only directories";
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/kept", "old").ok());
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  Status s = WriteFileAtomically(dir_ + "/kept", "new");
  fs::permissions(dir_, fs::perms::owner_all);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir_ + "/kept"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(std::strerror(EACCES)), std::string::npos) << s.message();
  EXPECT_EQ(Read(dir_ + "/kept"), "old");
}

TEST_F(AtomicFileTest, RejectsPathsThatNameNoFile) {
  EXPECT_EQ(WriteFileAtomically("", "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteFileAtomically(dir_ + "/", "x").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Names().empty());
}

TEST_F(AtomicFileTest, ConcurrentWritersAreSeenOnlyAsWholeVersions) {
  const std::string path = dir_ + "/shared";
  constexpr int kWriters = 4;
  constexpr size_t kSize = 64 << 10;
  ASSERT_TRUE(WriteFileAtomically(path, std::string(kSize, 'a')).ok());
  std::atomic<bool> done{false};
  std::atomic<int> torn{0}, reads{0};
  std::thread reader([&] {
    while (!done.load()) {
      const std::string got = Read(path);
      ++reads;
      const bool whole = got.size() == kSize && got.find_first_not_of(got[0]) == std::string::npos &&
                         got[0] >= 'a' && got[0] < 'a' + kWriters;
      if (!whole) ++torn;
    }
  });
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      const std::string mine(kSize, static_cast<char>('a' + w));
      for (int i = 0; i < 40; ++i) {
        if (!WriteFileAtomically(path, mine).ok()) ++failures;
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(torn.load(), 0) << "of " << reads.load() << " reads";
  EXPECT_EQ(Names(), std::set<std::string>{"shared"});
}

}  // namespace
}  // namespace cohort
