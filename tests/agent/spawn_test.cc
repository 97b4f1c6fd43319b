// The Spawner (src/agent/spawn.h), partly in a child process that plays the
// agent: what a worker started (a grandchild that ignores SIGTERM) dies when
// that process is SIGKILLed; the guard outlives terminal signals, is replaced
// when it dies, and leaves alone the groups it was told are gone.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "spawn.h"

namespace cohort::agent {
namespace {

using namespace std::chrono_literals;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  // A zombie (reparented, not yet reaped by init) counts as gone.
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

bool WaitGone(pid_t pid, std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (!Alive(pid)) return true;
    std::this_thread::sleep_for(10ms);
  }
  return !Alive(pid);
}

pid_t WaitPidFile(const std::string& path) {
  for (int i = 0; i < 300; ++i) {
    pid_t p = std::atoi(ReadFile(path).c_str());
    if (p > 0) return p;
    std::this_thread::sleep_for(10ms);
  }
  return -1;
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/cohort-spawn-test.XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf " + path).c_str()); }
};

SpawnSpec Spec(const std::string& dir, const std::string& command) {
  SpawnSpec spec;
  spec.entrypoint = command;
  spec.cwd = dir;
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.stdout_fd = ::open((dir + "/out.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  spec.stderr_fd = spec.stdout_fd;
  return spec;
}

// A child process that plays the agent: `body` runs there with a started
// Spawner, then the child waits to be killed. Returns its pid.
template <typename Body>
pid_t RunAgentProcess(Body body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    Spawner spawner;
    if (!spawner.Start().ok()) ::_exit(3);
    body(spawner);
    for (;;) ::pause();
  }
  return pid;
}

void KillAndReap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

constexpr const char* kStubbornGrandchild =
    "trap '' TERM INT HUP; sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait";

TEST(SpawnerTest, RunsTheShellInTheGivenDirectoryAndReportsItsExit) {
  TempDir dir;
  Spawner spawner;
  ASSERT_TRUE(spawner.Start().ok());
  SpawnSpec spec = Spec(dir.path, "pwd; echo \"$PATH\"; exit 7");
  Result<pid_t> pid = spawner.Spawn(spec);
  ::close(spec.stdout_fd);
  ASSERT_TRUE(pid.ok()) << pid.status().message();
  int status = 0;
  ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 7);
  EXPECT_EQ(ReadFile(dir.path + "/out.log"), dir.path + "\n/usr/bin:/bin\n");
  spawner.Forget(*pid);
  spawner.Abandon();
}

TEST(SpawnerTest, AMissingDirectoryIs126WithAMessage) {
  TempDir dir;
  Spawner spawner;
  ASSERT_TRUE(spawner.Start().ok());
  SpawnSpec spec = Spec(dir.path, "true");
  spec.cwd = dir.path + "/missing";
  Result<pid_t> pid = spawner.Spawn(spec);
  ::close(spec.stdout_fd);
  ASSERT_TRUE(pid.ok());
  int status = 0;
  ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
  EXPECT_EQ(WEXITSTATUS(status), 126);
  EXPECT_NE(ReadFile(dir.path + "/out.log").find("cannot enter the working directory"),
            std::string::npos);
}

TEST(SpawnerTest, TheWorkersGroupLeadsItself) {
  TempDir dir;
  Spawner spawner;
  ASSERT_TRUE(spawner.Start().ok());
  SpawnSpec spec = Spec(dir.path, "sleep 60");
  Result<pid_t> pid = spawner.Spawn(spec);
  ::close(spec.stdout_fd);
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(::getpgid(*pid), *pid);
  ::kill(-*pid, SIGKILL);
  int status = 0;
  ::waitpid(*pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status));
}

TEST(SpawnerTest, EverythingAWorkerStartedDiesWithAKilledAgent) {
  TempDir dir;
  pid_t agent = RunAgentProcess([&](Spawner& s) {
    SpawnSpec spec = Spec(dir.path, kStubbornGrandchild);
    if (!s.Spawn(spec).ok()) ::_exit(4);
  });
  pid_t shell = WaitPidFile(dir.path + "/shell.pid");
  pid_t child = WaitPidFile(dir.path + "/child.pid");
  ASSERT_GT(shell, 0);
  ASSERT_GT(child, 0);
  EXPECT_TRUE(Alive(child));
  KillAndReap(agent);
  EXPECT_TRUE(WaitGone(child, 2s)) << "grandchild " << child << " outlived the agent";
  EXPECT_TRUE(WaitGone(shell, 2s));
}

TEST(SpawnerTest, TheGuardOutlivesTerminalSignalsAndIsReplacedWhenKilled) {
  TempDir dir;
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t agent = RunAgentProcess([&](Spawner& s) {
    ::close(pipefd[0]);
    SpawnSpec spec = Spec(dir.path, kStubbornGrandchild);
    Result<pid_t> worker = s.Spawn(spec);
    if (!worker.ok()) ::_exit(4);
    pid_t guard = s.guard_pid();
    ssize_t unused = ::write(pipefd[1], &guard, sizeof(guard));
    (void)unused;
    // The test kills the first guard; wait for that and replace it.
    while (s.guard_alive()) ::usleep(10 * 1000);
    s.RestartGuard({*worker});
    guard = s.guard_pid();
    unused = ::write(pipefd[1], &guard, sizeof(guard));
  });
  ::close(pipefd[1]);
  pid_t guard = -1;
  ASSERT_EQ(::read(pipefd[0], &guard, sizeof(guard)), static_cast<ssize_t>(sizeof(guard)));
  ASSERT_GT(guard, 1);
  pid_t child = WaitPidFile(dir.path + "/child.pid");
  ASSERT_GT(child, 0);
  // Ctrl-C and friends do not end the guard.
  ::kill(guard, SIGINT);
  ::kill(guard, SIGTERM);
  ::kill(guard, SIGHUP);
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(Alive(guard));
  // SIGKILL does; the agent starts another and re-registers the worker.
  ::kill(guard, SIGKILL);
  pid_t second = -1;
  ASSERT_EQ(::read(pipefd[0], &second, sizeof(second)), static_cast<ssize_t>(sizeof(second)));
  ::close(pipefd[0]);
  ASSERT_GT(second, 1);
  EXPECT_NE(second, guard);
  KillAndReap(agent);
  EXPECT_TRUE(WaitGone(child, 2s)) << "the second guard did not know the worker's group";
  EXPECT_TRUE(WaitGone(second, 2s));
}

TEST(SpawnerTest, AForgottenGroupIsLeftAlone) {
  // Forget() is for groups that are gone; told early, the guard must not
  // touch the group (a later process may own that number by then).
  TempDir dir;
  pid_t agent = RunAgentProcess([&](Spawner& s) {
    SpawnSpec spec = Spec(dir.path, kStubbornGrandchild);
    Result<pid_t> worker = s.Spawn(spec);
    if (!worker.ok()) ::_exit(4);
    s.Forget(*worker);
  });
  pid_t child = WaitPidFile(dir.path + "/child.pid");
  ASSERT_GT(child, 0);
  KillAndReap(agent);
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(Alive(child));
  ::kill(child, SIGKILL);
}

}  // namespace
}  // namespace cohort::agent
