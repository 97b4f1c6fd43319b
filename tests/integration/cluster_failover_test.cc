// Multi-node training and failures, with real processes on loopback: the seed
// model (build/bin/fashion_mnist) as a 2-worker job over two agent processes;
// an agent SIGKILLed mid-training (the job restarts from its checkpoint on the
// surviving and a replacement agent); the head SIGKILLed and restarted on its
// state dir (records, logs and a running job survive).
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "integration/cluster_harness.h"

namespace cohort::itest {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool ProcessAlive(int pid) { return pid > 0 && ::kill(pid, 0) == 0; }

#define SKIP_WITHOUT_DATASET()                                                          \
  if (!fs::exists(kFashionMnistData + "/train-images-idx3-ubyte.gz") ||                 \
      !fs::exists(kFashionMnist))                                                       \
  GTEST_SKIP() << "needs build/bin/fashion_mnist and the FashionMNIST dataset in " << \
      kFashionMnistData

json TwoWorkerTraining(const std::string& args, int max_failures) {
  json body = {{"entrypoint", kFashionMnist + " " + args},
               {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 1}}}}}};
  if (max_failures > 0) body["failure"] = {{"max_failures", max_failures}};
  return body;
}

// Rank 0's reports of `attempt` (all attempts when -1), in arrival order.
std::vector<json> Rank0Metrics(LocalCluster& c, const std::string& id, int attempt = -1) {
  std::vector<json> out;
  json page = c.Get("/api/jobs/" + id + "/metrics").Json();
  if (!page.is_object() || !page["metrics"].is_array()) return out;
  for (const auto& m : page["metrics"])
    if (m.value("rank", -1) == 0 && m.contains("epoch") && (attempt < 0 || m.value("attempt", -1) == attempt))
      out.push_back(m);
  return out;
}

// Two agents (separate processes, 1 CPU each), the seed model as 2 workers:
// one per node, SUCCEEDED, rank 0's per-epoch metrics, results on disk.
TEST(ClusterFailoverTest, MultiNodeTraining) {
  SKIP_WITHOUT_DATASET();
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 1));
  ASSERT_TRUE(c.StartAgent("a2", 1));

  const std::string id =
      c.Submit(TwoWorkerTraining("--train-subset 4096 --epochs 2 --lr 0.05 --threads 1", 0));
  ASSERT_FALSE(id.empty());
  json done = c.WaitStatus(id, "SUCCEEDED", 120s);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump() << "\n" << c.Logs(id);
  EXPECT_EQ(done["attempt"], 0);
  ASSERT_EQ(done["workers"].size(), 2u);
  EXPECT_NE(done["workers"][0]["node_id"], done["workers"][1]["node_id"]) << done.dump();
  std::set<std::string> nodes = {done["workers"][0]["node_id"], done["workers"][1]["node_id"]};
  EXPECT_EQ(nodes, (std::set<std::string>{c.agent(0).node_id, c.agent(1).node_id}));

  // Metrics: epochs 1..2 from rank 0; `since` pages.
  auto metrics = c.Get("/api/jobs/" + id + "/metrics");
  ASSERT_EQ(metrics.status, 200) << metrics.body;
  std::vector<int> epochs;
  for (const auto& m : Rank0Metrics(c, id)) {
    epochs.push_back(m["epoch"].get<int>());
    EXPECT_TRUE(m["val_loss"].is_number()) << m.dump();
    EXPECT_TRUE(m["time"].is_number()) << m.dump();
  }
  EXPECT_EQ(epochs, (std::vector<int>{1, 2})) << metrics.body;
  const int64_t next = metrics.Json()["next"].get<int64_t>();
  EXPECT_EQ(c.Get("/api/jobs/" + id + "/metrics?since=" + std::to_string(next)).Json()["metrics"], json::array());
  EXPECT_EQ(c.Get("/api/jobs/" + id + "/metrics?since=x").status, 400);
  auto cli_metrics = c.Cli("job metrics " + id + c.Conn());
  EXPECT_EQ(cli_metrics.code, 0) << cli_metrics.out;
  EXPECT_TRUE(Contains(cli_metrics.out, "\"epoch\":2")) << cli_metrics.out;

  // Results: the job's results dir (the head's state dir; loopback nodes share it).
  const std::string results = done.value("results_dir", c.head_state() + "/jobs/" + id + "/results");
  EXPECT_TRUE(fs::exists(results + "/model.pt")) << results;
  EXPECT_TRUE(fs::exists(results + "/metrics.json")) << results;
  json summary = json::parse(ReadFile(results + "/metrics.json"), nullptr, false);
  EXPECT_FALSE(summary.is_discarded()) << ReadFile(results + "/metrics.json");

  // Both ranks' output is in the job's log.
  const std::string logs = c.Logs(id);
  EXPECT_TRUE(Contains(logs, "epoch=2/2")) << logs;

  // All resources are free again.
  json status = c.Get("/api/cluster/status").Json();
  for (const auto& n : status["nodes"]) EXPECT_EQ(n["resources_used"].value("CPU", 0.0), 0.0) << status.dump();
}

// kill -9 of an agent during a 2-worker training: after the node timeout the
// job restarts (attempt 1) on the surviving and a replacement agent, resumes
// from its last checkpoint and succeeds.
TEST(ClusterFailoverTest, AgentKilledDuringTrainingRestartsFromCheckpoint) {
  SKIP_WITHOUT_DATASET();
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 1));
  ASSERT_TRUE(c.StartAgent("a2", 1));

  const std::string id = c.Submit(
      TwoWorkerTraining("--resume --train-subset 8192 --epochs 4 --lr 0.05 --threads 1", /*max_failures=*/2));
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitFor([&] { return c.Status(id) == "RUNNING"; }, 20s)) << c.Job(id).dump();
  json running = c.Job(id);
  const std::string checkpoints = running.value("checkpoint_dir", c.head_state() + "/jobs/" + id + "/checkpoints");
  // The first epoch's checkpoint is committed (an atomic rename).
  ASSERT_TRUE(WaitFor([&] { return fs::exists(checkpoints + "/checkpoint_000001"); }, 60s, 50ms))
      << c.Job(id).dump() << "\n" << c.Logs(id);
  running = c.Job(id);
  ASSERT_EQ(running.value("status", ""), "RUNNING") << running.dump() << "\n" << c.Logs(id);
  ASSERT_FALSE(fs::exists(checkpoints + "/checkpoint_000004")) << "training ended before the kill";

  // SIGKILL the agent that runs rank 1 (rank 0 keeps running until the head
  // restarts the group).
  const std::string victim_node = running["workers"][1]["node_id"];
  const int victim_worker_pid = running["workers"][1].value("pid", 0);
  size_t victim = c.agent(0).node_id == victim_node ? 0 : 1;
  ASSERT_EQ(c.agent(victim).node_id, victim_node);
  ::kill(c.agent(victim).proc->pid(), SIGKILL);
  ASSERT_TRUE(c.agent(victim).proc->Wait(5s).has_value());
  // Its worker dies with it (agent-death rule).
  EXPECT_TRUE(WaitFor([&] { return !ProcessAlive(victim_worker_pid); }, 5s)) << victim_worker_pid;

  // A replacement node joins; the group restarts as attempt 1.
  ASSERT_TRUE(c.StartAgent("a3", 1));
  json done = c.WaitStatus(id, "SUCCEEDED", 120s);
  const std::string logs = c.Logs(id);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump() << "\n" << logs;
  EXPECT_EQ(done["attempt"], 1) << done.dump();
  EXPECT_EQ(done["driver_exit_code"], 0);
  std::set<std::string> nodes;
  for (const auto& w : done["workers"]) nodes.insert(w["node_id"].get<std::string>());
  EXPECT_EQ(nodes, (std::set<std::string>{c.agent(1 - victim).node_id, c.agent(2).node_id})) << done.dump();
  EXPECT_TRUE(Contains(logs, "resuming from checkpoint")) << logs;
  EXPECT_TRUE(Contains(logs, victim_node)) << "the log should say which node failed:\n" << logs;
  EXPECT_EQ(c.NodeState(victim_node), "DEAD");

  // Attempt 1 resumed: its first epoch is after the checkpoint; it ran to 4.
  auto resumed = Rank0Metrics(c, id, 1);
  ASSERT_FALSE(resumed.empty()) << c.Get("/api/jobs/" + id + "/metrics").body;
  EXPECT_GE(resumed.front()["epoch"].get<int>(), 2);
  EXPECT_EQ(resumed.back()["epoch"].get<int>(), 4);
  EXPECT_FALSE(Rank0Metrics(c, id, 0).empty());
  EXPECT_TRUE(fs::exists(done.value("results_dir", "") + "/model.pt")) << done.dump();
}

// kill -9 of an agent whose worker's peers do not notice (they just sleep):
// only the missing heartbeats tell the head; after the node timeout (2 s) the
// node is DEAD, the attempt fails, the surviving rank is stopped, and the
// group restarts on the surviving and a replacement agent.
TEST(ClusterFailoverTest, NodeTimeoutRestartsGroup) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 1));
  ASSERT_TRUE(c.StartAgent("a2", 1));
  const std::string id = c.Submit(
      {{"entrypoint",
        "if [ \"$TORCHELASTIC_RESTART_COUNT\" = 0 ]; then echo waiting-$RANK; sleep 60; "
        "else echo recovered-$RANK-of-$WORLD_SIZE; fi"},
       {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 1}}}}},
       {"failure", {{"max_failures", 1}}}});
  json running;
  ASSERT_TRUE(WaitFor(
      [&] {
        running = c.Job(id);
        return running.value("status", "") == "RUNNING" && running["workers"][0]["pid"].is_number() &&
               running["workers"][1]["pid"].is_number();
      },
      10s))
      << running.dump();
  const std::string victim_node = running["workers"][1]["node_id"];
  const int survivor_pid = running["workers"][0]["pid"].get<int>();
  const size_t victim = c.agent(0).node_id == victim_node ? 0 : 1;
  ASSERT_EQ(c.agent(victim).node_id, victim_node);
  ::kill(c.agent(victim).proc->pid(), SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.agent(victim).proc->Wait(5s).has_value());

  // Not dead before the timeout; dead after it.
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(c.NodeState(victim_node), "ALIVE");
  EXPECT_EQ(c.Job(id)["attempt"], 0);
  ASSERT_TRUE(WaitFor([&] { return c.NodeState(victim_node) == "DEAD"; }, 10s));
  EXPECT_GE(std::chrono::steady_clock::now() - killed_at, 1500ms);
  // The surviving rank of the failed attempt is stopped.
  EXPECT_TRUE(WaitFor([&] { return !ProcessAlive(survivor_pid); }, 10s));
  json waiting = c.Job(id);
  EXPECT_EQ(waiting.value("status", ""), "PENDING") << waiting.dump();

  ASSERT_TRUE(c.StartAgent("a3", 1));
  json done = c.WaitStatus(id, "SUCCEEDED", 30s);
  const std::string logs = c.Logs(id);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump() << "\n" << logs;
  EXPECT_EQ(done["attempt"], 1);
  EXPECT_TRUE(Contains(logs, "recovered-0-of-2")) << logs;
  EXPECT_TRUE(Contains(logs, "recovered-1-of-2")) << logs;
  EXPECT_TRUE(Contains(logs, victim_node)) << logs;
  std::set<std::string> nodes;
  for (const auto& w : done["workers"]) nodes.insert(w["node_id"].get<std::string>());
  EXPECT_EQ(nodes, (std::set<std::string>{c.agent(1 - victim).node_id, c.agent(2).node_id})) << done.dump();

  // With no restarts left, the next node death fails the job.
  const std::string once = c.Submit({{"entrypoint", "sleep 60"}, {"entrypoint_num_cpus", 1}});
  json once_running;
  ASSERT_TRUE(WaitFor(
      [&] {
        once_running = c.Job(once);
        return once_running.value("status", "") == "RUNNING";
      },
      10s))
      << once_running.dump();
  const std::string node = once_running["driver_node_id"];
  for (size_t i = 0; i < c.num_agents(); ++i)
    if (c.agent(i).node_id == node) ::kill(c.agent(i).proc->pid(), SIGKILL);
  json failed = c.WaitStatus(once, "FAILED", 15s);
  EXPECT_EQ(failed.value("status", ""), "FAILED") << failed.dump();
  EXPECT_TRUE(Contains(failed.value("message", ""), node)) << failed.dump();
  EXPECT_TRUE(failed["driver_exit_code"].is_null()) << failed.dump();
}

// kill -9 of the head, restarted on the same state dir: every record, status
// and log is intact, and a job that was RUNNING (its worker still alive on its
// agent) re-attaches when the agent reconnects and finishes SUCCEEDED.
TEST(ClusterFailoverTest, HeadKilledAndRestartedKeepsJobs) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));

  const std::string ok = c.Submit({{"entrypoint", "echo hello"}, {"metadata", {{"owner", "it"}}}});
  const std::string bad = c.Submit({{"entrypoint", "echo boom; exit 3"}});
  ASSERT_EQ(c.WaitStatus(ok, "SUCCEEDED", 30s).value("status", ""), "SUCCEEDED");
  ASSERT_EQ(c.WaitStatus(bad, "FAILED", 30s).value("status", ""), "FAILED");
  // A pending job (can never fit) and a running one.
  const std::string pending = c.Submit({{"entrypoint", "true"}, {"entrypoint_num_cpus", 64}});
  const std::string running =
      c.Submit({{"entrypoint", "echo started; sleep 5; echo finished"}, {"submission_id", "long-runner"}});
  // One that ends while the head is down: its exit reaches the next head.
  const std::string quick =
      c.Submit({{"entrypoint", "echo quick-start; sleep 0.5; echo quick-done"}, {"submission_id", "quick"}});
  // Its output has arrived ("started" on a line of its own, not the entrypoint).
  ASSERT_TRUE(WaitFor([&] { return Contains(c.Logs(running), "\nstarted\n"); }, 10s)) << c.Logs(running);
  json before_running;
  ASSERT_TRUE(WaitFor(
      [&] {
        before_running = c.Job(running);
        return before_running["workers"][0]["pid"].is_number();
      },
      5s))
      << before_running.dump();
  ASSERT_EQ(before_running.value("status", ""), "RUNNING");
  ASSERT_TRUE(before_running["workers"][0]["pid"].is_number()) << before_running.dump();
  const int worker_pid = before_running["workers"][0]["pid"].get<int>();
  ASSERT_TRUE(ProcessAlive(worker_pid));

  json quick_running;
  ASSERT_TRUE(WaitFor(
      [&] {
        quick_running = c.Job(quick);
        return quick_running["workers"][0]["pid"].is_number();
      },
      5s))
      << quick_running.dump();
  const int quick_pid = quick_running["workers"][0]["pid"].get<int>();

  const json list_before = c.Get("/api/jobs/").Json();
  const json ok_before = c.Job(ok), bad_before = c.Job(bad), pending_before = c.Job(pending);
  const std::string ok_logs = c.Logs(ok), bad_logs = c.Logs(bad);

  ::kill(c.head().pid(), SIGKILL);
  ASSERT_TRUE(c.head().Wait(5s).has_value());
  EXPECT_NE(Http("GET", c.url() + "/api/health").status, 200);
  // The agent and the job's worker live on without the head.
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(c.agent(0).proc->running());
  EXPECT_TRUE(ProcessAlive(worker_pid));
  EXPECT_TRUE(WaitFor([&] { return !ProcessAlive(quick_pid); }, 5s));

  ASSERT_TRUE(c.StartHead());
  // Records, statuses and logs of the finished jobs are intact.
  EXPECT_EQ(c.Job(ok), ok_before);
  EXPECT_EQ(c.Job(bad), bad_before);
  EXPECT_EQ(c.Logs(ok), ok_logs);
  EXPECT_EQ(c.Logs(bad), bad_logs);
  EXPECT_TRUE(Contains(c.Logs(ok), "hello\n"));
  json pending_after = c.Job(pending);
  EXPECT_EQ(pending_after.value("status", ""), "PENDING") << pending_after.dump();
  EXPECT_EQ(pending_after["start_time"], pending_before["start_time"]);
  json list_after = c.Get("/api/jobs/").Json();
  ASSERT_EQ(list_after.size(), list_before.size());
  for (size_t i = 0; i < list_before.size(); ++i)
    EXPECT_EQ(list_after[i]["submission_id"], list_before[i]["submission_id"]);

  // The agent reconnects; the running job re-attaches and finishes.
  EXPECT_TRUE(WaitFor([&] { return c.NodeState(c.agent(0).node_id) == "ALIVE"; }, 15s));
  json done = c.WaitStatus(running, "SUCCEEDED", 30s);
  const std::string logs = c.Logs(running);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump() << "\n" << logs;
  EXPECT_EQ(done["attempt"], 0);
  EXPECT_EQ(done["workers"][0]["pid"], worker_pid);
  EXPECT_EQ(done["start_time"], before_running["start_time"]);
  EXPECT_TRUE(Contains(logs, "started\n")) << logs;
  EXPECT_TRUE(Contains(logs, "finished\n")) << logs;
  EXPECT_TRUE(Contains(logs, "re-attached")) << logs;

  json quick_done = c.WaitStatus(quick, "SUCCEEDED", 30s);
  EXPECT_EQ(quick_done.value("status", ""), "SUCCEEDED") << quick_done.dump() << "\n" << c.Logs(quick);
  EXPECT_EQ(quick_done["driver_exit_code"], 0);
  EXPECT_TRUE(Contains(c.Logs(quick), "quick-done\n")) << c.Logs(quick);

  // The restarted head schedules new work.
  const std::string fresh = c.Submit({{"entrypoint", "echo after-restart"}});
  EXPECT_EQ(c.WaitStatus(fresh, "SUCCEEDED", 30s).value("status", ""), "SUCCEEDED");
  EXPECT_TRUE(Contains(c.Logs(fresh), "after-restart"));
}

// kill -9 of the head while a worker streams output, twice, each time after
// freezing it for a moment (so chunks are in flight: written to the stream,
// never read): every line the worker printed is in the job's log exactly
// once, in order (chunks in flight are sent again; those the head had
// already written are not written twice).
TEST(ClusterFailoverTest, HeadKilledWhileLogsStreamLosesNoLineAndRepeatsNone) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));
  const int kLines = 3000;
  const std::string job = c.Submit(
      {{"entrypoint", "python3 -u -c \"import time\nfor i in range(" + std::to_string(kLines) +
                          "):\n print('tick', i)\n time.sleep(0.001)\""}});
  for (int kill = 0; kill < 2; ++kill) {
    ASSERT_TRUE(WaitFor([&] { return Contains(c.Logs(job), "tick " + std::to_string(400 + 900 * kill) + "\n"); },
                        20s))
        << c.Logs(job);
    // Frozen first: the agent goes on writing chunks into the stream that
    // the head will never read (they are lost with it unless sent again).
    ::kill(c.head().pid(), SIGSTOP);
    std::this_thread::sleep_for(400ms);
    ::kill(c.head().pid(), SIGKILL);
    ASSERT_TRUE(c.head().Wait(5s).has_value());
    ASSERT_TRUE(c.StartHead());
  }
  json done = c.WaitStatus(job, "SUCCEEDED", 60s);
  const std::string logs = c.Logs(job);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump() << "\n" << logs;
  std::string expected;
  for (int i = 0; i < kLines; ++i) expected += "tick " + std::to_string(i) + "\n";
  std::string ticks;
  std::map<std::string, int> seen;
  std::istringstream in(logs);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("tick ", 0) != 0) continue;
    ticks += line + "\n";
    ++seen[line];
  }
  int missing = 0, repeated = 0;
  for (int i = 0; i < kLines; ++i) {
    int n = seen["tick " + std::to_string(i)];
    missing += n == 0;
    repeated += n > 1;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(repeated, 0);
  EXPECT_TRUE(ticks == expected) << "out of order; log:\n" << logs.substr(0, 4000);
}

}  // namespace
}  // namespace cohort::itest
