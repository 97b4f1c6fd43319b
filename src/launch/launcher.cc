// The local launcher; see include/cohort/launch/launcher.h.
//
// One thread (the caller's) runs a poll loop over: a self-pipe that the
// signal handlers (SIGCHLD, SIGINT, SIGTERM, SIGHUP) write the signal number
// to, and the read ends of every rank's stdout/stderr pipes. Ranks are
// started with posix_spawnp, which reports exec failures (ENOENT, EACCES)
// synchronously, and reaped with waitpid(pid, WNOHANG) on each wake-up; we
// never wait for pids that are not ours.
#include "cohort/launch/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>

#include "cohort/common/deadline.h"
#include "cohort/common/logging.h"

extern char** environ;

namespace cohort::launch {
namespace {

// A line longer than this without a newline is forwarded in pieces.
constexpr size_t kMaxLineBytes = 64 * 1024;
constexpr size_t kReadChunk = 64 * 1024;
// Upper bound on one poll; a safety net in case a SIGCHLD wake-up is lost.
constexpr int kPollSliceMs = 500;

std::string ErrnoText(int err) { return std::strerror(err); }

std::string SignalText(int signo) {
  const char* name = strsignal(signo);
  return "signal " + std::to_string(signo) + " (" + (name ? name : "unknown") + ")";
}

// ---------------------------------------------------------------------------
// Signals: handlers write the signal number to a non-blocking self-pipe.

std::atomic<int> g_signal_write_fd{-1};
std::atomic<bool> g_launch_active{false};

void OnSignal(int signo) {
  int saved_errno = errno;
  int fd = g_signal_write_fd.load(std::memory_order_relaxed);
  if (fd >= 0) {
    unsigned char byte = static_cast<unsigned char>(signo);
    ssize_t unused = ::write(fd, &byte, 1);  // full pipe: the loop is awake anyway
    (void)unused;
  }
  errno = saved_errno;
}

// Owns the self-pipe and the installed handlers; restores everything on destruction.
class SignalScope {
 public:
  SignalScope() = default;
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

  ~SignalScope() {
    for (auto& [signo, old] : saved_) ::sigaction(signo, &old, nullptr);
    g_signal_write_fd.store(-1);
    if (read_fd_ >= 0) ::close(read_fd_);
    if (write_fd_ >= 0) ::close(write_fd_);
  }

  Status Install(bool forward_signals) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
      return Status::IoError("cannot create the signal pipe: " + ErrnoText(errno));
    }
    read_fd_ = fds[0];
    write_fd_ = fds[1];
    g_signal_write_fd.store(write_fd_);

    struct sigaction action {};
    action.sa_handler = OnSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    COHORT_RETURN_IF_ERROR(Set(SIGCHLD, action, /*keep_if_ignored=*/false));
    if (forward_signals) {
      for (int signo : {SIGINT, SIGTERM, SIGHUP}) {
        COHORT_RETURN_IF_ERROR(Set(signo, action, /*keep_if_ignored=*/true));
      }
    }
    // A closed reader of out_fd must not kill the launcher (and orphan the ranks).
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    struct sigaction old_pipe {};
    if (::sigaction(SIGPIPE, &ignore, &old_pipe) != 0) {
      return Status::Internal("sigaction(SIGPIPE): " + ErrnoText(errno));
    }
    saved_.emplace_back(SIGPIPE, old_pipe);
    sigpipe_was_ignored_ = old_pipe.sa_handler == SIG_IGN;
    return Status::Ok();
  }

  int read_fd() const { return read_fd_; }
  // Ranks inherit an ignored SIGPIPE only if the launcher's caller ignored it.
  bool sigpipe_was_ignored() const { return sigpipe_was_ignored_; }

 private:
  // keep_if_ignored: a signal the process ignores (nohup) stays ignored, and
  // the ranks inherit that, as they would from a shell.
  Status Set(int signo, const struct sigaction& action, bool keep_if_ignored) {
    struct sigaction old {};
    if (::sigaction(signo, nullptr, &old) != 0) {
      return Status::Internal("sigaction(" + std::to_string(signo) + "): " + ErrnoText(errno));
    }
    if (keep_if_ignored && old.sa_handler == SIG_IGN) return Status::Ok();
    if (::sigaction(signo, &action, nullptr) != 0) {
      return Status::Internal("sigaction(" + std::to_string(signo) + "): " + ErrnoText(errno));
    }
    saved_.emplace_back(signo, old);
    return Status::Ok();
  }

  int read_fd_ = -1;
  int write_fd_ = -1;
  bool sigpipe_was_ignored_ = false;
  std::vector<std::pair<int, struct sigaction>> saved_;
};

// ---------------------------------------------------------------------------
// Output forwarding.

// A destination fd; after a write error (EPIPE: the reader went away) its
// output is dropped so the ranks keep running.
struct Sink {
  int fd = -1;
  bool broken = false;
};

void WriteAll(Sink& sink, std::string_view data) {
  while (!sink.broken && !data.empty()) {
    ssize_t n = ::write(sink.fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{sink.fd, POLLOUT, 0};
      ::poll(&pfd, 1, kPollSliceMs);
    } else {
      COHORT_LOG(WARN) << "cohort launch: cannot write to fd " << sink.fd << ": "
                       << ErrnoText(errno) << "; dropping further output to it";
      sink.broken = true;
    }
  }
}

// One rank's stdout or stderr: the read end of its pipe plus the bytes of a
// line that has not ended yet.
struct Stream {
  int fd = -1;  // -1 once EOF was seen (or never opened)
  Sink* sink = nullptr;
  const std::string* prefix = nullptr;  // the owning Rank's
  std::string pending;
};

struct Rank {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  std::string prefix;  // "[rank R] "
  Stream out;
  Stream err;
};

void CloseFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// ---------------------------------------------------------------------------

class Launcher {
 public:
  explicit Launcher(const LaunchOptions& options) : options_(options) {
    out_.fd = options.out_fd;
    err_.fd = options.err_fd;
  }
  ~Launcher() {
    for (Rank& r : ranks_) {
      CloseFd(r.out.fd);
      CloseFd(r.err.fd);
    }
  }

  Result<int> Run() {
    COHORT_RETURN_IF_ERROR(signals_.Install(options_.forward_signals));
    int port = options_.master_port;
    if (port == 0) {
      COHORT_ASSIGN_OR_RETURN(port, PickFreePort());
    }
    std::map<std::string, std::string> base_env = BaseEnvironment(port);
    // Local launches are authenticated by default; the token is never logged.
    if (std::string& token = base_env["COHORT_JOB_TOKEN"]; token.empty()) {
      COHORT_ASSIGN_OR_RETURN(token, NewJobToken());
    }
    COHORT_LOG(DEBUG) << "cohort launch: " << options_.num_ranks << " ranks of '"
                      << options_.argv[0] << "', MASTER_ADDR=" << options_.master_addr
                      << " MASTER_PORT=" << port;

    ranks_.resize(options_.num_ranks);
    for (int i = 0; i < options_.num_ranks && !stopping_; ++i) Spawn(i, base_env);
    Supervise();
    return exit_code_;
  }

 private:
  std::map<std::string, std::string> BaseEnvironment(int port) const {
    std::map<std::string, std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string_view entry(*e);
      size_t eq = entry.find('=');
      if (eq == std::string_view::npos) continue;
      env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
    }
    const std::string n = std::to_string(options_.num_ranks);
    env["MASTER_ADDR"] = options_.master_addr;
    env["MASTER_PORT"] = std::to_string(port);
    env["WORLD_SIZE"] = n;
    env["LOCAL_WORLD_SIZE"] = n;
    env["NODE_RANK"] = "0";
    env["GROUP_RANK"] = "0";
    env["TORCHELASTIC_RESTART_COUNT"] = "0";
    const std::string threads = std::to_string(ThreadsPerRank(options_.num_ranks));
    for (const char* name : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}) {
      if (std::getenv(name) == nullptr) env[name] = threads;
    }
    return env;
  }

  // Starts rank i. A failure stops the launch (Supervise then reaps the
  // ranks already started).
  void Spawn(int i, std::map<std::string, std::string> env) {
    Rank& r = ranks_[i];
    r.rank = i;
    r.prefix = "[rank " + std::to_string(i) + "] ";
    env["RANK"] = std::to_string(i);
    env["LOCAL_RANK"] = std::to_string(i);
    for (const auto& [key, value] : options_.extra_env) env[key] = value;

    std::vector<std::string> env_strings;
    env_strings.reserve(env.size());
    for (const auto& [key, value] : env) env_strings.push_back(key + "=" + value);
    std::vector<char*> envp;
    for (std::string& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_strings = options_.argv;
    std::vector<char*> argv;
    for (std::string& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);

    // Pipes are O_CLOEXEC: the rank keeps only the dup2'd copies, and no
    // rank inherits another rank's pipes.
    int out_pipe[2] = {-1, -1};
    int err_pipe[2] = {-1, -1};
    int child_out = options_.out_fd;
    int child_err = options_.err_fd;
    if (options_.prefix_output) {
      if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
        int err = errno;
        for (int* fd : {&out_pipe[0], &out_pipe[1], &err_pipe[0], &err_pipe[1]}) CloseFd(*fd);
        BeginStop(1, "cannot create output pipes for rank " + std::to_string(i) + ": " +
                         ErrnoText(err) + OthersSuffix(), SIGTERM);
        return;
      }
      child_out = out_pipe[1];
      child_err = err_pipe[1];
    }

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, child_out, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, child_err, STDERR_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t empty_mask;
    sigemptyset(&empty_mask);
    posix_spawnattr_setsigmask(&attr, &empty_mask);
    short flags = POSIX_SPAWN_SETSIGMASK;
    if (!signals_.sigpipe_was_ignored()) {
      sigset_t defaults;
      sigemptyset(&defaults);
      sigaddset(&defaults, SIGPIPE);
      posix_spawnattr_setsigdefault(&attr, &defaults);
      flags |= POSIX_SPAWN_SETSIGDEF;
    }
    posix_spawnattr_setflags(&attr, flags);

    pid_t pid = -1;
    int rc = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    CloseFd(out_pipe[1]);
    CloseFd(err_pipe[1]);
    if (rc != 0) {
      CloseFd(out_pipe[0]);
      CloseFd(err_pipe[0]);
      // Shell conventions: 127 = not found, 126 = found but not executable.
      int code = (rc == ENOENT || rc == ENOTDIR) ? 127 : 126;
      BeginStop(code, "cannot execute '" + options_.argv[0] + "': " + ErrnoText(rc) + OthersSuffix(),
                SIGTERM);
      return;
    }
    r.pid = pid;
    r.running = true;
    r.out = Stream{out_pipe[0], &out_, &r.prefix, {}};
    r.err = Stream{err_pipe[0], &err_, &r.prefix, {}};
    for (Stream* s : {&r.out, &r.err}) {
      if (s->fd >= 0) ::fcntl(s->fd, F_SETFL, ::fcntl(s->fd, F_GETFL) | O_NONBLOCK);
    }
  }

  // The poll loop: forwards output, reaps ranks, handles signals and the
  // SIGTERM -> SIGKILL escalation, until no rank is running.
  void Supervise() {
    std::vector<pollfd> pfds;
    std::vector<Stream*> streams;  // parallel to pfds[1..]
    while (AnyRunning()) {
      pfds.clear();
      streams.clear();
      pfds.push_back({signals_.read_fd(), POLLIN, 0});
      for (Rank& r : ranks_) {
        for (Stream* s : {&r.out, &r.err}) {
          if (s->fd < 0) continue;
          pfds.push_back({s->fd, POLLIN, 0});
          streams.push_back(s);
        }
      }
      int timeout = kPollSliceMs;
      if (stopping_ && !killed_) timeout = std::min(timeout, kill_deadline_.RemainingMsForPoll());
      int n = ::poll(pfds.data(), pfds.size(), timeout);
      if (n < 0 && errno != EINTR) {
        COHORT_LOG(ERROR) << "cohort launch: poll: " << ErrnoText(errno);
        ::usleep(10 * 1000);
      }
      if (n > 0) {
        if (pfds[0].revents != 0) HandleSignals();
        for (size_t k = 1; k < pfds.size(); ++k) {
          if (pfds[k].revents != 0) ReadOnce(*streams[k - 1]);
        }
      }
      Reap();
      if (stopping_ && !killed_ && kill_deadline_.Expired()) KillAll(SIGKILL);
    }
    // Every rank is gone; take what is left in the pipes (a grandchild that
    // still holds one open does not keep us waiting).
    for (Rank& r : ranks_) {
      Drain(r.out);
      Drain(r.err);
      Finish(r.out);
      Finish(r.err);
    }
  }

  bool AnyRunning() const {
    for (const Rank& r : ranks_) {
      if (r.running) return true;
    }
    return false;
  }

  void HandleSignals() {
    unsigned char buf[64];
    for (;;) {
      ssize_t n = ::read(signals_.read_fd(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      for (ssize_t k = 0; k < n; ++k) {
        int signo = buf[k];
        if (signo == SIGCHLD) continue;  // Reap() runs after every wake-up
        if (!stopping_) {
          BeginStop(128 + signo,
                    "received " + SignalText(signo) + "; forwarding it to the ranks", signo);
        } else if (!killed_) {
          // Already stopping (a failed rank or an earlier signal): no more grace.
          Message("received " + SignalText(signo) + " while stopping; killing the ranks");
          KillAll(SIGKILL);
        }
      }
    }
  }

  void Reap() {
    for (Rank& r : ranks_) {
      if (!r.running) continue;
      int status = 0;
      pid_t p;
      do {
        p = ::waitpid(r.pid, &status, WNOHANG);
      } while (p < 0 && errno == EINTR);
      if (p == 0) continue;
      int wait_errno = errno;
      r.running = false;
      // Forward what the rank wrote before it died ahead of our verdict on it.
      Drain(r.out);
      Drain(r.err);
      int code;
      std::string how;
      if (p < 0) {
        code = 1;
        how = "disappeared (waitpid: " + ErrnoText(wait_errno) + ")";
      } else if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
        how = "exited with code " + std::to_string(code);
      } else if (WIFSIGNALED(status)) {
        code = 128 + WTERMSIG(status);
        how = "was killed by " + SignalText(WTERMSIG(status));
      } else {
        continue;  // stopped/continued: not reported thanks to no WUNTRACED
      }
      COHORT_LOG(DEBUG) << "cohort launch: rank " << r.rank << " " << how;
      if (code != 0 && !stopping_) {
        BeginStop(code, "rank " + std::to_string(r.rank) + " " + how + OthersSuffix(), SIGTERM);
      }
    }
  }

  // First failure (or signal) wins: it fixes the exit code, is reported, and
  // sends `signo` to the ranks still running; SIGKILL follows after the grace.
  void BeginStop(int code, const std::string& message, int signo) {
    stopping_ = true;
    exit_code_ = code;
    kill_deadline_ = Deadline::After(options_.kill_grace);
    Message(message);
    KillAll(signo);
  }

  std::string OthersSuffix() const { return AnyRunning() ? "; stopping the other ranks" : ""; }

  void KillAll(int signo) {
    if (signo == SIGKILL) killed_ = true;
    for (Rank& r : ranks_) {
      if (r.running) ::kill(r.pid, signo);
    }
  }

  void Message(const std::string& text) { WriteAll(err_, "cohort launch: " + text + "\n"); }

  // Reads at most one chunk (fairness between ranks); closes the stream at EOF.
  void ReadOnce(Stream& s) {
    char buf[kReadChunk];
    ssize_t n;
    do {
      n = ::read(s.fd, buf, sizeof(buf));
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      Forward(s, std::string_view(buf, static_cast<size_t>(n)));
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
      Finish(s);
    }
  }

  // Reads until the pipe is empty (EAGAIN) or closed.
  void Drain(Stream& s) {
    while (s.fd >= 0) {
      char buf[kReadChunk];
      ssize_t n = ::read(s.fd, buf, sizeof(buf));
      if (n > 0) {
        Forward(s, std::string_view(buf, static_cast<size_t>(n)));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) Finish(s);
        return;
      }
    }
  }

  // Writes every complete line of pending+data, prefixed, in one write.
  void Forward(Stream& s, std::string_view data) {
    s.pending.append(data);
    const std::string& prefix = *s.prefix;
    std::string lines;
    size_t start = 0;
    for (;;) {
      size_t nl = s.pending.find('\n', start);
      if (nl == std::string::npos) {
        if (s.pending.size() - start < kMaxLineBytes) break;
        lines += prefix;
        lines.append(s.pending, start, kMaxLineBytes);
        lines += '\n';
        start += kMaxLineBytes;
        continue;
      }
      lines += prefix;
      lines.append(s.pending, start, nl + 1 - start);
      start = nl + 1;
    }
    s.pending.erase(0, start);
    if (!lines.empty()) WriteAll(*s.sink, lines);
  }

  // EOF: flushes a last line that has no newline and closes the pipe.
  void Finish(Stream& s) {
    if (!s.pending.empty()) {
      WriteAll(*s.sink, *s.prefix + s.pending + "\n");
      s.pending.clear();
    }
    CloseFd(s.fd);
  }

  const LaunchOptions& options_;
  SignalScope signals_;
  Sink out_;
  Sink err_;
  std::vector<Rank> ranks_;
  bool stopping_ = false;
  bool killed_ = false;
  int exit_code_ = 0;
  Deadline kill_deadline_ = Deadline::Never();
};

}  // namespace

int ThreadsPerRank(int num_ranks) {
  long cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus <= 0) cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus <= 0) cpus = 1;
  if (num_ranks < 1) num_ranks = 1;
  long per_rank = cpus / num_ranks;
  return per_rank < 1 ? 1 : static_cast<int>(per_rank);
}

Result<std::string> NewJobToken() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return Status::IoError("cannot generate a job token: getrandom: " + ErrnoText(errno));
    }
    got += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 0xf]);
  }
  return token;
}

Result<int> PickFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IoError("cannot pick a free port: socket: " + ErrnoText(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Status s = Status::IoError("cannot pick a free port: bind: " + ErrnoText(errno));
    ::close(fd);
    return s;
  }
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Status s = Status::IoError("cannot pick a free port: getsockname: " + ErrnoText(errno));
    ::close(fd);
    return s;
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

Result<int> Launch(const LaunchOptions& options) {
  if (options.num_ranks < 1) {
    return Status::InvalidArgument("the number of ranks must be at least 1, got " +
                                   std::to_string(options.num_ranks));
  }
  if (options.argv.empty() || options.argv[0].empty()) {
    return Status::InvalidArgument("no program to launch");
  }
  if (options.master_addr.empty()) return Status::InvalidArgument("empty master address");
  if (options.master_port < 0 || options.master_port > 65535) {
    return Status::InvalidArgument("master port " + std::to_string(options.master_port) +
                                   " is not in [0, 65535]");
  }
  if (options.kill_grace.count() < 0) {
    return Status::InvalidArgument("kill_grace must not be negative");
  }
  bool expected = false;
  if (!g_launch_active.compare_exchange_strong(expected, true)) {
    return Status::FailedPrecondition("another Launch() is already running in this process");
  }
  Result<int> result = Launcher(options).Run();
  g_launch_active.store(false);
  return result;
}

}  // namespace cohort::launch
