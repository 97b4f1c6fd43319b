// Spawner; see spawn.h.
//
// The spawning child runs on its own small stack in the agent's memory while
// the agent's thread waits (CLONE_VFORK): it may only make system calls, and
// it has its own copy of the signal handlers and file descriptors (no
// CLONE_SIGHAND, no CLONE_FILES), so resetting them there leaves the agent's
// alone. Every signal is blocked in the spawning thread around clone(), so no
// handler of the agent runs on the child's side before it has reset them.
//
// The guard is a fork (without atfork handlers) of the agent that only makes
// system calls: a 512 KiB bitmap of process group ids (PID_MAX_LIMIT bits),
// filled from 4-byte records on a Unix socket (+pgid: a new group, -pgid: a
// group gone). It ignores the usual terminating signals and leads its own
// process group, so a Ctrl-C to the agent's terminal does not end it early.
#include "spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "cohort/common/logging.h"

namespace cohort::agent {
namespace {

constexpr size_t kChildStackBytes = 128 * 1024;
// PID_MAX_LIMIT on 64-bit Linux: no pid (so no process group id) reaches it.
constexpr int32_t kPidLimit = 1 << 22;

// fork() without the atfork handlers (gRPC may register some that block or
// allocate); the child only makes system calls, so it needs none of them.
pid_t ForkNoHandlers() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  return ::_Fork();
#else
  return ::fork();
#endif
}

void Ignore(int) {}

// The signals a user or a terminal may send that would otherwise end the guard.
constexpr int kGuardSurvives[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1,
                                  SIGUSR2, SIGALRM, SIGPIPE, SIGXCPU};

void ResetAllSignals() {
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &dfl, nullptr);  // fails harmlessly for glibc-internal ones
  }
}

void WriteStr(int fd, const char* s) {
  ssize_t unused = ::write(fd, s, std::strlen(s));
  (void)unused;
}

void SendRecord(int fd, int32_t record) {
  ssize_t unused = ::send(fd, &record, sizeof(record), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)unused;
}

// --- the guard ------------------------------------------------------------

volatile sig_atomic_t g_guard_orphaned = 0;  // only ever set in the guard process
void GuardOrphaned(int) { g_guard_orphaned = 1; }

[[noreturn]] void RunGuard(pid_t parent, int death_signal, int socket_fd) {
  ::setpgid(0, 0);
  ResetAllSignals();
  struct sigaction act;
  std::memset(&act, 0, sizeof(act));
  sigemptyset(&act.sa_mask);
  act.sa_handler = Ignore;
  for (int sig : kGuardSurvives) ::sigaction(sig, &act, nullptr);
  act.sa_handler = GuardOrphaned;  // no SA_RESTART: a blocked recv returns EINTR
  ::sigaction(death_signal, &act, nullptr);
  ::prctl(PR_SET_PDEATHSIG, death_signal);
  if (socket_fd != STDIN_FILENO) ::dup2(socket_fd, STDIN_FILENO);
  ::close_range(1, ~0u, 0);  // nothing of the agent's stays open here
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::getppid() != parent) g_guard_orphaned = 1;  // the agent died before prctl

  constexpr size_t kBytes = kPidLimit / 8;
  auto* live = static_cast<unsigned char*>(::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE,
                                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (live == MAP_FAILED) ::_exit(1);
  int32_t buf[1024];
  size_t have = 0;  // bytes in buf
  for (;;) {
    // Orphaned (the death signal, or the agent died before prctl): what is
    // already queued is still read, without waiting for more.
    const int flags = g_guard_orphaned ? MSG_DONTWAIT : 0;
    ssize_t n = ::recv(STDIN_FILENO, reinterpret_cast<char*>(buf) + have, sizeof(buf) - have, flags);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the agent is gone (or Abandon()), or nothing more queued
    have += static_cast<size_t>(n);
    const size_t whole = have / sizeof(int32_t);
    for (size_t i = 0; i < whole; ++i) {
      const int32_t r = buf[i];
      // Never 0 or 1: kill(0) is our own group, kill(-1) is every process.
      if (r > 1 && r < kPidLimit) live[r / 8] |= static_cast<unsigned char>(1u << (r % 8));
      if (r < -1 && r > -kPidLimit) live[-r / 8] &= static_cast<unsigned char>(~(1u << (-r % 8)));
    }
    const size_t rest = have % sizeof(int32_t);
    std::memmove(buf, reinterpret_cast<char*>(buf) + whole * sizeof(int32_t), rest);
    have = rest;
  }
  for (size_t i = 0; i < kBytes; ++i) {
    if (live[i] == 0) continue;
    for (int b = 0; b < 8; ++b) {
      const pid_t pgid = static_cast<pid_t>(i * 8 + b);
      if ((live[i] & (1u << b)) != 0 && pgid > 1) ::kill(-pgid, SIGKILL);
    }
  }
  ::_exit(0);
}

// --- the spawning child -----------------------------------------------------

struct ChildArgs {
  const SpawnSpec* spec;
  char** argv;
  char** envp;
  int devnull;
  pid_t parent;
  int guard_fd;
};

int ChildMain(void* p) {
  const ChildArgs* a = static_cast<const ChildArgs*>(p);
  ResetAllSignals();
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != a->parent) ::_exit(127);  // the agent died before prctl
  // Registered before anything of the worker runs: an agent that dies from
  // here on leaves nothing of this group behind.
  if (a->guard_fd >= 0) SendRecord(a->guard_fd, static_cast<int32_t>(::getpid()));
  ::dup2(a->devnull, STDIN_FILENO);
  ::dup2(a->spec->stdout_fd, STDOUT_FILENO);
  ::dup2(a->spec->stderr_fd, STDERR_FILENO);
  ::close_range(3, ~0u, 0);
  if (::chdir(a->spec->cwd.c_str()) != 0) {
    WriteStr(STDERR_FILENO, "cohort agent: cannot enter the working directory ");
    WriteStr(STDERR_FILENO, a->spec->cwd.c_str());
    WriteStr(STDERR_FILENO, "\n");
    ::_exit(126);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve("/bin/sh", a->argv, a->envp);
  WriteStr(STDERR_FILENO, "cohort agent: cannot execute /bin/sh\n");
  ::_exit(127);
}

int DeathSignal() { return SIGRTMIN + 2; }  // a real-time signal nobody sends by accident

}  // namespace

Spawner::~Spawner() { Abandon(); }

Status Spawner::Start() {
  if (guard_pid_ > 0) return Status::Ok();
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return Status::IoError(std::string("guard socket: ") + std::strerror(errno));
  }
  int sndbuf = 1 << 20;  // ~256k records before a send would fail
  ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  ::setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
  const pid_t parent = ::getpid();
  const int death_signal = DeathSignal();
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ForkNoHandlers();
  if (pid == 0) RunGuard(parent, death_signal, fds[1]);
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return Status::IoError(std::string("fork of the guard: ") + std::strerror(fork_errno));
  }
  guard_pid_ = pid;
  guard_fd_ = fds[0];
  warned_full_ = false;
  return Status::Ok();
}

Result<pid_t> Spawner::Spawn(const SpawnSpec& spec) {
  if (stack_ == nullptr) {
    void* s = ::mmap(nullptr, kChildStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (s == MAP_FAILED) return Status::IoError(std::string("mmap: ") + std::strerror(errno));
    stack_ = s;
  }
  // Everything the child needs is built here: it must not allocate.
  std::string sh = "/bin/sh";
  std::string dash_c = "-c";
  std::string command = spec.entrypoint;
  char* argv[] = {sh.data(), dash_c.data(), command.data(), nullptr};
  std::vector<std::string> env_copy = spec.env;
  std::vector<char*> envp;
  envp.reserve(env_copy.size() + 1);
  for (std::string& e : env_copy) envp.push_back(e.data());
  envp.push_back(nullptr);

  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) return Status::IoError(std::string("open /dev/null: ") + std::strerror(errno));
  ChildArgs args{&spec, argv, envp.data(), devnull, ::getpid(), guard_fd_};

  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  // The child writes errno into this thread's (shared) memory: keep ours.
  const int saved_errno = errno;
  pid_t pid = ::clone(ChildMain, static_cast<char*>(stack_) + kChildStackBytes,
                      CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  const int clone_errno = errno;
  errno = saved_errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(devnull);
  if (pid < 0) return Status::IoError(std::string("clone: ") + std::strerror(clone_errno));
  return pid;
}

void Spawner::Send(int record) {
  if (guard_fd_ < 0) return;
  ssize_t n = ::send(guard_fd_, &record, sizeof(record), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !warned_full_) {
    warned_full_ = true;
    COHORT_LOG(WARN) << "agent: the worker guard (pid " << guard_pid_
                     << ") is not reading; groups may be left unregistered";
  }
}

void Spawner::Forget(pid_t pgid) {
  if (pgid > 1) Send(-static_cast<int32_t>(pgid));
}

bool Spawner::guard_alive() {
  if (guard_pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(guard_pid_, &status, WNOHANG) == 0) return true;
  COHORT_LOG(WARN) << "agent: the worker guard (pid " << guard_pid_ << ") died; starting another";
  guard_pid_ = -1;
  return false;
}

void Spawner::RestartGuard(const std::vector<pid_t>& live) {
  if (guard_pid_ > 0) return;
  if (guard_fd_ >= 0) ::close(guard_fd_);
  guard_fd_ = -1;
  Status s = Start();
  if (!s.ok()) {
    if (!warned_start_) COHORT_LOG(WARN) << "agent: cannot start the worker guard: " << s.message();
    warned_start_ = true;
    return;
  }
  warned_start_ = false;
  for (pid_t pgid : live) {
    if (pgid > 1) Send(static_cast<int32_t>(pgid));
  }
}

void Spawner::Abandon(int wait_ms) {
  if (guard_fd_ >= 0) ::close(guard_fd_);
  guard_fd_ = -1;
  if (guard_pid_ > 0) {
    int status = 0;
    pid_t r = 0;
    for (int waited = 0; waited <= wait_ms; waited += 5) {
      r = ::waitpid(guard_pid_, &status, WNOHANG);
      if (r != 0) break;
      ::usleep(5 * 1000);
    }
    if (r == 0) {
      COHORT_LOG(WARN) << "agent: the worker guard (pid " << guard_pid_
                       << ") did not exit; killing it";
      ::kill(guard_pid_, SIGKILL);
      ::waitpid(guard_pid_, &status, 0);
    }
    guard_pid_ = -1;
  }
  if (stack_ != nullptr) ::munmap(stack_, kChildStackBytes);
  stack_ = nullptr;
}

}  // namespace cohort::agent
