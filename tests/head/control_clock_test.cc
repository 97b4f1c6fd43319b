// The head's timeouts on a FakeClock (no sleeping): heartbeat silence makes a
// node unschedulable, then DEAD and restarts its jobs, re-attach and stop deadlines after a head
// restart, and rendezvous ports of running jobs restored by recovery.
#include <gtest/gtest.h>

#include "cluster_fixture.h"

namespace cohort::head {
namespace {

using json = nlohmann::json;
using testing::FakeSession;
using namespace std::chrono_literals;

class ControlClockTest : public testing::ClusterFixture {
 protected:
  void SetUp() override {
    deps_.clock = &clock_;
    options_.node_timeout = 10s;
    options_.reattach_timeout = 15s;
    options_.stop_grace = 3s;
    ClusterFixture::SetUp();
  }
  void Heartbeat(FakeSession& s) {
    rpc::AgentMessage m;
    m.mutable_heartbeat();
    cluster_->OnMessage(s, m);
  }
  json Nodes() { return json::parse(cluster_->ClusterStatus().body)["nodes"]; }
  FakeClock clock_;
};

TEST_F(ControlClockTest, HeartbeatSilenceMakesANodeDeadAndRestartsItsJob) {
  auto a = Join("node-a", 2);
  auto b = Join("node-b", 2);
  const std::string id = Submit({{"entrypoint", "train"},
                                 {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 2}}}}},
                                 {"failure", {{"max_failures", 1}}}});
  ASSERT_EQ(Details(id)["status"], "RUNNING");
  // 9.9 s of silence from node-b, node-a keeps talking: both stay alive.
  clock_.Advance(9900ms);
  Heartbeat(*a);
  cluster_->Tick();
  EXPECT_EQ(Nodes()[1]["state"], "ALIVE");
  clock_.Advance(200ms);  // node-b: 10.1 s
  cluster_->Tick();
  EXPECT_EQ(Nodes()[0]["state"], "ALIVE");
  EXPECT_EQ(Nodes()[1]["state"], "DEAD");
  const json d = Details(id);
  EXPECT_EQ(d["status"], "PENDING") << d.dump();
  EXPECT_NE(d["message"].get<std::string>().find("node-b"), std::string::npos) << d["message"];
  EXPECT_NE(d["message"].get<std::string>().find("no heartbeat for 10 s"), std::string::npos) << d["message"];
  EXPECT_TRUE(b->closed);
}

// Silent for 3 heartbeat intervals (3 s of the 10 s timeout): still ALIVE,
// but no new work goes there until it speaks again.
TEST_F(ControlClockTest, ASilentNodeGetsNoNewWorkUntilItSpeaksAgain) {
  auto a = Join("node-a", 2);
  auto b = Join("node-b", 2);
  clock_.Advance(3100ms);
  Heartbeat(*a);
  cluster_->Tick();
  EXPECT_EQ(Nodes()[1]["state"], "ALIVE");
  EXPECT_EQ(Nodes()[1]["schedulable"], false);
  EXPECT_EQ(Nodes()[0]["schedulable"], true);
  const std::string id = Submit({{"entrypoint", "train"},
                                 {"scaling",
                                  {{"num_workers", 2},
                                   {"resources_per_worker", {{"CPU", 2}}},
                                   {"placement_strategy", "SPREAD"}}}});
  EXPECT_EQ(Details(id)["status"], "PENDING");
  Heartbeat(*b);
  cluster_->Tick();
  EXPECT_EQ(Nodes()[1]["schedulable"], true);
  EXPECT_EQ(Details(id)["status"], "RUNNING");
}

// Heartbeats carry what the machine and each worker really use: the node
// table and the job show it (the dashboard's "memory in use").
TEST_F(ControlClockTest, HeartbeatsCarryTheMemoryInUse) {
  auto a = Join("node-a", 2);
  auto b = Join("node-b", 2);
  const std::string id = Submit({{"entrypoint", "train"},
                                 {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 1}}}}}});
  ASSERT_EQ(Details(id)["status"], "RUNNING");
  const std::string node = Details(id)["workers"][0]["node_id"];
  FakeSession& runs = node == "node-a" ? *a : *b;
  FakeSession& other = node == "node-a" ? *b : *a;
  auto beat = [&](FakeSession& s, int64_t used, std::vector<std::pair<int, int64_t>> workers) {
    rpc::AgentMessage m;
    m.mutable_heartbeat()->set_memory_used_bytes(used);
    for (auto [rank, rss] : workers) {
      rpc::RunningWorker* w = m.mutable_heartbeat()->add_running_workers();
      w->set_job_id(id);
      w->set_attempt(0);
      w->set_rank(rank);
      w->set_pid(100 + rank);
      w->set_rss_bytes(rss);
    }
    cluster_->OnMessage(s, m);
  };
  EXPECT_EQ(Details(id)["memory_rss_bytes"], 0);
  beat(runs, int64_t{3} << 30, {{0, 100 << 20}, {1, 50 << 20}});
  // A node claiming ranks that run elsewhere is not believed.
  beat(other, int64_t{1} << 30, {{0, int64_t{1} << 40}});
  EXPECT_EQ(Details(id)["memory_rss_bytes"], int64_t{150} << 20);
  const json nodes = Nodes();
  for (const json& n : nodes)
    EXPECT_EQ(n["memory_used_bytes"], n["node_id"] == node ? int64_t{3} << 30 : int64_t{1} << 30) << n.dump();
}

TEST_F(ControlClockTest, WorkersThatDoNotReattachAfterAHeadRestartFailTheAttempt) {
  auto a = Join("node-a", 2);
  const std::string id = Submit({{"entrypoint", "sleep 60"}});
  ASSERT_EQ(Details(id)["status"], "RUNNING");
  Open();  // a new head process on the same state; the agent does not come back
  clock_.Advance(14s);
  cluster_->Tick();
  EXPECT_EQ(Details(id)["status"], "RUNNING");
  clock_.Advance(2s);
  cluster_->Tick();
  const json d = Details(id);
  EXPECT_EQ(d["status"], "FAILED");
  EXPECT_NE(d["message"].get<std::string>().find("did not re-attach within 15 s"), std::string::npos) << d["message"];
}

TEST_F(ControlClockTest, AStopFinishesAfterTheGraceEvenWhenTheAgentIsSilent) {
  auto a = Join("node-a", 2);
  const std::string id = Submit({{"entrypoint", "sleep 60"}});
  ASSERT_EQ(cluster_->StopJob(id).status, 200);
  cluster_->Tick();
  EXPECT_EQ(Details(id)["status"], "RUNNING");
  clock_.Advance(3s + 5s + 1ms);
  Heartbeat(*a);
  cluster_->Tick();
  EXPECT_EQ(Details(id)["status"], "STOPPED");
}

TEST_F(ControlClockTest, PortsOfRunningJobsAreRestoredAfterARestart) {
  auto a = Join("node-a", 8);
  std::set<int> ports;
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(Submit({{"entrypoint", "sleep 60"},
                          {"scaling", {{"num_workers", 1}, {"resources_per_worker", {{"CPU", 1}}}}}}));
    auto starts = a->Starts();
    ports.insert(std::stoi(starts.back().env().at("MASTER_PORT")));
  }
  ASSERT_EQ(ports.size(), 4u);
  Open();
  EXPECT_EQ(cluster_->TEST_PortsInUse(), ports) << "a new job could be handed a running job's port";
  // A finished job gives its port back.
  auto session = std::make_shared<FakeSession>("node-a");
  rpc::Register reg;
  reg.set_node_id("node-a");
  reg.set_address("10.0.0.1");
  (*reg.mutable_resources())["CPU"] = 8;
  for (const auto& id : ids) {
    auto* rw = reg.add_running_workers();
    rw->set_job_id(id);
    rw->set_rank(0);
  }
  ASSERT_TRUE(cluster_->OnRegister(reg, session).has_registered());
  Exit(*session, ids[0], 0, 0, 0);
  EXPECT_EQ(cluster_->TEST_PortsInUse().size(), 3u);
}

}  // namespace
}  // namespace cohort::head
