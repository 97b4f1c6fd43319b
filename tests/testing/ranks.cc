// Rank runners for collective tests; see ranks.h.
#include "testing/ranks.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "cohort/comm/store.h"

namespace cohort::testing {

std::vector<Status> RunRankThreads(int world_size, comm::Options options,
                                   const std::function<Status(comm::Communicator&)>& body) {
  auto store = comm::NewMemoryStore();
  std::vector<Status> results(world_size);
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      auto c = comm::Communicator::Create(store, r, world_size, options);
      if (!c.ok()) {
        results[r] = c.status();
        return;
      }
      results[r] = body(**c);
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

std::vector<ProcessResult> RunRankProcesses(
    int world_size, comm::Options options,
    const std::function<Status(int rank, comm::Communicator* comm)>& body, double kill_after_s,
    const std::function<bool(int)>& skip_comm) {
  comm::TcpStoreOptions so;
  so.host = "127.0.0.1";
  so.port = 0;
  auto server = comm::TcpStoreServer::Start(so);
  std::vector<ProcessResult> results(world_size);
  if (!server.ok()) {
    for (auto& r : results) r.message = server.status().ToString();
    return results;
  }
  const int port = (*server)->port();
  std::vector<pid_t> pids(world_size);
  std::vector<int> pipes(world_size);
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < world_size; ++r) {
    int fds[2];
    if (pipe(fds) != 0) std::abort();
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      Status st;
      if (skip_comm && skip_comm(r)) {
        st = body(r, nullptr);
      } else {
        comm::TcpStoreOptions co;
        co.host = "127.0.0.1";
        co.port = port;
        auto store = comm::ConnectTcpStore(co, Deadline::After(std::chrono::seconds(10)));
        if (!store.ok()) {
          st = store.status();
        } else {
          auto c = comm::Communicator::Create(*store, r, world_size, options);
          st = c.ok() ? body(r, c->get()) : c.status();
        }
      }
      std::string msg = st.ToString();
      ssize_t unused = write(fds[1], msg.data(), msg.size());
      (void)unused;
      _exit(st.ok() ? 0 : 1);
    }
    close(fds[1]);
    pids[r] = pid;
    pipes[r] = fds[0];
  }
  // Reap; kill stragglers after kill_after_s.
  int remaining = world_size;
  while (remaining > 0) {
    for (int r = 0; r < world_size; ++r) {
      if (pids[r] <= 0) continue;
      int status = 0;
      pid_t w = waitpid(pids[r], &status, WNOHANG);
      if (w == pids[r]) {
        results[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        results[r].seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        char buf[4096];
        ssize_t n;
        while ((n = read(pipes[r], buf, sizeof(buf))) > 0) results[r].message.append(buf, n);
        close(pipes[r]);
        pids[r] = 0;
        --remaining;
      }
    }
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > kill_after_s)
      for (pid_t p : pids)
        if (p > 0) kill(p, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return results;
}

}  // namespace cohort::testing
