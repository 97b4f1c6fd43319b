// Supervisor implementation; see supervisor.h.
//
// The loop: poll(wake pipe, every worker's stdout/stderr pipe, report
// listener and connections, exit pidfd) with a timeout of at most
// flush_interval; then read whatever is readable, run queued commands, tail
// report files, reap, escalate overdue stops to SIGKILL, flush batches when
// flush_interval has passed, and hand what it has to say to the outbox. An
// exit is seen on the worker's pidfd (in the poll set); without one, and for
// every worker once per flush_interval, by waitid(pid, WNOHANG) — never
// waitpid(-1). A worker that exited is a zombie until reaped, so its number
// cannot be reused: its group is killed before the reap.
#include "supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "cohort/common/deadline.h"
#include "cohort/common/logging.h"
#include "results_listing.h"
#include "spawn.h"

namespace cohort::agent {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxLineBytes = 64 * 1024;
// A batch this big is sent without waiting for the next tick.
constexpr size_t kFlushBytes = 256 * 1024;
// A report line longer than this is dropped (a runaway writer).
constexpr size_t kMaxReportLineBytes = 1 << 20;

void CloseFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

std::string SignalText(int signo) {
  const char* name = strsignal(signo);
  return "signal " + std::to_string(signo) + " (" + (name ? name : "unknown") + ")";
}

rpc::AgentMessage ExitedMessage(const WorkerKey& key, int exit_code, int signal,
                                const std::string& message) {
  rpc::AgentMessage msg;
  rpc::WorkerExited* e = msg.mutable_worker_exited();
  e->set_job_id(key.job_id);
  e->set_attempt(key.attempt);
  e->set_rank(key.rank);
  e->set_exit_code(exit_code);
  e->set_signal(signal);
  e->set_message(message);
  return msg;
}

}  // namespace

std::string WorkerKey::ToString() const {
  return "job=" + job_id + " attempt=" + std::to_string(attempt) + " rank=" + std::to_string(rank);
}

bool WorkerFilter::Matches(const WorkerKey& key) const {
  return (job_id.empty() || job_id == key.job_id) && (attempt < 0 || attempt == key.attempt);
}

rpc::AgentMessage NeverStarted(const WorkerKey& key, int signal, const std::string& message) {
  return ExitedMessage(key, -1, signal, message);
}

struct Supervisor::Worker {
  struct Stream {
    int fd = -1;
    std::string pending;  // a line not ended yet
  };
  struct ReportConn {
    int fd = -1;
    std::string pending;
  };

  WorkerKey key;
  pid_t pid = -1;
  int pidfd = -1;          // readable once the worker's main process exited
  bool exit_seen = false;  // the pidfd fired
  std::string prefix;  // "" or "[rank R] "
  Resources resources;
  std::string results_dir;  // its COHORT_RESULTS_DIR when a local path (listed at exit)
  Stream out;
  Stream err;
  int log_file_fd = -1;  // <scratch>/output.log
  std::string log_batch;
  uint64_t log_offset = 0;  // bytes of output handed to the outbox so far (LogChunk.offset)

  std::string report_path;
  int listen_fd = -1;       // socket channel
  std::vector<ReportConn> conns;
  int report_file_fd = -1;  // file channel
  std::string report_file_pending;
  std::vector<std::string> metric_batch;
  size_t metric_bytes = 0;
  bool warned_bad_report = false;

  bool stopping = false;
  bool killed = false;
  Deadline kill_at = Deadline::Never();

  ~Worker() {
    CloseFd(out.fd);
    CloseFd(err.fd);
    CloseFd(log_file_fd);
    CloseFd(listen_fd);
    for (ReportConn& c : conns) CloseFd(c.fd);
    CloseFd(report_file_fd);
    CloseFd(pidfd);
  }
};

Supervisor::Supervisor(Options options, Outbox* outbox)
    : options_(std::move(options)), outbox_(outbox) {}

Supervisor::~Supervisor() {
  Shutdown(/*kill=*/false, std::chrono::milliseconds(0));
  CloseFd(wake_read_);
  CloseFd(wake_write_);
}

Status Supervisor::Start() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Status::IoError(std::string("supervisor wake pipe: ") + std::strerror(errno));
  }
  wake_read_ = fds[0];
  wake_write_ = fds[1];
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void Supervisor::Post(Command command) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_requested_ && command.kind != Command::kShutdown) {
      if (command.kind == Command::kSpawn) {
        outbox_->Push(NeverStarted(command.spawn.key, 0,
                                   "the agent is stopping; the worker was not started"));
      }
      return;
    }
    if (command.kind == Command::kShutdown) shutdown_requested_ = true;
    commands_.push_back(std::move(command));
  }
  char byte = 1;
  ssize_t unused = ::write(wake_write_, &byte, 1);  // full pipe: already awake
  (void)unused;
}

void Supervisor::Spawn(SpawnRequest request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_spawns_.push_back(request.key);
  }
  Command c;
  c.kind = Command::kSpawn;
  c.spawn = std::move(request);
  Post(std::move(c));
}

void Supervisor::Stop(const WorkerFilter& filter, int signo, std::chrono::milliseconds grace) {
  Command c;
  c.kind = Command::kStop;
  c.filter = filter;
  c.signo = signo;
  c.grace = grace;
  Post(std::move(c));
}

void Supervisor::Shutdown(bool kill, std::chrono::milliseconds grace) {
  if (!thread_.joinable()) return;
  Command c;
  c.kind = Command::kShutdown;
  c.kill = kill;
  c.grace = grace;
  Post(std::move(c));
  thread_.join();
  // Abandoned workers (kill == false) die of their death signal now that the
  // thread is gone; reap them so they do not linger as zombies.
  Deadline until = Deadline::After(std::chrono::seconds(2));
  while (!workers_.empty() && !until.Expired()) {
    for (auto it = workers_.begin(); it != workers_.end();) {
      int status = 0;
      pid_t r = ::waitpid(it->second->pid, &status, WNOHANG);
      if (r == 0) {
        ++it;
      } else {
        it = workers_.erase(it);
      }
    }
    if (!workers_.empty()) ::usleep(10 * 1000);
  }
  for (auto& [key, w] : workers_) {
    COHORT_LOG(WARN) << "agent: worker " << key.ToString() << " pid=" << w->pid
                     << " did not exit after the agent stopped";
  }
  workers_.clear();
  PublishSnapshot();
}

SupervisorSnapshot Supervisor::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  SupervisorSnapshot s = snapshot_;
  for (const WorkerKey& key : pending_spawns_) {
    rpc::RunningWorker rw;
    rw.set_job_id(key.job_id);
    rw.set_attempt(key.attempt);
    rw.set_rank(key.rank);
    s.workers.push_back(std::move(rw));
  }
  return s;
}

size_t Supervisor::num_running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_.workers.size();
}

void Supervisor::Emit(rpc::AgentMessage msg) { emitted_.push_back(std::move(msg)); }

void Supervisor::Commit() {
  if (snapshot_dirty_) PublishSnapshot();
  snapshot_dirty_ = false;
  for (rpc::AgentMessage& m : emitted_) outbox_->Push(std::move(m));
  emitted_.clear();
}

void Supervisor::PublishSnapshot() {
  SupervisorSnapshot s;
  for (const auto& [key, w] : workers_) {
    rpc::RunningWorker rw;
    rw.set_job_id(key.job_id);
    rw.set_attempt(key.attempt);
    rw.set_rank(key.rank);
    rw.set_pid(w->pid);
    s.workers.push_back(std::move(rw));
    for (const auto& [name, amount] : w->resources) s.used[name] += amount;
  }
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_ = std::move(s);
}

// ---------------------------------------------------------------------------
// The loop.

void Supervisor::Loop() {
  enum Kind { kOut, kErr, kListen, kConn, kExit };
  struct Source {
    Worker* worker;
    Kind kind;
    size_t conn;
  };
  std::vector<pollfd> pfds;
  std::vector<Source> sources;  // parallel to pfds[1..]
  Deadline next_flush = Deadline::After(options_.flush_interval);
  // Here: the guard's death signal is tied to this thread.
  if (Status s = spawner_.Start(); !s.ok()) {
    COHORT_LOG(WARN) << "agent: cannot start the worker guard (" << s.message()
                     << "); workers still die with the agent, what they start may not";
  }

  for (;;) {
    pfds.clear();
    sources.clear();
    pfds.push_back({wake_read_, POLLIN, 0});
    for (auto& [key, w] : workers_) {
      if (w->out.fd >= 0) {
        pfds.push_back({w->out.fd, POLLIN, 0});
        sources.push_back({w.get(), kOut, 0});
      }
      if (w->err.fd >= 0) {
        pfds.push_back({w->err.fd, POLLIN, 0});
        sources.push_back({w.get(), kErr, 0});
      }
      if (w->listen_fd >= 0) {
        pfds.push_back({w->listen_fd, POLLIN, 0});
        sources.push_back({w.get(), kListen, 0});
      }
      for (size_t i = 0; i < w->conns.size(); ++i) {
        pfds.push_back({w->conns[i].fd, POLLIN, 0});
        sources.push_back({w.get(), kConn, i});
      }
      if (w->pidfd >= 0 && !w->exit_seen) {
        pfds.push_back({w->pidfd, POLLIN, 0});
        sources.push_back({w.get(), kExit, 0});
      }
    }
    int timeout = -1;
    if (!workers_.empty() || shutting_down_) {
      timeout = next_flush.RemainingMsForPoll();
      for (auto& [key, w] : workers_) {
        if (w->stopping && !w->killed) timeout = std::min(timeout, w->kill_at.RemainingMsForPoll());
      }
    }
    int n = ::poll(pfds.data(), pfds.size(), timeout);
    if (n < 0 && errno != EINTR) {
      COHORT_LOG(ERROR) << "agent supervisor: poll: " << std::strerror(errno);
      ::usleep(10 * 1000);
    }
    if (n > 0) {
      if (pfds[0].revents != 0) {
        char buf[256];
        while (::read(wake_read_, buf, sizeof(buf)) > 0) {
        }
      }
      for (size_t k = 1; k < pfds.size(); ++k) {
        if (pfds[k].revents == 0) continue;
        const Source& s = sources[k - 1];
        switch (s.kind) {
          case kOut: ReadOutput(*s.worker, false, false); break;
          case kErr: ReadOutput(*s.worker, true, false); break;
          case kListen: AcceptReports(*s.worker); break;
          case kConn: ReadReports(*s.worker, s.conn, false); break;
          case kExit: s.worker->exit_seen = true; break;
        }
      }
      for (auto& [key, w] : workers_) {
        auto closed = [](const Worker::ReportConn& c) { return c.fd < 0; };
        w->conns.erase(std::remove_if(w->conns.begin(), w->conns.end(), closed), w->conns.end());
      }
    }
    for (auto& [key, w] : workers_) TailReportFile(*w);
    HandleCommands();
    const bool tick = next_flush.Expired();
    ReapAll(/*all=*/tick);
    for (auto& [key, w] : workers_) {
      if (w->stopping && !w->killed && w->kill_at.Expired()) {
        COHORT_LOG(INFO) << "agent: worker " << key.ToString()
                         << " outlived its stop grace; sending SIGKILL";
        ::kill(-w->pid, SIGKILL);
        w->killed = true;
      }
    }
    if (tick) {
      for (auto& [key, w] : workers_) Flush(*w);
      next_flush = Deadline::After(options_.flush_interval);
      if (!spawner_.guard_alive()) {
        std::vector<pid_t> live;
        for (auto& [key, w] : workers_) live.push_back(w->pid);
        spawner_.RestartGuard(live);
      }
    }
    Commit();
    if (shutting_down_) {
      if (!kill_on_shutdown_ || workers_.empty()) break;
      if (shutdown_until_.Expired()) {
        COHORT_LOG(WARN) << "agent: " << workers_.size()
                         << " worker(s) not reaped at shutdown; leaving them to their death signal";
        break;
      }
    }
  }
  // Leaving: what was read so far still goes out.
  for (auto& [key, w] : workers_) Flush(*w);
  Commit();
  // Abandoned workers' groups die now (the guard's socket closes); the workers
  // themselves also die of their death signal as this thread ends.
  spawner_.Abandon();
}

void Supervisor::HandleCommands() {
  std::deque<Command> commands;
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands.swap(commands_);
  }
  for (Command& c : commands) {
    switch (c.kind) {
      case Command::kSpawn:
        if (shutting_down_) {
          Emit(NeverStarted(c.spawn.key, 0,
                                     "the agent is stopping; the worker was not started"));
        } else {
          DoSpawn(std::move(c.spawn));
        }
        break;
      case Command::kStop:
        DoStop(c.filter, c.signo, c.grace);
        break;
      case Command::kShutdown:
        if (shutting_down_) break;
        shutting_down_ = true;
        kill_on_shutdown_ = c.kill;
        shutdown_until_ = Deadline::After(c.grace + std::chrono::seconds(2));
        if (c.kill) DoStop(WorkerFilter{}, SIGTERM, c.grace);
        break;
    }
  }
}

// ---------------------------------------------------------------------------
// Spawning and stopping.

bool Supervisor::SetUpReportChannel(Worker& w, const std::string& scratch_dir) {
  std::string sock_path = options_.run_dir + "/" + std::to_string(++report_seq_) + ".sock";
  sockaddr_un addr{};
  if (sock_path.size() < sizeof(addr.sun_path)) {
    ::unlink(sock_path.c_str());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::listen(fd, 16) == 0) {
      w.listen_fd = fd;
      w.report_path = sock_path;
      return true;
    }
    COHORT_LOG(WARN) << "agent: cannot listen on " << sock_path << ": " << std::strerror(errno)
                     << "; worker " << w.key.ToString() << " reports to a file instead";
    if (fd >= 0) ::close(fd);
  }
  // Fallback: the worker appends to a file, which the loop tails.
  std::string file_path = scratch_dir + "/report.jsonl";
  int fd = ::open(file_path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    COHORT_LOG(WARN) << "agent: cannot create " << file_path << ": " << std::strerror(errno);
    return false;
  }
  ::lseek(fd, 0, SEEK_END);  // lines of an earlier run are not this worker's
  w.report_file_fd = fd;
  w.report_path = file_path;
  return true;
}

void Supervisor::DoSpawn(SpawnRequest req) {
  {
    // From here on the worker is in workers_ (published below) or has an
    // exit in the outbox (NeverStarted).
    std::lock_guard<std::mutex> lock(mu_);
    std::erase(pending_spawns_, req.key);
  }
  if (workers_.count(req.key) != 0) {
    COHORT_LOG(WARN) << "agent: worker " << req.key.ToString()
                     << " is already running; ignoring a second StartWorker";
    return;
  }
  auto w = std::make_unique<Worker>();
  w->key = req.key;
  w->resources = req.resources;
  if (auto it = req.env.find("COHORT_RESULTS_DIR"); it != req.env.end() && !it->second.empty() &&
      it->second[0] == '/')
    w->results_dir = it->second;
  if (req.prefix_lines) w->prefix = "[rank " + std::to_string(req.key.rank) + "] ";
  std::string log_path = req.scratch_dir + "/output.log";
  w->log_file_fd = ::open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (w->log_file_fd < 0) {
    COHORT_LOG(WARN) << "agent: cannot open " << log_path << ": " << std::strerror(errno);
  }
  if (!SetUpReportChannel(*w, req.scratch_dir)) {
    Emit(NeverStarted(req.key, 0, "cannot create a report channel for the worker"));
    return;
  }
  req.env["COHORT_REPORT_PATH"] = w->report_path;

  int out_pipe[2] = {-1, -1};
  int err_pipe[2] = {-1, -1};
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    std::string why = std::strerror(errno);
    for (int* fd : {&out_pipe[0], &out_pipe[1], &err_pipe[0], &err_pipe[1]}) CloseFd(*fd);
    if (w->listen_fd >= 0) ::unlink(w->report_path.c_str());
    Emit(NeverStarted(req.key, 0, "cannot create output pipes: " + why));
    return;
  }
  SpawnSpec spec;
  spec.entrypoint = req.entrypoint;
  spec.cwd = req.cwd;
  for (const auto& [k, v] : req.env) spec.env.push_back(k + "=" + v);
  spec.stdout_fd = out_pipe[1];
  spec.stderr_fd = err_pipe[1];
  Result<pid_t> pid = spawner_.Spawn(spec);
  CloseFd(out_pipe[1]);
  CloseFd(err_pipe[1]);
  if (!pid.ok()) {
    CloseFd(out_pipe[0]);
    CloseFd(err_pipe[0]);
    if (w->listen_fd >= 0) ::unlink(w->report_path.c_str());
    Emit(NeverStarted(req.key, 0, "cannot start the worker: " + pid.status().message()));
    return;
  }
  w->pid = *pid;
  // A process that exited but was not reaped keeps its number: no race.
  w->pidfd = static_cast<int>(::syscall(SYS_pidfd_open, w->pid, 0));
  w->out.fd = out_pipe[0];
  w->err.fd = err_pipe[0];
  SetNonBlocking(w->out.fd);
  SetNonBlocking(w->err.fd);

  rpc::AgentMessage started;
  rpc::WorkerStarted* s = started.mutable_worker_started();
  s->set_job_id(req.key.job_id);
  s->set_attempt(req.key.attempt);
  s->set_rank(req.key.rank);
  s->set_pid(w->pid);
  COHORT_LOG(INFO) << "agent: started worker " << req.key.ToString() << " pid=" << w->pid;
  workers_.emplace(req.key, std::move(w));
  snapshot_dirty_ = true;  // published before the head can hear of it (Commit)
  Emit(std::move(started));
}

void Supervisor::DoStop(const WorkerFilter& filter, int signo, std::chrono::milliseconds grace) {
  if (signo <= 0) signo = SIGTERM;
  for (auto& [key, w] : workers_) {
    if (!filter.Matches(key) || w->killed) continue;
    COHORT_LOG(INFO) << "agent: stopping worker " << key.ToString() << " with "
                     << SignalText(signo);
    ::kill(-w->pid, signo);
    Deadline at = Deadline::After(grace);
    if (!w->stopping || at.when() < w->kill_at.when()) w->kill_at = at;
    w->stopping = true;
    if (signo == SIGKILL) w->killed = true;
  }
}

// ---------------------------------------------------------------------------
// Output.

void Supervisor::ReadOutput(Worker& w, bool is_err, bool drain) {
  Worker::Stream& s = is_err ? w.err : w.out;
  char buf[kReadChunk];
  while (s.fd >= 0) {
    ssize_t n = ::read(s.fd, buf, sizeof(buf));
    if (n > 0) {
      s.pending.append(buf, static_cast<size_t>(n));
      AppendOutput(w, s.pending, false);
      if (!drain) return;  // one chunk per wake-up: fairness between workers
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    AppendOutput(w, s.pending, /*at_eof=*/true);
    CloseFd(s.fd);
  }
}

// Moves the complete lines of `pending` (all of it at EOF) into the batch.
void Supervisor::AppendOutput(Worker& w, std::string& pending, bool at_eof) {
  std::string lines;
  size_t start = 0;
  for (;;) {
    size_t nl = pending.find('\n', start);
    size_t len;
    if (nl != std::string::npos) {
      len = nl + 1 - start;
    } else if (pending.size() - start >= kMaxLineBytes) {
      len = kMaxLineBytes;
    } else if (at_eof && start < pending.size()) {
      len = pending.size() - start;
    } else {
      break;
    }
    lines += w.prefix;
    lines.append(pending, start, len);
    if (lines.back() != '\n') lines += '\n';
    start += len;
  }
  pending.erase(0, start);
  if (lines.empty()) return;
  if (w.log_file_fd >= 0) {
    size_t done = 0;
    while (done < lines.size()) {
      ssize_t n = ::write(w.log_file_fd, lines.data() + done, lines.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        CloseFd(w.log_file_fd);  // disk full: the head still gets the lines
        break;
      }
      done += static_cast<size_t>(n);
    }
  }
  w.log_batch += lines;
  if (w.log_batch.size() >= kFlushBytes) Flush(w);
}

// ---------------------------------------------------------------------------
// Reports.

void Supervisor::AcceptReports(Worker& w) {
  while (w.listen_fd >= 0) {
    int fd = ::accept4(w.listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;  // EAGAIN, or an error we cannot do anything about
    }
    w.conns.push_back({fd, {}});
  }
}

void Supervisor::ReadReports(Worker& w, size_t conn, bool drain) {
  Worker::ReportConn& c = w.conns[conn];
  char buf[kReadChunk];
  while (c.fd >= 0) {
    ssize_t n = ::read(c.fd, buf, sizeof(buf));
    if (n > 0) {
      c.pending.append(buf, static_cast<size_t>(n));
      TakeReportLines(w, c.pending, false);
      if (!drain) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    TakeReportLines(w, c.pending, /*at_eof=*/true);
    CloseFd(c.fd);
  }
}

void Supervisor::TailReportFile(Worker& w) {
  if (w.report_file_fd < 0) return;
  char buf[kReadChunk];
  for (;;) {
    ssize_t n = ::read(w.report_file_fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // EOF for now: the worker may append more
    w.report_file_pending.append(buf, static_cast<size_t>(n));
    TakeReportLines(w, w.report_file_pending, false);
  }
}

void Supervisor::TakeReportLines(Worker& w, std::string& pending, bool at_eof) {
  size_t start = 0;
  for (;;) {
    size_t nl = pending.find('\n', start);
    if (nl == std::string::npos) {
      if (!at_eof && pending.size() - start <= kMaxReportLineBytes) break;
      nl = pending.size();
      if (start >= nl) break;
    }
    std::string line = pending.substr(start, nl - start);
    start = std::min(nl + 1, pending.size());
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.pop_back();
    }
    if (line.empty()) continue;
    bool ok = line.size() <= kMaxReportLineBytes;
    if (ok) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      ok = !j.is_discarded() && j.is_object();
    }
    if (!ok) {
      if (!w.warned_bad_report) {
        COHORT_LOG(WARN) << "agent: worker " << w.key.ToString()
                         << " wrote a report line that is not a JSON object; dropping it "
                            "(and such lines after it): "
                         << line.substr(0, 200);
        w.warned_bad_report = true;
      }
      continue;
    }
    w.metric_bytes += line.size();
    w.metric_batch.push_back(std::move(line));
  }
  pending.erase(0, start);
  if (w.metric_bytes >= kFlushBytes) Flush(w);
}

void Supervisor::Flush(Worker& w) {
  if (!w.log_batch.empty()) {
    rpc::AgentMessage msg;
    rpc::LogChunk* c = msg.mutable_log();
    c->set_job_id(w.key.job_id);
    c->set_attempt(w.key.attempt);
    c->set_rank(w.key.rank);
    c->set_offset(w.log_offset);
    w.log_offset += w.log_batch.size();
    c->set_data(std::move(w.log_batch));
    w.log_batch.clear();
    Emit(std::move(msg));
  }
  if (!w.metric_batch.empty()) {
    rpc::AgentMessage msg;
    rpc::MetricReport* m = msg.mutable_metrics();
    m->set_job_id(w.key.job_id);
    m->set_attempt(w.key.attempt);
    m->set_rank(w.key.rank);
    for (std::string& line : w.metric_batch) m->add_json_lines(std::move(line));
    w.metric_batch.clear();
    w.metric_bytes = 0;
    Emit(std::move(msg));
  }
}

// ---------------------------------------------------------------------------
// Exits.

void Supervisor::ReapAll(bool all) {
  for (auto it = workers_.begin(); it != workers_.end();) {
    Worker& w = *it->second;
    if (!all && w.pidfd >= 0 && !w.exit_seen) {
      ++it;
      continue;
    }
    siginfo_t info;
    std::memset(&info, 0, sizeof(info));
    int r;
    do {
      r = ::waitid(P_PID, static_cast<id_t>(w.pid), &info, WEXITED | WNOHANG | WNOWAIT);
    } while (r < 0 && errno == EINTR);
    if (r == 0 && info.si_pid == 0) {
      ++it;
      continue;
    }
    int status = -1;  // ECHILD: someone else reaped it (SIGCHLD ignored?)
    if (r == 0) {
      // Still a zombie, so the group id is still this worker's: whatever it
      // left running in its group goes with it, then the reap.
      ::kill(-w.pid, SIGKILL);
      pid_t p;
      do {
        p = ::waitpid(w.pid, &status, 0);
      } while (p < 0 && errno == EINTR);
      if (p != w.pid) status = -1;
    }
    spawner_.Forget(w.pid);
    rpc::AgentMessage exited = Finalize(w, status);
    it = workers_.erase(it);
    // Whoever sees the exit must not find the worker in a snapshot anymore.
    snapshot_dirty_ = true;
    Emit(std::move(exited));
  }
}

rpc::AgentMessage Supervisor::Finalize(Worker& w, int wait_status) {
  // The group was killed by ReapAll: the last output and reports are
  // collected before the exit is reported.
  ReadOutput(w, false, /*drain=*/true);
  ReadOutput(w, true, /*drain=*/true);
  AppendOutput(w, w.out.pending, true);
  AppendOutput(w, w.err.pending, true);
  AcceptReports(w);
  for (size_t i = 0; i < w.conns.size(); ++i) ReadReports(w, i, /*drain=*/true);
  for (Worker::ReportConn& c : w.conns) {
    TakeReportLines(w, c.pending, true);
    CloseFd(c.fd);
  }
  TailReportFile(w);
  TakeReportLines(w, w.report_file_pending, true);
  Flush(w);
  if (w.listen_fd >= 0) {
    CloseFd(w.listen_fd);
    ::unlink(w.report_path.c_str());
  }

  int exit_code = -1;
  int signal = 0;
  std::string how;
  if (wait_status == -1) {
    how = "disappeared (its exit status was collected by someone else)";
  } else if (WIFEXITED(wait_status)) {
    exit_code = WEXITSTATUS(wait_status);
    how = "exited with code " + std::to_string(exit_code);
  } else if (WIFSIGNALED(wait_status)) {
    signal = WTERMSIG(wait_status);
    exit_code = 128 + signal;
    how = "was killed by " + SignalText(signal);
  }
  if (w.stopping) how += " after the head stopped it";
  COHORT_LOG(INFO) << "agent: worker " << w.key.ToString() << " pid=" << w.pid << " " << how;
  rpc::AgentMessage msg = ExitedMessage(w.key, exit_code, signal, how);
  if (!w.results_dir.empty()) *msg.mutable_worker_exited()->mutable_results() = ListLocalResults(w.results_dir);
  return msg;
}

}  // namespace cohort::agent
