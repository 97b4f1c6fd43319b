// `cohort storage cp|ls|rm|cat` end to end: runs the built binary
// (COHORT_BIN_DIR/cohort) on local paths and file:// URIs via popen, checks
// output, exit codes (0 ok, 1 failed operation, 2 usage) and messages, and
// the progress bar, which only appears when stderr is a terminal (a pty).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "cohort/storage/crc32c.h"
#include "storage/storage_testing.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using testing::PatternBytes;
using testing::ReadLocalFile;
using testing::ScratchDir;
using testing::WriteLocalFile;

const std::string kCohort = std::string(COHORT_BIN_DIR) + "/cohort";

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
};

class StorageCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kCohort)) << kCohort << " is not built";
    ASSERT_FALSE(dir_.path().empty());
  }

  // Runs `cohort storage ARGS...` with stdout and stderr captured.
  RunResult Storage(const std::vector<std::string>& args) {
    std::string cmd = Quote(kCohort) + " storage";
    for (const std::string& a : args) cmd += " " + Quote(a);
    std::string err_path = dir_ / "stderr.txt";
    cmd += " 2>" + Quote(err_path);
    RunResult r;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) return r;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    int status = ::pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.err = ReadLocalFile(err_path);
    fs::remove(err_path);
    return r;
  }

  ScratchDir dir_;
};

TEST_F(StorageCliTest, CopyListCatRemoveOneFile) {
  std::string data = "hello world";
  data += std::string("\0binary\xff", 8);
  WriteLocalFile(dir_ / "src.txt", data);
  const std::string remote = "file://" + (dir_ / "remote/x.txt");
  RunResult cp = Storage({"cp", dir_ / "src.txt", remote});
  ASSERT_EQ(cp.code, 0) << cp.err;
  EXPECT_EQ(cp.err, "");  // not a terminal: no progress bar
  EXPECT_EQ(ReadLocalFile(dir_ / "remote/x.txt"), data);

  RunResult ls = Storage({"ls", "file://" + (dir_ / "remote")});
  ASSERT_EQ(ls.code, 0) << ls.err;
  EXPECT_NE(ls.out.find(remote), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find(std::to_string(data.size())), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find(Crc32cToBase64(Crc32c(data))), std::string::npos) << ls.out;

  RunResult cat = Storage({"cat", remote});
  ASSERT_EQ(cat.code, 0) << cat.err;
  EXPECT_EQ(cat.out, data);

  RunResult rm = Storage({"rm", remote});
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_FALSE(fs::exists(dir_ / "remote/x.txt"));
  RunResult rm_again = Storage({"rm", remote});
  EXPECT_EQ(rm_again.code, 1);
  EXPECT_NE(rm_again.err.find("no such object"), std::string::npos) << rm_again.err;
}

TEST_F(StorageCliTest, RecursiveCopyListAndRemove) {
  fs::create_directories(dir_ / "tree/sub/deep");
  WriteLocalFile(dir_ / "tree/a", "A");
  WriteLocalFile(dir_ / "tree/sub/b", "BB");
  WriteLocalFile(dir_ / "tree/sub/deep/c", "CCC");
  RunResult up = Storage({"cp", "-r", dir_ / "tree", "file://" + (dir_ / "store/run1")});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(ReadLocalFile(dir_ / "store/run1/sub/deep/c"), "CCC");

  RunResult ls = Storage({"ls", dir_ / "store/run1"});
  ASSERT_EQ(ls.code, 0) << ls.err;
  EXPECT_NE(ls.out.find("file://" + (dir_ / "store/run1/a")), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("file://" + (dir_ / "store/run1/sub/") + "\n"), std::string::npos) << ls.out;
  EXPECT_EQ(ls.out.find("deep"), std::string::npos) << ls.out;  // one level only
  RunResult lsr = Storage({"ls", "-r", dir_ / "store/run1"});
  ASSERT_EQ(lsr.code, 0) << lsr.err;
  EXPECT_NE(lsr.out.find("file://" + (dir_ / "store/run1/sub/deep/c")), std::string::npos) << lsr.out;

  RunResult down = Storage({"cp", "-r", "file://" + (dir_ / "store/run1/"), dir_ / "restored"});
  ASSERT_EQ(down.code, 0) << down.err;
  EXPECT_EQ(ReadLocalFile(dir_ / "restored/a"), "A");
  EXPECT_EQ(ReadLocalFile(dir_ / "restored/sub/b"), "BB");
  EXPECT_EQ(ReadLocalFile(dir_ / "restored/sub/deep/c"), "CCC");

  RunResult rm = Storage({"rm", "-r", "file://" + (dir_ / "store/run1")});
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_FALSE(fs::exists(dir_ / "store/run1"));
  RunResult gone = Storage({"ls", dir_ / "store/run1"});
  EXPECT_EQ(gone.code, 1);
  EXPECT_NE(gone.err.find(dir_ / "store/run1"), std::string::npos) << gone.err;
}

TEST_F(StorageCliTest, Errors) {
  RunResult missing = Storage({"cp", dir_ / "nope.bin", dir_ / "out.bin"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find(dir_ / "nope.bin"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("cohort storage cp"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(dir_ / "out.bin"));

  RunResult scheme = Storage({"cp", "ftp://host/x", dir_ / "out.bin"});
  EXPECT_NE(scheme.code, 0);
  EXPECT_NE(scheme.err.find("ftp"), std::string::npos) << scheme.err;

  RunResult relative_file_uri = Storage({"ls", "file://relative/x"});
  EXPECT_NE(relative_file_uri.code, 0);

  fs::create_directories(dir_ / "adir");
  WriteLocalFile(dir_ / "adir/f", "f");
  RunResult rm_dir = Storage({"rm", dir_ / "adir"});
  EXPECT_EQ(rm_dir.code, 1);
  EXPECT_NE(rm_dir.err.find("use rm -r"), std::string::npos) << rm_dir.err;
  EXPECT_TRUE(fs::exists(dir_ / "adir/f"));
  RunResult dir_without_r = Storage({"cp", dir_ / "adir", dir_ / "x"});
  EXPECT_EQ(dir_without_r.code, 1);
  EXPECT_NE(dir_without_r.err.find("-r"), std::string::npos) << dir_without_r.err;

  RunResult cat_missing = Storage({"cat", "file://" + (dir_ / "none")});
  EXPECT_EQ(cat_missing.code, 1);
  EXPECT_NE(cat_missing.err.find("file://" + (dir_ / "none") + ": no such object"),
            std::string::npos) << cat_missing.err;

  EXPECT_EQ(Storage({"cp", dir_ / "only_one_arg"}).code, 2);
  EXPECT_EQ(Storage({}).code, 2);
  EXPECT_EQ(Storage({"frobnicate"}).code, 2);
}

TEST_F(StorageCliTest, ProgressBarOnATerminalOnly) {
  const std::string data = PatternBytes(size_t{12} << 20, 8);
  WriteLocalFile(dir_ / "big.bin", data);
  // Plain: nothing on stderr.
  RunResult plain = Storage({"cp", dir_ / "big.bin", dir_ / "plain.bin"});
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(plain.err, "");
  // On a pty: the bar, ending at 100%.
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string src = dir_ / "big.bin", dst = dir_ / "tty.bin";
    ::execl(kCohort.c_str(), "cohort", "storage", "cp", src.c_str(), dst.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string tty_out;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(master, buf, sizeof(buf));
    if (n > 0) {
      tty_out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EIO once the child has exited
  }
  ::close(master);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << tty_out;
  EXPECT_NE(tty_out.find("100%"), std::string::npos) << tty_out;
  EXPECT_NE(tty_out.find("12.0/12.0 MiB"), std::string::npos) << tty_out;
  EXPECT_NE(tty_out.find("MiB/s"), std::string::npos) << tty_out;
  EXPECT_NE(tty_out.find("[####################]"), std::string::npos) << tty_out;
  EXPECT_EQ(ReadLocalFile(dir_ / "tty.bin"), data);
}

}  // namespace
}  // namespace cohort::storage
