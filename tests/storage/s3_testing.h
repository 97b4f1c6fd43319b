// Test helpers for the s3:// tests: run a command with stdin and capture its
// stdout, install the npm tools via tools/emulators/s3/ensure.sh, pick a free
// port, start a child process by PID (no shell, so the PID is the server's
// own) and stop it. Header-only; used by sigv4_test.cc and s3_store_test.cc
// on the test's main thread.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace cohort::storage::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
};

// Runs `command` through /bin/sh with `input` on stdin; stderr passes through.
inline CommandResult RunCommand(const std::string& command, const std::string& input = "") {
  CommandResult r;
  char tmpl[] = "/tmp/cohort_cmd_in_XXXXXX";
  const int fd = ::mkstemp(tmpl);
  if (fd < 0) return r;
  if (!input.empty() && ::write(fd, input.data(), input.size()) != static_cast<ssize_t>(input.size())) {
    ::close(fd);
    ::unlink(tmpl);
    return r;
  }
  ::close(fd);
  FILE* p = ::popen((command + " < " + tmpl).c_str(), "r");
  if (p != nullptr) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
    const int status = ::pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ::unlink(tmpl);
  return r;
}

inline bool HaveProgram(const std::string& name) {
  return RunCommand("command -v " + name + " >/dev/null 2>&1").exit_code == 0;
}

// Installs (once) and returns the npm tool directory, or "" with *why set.
inline std::string EnsureS3Tools(std::string* why) {
  if (!HaveProgram("node") || !HaveProgram("npm")) {
    *why = "node/npm are not installed: skipping (apt-get install nodejs npm)";
    return "";
  }
  const std::string script = std::string(COHORT_SOURCE_DIR) + "/tools/emulators/s3/ensure.sh";
  CommandResult r = RunCommand("bash '" + script + "'");
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
  if (r.exit_code != 0 || r.out.empty()) {
    *why = "tools/emulators/s3/ensure.sh failed (exit " + std::to_string(r.exit_code) +
           "): the npm registry is probably unreachable; skipping";
    return "";
  }
  return r.out;
}

// Test servers on 127.0.0.1 must not be reached through a proxy that the
// environment (http_proxy, all_proxy) may name; curl honours NO_PROXY.
inline void BypassProxyForLoopback() {
  ::setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  ::setenv("no_proxy", "127.0.0.1,localhost", 1);
}

// A port that was free a moment ago on 127.0.0.1.
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

inline bool PortAccepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// Starts argv[0] (looked up in PATH) with argv, stdout+stderr to log_path,
// cwd = dir. The child is killed if this process dies first.
inline pid_t Spawn(const std::vector<std::string>& argv, const std::string& dir,
                   const std::string& log_path) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  // Do not outlive a test binary that crashes before StopProcess.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (log >= 0) {
    ::dup2(log, 1);
    ::dup2(log, 2);
  }
  const int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) ::dup2(null_fd, 0);
  if (::chdir(dir.c_str()) != 0) ::_exit(126);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  ::_exit(127);
}

// SIGTERM, then SIGKILL after 3 s; reaps the child.
inline void StopProcess(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 300; ++i) {
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  int status;
  ::waitpid(pid, &status, 0);
}

// True once the child is gone (reaped here).
inline bool ProcessExited(pid_t pid) {
  int status;
  return ::waitpid(pid, &status, WNOHANG) == pid;
}

inline std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Deterministic pseudo-random bytes.
inline std::string PatternBytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 12345;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x & 0xff);
  }
  return s;
}

// A fresh directory under $TMPDIR (or /tmp), removed by the destructor.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/cohort_s3_test_XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace cohort::storage::testing
