// Tests for the local launcher (cohort/launch/launcher.h) and the `cohort
// launch` / `cohort version` CLI. Ranks are /bin/sh scripts that report what
// they see through files in a temp dir; output is captured through pipes.
// Each test runs on gtest's main thread (plus pipe-reader threads).
#include "cohort/launch/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

extern char** environ;

namespace cohort::launch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/cohort_launch_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    const char* made = ::mkdtemp(buf.data());
    EXPECT_NE(made, nullptr);
    path_ = made ? made : "/tmp";
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A pipe whose read end is drained by a thread; Finish() closes the write
// end and returns everything that was written.
class Capture {
 public:
  Capture() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    read_fd_ = fds[0];
    write_fd_ = fds[1];
    reader_ = std::thread([this] {
      char buf[4096];
      for (;;) {
        ssize_t n = ::read(read_fd_, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        data_.append(buf, static_cast<size_t>(n));
      }
    });
  }
  ~Capture() { Finish(); }
  int fd() const { return write_fd_; }
  std::string Finish() {
    if (write_fd_ >= 0) {
      ::close(write_fd_);
      write_fd_ = -1;
    }
    if (reader_.joinable()) reader_.join();
    if (read_fd_ >= 0) {
      ::close(read_fd_);
      read_fd_ = -1;
    }
    return data_;
  }

 private:
  int read_fd_ = -1;
  int write_fd_ = -1;
  std::thread reader_;
  std::string data_;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "KEY=VALUE" lines -> map.
std::map<std::string, std::string> ParseEnvFile(const std::string& path) {
  std::map<std::string, std::string> env;
  for (const std::string& line : Lines(ReadFile(path))) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return env;
}

bool WaitForFile(const std::string& path, milliseconds timeout) {
  auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    if (fs::exists(path)) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return fs::exists(path);
}

bool ProcessExists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

LaunchOptions ShellOptions(int n, const std::string& script, const Capture& out,
                           const Capture& err) {
  LaunchOptions options;
  options.num_ranks = n;
  options.argv = {"/bin/sh", "-c", script};
  options.out_fd = out.fd();
  options.err_fd = err.fd();
  return options;
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---------------------------------------------------------------------------
// Library

TEST(LaunchTest, EveryRankGetsItsEnvironment) {
  TempDir dir;
  Capture out, err;
  LaunchOptions options = ShellOptions(
      3,
      "for k in MASTER_ADDR MASTER_PORT RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE NODE_RANK "
      "GROUP_RANK TORCHELASTIC_RESTART_COUNT OMP_NUM_THREADS OPENBLAS_NUM_THREADS COHORT_EXTRA; do "
      "  eval \"echo $k=\\${$k-unset}\"; done > " + dir.path() + "/env_$RANK",
      out, err);
  options.extra_env["COHORT_EXTRA"] = "hello world";
  Result<int> code = Launch(options);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0) << err.Finish();

  auto expected_threads = [](const char* name) {
    const char* set = std::getenv(name);
    return set ? std::string(set) : std::to_string(ThreadsPerRank(3));
  };
  std::set<std::string> ports;
  for (int rank = 0; rank < 3; ++rank) {
    auto env = ParseEnvFile(dir.path() + "/env_" + std::to_string(rank));
    SCOPED_TRACE("rank " + std::to_string(rank));
    EXPECT_EQ(env["MASTER_ADDR"], "127.0.0.1");
    EXPECT_EQ(env["RANK"], std::to_string(rank));
    EXPECT_EQ(env["LOCAL_RANK"], std::to_string(rank));
    EXPECT_EQ(env["WORLD_SIZE"], "3");
    EXPECT_EQ(env["LOCAL_WORLD_SIZE"], "3");
    EXPECT_EQ(env["NODE_RANK"], "0");
    EXPECT_EQ(env["GROUP_RANK"], "0");
    EXPECT_EQ(env["TORCHELASTIC_RESTART_COUNT"], "0");
    EXPECT_EQ(env["OMP_NUM_THREADS"], expected_threads("OMP_NUM_THREADS"));
    EXPECT_EQ(env["OPENBLAS_NUM_THREADS"], expected_threads("OPENBLAS_NUM_THREADS"));
    EXPECT_EQ(env["COHORT_EXTRA"], "hello world");
    int port = std::atoi(env["MASTER_PORT"].c_str());
    EXPECT_GT(port, 0);
    EXPECT_LT(port, 65536);
    ports.insert(env["MASTER_PORT"]);
  }
  EXPECT_EQ(ports.size(), 1u) << "all ranks must agree on MASTER_PORT";
}

TEST(LaunchTest, ExplicitMasterAddressAndPortAndThreadOverride) {
  TempDir dir;
  Capture out, err;
  LaunchOptions options =
      ShellOptions(2, "echo \"$MASTER_ADDR:$MASTER_PORT:$OMP_NUM_THREADS\" > " + dir.path() +
                          "/addr_$RANK",
                   out, err);
  options.master_addr = "10.1.2.3";
  options.master_port = 23456;
  options.extra_env["OMP_NUM_THREADS"] = "7";  // extra_env wins over the default
  Result<int> code = Launch(options);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(ReadFile(dir.path() + "/addr_0"), "10.1.2.3:23456:7\n");
  EXPECT_EQ(ReadFile(dir.path() + "/addr_1"), "10.1.2.3:23456:7\n");
}

TEST(LaunchTest, OutputIsPrefixedPerRankAndLinesStayWhole) {
  Capture out, err;
  // Each line is written in two pieces; the last stdout line has no newline.
  LaunchOptions options = ShellOptions(
      4,
      "i=0; while [ $i -lt 200 ]; do printf 'line %s' $RANK; printf ' %s xxxxxxxxxxxxxxxxxxxxxxxxx\\n' $i; "
      "i=$((i+1)); done; echo \"to stderr $RANK\" >&2; printf 'tail %s' $RANK",
      out, err);
  Result<int> code = Launch(options);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0);

  std::vector<std::string> out_lines = Lines(out.Finish());
  ASSERT_EQ(out_lines.size(), 4u * 201u);
  std::regex line_re(R"(\[rank (\d)\] line (\d) (\d+) x{25})");
  std::map<int, int> next_index;  // per rank, lines arrive in order
  std::set<std::string> tails;
  for (const std::string& line : out_lines) {
    std::smatch m;
    if (std::regex_match(line, m, line_re)) {
      EXPECT_EQ(m[1], m[2]) << line;
      int rank = std::stoi(m[1]);
      EXPECT_EQ(std::stoi(m[3]), next_index[rank]++) << line;
    } else {
      tails.insert(line);
    }
  }
  EXPECT_EQ(tails, (std::set<std::string>{"[rank 0] tail 0", "[rank 1] tail 1", "[rank 2] tail 2",
                                          "[rank 3] tail 3"}));
  std::vector<std::string> err_lines = Lines(err.Finish());
  std::sort(err_lines.begin(), err_lines.end());
  EXPECT_EQ(err_lines, (std::vector<std::string>{"[rank 0] to stderr 0", "[rank 1] to stderr 1",
                                                 "[rank 2] to stderr 2", "[rank 3] to stderr 3"}));
}

TEST(LaunchTest, WithoutPrefixRanksWriteStraightToTheFds) {
  Capture out, err;
  LaunchOptions options = ShellOptions(1, "echo plain; echo oops >&2", out, err);
  options.prefix_output = false;
  Result<int> code = Launch(options);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(out.Finish(), "plain\n");
  EXPECT_EQ(err.Finish(), "oops\n");
}

TEST(LaunchTest, AllRanksSucceed) {
  Capture out, err;
  Result<int> code = Launch(ShellOptions(4, "exit 0", out, err));
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(err.Finish(), "");
}

TEST(LaunchTest, FailingRankStopsTheOthersQuickly) {
  TempDir dir;
  Capture out, err;
  const std::string d = dir.path();
  // Rank 1 fails once the others are asleep (and have recorded their pids).
  LaunchOptions options = ShellOptions(
      3,
      "if [ $RANK = 1 ]; then "
      "  while [ ! -f " + d + "/pid_0 ] || [ ! -f " + d + "/pid_2 ]; do sleep 0.01; done; "
      "  echo 'rank one fails' >&2; exit 3; "
      "fi; echo $$ > " + d + "/pid_$RANK.tmp; mv " + d + "/pid_$RANK.tmp " + d + "/pid_$RANK; "
      "exec sleep 30",
      out, err);
  auto start = Clock::now();
  Result<int> code = Launch(options);
  double elapsed = SecondsSince(start);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 3);
  EXPECT_LT(elapsed, 3.0) << "the sleeping ranks were not stopped";
  std::string err_text = err.Finish();
  EXPECT_NE(err_text.find("[rank 1] rank one fails\n"), std::string::npos) << err_text;
  EXPECT_NE(err_text.find("cohort launch: rank 1 exited with code 3; stopping the other ranks\n"),
            std::string::npos)
      << err_text;
  // The rank's own output comes before the verdict on it.
  EXPECT_LT(err_text.find("rank one fails"), err_text.find("exited with code 3"));
  for (int rank : {0, 2}) {
    pid_t pid = std::atoi(ReadFile(d + "/pid_" + std::to_string(rank)).c_str());
    ASSERT_GT(pid, 0);
    EXPECT_FALSE(ProcessExists(pid)) << "rank " << rank << " still running";
  }
}

TEST(LaunchTest, RanksIgnoringSigtermAreKilledAfterTheGrace) {
  TempDir dir;
  Capture out, err;
  const std::string d = dir.path();
  LaunchOptions options = ShellOptions(
      2,
      "if [ $RANK = 1 ]; then "
      "  while [ ! -f " + d + "/pid_0 ]; do sleep 0.01; done; exit 5; "
      "fi; trap '' TERM; echo $$ > " + d + "/pid_0.tmp; mv " + d + "/pid_0.tmp " + d + "/pid_0; "
      "exec sleep 30",
      out, err);
  options.kill_grace = milliseconds(300);
  auto start = Clock::now();
  Result<int> code = Launch(options);
  double elapsed = SecondsSince(start);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 5);
  EXPECT_GE(elapsed, 0.25) << "rank 0 ignores SIGTERM, so only SIGKILL can stop it";
  EXPECT_LT(elapsed, 3.0);
  pid_t pid = std::atoi(ReadFile(d + "/pid_0").c_str());
  ASSERT_GT(pid, 0);
  EXPECT_FALSE(ProcessExists(pid));
}

TEST(LaunchTest, RankKilledBySignal) {
  Capture out, err;
  LaunchOptions options =
      ShellOptions(2, "if [ $RANK = 0 ]; then kill -9 $$; fi; exec sleep 30", out, err);
  auto start = Clock::now();
  Result<int> code = Launch(options);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 128 + 9);
  EXPECT_LT(SecondsSince(start), 3.0);
  std::string err_text = err.Finish();
  EXPECT_NE(err_text.find("cohort launch: rank 0 was killed by signal 9 (Killed)"),
            std::string::npos)
      << err_text;
}

TEST(LaunchTest, ProgramNotFound) {
  Capture out, err;
  LaunchOptions options;
  options.num_ranks = 2;
  options.argv = {"cohort-no-such-program-xyz", "--flag"};
  options.out_fd = out.fd();
  options.err_fd = err.fd();
  Result<int> code = Launch(options);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 127);
  EXPECT_EQ(err.Finish(),
            "cohort launch: cannot execute 'cohort-no-such-program-xyz': No such file or "
            "directory\n");
  EXPECT_EQ(out.Finish(), "");
}

TEST(LaunchTest, ProgramFoundInPath) {
  Capture out, err;
  LaunchOptions options;
  options.num_ranks = 2;
  options.argv = {"sh", "-c", "echo via path"};  // no slash: execvp-style PATH lookup
  options.out_fd = out.fd();
  options.err_fd = err.fd();
  Result<int> code = Launch(options);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0);
  std::vector<std::string> lines = Lines(out.Finish());
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"[rank 0] via path", "[rank 1] via path"}));
}

TEST(LaunchTest, SigtermToTheLauncherIsForwarded) {
  TempDir dir;
  Capture out, err;
  const std::string d = dir.path();
  struct sigaction before {};
  ASSERT_EQ(::sigaction(SIGTERM, nullptr, &before), 0);
  LaunchOptions options = ShellOptions(
      2, "echo $$ > " + d + "/pid_$RANK.tmp; mv " + d + "/pid_$RANK.tmp " + d + "/pid_$RANK; "
         "exec sleep 30",
      out, err);
  std::thread killer([&] {
    if (WaitForFile(d + "/pid_0", milliseconds(4000)) &&
        WaitForFile(d + "/pid_1", milliseconds(4000))) {
      ::kill(::getpid(), SIGTERM);
    }
  });
  auto start = Clock::now();
  Result<int> code = Launch(options);
  killer.join();
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 128 + SIGTERM);
  EXPECT_LT(SecondsSince(start), 4.0);
  EXPECT_NE(err.Finish().find("cohort launch: received signal 15 (Terminated)"),
            std::string::npos);
  for (int rank : {0, 1}) {
    pid_t pid = std::atoi(ReadFile(d + "/pid_" + std::to_string(rank)).c_str());
    EXPECT_FALSE(ProcessExists(pid)) << "rank " << rank;
  }
  struct sigaction after {};
  ASSERT_EQ(::sigaction(SIGTERM, nullptr, &after), 0);
  EXPECT_EQ(after.sa_handler, before.sa_handler) << "the SIGTERM disposition was not restored";
}

TEST(LaunchTest, InvalidOptions) {
  LaunchOptions options;
  options.num_ranks = 0;
  options.argv = {"true"};
  EXPECT_EQ(Launch(options).status().code(), StatusCode::kInvalidArgument);
  options.num_ranks = 1;
  options.argv.clear();
  EXPECT_EQ(Launch(options).status().code(), StatusCode::kInvalidArgument);
  options.argv = {"true"};
  options.master_port = 70000;
  EXPECT_EQ(Launch(options).status().code(), StatusCode::kInvalidArgument);
}

TEST(LaunchTest, PickFreePortGivesABindablePort) {
  Result<int> port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  ASSERT_GT(*port, 0);
  ASSERT_LT(*port, 65536);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(*port));
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
}

// Sets (value) or unsets (nullptr) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  bool had_ = false;
  std::string old_;
};

// Launches n ranks that write $COHORT_JOB_TOKEN to files; returns what each saw.
std::vector<std::string> TokensSeenByRanks(int n) {
  TempDir dir;
  Capture out, err;
  LaunchOptions options = ShellOptions(
      n, "printf '%s' \"${COHORT_JOB_TOKEN-unset}\" > " + dir.path() + "/token_$RANK", out, err);
  Result<int> code = Launch(options);
  EXPECT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(code.ok() ? *code : -1, 0) << err.Finish();
  std::vector<std::string> tokens;
  for (int rank = 0; rank < n; ++rank)
    tokens.push_back(ReadFile(dir.path() + "/token_" + std::to_string(rank)));
  return tokens;
}

TEST(LaunchTest, RanksShareAGeneratedJobToken) {
  const std::regex hex32("[0-9a-f]{32}");
  for (const char* value : {static_cast<const char*>(nullptr), ""}) {
    SCOPED_TRACE(value == nullptr ? "COHORT_JOB_TOKEN unset" : "COHORT_JOB_TOKEN empty");
    ScopedEnv env("COHORT_JOB_TOKEN", value);
    std::vector<std::string> first = TokensSeenByRanks(3);
    ASSERT_EQ(first.size(), 3u);
    EXPECT_TRUE(std::regex_match(first[0], hex32)) << first[0];
    EXPECT_EQ(first[1], first[0]);
    EXPECT_EQ(first[2], first[0]);
    // A new launch is a new job: a new token.
    std::vector<std::string> second = TokensSeenByRanks(2);
    EXPECT_TRUE(std::regex_match(second[0], hex32)) << second[0];
    EXPECT_EQ(second[1], second[0]);
    EXPECT_NE(second[0], first[0]);
  }
}

TEST(LaunchTest, JobTokenFromTheEnvironmentIsPassedOn) {
  ScopedEnv env("COHORT_JOB_TOKEN", "token-set-by-the-head");
  std::vector<std::string> tokens = TokensSeenByRanks(2);
  EXPECT_EQ(tokens, (std::vector<std::string>{"token-set-by-the-head", "token-set-by-the-head"}));
}

TEST(LaunchTest, NewJobTokenIs32RandomHexCharacters) {
  const std::regex hex32("[0-9a-f]{32}");
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    Result<std::string> token = NewJobToken();
    ASSERT_TRUE(token.ok()) << token.status().ToString();
    EXPECT_TRUE(std::regex_match(*token, hex32)) << *token;
    seen.insert(*token);
  }
  EXPECT_EQ(seen.size(), 50u);
}

TEST(LaunchTest, ThreadsPerRankSplitsTheCpus) {
  EXPECT_GE(ThreadsPerRank(1), 1);
  EXPECT_LE(ThreadsPerRank(2), ThreadsPerRank(1));
  EXPECT_EQ(ThreadsPerRank(100000), 1);
}

// ---------------------------------------------------------------------------
// The `cohort` binary

const std::string kCohort = std::string(COHORT_BIN_DIR) + "/cohort";

// Runs a shell command line; returns its exit code and stdout(+stderr if redirected).
int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(CohortCliTest, LaunchRunsTheRanks) {
  std::string output;
  int code = RunCommand(kCohort + " launch -n 2 -- /bin/sh -c 'echo hi $RANK' 2>&1", &output);
  EXPECT_EQ(code, 0) << output;
  std::vector<std::string> lines = Lines(output);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"[rank 0] hi 0", "[rank 1] hi 1"}));
}

TEST(CohortCliTest, ProgramFlagsPassThroughWithoutDashDash) {
  std::string output;
  int code = RunCommand(
      kCohort + " launch --nproc-per-node 1 /bin/sh -c 'echo \"$0 $1\"' -n -- 2>&1", &output);
  EXPECT_EQ(code, 0) << output;
  EXPECT_EQ(output, "[rank 0] -n --\n");
}

TEST(CohortCliTest, LaunchExitsWithTheFailingRanksCode) {
  std::string output;
  int code = RunCommand(
      kCohort + " launch -n 2 -- /bin/sh -c 'if [ $RANK = 1 ]; then exit 7; fi; exec sleep 30' 2>&1",
      &output);
  EXPECT_EQ(code, 7) << output;
  EXPECT_NE(output.find("rank 1 exited with code 7"), std::string::npos) << output;
}

TEST(CohortCliTest, BadUsageExitsWith2) {
  std::string output;
  EXPECT_EQ(RunCommand(kCohort + " launch -n 0 -- true 2>&1", &output), 2) << output;
  output.clear();
  EXPECT_EQ(RunCommand(kCohort + " launch -n 2 2>&1", &output), 2) << output;
  EXPECT_NE(output.find("no program"), std::string::npos) << output;
  output.clear();
  EXPECT_EQ(RunCommand(kCohort + " launch -- true 2>&1", &output), 2) << output;
  output.clear();
  EXPECT_EQ(RunCommand(kCohort + " no-such-command 2>&1", &output), 2) << output;
  output.clear();
  EXPECT_EQ(RunCommand(kCohort + " launch -n 1 -- cohort-no-such-program-xyz 2>&1", &output), 127)
      << output;
}

TEST(CohortCliTest, Version) {
  std::string output;
  EXPECT_EQ(RunCommand(kCohort + " version", &output), 0);
  EXPECT_EQ(output.rfind("cohort ", 0), 0u) << output;
}

TEST(CohortCliTest, SigtermIsForwardedAndExitCodeIs143) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  std::vector<std::string> args = {kCohort, "launch", "-n", "2", "--", "/bin/sh", "-c",
                                   "echo ready; exec sleep 30"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  ASSERT_EQ(::posix_spawn(&pid, kCohort.c_str(), &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);

  // Wait until both ranks are up (their output has gone through the launcher).
  std::string output;
  auto start = Clock::now();
  while (Lines(output).size() < 2 && SecondsSince(start) < 4.0) {
    char buf[256];
    ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    output.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(Lines(output).size(), 2u) << output;

  auto kill_time = Clock::now();
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && SecondsSince(kill_time) < 3.0) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  if (done == 0) {  // don't leave it behind
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    ADD_FAILURE() << "cohort launch did not exit within 3 s of SIGTERM";
  }
  for (;;) {  // the launcher has exited: read to EOF
    char buf[256];
    ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 143);
  EXPECT_NE(output.find("cohort launch: received signal 15 (Terminated)"), std::string::npos)
      << output;
}

}  // namespace
}  // namespace cohort::launch
