// Test harness for the control plane's integration tests: a real cluster of
// `cohort start` processes on loopback, driven through HTTP (libcurl) and the
// `cohort` CLI exactly as a user would.
//
//   ChildProcess   one child (fork/exec) in a process group of its own, with
//                  its output in a file; SIGKILLed (group) when destroyed, and
//                  also when the test process dies (PR_SET_PDEATHSIG).
//   LocalCluster   a temp dir, a head (`cohort start --head --block ...`) and
//                  agents (`cohort start --address ...`, joining with the
//                  head's join token file), ports picked free; REST helpers
//                  with the head's API token; `cohort` CLI runs.
//
// Header-only: tests/integration/*_test.cc include it.
#pragma once

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace cohort::itest {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

inline const std::string kBinDir = COHORT_BIN_DIR;
inline const std::string kCohort = kBinDir + "/cohort";
inline const std::string kFashionMnist = kBinDir + "/fashion_mnist";
inline const std::string kFashionMnistData = "/usr/share/datasets/fashion-mnist";

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

inline std::string Tail(const std::string& text, size_t n = 4000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0).
inline int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// Polls `pred` every `interval` until it holds or `timeout` passes.
inline bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                    std::chrono::milliseconds interval = 100ms) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(interval);
  }
}

// --- child processes -----------------------------------------------------------

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { Kill(); }

  // Starts argv[0] (a path) with `argv`, stdout+stderr appended to log_path.
  bool Start(const std::vector<std::string>& argv, const std::string& log_path) {
    log_path_ = log_path;
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
      // Only async-signal-safe calls from here to exec.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      int in = ::open("/dev/null", O_RDONLY);
      if (out >= 0) {
        ::dup2(out, 1);
        ::dup2(out, 2);
      }
      if (in >= 0) ::dup2(in, 0);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also done by the child; whichever runs first
    pid_ = pid;
    return true;
  }

  pid_t pid() const { return pid_; }
  bool running() {
    Reap(false);
    return pid_ > 0 && !exit_status_;
  }
  const std::string& log_path() const { return log_path_; }
  std::string Output() const { return ReadFile(log_path_); }

  void Signal(int sig) {
    if (pid_ > 0 && !exit_status_) ::kill(-pid_, sig);
  }

  // The wait status once it exited within `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    WaitFor([&] { return Reap(false); }, timeout, 20ms);
    return exit_status_;
  }

  // The exit code (128+signal when killed) once it exited within `timeout`.
  std::optional<int> ExitCode(std::chrono::milliseconds timeout) {
    auto st = Wait(timeout);
    if (!st) return std::nullopt;
    return WIFEXITED(*st) ? WEXITSTATUS(*st) : 128 + WTERMSIG(*st);
  }

  // SIGKILL to the whole group, then reap. (Only while it is unreaped: until
  // then its pid, and so the group id, cannot name anyone else.)
  void Kill() {
    if (pid_ <= 0) return;
    if (!exit_status_) ::kill(-pid_, SIGKILL);
    Reap(true);
    pid_ = -1;
  }

  // SIGTERM, then SIGKILL after `grace`.
  void Terminate(std::chrono::milliseconds grace) {
    if (pid_ <= 0) return;
    Signal(SIGTERM);
    Wait(grace);
    Kill();
  }

 private:
  bool Reap(bool block) {
    if (pid_ <= 0) return true;
    if (exit_status_) return true;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == pid_) exit_status_ = status;
    else if (r < 0 && errno == ECHILD) exit_status_ = 0;
    return exit_status_.has_value();
  }

  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::string log_path_;
};

// --- HTTP ------------------------------------------------------------------------

struct HttpReply {
  long status = 0;  // 0: no answer (curl error in `error`)
  std::string body;
  std::string error;
  json Json() const { return json::parse(body, nullptr, false); }
};

inline void CurlGlobalInit() {
  static const bool once = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return true;
  }();
  (void)once;
}

inline size_t CurlAppend(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// One request. `token` "" sends no Authorization header.
inline HttpReply Http(const std::string& method, const std::string& url, const std::string& body = "",
                      const std::string& token = "", const std::string& content_type = "application/json",
                      std::chrono::milliseconds timeout = 30s) {
  CurlGlobalInit();
  HttpReply reply;
  CURL* c = curl_easy_init();
  curl_slist* headers = nullptr;
  if (!token.empty()) headers = curl_slist_append(headers, ("Authorization: Bearer " + token).c_str());
  if (!content_type.empty()) headers = curl_slist_append(headers, ("Content-Type: " + content_type).c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, CurlAppend);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  if (method == "GET") {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    if (method != "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (method == "POST" || method == "PUT" || !body.empty()) {
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      if (method != "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  else reply.error = curl_easy_strerror(rc);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  return reply;
}

// --- shell commands ----------------------------------------------------------------

struct CmdResult {
  int code = -1;  // exit code; 128+signal when killed
  std::string out;  // stdout and stderr
};

// Runs `cmd` with /bin/sh, killed after timeout_s (coreutils timeout).
inline CmdResult Sh(const std::string& cmd, int timeout_s = 60) {
  CmdResult r;
  const std::string full = "timeout -k 5 " + std::to_string(timeout_s) + " sh -c " + [&] {
    std::string q = "'";
    for (char c : cmd) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  }() + " 2>&1 </dev/null";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

inline std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// --- a minimal zip writer (stored entries) for package uploads ------------------------

inline uint32_t Crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char ch : data) {
    crc ^= ch;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

struct ZipEntry {
  std::string name;
  std::string data;
  uint32_t unix_mode = 0100644;  // S_IFREG|0644; 0120777 for a symlink (data = target)
};

inline std::string MakeZip(const std::vector<ZipEntry>& entries) {
  auto u16 = [](std::string& s, uint16_t v) {
    s.push_back(static_cast<char>(v & 0xff));
    s.push_back(static_cast<char>(v >> 8));
  };
  auto u32 = [&](std::string& s, uint32_t v) {
    u16(s, static_cast<uint16_t>(v & 0xffff));
    u16(s, static_cast<uint16_t>(v >> 16));
  };
  std::string out, central;
  for (const auto& e : entries) {
    const uint32_t offset = static_cast<uint32_t>(out.size());
    const uint32_t crc = Crc32(e.data);
    const uint32_t size = static_cast<uint32_t>(e.data.size());
    u32(out, 0x04034b50);
    u16(out, 20);  // version needed
    u16(out, 0);   // flags
    u16(out, 0);   // stored
    u16(out, 0);   // time
    u16(out, 0x21);  // date (1980-01-01)
    u32(out, crc);
    u32(out, size);
    u32(out, size);
    u16(out, static_cast<uint16_t>(e.name.size()));
    u16(out, 0);
    out += e.name;
    out += e.data;

    u32(central, 0x02014b50);
    u16(central, (3 << 8) | 20);  // made by: Unix
    u16(central, 20);
    u16(central, 0);
    u16(central, 0);
    u16(central, 0);
    u16(central, 0x21);
    u32(central, crc);
    u32(central, size);
    u32(central, size);
    u16(central, static_cast<uint16_t>(e.name.size()));
    u16(central, 0);  // extra
    u16(central, 0);  // comment
    u16(central, 0);  // disk
    u16(central, 0);  // internal attributes
    u32(central, e.unix_mode << 16);
    u32(central, offset);
    central += e.name;
  }
  const uint32_t central_offset = static_cast<uint32_t>(out.size());
  out += central;
  u32(out, 0x06054b50);
  u16(out, 0);
  u16(out, 0);
  u16(out, static_cast<uint16_t>(entries.size()));
  u16(out, static_cast<uint16_t>(entries.size()));
  u32(out, static_cast<uint32_t>(central.size()));
  u32(out, central_offset);
  u16(out, 0);
  return out;
}

// --- the cluster -------------------------------------------------------------------

inline bool IsTerminal(const std::string& s) {
  return s == "SUCCEEDED" || s == "FAILED" || s == "STOPPED";
}

class LocalCluster {
 public:
  struct Agent {
    std::string name;
    std::string state_dir;
    std::string node_id;
    std::unique_ptr<ChildProcess> proc;
  };

  // A temp dir named after the current test; kept when the test failed
  // (its path and the processes' output are printed).
  LocalCluster() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "cluster";
    for (char& c : name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.') c = '_';
    std::string tmpl = (fs::temp_directory_path() / ("cohort_it_" + name + "_XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) != nullptr) dir_ = tmpl;
    agent_port_ = FreePort();
    dashboard_port_ = FreePort();
    while (dashboard_port_ == agent_port_) dashboard_port_ = FreePort();
  }

  ~LocalCluster() {
    // Agents first: SIGKILL of an agent also kills its workers.
    for (auto& a : agents_) a.proc->Kill();
    if (head_) head_->Kill();
    const bool failed = ::testing::Test::HasFailure();
    if (failed) {
      std::fprintf(stderr, "---- cluster dir (kept): %s\n", dir_.c_str());
      std::fprintf(stderr, "---- head output:\n%s\n", Tail(ReadFile(dir_ + "/head.log"), 6000).c_str());
      for (auto& a : agents_)
        std::fprintf(stderr, "---- agent %s output:\n%s\n", a.name.c_str(),
                     Tail(ReadFile(a.proc->log_path()), 4000).c_str());
    } else if (!dir_.empty() && std::getenv("COHORT_KEEP_TEST_DIRS") == nullptr) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  const std::string& dir() const { return dir_; }
  std::string head_state() const { return dir_ + "/head"; }
  int agent_port() const { return agent_port_; }
  int dashboard_port() const { return dashboard_port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(dashboard_port_); }
  std::string agent_address() const { return "127.0.0.1:" + std::to_string(agent_port_); }
  const std::string& token() const { return token_; }  // the API (admin) token
  std::string join_token_file() const { return head_state() + "/join_token"; }
  ChildProcess& head() { return *head_; }
  Agent& agent(size_t i) { return agents_.at(i); }
  size_t num_agents() const { return agents_.size(); }

  // `cohort start --head --block` (again, with the same state dir and ports,
  // after a crash); waits until /api/health answers. `extra` are more flags.
  ::testing::AssertionResult StartHead(const std::vector<std::string>& extra = {}) {
    if (head_) head_->Kill();
    head_ = std::make_unique<ChildProcess>();
    std::vector<std::string> argv = {kCohort, "start", "--head", "--block",
                                     "--host", "127.0.0.1",
                                     "--port", std::to_string(agent_port_),
                                     "--dashboard-port", std::to_string(dashboard_port_),
                                     "--state-dir", head_state(),
                                     "--node-timeout-s", "2"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!head_->Start(argv, dir_ + "/head.log")) return ::testing::AssertionFailure() << "fork failed";
    bool ready = WaitFor(
        [&] { return !head_->running() || Http("GET", url() + "/api/health").status == 200; }, 20s, 50ms);
    if (!ready || !head_->running())
      return ::testing::AssertionFailure() << "the head did not become ready:\n" << ReadFile(dir_ + "/head.log");
    token_.clear();
    std::ifstream in(head_state() + "/token");
    std::getline(in, token_);
    return ::testing::AssertionSuccess();
  }

  // Starts agent `name` (state dir <dir>/<name>) with `cpus` CPUs; waits until
  // the head lists its node ALIVE. It joins with --join-token-file
  // join_token_file() (with auth on) unless `extra` names its own credential
  // (--token, --token-file, --join-token, --join-token-file).
  ::testing::AssertionResult StartAgent(const std::string& name, int cpus,
                                        const std::vector<std::string>& extra = {}) {
    Agent a;
    a.name = name;
    a.state_dir = dir_ + "/" + name;
    a.proc = std::make_unique<ChildProcess>();
    std::vector<std::string> argv = {kCohort, "start", "--address", agent_address(), "--block",
                                     "--state-dir", a.state_dir, "--num-cpus", std::to_string(cpus),
                                     "--num-gpus", "0"};
    bool own_credential = false;
    for (const auto& flag : extra)
      own_credential = own_credential || flag == "--token" || flag == "--token-file" || flag == "--join-token" ||
                       flag == "--join-token-file";
    if (!token_.empty() && !own_credential) {
      argv.push_back("--join-token-file");
      argv.push_back(join_token_file());
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!a.proc->Start(argv, dir_ + "/" + name + ".log")) return ::testing::AssertionFailure() << "fork failed";
    ChildProcess* proc = a.proc.get();
    const std::string state_dir = a.state_dir;
    agents_.push_back(std::move(a));
    Agent& added = agents_.back();
    bool ok = WaitFor(
        [&] {
          if (!proc->running()) return true;
          if (added.node_id.empty()) {
            std::ifstream in(state_dir + "/node_id");
            std::getline(in, added.node_id);
          }
          return !added.node_id.empty() && NodeState(added.node_id) == "ALIVE";
        },
        30s, 50ms);
    if (!ok || !proc->running())
      return ::testing::AssertionFailure() << "agent " << name << " did not join:\n" << proc->Output();
    return ::testing::AssertionSuccess();
  }

  // "ALIVE", "DEAD", or "" when the head does not list the node.
  std::string NodeState(const std::string& node_id) {
    auto status = Get("/api/cluster/status");
    if (status.status != 200) return "";
    json j = status.Json();
    if (!j.is_object() || !j["nodes"].is_array()) return "";
    for (const auto& n : j["nodes"])
      if (n.value("node_id", "") == node_id) return n.value("state", "");
    return "";
  }

  // --- REST with the head's token -------------------------------------------------
  HttpReply Get(const std::string& path) { return Http("GET", url() + path, "", token_); }
  HttpReply Post(const std::string& path, const std::string& body) {
    return Http("POST", url() + path, body, token_);
  }
  HttpReply Delete(const std::string& path) { return Http("DELETE", url() + path, "", token_); }
  HttpReply Put(const std::string& path, const std::string& body) {
    return Http("PUT", url() + path, body, token_, "application/zip");
  }

  // POST /api/jobs/ → the submission id ("" on failure, with a test failure).
  std::string Submit(const json& body) {
    auto r = Post("/api/jobs/", body.dump());
    EXPECT_EQ(r.status, 200) << r.body << r.error;
    json j = r.Json();
    return j.is_object() ? j.value("submission_id", "") : "";
  }

  json Job(const std::string& id) { return Get("/api/jobs/" + id).Json(); }
  std::string Status(const std::string& id) {
    json j = Job(id);
    return j.is_object() ? j.value("status", "") : "";
  }
  std::string Logs(const std::string& id) {
    json j = Get("/api/jobs/" + id + "/logs").Json();
    return j.is_object() ? j.value("logs", "") : "";
  }

  // Waits until the job's status is `want` (or any terminal one when want is
  // ""); returns the details seen last.
  json WaitStatus(const std::string& id, const std::string& want, std::chrono::milliseconds timeout) {
    json last;
    WaitFor(
        [&] {
          last = Job(id);
          const std::string s = last.is_object() ? last.value("status", "") : "";
          return want.empty() ? IsTerminal(s) : s == want || (IsTerminal(s) && s != want);
        },
        timeout, 100ms);
    return last;
  }

  // `cohort <args>` against this cluster (address and token appended by the
  // caller through Conn()).
  std::string Conn() const { return " --address " + url() + " --token " + token_; }
  CmdResult Cli(const std::string& args, int timeout_s = 60) {
    return Sh("COHORT_STATE_DIR=" + ShellQuote(dir_ + "/cli-state") + " " + ShellQuote(kCohort) + " " + args,
              timeout_s);
  }

 private:
  std::string dir_;
  int agent_port_ = 0;
  int dashboard_port_ = 0;
  std::string token_;
  std::unique_ptr<ChildProcess> head_;
  std::vector<Agent> agents_;
};

}  // namespace cohort::itest
