// The agent against a fake head on 127.0.0.1 (gRPC, HeadRpcServer): real
// registration, real worker processes, real sockets. Each test finishes in a
// few seconds; waits are bounded (FakeHead::Wait defaults to 8 s).
#include "cohort/agent/agent.h"

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "fake_head.h"

namespace cohort::agent {
namespace {

using namespace std::chrono_literals;
using testing::FakeHead;
using testing::FindExit;
using testing::FindStart;
using testing::ReadFile;
using testing::StartMsg;
using testing::StopMsg;
using testing::TempDir;
using testing::WorkerId;
using Record = FakeHead::Record;

Agent::Options TestOptions(const std::string& head, const std::string& state_dir) {
  Agent::Options o;
  o.head_address = head;
  o.state_dir = state_dir;
  o.cluster_token = "secret";
  o.resources = {{"CPU", 4}, {"GPU", 0}, {"memory", 1e9}};
  o.labels = {{"zone", "test"}};
  o.heartbeat_interval = 100ms;
  o.connect_timeout = 2s;
  o.start_timeout = 5s;
  o.reconnect_backoff_min = 50ms;
  o.reconnect_backoff_max = 200ms;
  o.stop_grace = 1s;
  return o;
}

std::unique_ptr<FakeHead> StartHead(FakeHead::Options options = {}) {
  if (options.cluster_token.empty()) options.cluster_token = "secret";
  auto head = std::make_unique<FakeHead>(options);
  Status s = head->Start();
  EXPECT_TRUE(s.ok()) << s.ToString();
  return head;
}

// Gone, or a zombie nobody reaped yet.
bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

bool WaitGone(pid_t pid, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (ProcessGone(pid)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return ProcessGone(pid);
}

TEST(AgentTest, RegistersAndHeartbeats) {
  TempDir dir;
  auto head = StartHead();
  std::string node_id;
  {
    Agent agent(TestOptions(head->address(), dir.path()));
    ASSERT_TRUE(agent.Start().ok());
    EXPECT_TRUE(agent.connected());
    ASSERT_TRUE(head->Wait([](const Record& r) { return r.heartbeats.size() >= 2; }));
    head->With([&](const Record& r) {
      ASSERT_EQ(r.registrations.size(), 1u);
      const rpc::Register& reg = r.registrations[0];
      EXPECT_EQ(reg.protocol_version(), 1u);
      EXPECT_EQ(reg.cluster_token(), "secret");
      EXPECT_FALSE(reg.node_id().empty());
      EXPECT_FALSE(reg.hostname().empty());
      EXPECT_FALSE(reg.cohort_version().empty());
      EXPECT_EQ(reg.address(), "127.0.0.1");  // the route to a loopback head
      EXPECT_EQ(reg.resources().at("CPU"), 4);
      EXPECT_EQ(reg.resources().at("GPU"), 0);
      EXPECT_EQ(reg.resources().at("memory"), 1e9);
      EXPECT_EQ(reg.labels().at("zone"), "test");
      EXPECT_EQ(reg.running_workers_size(), 0);
      EXPECT_GT(r.heartbeats.back().time_ms(), 0);
      node_id = reg.node_id();
    });
    EXPECT_EQ(agent.node_id(), node_id);
    agent.Stop();
    EXPECT_FALSE(agent.connected());
    EXPECT_TRUE(agent.Wait(Deadline::After(1s)).ok());
  }
  // The goodbye is a clean end of the stream.
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.disconnects == 1; }));
  // Same state dir, same node.
  Agent again(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(again.Start().ok());
  EXPECT_EQ(again.node_id(), node_id);
  head->With([&](const Record& r) { EXPECT_EQ(r.registrations.back().node_id(), node_id); });
}

TEST(AgentTest, DetectsMissingResources) {
  TempDir dir;
  auto head = StartHead();
  Agent::Options o = TestOptions(head->address(), dir.path());
  o.resources = {{"TPU", 2}};
  Agent agent(o);
  ASSERT_TRUE(agent.Start().ok());
  Resources r = agent.resources();
  EXPECT_GE(r.at("CPU"), 1);
  EXPECT_GT(r.at("memory"), 0);
  EXPECT_EQ(r.count("GPU"), 1u);
  EXPECT_EQ(r.at("TPU"), 2);
}

TEST(AgentTest, RefusedForAnotherProtocolVersion) {
  TempDir dir;
  FakeHead::Options ho;
  ho.protocol_version = 2;
  auto head = StartHead(ho);
  Agent agent(TestOptions(head->address(), dir.path()));
  Status s = agent.Start();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("agent protocol version 1 does not match the head's 2; run the same "
                             "cohort version on all nodes"),
            std::string::npos)
      << s.message();
  EXPECT_FALSE(agent.connected());
  EXPECT_EQ(agent.Wait(Deadline::After(1s)).code(), StatusCode::kFailedPrecondition);
}

TEST(AgentTest, RefusedForAWrongToken) {
  TempDir dir;
  auto head = StartHead();
  Agent::Options o = TestOptions(head->address(), dir.path());
  o.cluster_token = "wrong";
  Agent agent(o);
  Status s = agent.Start();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("token"), std::string::npos) << s.message();
}

TEST(AgentTest, UnreachableHeadFailsStartInTime) {
  TempDir dir;
  int port;
  {
    auto head = StartHead();
    port = head->port();
  }  // nobody listens there now
  Agent::Options o = TestOptions("127.0.0.1:" + std::to_string(port), dir.path());
  o.start_timeout = 1s;
  Agent agent(o);
  auto t0 = std::chrono::steady_clock::now();
  Status s = agent.Start();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
}

TEST(AgentTest, OneAgentPerStateDir) {
  TempDir dir;
  auto head = StartHead();
  Agent first(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(first.Start().ok());
  Agent second(TestOptions(head->address(), dir.path()));
  Status s = second.Start();
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
  // Another state dir on the same machine is fine.
  TempDir other;
  Agent third(TestOptions(head->address(), other.path()));
  EXPECT_TRUE(third.Start().ok());
}

TEST(AgentTest, WorkerOutputAndExitCode) {
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  // WORLD_SIZE 2: lines are rank-prefixed; stderr comes along too.
  head->Send(StartMsg("job1", 0, 1, "echo hello; echo oops >&2; printf 'no newline'; exit 3",
                      {{"WORLD_SIZE", "2"}, {"RANK", "1"}}));
  WorkerId id{"job1", 0, 1};
  ASSERT_TRUE(head->Wait([&](const Record& r) { return FindExit(r, id) != nullptr; }));
  head->With([&](const Record& r) {
    const rpc::WorkerStarted* started = FindStart(r, id);
    ASSERT_NE(started, nullptr);
    EXPECT_GT(started->pid(), 0);
    const rpc::WorkerExited* exited = FindExit(r, id);
    EXPECT_EQ(exited->exit_code(), 3);
    EXPECT_EQ(exited->signal(), 0);
    EXPECT_NE(exited->message().find("exited with code 3"), std::string::npos);
    const std::string& log = r.logs.at(id);
    EXPECT_NE(log.find("[rank 1] hello\n"), std::string::npos) << log;
    EXPECT_NE(log.find("[rank 1] oops\n"), std::string::npos) << log;
    EXPECT_NE(log.find("[rank 1] no newline\n"), std::string::npos) << log;
  });
  std::string output = ReadFile(dir.path() + "/jobs/job1/attempt-0/rank-1/output.log");
  EXPECT_NE(output.find("[rank 1] hello\n"), std::string::npos) << output;
  EXPECT_EQ(agent.num_running_workers(), 0u);
}

TEST(AgentTest, SingleWorkerLinesAreNotPrefixed) {
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  head->Send(StartMsg("solo", 0, 0, "echo plain", {{"WORLD_SIZE", "1"}}));
  WorkerId id{"solo", 0, 0};
  ASSERT_TRUE(head->Wait([&](const Record& r) { return FindExit(r, id) != nullptr; }));
  head->With([&](const Record& r) {
    EXPECT_EQ(r.logs.at(id), "plain\n");
    EXPECT_EQ(FindExit(r, id)->exit_code(), 0);
  });
}

TEST(AgentTest, EnvironmentIsDelivered) {
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  rpc::HeadMessage msg = StartMsg("envjob", 2, 0, "env > env.txt; pwd > pwd.txt",
                                  {{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"FOO", "bar baz"}});
  msg.mutable_start_worker()->add_gpu_ids(1);
  head->Send(msg);
  WorkerId id{"envjob", 2, 0};
  ASSERT_TRUE(head->Wait([&](const Record& r) { return FindExit(r, id) != nullptr; }));
  std::string scratch = dir.path() + "/jobs/envjob/attempt-2/rank-0";
  std::string env = ReadFile(scratch + "/env.txt");
  EXPECT_NE(env.find("FOO=bar baz\n"), std::string::npos) << env;
  EXPECT_NE(env.find("RANK=0\n"), std::string::npos);
  EXPECT_NE(env.find("PATH="), std::string::npos);  // the agent's own environment
  EXPECT_NE(env.find("COHORT_REPORT_PATH=" + dir.path() + "/run/"), std::string::npos) << env;
  EXPECT_NE(env.find("CUDA_VISIBLE_DEVICES="), std::string::npos) << env;
  EXPECT_EQ(ReadFile(scratch + "/pwd.txt"), scratch + "\n");
}

TEST(AgentTest, MetricsFromTheReportSocket) {
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  const char* entrypoint = R"(/usr/bin/python3 -c 'import os, socket
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["COHORT_REPORT_PATH"])
s.sendall(b"{\"rank\": 0, \"loss\": 0.5}\nnot json\n{\"rank\": 0, \"loss\": 0.25}\n")
s.close()')";
  head->Send(StartMsg("m", 0, 0, entrypoint));
  WorkerId id{"m", 0, 0};
  ASSERT_TRUE(head->Wait([&](const Record& r) { return FindExit(r, id) != nullptr; }));
  head->With([&](const Record& r) {
    EXPECT_EQ(FindExit(r, id)->exit_code(), 0) << (r.logs.count(id) ? r.logs.at(id) : "");
    ASSERT_EQ(r.metrics.count(id), 1u);
    const auto& lines = r.metrics.at(id);
    ASSERT_EQ(lines.size(), 2u);  // "not json" is dropped
    EXPECT_EQ(lines[0], "{\"rank\": 0, \"loss\": 0.5}");
    EXPECT_EQ(lines[1], "{\"rank\": 0, \"loss\": 0.25}");
  });
}

TEST(AgentTest, MetricsFromTheFileFallback) {
  // A state dir too long for a Unix socket path (108 bytes) makes the report
  // channel a file that the agent tails.
  TempDir base;
  std::string dir = base.path() + "/" + std::string(60, 'd') + "/" + std::string(60, 'e');
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir));
  ASSERT_TRUE(agent.Start().ok());
  head->Send(StartMsg("f", 0, 0,
                      "echo \"$COHORT_REPORT_PATH\"; echo '{\"rank\":0,\"acc\":1}' >> "
                      "\"$COHORT_REPORT_PATH\"; sleep 0.3; echo '{\"rank\":0,\"acc\":2}' >> "
                      "\"$COHORT_REPORT_PATH\""));
  WorkerId id{"f", 0, 0};
  ASSERT_TRUE(head->Wait([&](const Record& r) { return FindExit(r, id) != nullptr; }));
  head->With([&](const Record& r) {
    EXPECT_EQ(r.logs.at(id), dir + "/jobs/f/attempt-0/rank-0/report.jsonl\n");
    ASSERT_EQ(r.metrics.count(id), 1u);
    EXPECT_EQ(r.metrics.at(id), (std::vector<std::string>{"{\"rank\":0,\"acc\":1}",
                                                          "{\"rank\":0,\"acc\":2}"}));
  });
}

TEST(AgentTest, StopWorkersTerminatesWithinGrace) {
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  head->Send(StartMsg("s", 0, 0, "sleep 60"));
  // This one ignores SIGTERM (and so does its sleep): SIGKILL after the grace.
  head->Send(StartMsg("s", 0, 1, "trap '' TERM; sleep 60"));
  head->Send(StartMsg("other", 0, 0, "sleep 60"));
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.started.size() == 3; }));
  EXPECT_EQ(agent.num_running_workers(), 3u);
  ASSERT_TRUE(head->Wait([](const Record& r) {
    return !r.heartbeats.empty() && r.heartbeats.back().running_workers_size() == 3;
  }));
  auto t0 = std::chrono::steady_clock::now();
  head->Send(StopMsg("s", -1, SIGTERM, 500));
  WorkerId a{"s", 0, 0}, b{"s", 0, 1};
  ASSERT_TRUE(head->Wait(
      [&](const Record& r) { return FindExit(r, a) != nullptr && FindExit(r, b) != nullptr; },
      3s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2500ms);
  head->With([&](const Record& r) {
    EXPECT_EQ(FindExit(r, a)->signal(), SIGTERM);
    EXPECT_EQ(FindExit(r, a)->exit_code(), 128 + SIGTERM);
    EXPECT_EQ(FindExit(r, b)->signal(), SIGKILL);
    EXPECT_EQ(FindExit(r, WorkerId{"other", 0, 0}), nullptr);  // another job
  });
  EXPECT_EQ(agent.num_running_workers(), 1u);
}

TEST(AgentTest, StopBeforeTheWorkerStarted) {
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  // A slow package download of the first worker holds the second in the queue.
  head->AddPackage("gcs://_ray_pkg_slow.zip",
                   testing::MakeZip(dir.path() + "/slow.zip", {{"a.txt", "a"}}));
  head->SetPackageDelay(700ms);
  head->Send(StartMsg("q", 0, 0, "sleep 60", {}, "gcs://_ray_pkg_slow.zip"));
  head->Send(StartMsg("q", 0, 1, "sleep 60"));
  std::this_thread::sleep_for(200ms);  // the download is under way
  head->Send(StopMsg("q", 0, 0, 0));
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.exited.size() == 2; }));
  std::this_thread::sleep_for(200ms);
  head->With([](const Record& r) {
    EXPECT_TRUE(r.started.empty());
    for (const auto& e : r.exited) {
      EXPECT_EQ(e.exit_code(), -1) << e.message();
      EXPECT_EQ(e.signal(), SIGTERM);
      EXPECT_EQ(e.message(), "stopped before it started");
    }
  });
  EXPECT_EQ(agent.num_running_workers(), 0u);
}

TEST(AgentTest, WorkingDirPackage) {
  TempDir dir;
  auto head = StartHead();
  std::string zip = testing::MakeZip(dir.path() + "/pkg.zip",
                                     {{"main.sh", "echo from-package; cat sub/data.txt\n"},
                                      {"sub/", ""},
                                      {"sub/data.txt", "payload\n"},
                                      {"link.txt", "sub/data.txt", /*symlink=*/true}});
  ASSERT_FALSE(zip.empty());
  head->AddPackage("gcs://_ray_pkg_abc.zip", zip);
  Agent agent(TestOptions(head->address(), dir.path() + "/state"));
  ASSERT_TRUE(agent.Start().ok());
  for (int rank = 0; rank < 2; ++rank) {
    head->Send(StartMsg("pkg", 0, rank, "sh main.sh; cat link.txt; pwd",
                        {{"WORLD_SIZE", "2"}}, "gcs://_ray_pkg_abc.zip"));
  }
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.exited.size() == 2; }));
  std::string workdir = dir.path() + "/state/jobs/pkg/working_dir";
  head->With([&](const Record& r) {
    EXPECT_EQ(r.package_requests, 1);  // once per job, not per rank
    for (int rank = 0; rank < 2; ++rank) {
      WorkerId id{"pkg", 0, rank};
      EXPECT_EQ(FindExit(r, id)->exit_code(), 0);
      std::string p = "[rank " + std::to_string(rank) + "] ";
      EXPECT_EQ(r.logs.at(id),
                p + "from-package\n" + p + "payload\n" + p + "payload\n" + p + workdir + "\n");
    }
  });
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/state/packages/_ray_pkg_abc.zip"));
}

TEST(AgentTest, ZipSlipPackageIsRejected) {
  TempDir dir;
  auto head = StartHead();
  head->AddPackage("gcs://_ray_pkg_evil.zip",
                   testing::MakeZip(dir.path() + "/evil.zip",
                                    {{"ok.txt", "fine"}, {"../evil", "gotcha"}}));
  head->AddPackage("gcs://_ray_pkg_link.zip",
                   testing::MakeZip(dir.path() + "/link.zip",
                                    {{"escape", "../../..", /*symlink=*/true}}));
  Agent agent(TestOptions(head->address(), dir.path() + "/state"));
  ASSERT_TRUE(agent.Start().ok());
  head->Send(StartMsg("evil", 0, 0, "echo should-not-run", {}, "gcs://_ray_pkg_evil.zip"));
  head->Send(StartMsg("link", 0, 0, "echo should-not-run", {}, "gcs://_ray_pkg_link.zip"));
  head->Send(StartMsg("none", 0, 0, "echo should-not-run", {}, "gcs://_ray_pkg_nope.zip"));
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.exited.size() == 3; }));
  head->With([&](const Record& r) {
    EXPECT_TRUE(r.started.empty());
    EXPECT_TRUE(r.logs.empty());
    const rpc::WorkerExited* evil = FindExit(r, {"evil", 0, 0});
    EXPECT_EQ(evil->exit_code(), -1);
    EXPECT_NE(evil->message().find("'../evil'"), std::string::npos) << evil->message();
    EXPECT_NE(evil->message().find("gcs://_ray_pkg_evil.zip"), std::string::npos);
    const rpc::WorkerExited* link = FindExit(r, {"link", 0, 0});
    EXPECT_NE(link->message().find("outside the working directory"), std::string::npos)
        << link->message();
    const rpc::WorkerExited* none = FindExit(r, {"none", 0, 0});
    EXPECT_NE(none->message().find("does not exist"), std::string::npos) << none->message();
  });
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/state/jobs/evil/evil"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/state/jobs/evil/working_dir"));
}

TEST(AgentTest, ReconnectsAndReattachesRunningWorkers) {
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  head->Send(StartMsg("long", 1, 0, "echo before; sleep 60"));
  WorkerId id{"long", 1, 0};
  ASSERT_TRUE(head->Wait([&](const Record& r) {
    return FindStart(r, id) != nullptr && r.logs.count(id) != 0;
  }));
  int64_t pid = head->With([&](const Record& r) { return FindStart(r, id)->pid(); });

  head->DropSession();
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.registrations.size() == 2; }));
  head->With([&](const Record& r) {
    const rpc::Register& again = r.registrations[1];
    EXPECT_EQ(again.node_id(), r.registrations[0].node_id());
    ASSERT_EQ(again.running_workers_size(), 1);
    EXPECT_EQ(again.running_workers(0).job_id(), "long");
    EXPECT_EQ(again.running_workers(0).attempt(), 1);
    EXPECT_EQ(again.running_workers(0).rank(), 0);
    EXPECT_EQ(again.running_workers(0).pid(), pid);
    EXPECT_EQ(FindExit(r, id), nullptr);  // it kept running
  });
  EXPECT_FALSE(ProcessGone(static_cast<pid_t>(pid)));
  // The new session works: stop the worker through it.
  head->Send(StopMsg("long", -1, SIGTERM, 1000));
  ASSERT_TRUE(head->Wait([&](const Record& r) { return FindExit(r, id) != nullptr; }));
}

// Starts worker ("r", 0, 0), which prints "one", then "two" a second and a half
// later, and waits until the head has "one".
bool StartOneThenTwo(FakeHead& head) {
  head.Send(StartMsg("r", 0, 0, "echo one; sleep 1.5; echo two; sleep 60"));
  const WorkerId id{"r", 0, 0};
  return head.Wait([&](const Record& r) { return r.logs.count(id) != 0 && r.logs.at(id) == "one\n"; });
}

// Whether the head acknowledged at least `bytes` log bytes in all, and
// nothing sent is waiting for an acknowledgement, within 10 s. (Waiting for
// the unacknowledged count alone races: the head can hold a chunk before the
// agent has recorded it as sent.)
bool WaitAcknowledged(const Agent& agent, size_t bytes) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  auto done = [&] { return agent.acknowledged_log_bytes() >= bytes && agent.unacknowledged_log_bytes() == 0; };
  while (!done() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  return done();
}

// A head that acknowledges what it received (LogAck, as the real one does
// once the bytes are in the job's log): only what was printed while no head
// was there is sent to the restarted one.
TEST(AgentTest, HeadRestartResendsWhatWasQueued) {
  TempDir dir;
  FakeHead::Options acking;
  acking.ack_logs = true;
  auto head = StartHead(acking);
  int port = head->port();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  const WorkerId id{"r", 0, 0};
  ASSERT_TRUE(StartOneThenTwo(*head));
  // The ack's way back (sent as the chunk arrives): "one" is acknowledged
  // before the head goes, however slow the machine.
  ASSERT_TRUE(WaitAcknowledged(agent, 4));  // "one\n"
  head->Shutdown();  // "two" is printed while there is no head
  std::this_thread::sleep_for(1s);
  EXPECT_FALSE(agent.connected());

  acking.port = port;
  auto restarted = StartHead(acking);
  ASSERT_TRUE(restarted->Wait([&](const Record& r) {
    return r.registrations.size() == 1 && r.logs.count(id) != 0;
  }));
  restarted->With([&](const Record& r) {
    EXPECT_EQ(r.registrations[0].running_workers_size(), 1);
    EXPECT_EQ(r.logs.at(id), "two\n");
    EXPECT_EQ(r.log_offsets.at(id), std::vector<uint64_t>{4});
  });
  EXPECT_TRUE(agent.connected());
}

// Chunks the stream carried but the head never acknowledged (it was killed
// before writing them) are sent again, first, at their offsets.
TEST(AgentTest, LogChunksNotAcknowledgedAreSentAgain) {
  TempDir dir;
  auto head = StartHead();  // never acknowledges
  int port = head->port();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  const WorkerId id{"r", 0, 0};
  ASSERT_TRUE(StartOneThenTwo(*head));
  head->Shutdown();
  std::this_thread::sleep_for(1s);

  FakeHead::Options o;
  o.port = port;
  o.ack_logs = true;
  auto restarted = StartHead(o);
  ASSERT_TRUE(restarted->Wait([&](const Record& r) {
    return r.logs.count(id) != 0 && r.logs.at(id) == "one\ntwo\n";
  }));
  restarted->With([&](const Record& r) {
    EXPECT_EQ(r.log_offsets.at(id), (std::vector<uint64_t>{0, 4}));
  });
  // Acknowledged now: a third head gets nothing of it again.
  ASSERT_TRUE(WaitAcknowledged(agent, 8));  // "one\ntwo\n", sent again
  restarted->Shutdown();
  std::this_thread::sleep_for(500ms);
  auto third = StartHead(o);
  ASSERT_TRUE(third->Wait([&](const Record& r) { return r.registrations.size() == 1; }));
  std::this_thread::sleep_for(300ms);
  third->With([&](const Record& r) { EXPECT_EQ(r.logs.count(id), 0u); });
}

TEST(AgentTest, RefusalOnReconnectEndsTheAgent) {
  TempDir dir;
  auto head = StartHead();
  int port = head->port();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  head->Send(StartMsg("w", 0, 0, "sleep 60"));
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.started.size() == 1; }));
  int64_t pid = head->With([](const Record& r) { return r.started[0].pid(); });
  head->Shutdown();
  // The head comes back as another version.
  FakeHead::Options o;
  o.port = port;
  o.protocol_version = 7;
  o.cluster_token = "secret";
  auto other = StartHead(o);
  Status s = agent.Wait(Deadline::After(8s));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("does not match the head's 7"), std::string::npos);
  EXPECT_TRUE(WaitGone(static_cast<pid_t>(pid), 3s));
}

TEST(AgentTest, StopKillsWorkersAndReportsThem) {
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  head->Send(StartMsg("k", 0, 0, "sleep 60 & echo $! > child.pid; wait"));
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.started.size() == 1; }));
  std::string pid_file = dir.path() + "/jobs/k/attempt-0/rank-0/child.pid";
  for (int i = 0; i < 100 && ReadFile(pid_file).empty(); ++i) std::this_thread::sleep_for(20ms);
  pid_t child = std::atoi(ReadFile(pid_file).c_str());
  ASSERT_GT(child, 0);
  agent.Stop(/*kill_workers=*/true);
  EXPECT_TRUE(WaitGone(child, 2s));
  // The exit went out before the goodbye.
  head->With([](const Record& r) {
    ASSERT_EQ(r.exited.size(), 1u);
    EXPECT_EQ(r.exited[0].signal(), SIGTERM);
  });
}

TEST(AgentTest, WorkersDieWithTheAgent) {
  // Stop(false) ends the agent as a crash would: no signals sent by the
  // agent, yet the whole process group (here a grandchild) dies.
  TempDir dir;
  auto head = StartHead();
  Agent agent(TestOptions(head->address(), dir.path()));
  ASSERT_TRUE(agent.Start().ok());
  head->Send(StartMsg("c", 0, 0, "trap '' TERM; sleep 60 & echo $! > child.pid; wait"));
  ASSERT_TRUE(head->Wait([](const Record& r) { return r.started.size() == 1; }));
  int64_t shim = head->With([](const Record& r) { return r.started[0].pid(); });
  std::string pid_file = dir.path() + "/jobs/c/attempt-0/rank-0/child.pid";
  for (int i = 0; i < 100 && ReadFile(pid_file).empty(); ++i) std::this_thread::sleep_for(20ms);
  pid_t child = std::atoi(ReadFile(pid_file).c_str());
  ASSERT_GT(child, 0);
  auto t0 = std::chrono::steady_clock::now();
  agent.Stop(/*kill_workers=*/false);
  EXPECT_TRUE(WaitGone(child, 2s));
  EXPECT_TRUE(WaitGone(static_cast<pid_t>(shim), 1s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  head->With([](const Record& r) { EXPECT_TRUE(r.exited.empty()); });
}

}  // namespace
}  // namespace cohort::agent
