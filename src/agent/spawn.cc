// SpawnWorker; see spawn.h.
//
// Signals: the forking thread blocks every signal around fork(), so the
// child cannot run one of the embedding program's handlers (e.g. the CLI's
// SIGTERM handler) before it has reset them all to SIG_DFL. The shim then
// installs a do-nothing handler for the usual terminating signals (so a
// StopWorkers signal to the group wakes it from waitpid instead of killing
// it) and its death-signal handler, and unblocks.
#include "spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cohort::agent {
namespace {

// fork() without the atfork handlers (gRPC may register some that block or
// allocate); the child only makes system calls, so it needs none of them.
pid_t ForkNoHandlers() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  return ::_Fork();
#else
  return ::fork();
#endif
}

void ShimIgnore(int) {}

// The death signal: the agent's supervisor thread (or the whole agent) is
// gone. It is a real-time signal nobody sends by accident; no getppid()
// check, because it also fires when only that thread ended (Stop(false)).
void ShimParentDied(int) { ::kill(0, SIGKILL); }  // the whole group, us included

// The signals a StopWorkers may send that would otherwise kill the shim.
constexpr int kShimSurvives[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1,
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

// Everything after fork() in the shim. Never returns.
[[noreturn]] void RunShim(pid_t parent, int death_signal, const SpawnSpec& spec, char** argv,
                          char** envp, int devnull) {
  ::setpgid(0, 0);
  ResetAllSignals();
  struct sigaction act;
  std::memset(&act, 0, sizeof(act));
  sigemptyset(&act.sa_mask);
  act.sa_handler = ShimIgnore;
  for (int sig : kShimSurvives) ::sigaction(sig, &act, nullptr);
  act.sa_handler = ShimParentDied;
  ::sigaction(death_signal, &act, nullptr);
  ::prctl(PR_SET_PDEATHSIG, death_signal);
  if (::getppid() != parent) ::kill(0, SIGKILL);  // the agent died before prctl
  sigset_t none;
  sigemptyset(&none);

  pid_t child = ForkNoHandlers();
  if (child == 0) {
    ResetAllSignals();
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(devnull, STDIN_FILENO);
    ::dup2(spec.stdout_fd, STDOUT_FILENO);
    ::dup2(spec.stderr_fd, STDERR_FILENO);
    ::close_range(3, ~0u, 0);
    if (::chdir(spec.cwd.c_str()) != 0) {
      WriteStr(STDERR_FILENO, "cohort agent: cannot enter the working directory ");
      WriteStr(STDERR_FILENO, spec.cwd.c_str());
      WriteStr(STDERR_FILENO, "\n");
      ::_exit(126);
    }
    ::execve("/bin/sh", argv, envp);
    WriteStr(STDERR_FILENO, "cohort agent: cannot execute /bin/sh\n");
    ::_exit(127);
  }
  // The shim keeps no descriptors: the agent sees EOF on the worker's pipes
  // as soon as the worker's processes are gone.
  ::close_range(0, ~0u, 0);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (child < 0) ::_exit(126);
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(child, &status, 0);
    if (r == child) break;
    if (r < 0 && errno != EINTR) ::_exit(127);
  }
  if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
  int sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
  // Die the same way, without a second core dump.
  struct rlimit no_core = {0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  act.sa_handler = SIG_DFL;
  ::sigaction(sig, &act, nullptr);
  ::kill(::getpid(), sig);
  ::_exit(128 + sig);
}

}  // namespace

Result<pid_t> SpawnWorker(const SpawnSpec& spec) {
  // Everything the child needs is built before fork(): it must not allocate.
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
  const pid_t parent = ::getpid();
  const int death_signal = SIGRTMIN + 2;

  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ForkNoHandlers();
  if (pid == 0) RunShim(parent, death_signal, spec, argv, envp.data(), devnull);
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(devnull);
  if (pid < 0) return Status::IoError(std::string("fork: ") + std::strerror(fork_errno));
  ::setpgid(pid, pid);  // also done by the shim; whichever runs first wins the race
  return pid;
}

}  // namespace cohort::agent
