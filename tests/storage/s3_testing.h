// Test helpers for the s3:// tests: run a command with stdin and capture its
// stdout, install the npm tools via tools/emulators/s3/ensure.sh, start a
// child process by PID (no shell, so the PID is the server's own) and stop
// it, run s3rver for a test suite. Free ports, temp dirs and test bytes come
// from storage_testing.h. Header-only; used by sigv4_test.cc,
// s3_store_test.cc, s3_faults_test.cc and remote_checkpoint_test.cc on the
// test's main thread.
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

#include "storage/storage_testing.h"

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

inline std::string ReadFileOrEmpty(const std::string& path) { return ReadLocalFile(path); }

// A fresh directory under the test temp dir, removed by the destructor.
using TempDir = ScratchDir;

// s3rver (from the npm tool directory that EnsureS3Tools returns) on a free
// 127.0.0.1 port with its own data directory, `bucket` configured, silent.
// running() is false when it did not accept connections within 10 s; error()
// then holds its log. The destructor stops it by PID and removes the data.
class S3rver {
 public:
  S3rver(const std::string& tools, const std::string& bucket) {
    port_ = FreePort();
    const std::string log = data_dir_.path() + "/s3rver.log";
    std::filesystem::create_directories(data_dir_.path() + "/data");
    pid_ = Spawn({"node", "--openssl-legacy-provider", "node_modules/s3rver/bin/s3rver.js", "-d",
                  data_dir_.path() + "/data", "-a", "127.0.0.1", "-p", std::to_string(port_),
                  "--configure-bucket", bucket, "-s"},
                 tools, log);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!PortAccepts(port_)) {
      if (ProcessExited(pid_) || std::chrono::steady_clock::now() > deadline) {
        error_ = "s3rver did not start within 10 s; its log:\n" + ReadFileOrEmpty(log);
        StopProcess(pid_);
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~S3rver() { StopProcess(pid_); }
  S3rver(const S3rver&) = delete;
  S3rver& operator=(const S3rver&) = delete;

  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  const std::string& error() const { return error_; }

 private:
  TempDir data_dir_;  // destroyed after the destructor has stopped the server
  int port_ = 0;
  pid_t pid_ = -1;
  std::string error_;
};

}  // namespace cohort::storage::testing
