// Cluster (the head's decisions) driven directly, with fake agent sessions
// that record what the head sends: gang placement all-or-nothing, the
// torchrun environment, GPU assignment, restarts after a failure up to
// max_failures, stop, and recovery of job records from the state store.
#include "cluster_fixture.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace cohort::head {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using testing::FakeSession;
using ClusterTest = testing::ClusterFixture;

json Scaling(int n, double cpu, double gpu = 0) {
  json r = {{"CPU", cpu}};
  if (gpu > 0) r["GPU"] = gpu;
  return {{"num_workers", n}, {"resources_per_worker", r}};
}

TEST_F(ClusterTest, GangIsPlacedAllAtOnceWhenASecondNodeJoins) {
  auto a = Join("node-a", 2);
  const std::string id = Submit({{"entrypoint", "train"}, {"scaling", Scaling(3, 1)}});
  EXPECT_EQ(Details(id)["status"], "PENDING");
  EXPECT_FALSE(Details(id)["pending_reason"].get<std::string>().empty());
  EXPECT_TRUE(a->Starts().empty()) << "no partial placement";
  auto status = json::parse(cluster_->ClusterStatus().body);
  ASSERT_EQ(status["pending_demand"].size(), 1u);
  EXPECT_EQ(status["pending_demand"][0]["bundles"].size(), 3u);

  auto b = Join("node-b", 2);
  cluster_->Tick();
  EXPECT_EQ(Details(id)["status"], "RUNNING");
  auto starts = a->Starts();
  auto more = b->Starts();
  starts.insert(starts.end(), more.begin(), more.end());
  ASSERT_EQ(starts.size(), 3u);
  std::set<std::string> ranks, master;
  for (const auto& s : starts) {
    const auto& env = s.env();
    EXPECT_EQ(env.at("WORLD_SIZE"), "3");
    ranks.insert(env.at("RANK"));
    master.insert(env.at("MASTER_ADDR") + ":" + env.at("MASTER_PORT"));
    EXPECT_EQ(env.at("TORCHELASTIC_RESTART_COUNT"), "0");
    EXPECT_EQ(env.at("COHORT_JOB_ID"), id);
  }
  EXPECT_EQ(ranks, (std::set<std::string>{"0", "1", "2"}));
  // The cluster's event feed tells the story in order.
  auto events = json::parse(cluster_->Events(0).body)["events"];
  std::string story;
  for (const auto& e : events) story += e["kind"].get<std::string>() + ":" + e["message"].get<std::string>() + "\n";
  EXPECT_NE(story.find("node:joined"), std::string::npos) << story;
  EXPECT_LT(story.find("job:PENDING"), story.find("job:RUNNING")) << story;
  auto later = json::parse(cluster_->Events(events.back()["seq"]).body)["events"];
  EXPECT_TRUE(later.empty());
  EXPECT_EQ(master.size(), 1u) << "every rank must rendezvous at the same place";
  // Ranks on one node are contiguous and their local ranks count from 0.
  for (const auto* node : {a.get(), b.get()}) {
    std::set<std::string> local;
    for (const auto& s : node->Starts()) local.insert(s.env().at("LOCAL_RANK"));
    for (size_t i = 0; i < local.size(); ++i) EXPECT_TRUE(local.count(std::to_string(i)));
  }
}

TEST_F(ClusterTest, GpusAreAssignedWithoutOverlap) {
  auto a = Join("node-a", 8, 2);
  const std::string j1 = Submit({{"entrypoint", "t1"}, {"scaling", Scaling(1, 1, 1)}});
  const std::string j2 = Submit({{"entrypoint", "t2"}, {"scaling", Scaling(1, 1, 1)}});
  const std::string j3 = Submit({{"entrypoint", "t3"}, {"scaling", Scaling(1, 1, 1)}});
  auto starts = a->Starts();
  ASSERT_EQ(starts.size(), 2u);
  ASSERT_EQ(starts[0].gpu_ids_size(), 1);
  ASSERT_EQ(starts[1].gpu_ids_size(), 1);
  EXPECT_NE(starts[0].gpu_ids(0), starts[1].gpu_ids(0));
  EXPECT_EQ(Details(j3)["status"], "PENDING");
  Exit(*a, j1, 0, 0, 0);  // frees its GPU
  cluster_->Tick();
  EXPECT_EQ(Details(j1)["status"], "SUCCEEDED");
  EXPECT_EQ(Details(j3)["status"], "RUNNING");
  ASSERT_EQ(a->Starts().size(), 3u);
  EXPECT_EQ(a->Starts()[2].gpu_ids(0), starts[0].gpu_ids(0));
  (void)j2;
}

TEST_F(ClusterTest, FailureRestartsTheGroupUpToMaxFailuresThenFails) {
  auto a = Join("node-a", 4);
  const std::string id =
      Submit({{"entrypoint", "train"}, {"scaling", Scaling(2, 1)}, {"failure", {{"max_failures", 1}}}});
  ASSERT_EQ(a->Starts().size(), 2u);
  Exit(*a, id, 0, 1, 137);
  // The other rank is told to stop, and the group is placed again (attempt 1).
  bool stop_sent = false;
  for (const auto& m : a->sent) stop_sent = stop_sent || m.has_stop_workers();
  EXPECT_TRUE(stop_sent);
  cluster_->Tick();
  auto d = Details(id);
  EXPECT_EQ(d["status"], "RUNNING");
  EXPECT_EQ(d["attempt"], 1);
  auto starts = a->Starts();
  ASSERT_EQ(starts.size(), 4u);
  EXPECT_EQ(starts[2].attempt(), 1);
  EXPECT_EQ(starts[2].env().at("TORCHELASTIC_RESTART_COUNT"), "1");
  // Messages of the old attempt no longer count.
  Exit(*a, id, 0, 0, 0);
  EXPECT_EQ(Details(id)["status"], "RUNNING");
  // A second failure exhausts max_failures.
  Exit(*a, id, 1, 0, 3);
  d = Details(id);
  EXPECT_EQ(d["status"], "FAILED");
  EXPECT_NE(d["message"].get<std::string>().find("rank 0"), std::string::npos) << d["message"];
  EXPECT_NE(d["message"].get<std::string>().find("code 3"), std::string::npos) << d["message"];
}

TEST_F(ClusterTest, StopPendingAndRunningJobs) {
  auto a = Join("node-a", 1);
  const std::string running = Submit({{"entrypoint", "sleep 60"}});
  const std::string pending = Submit({{"entrypoint", "x"}, {"scaling", Scaling(2, 1)}});
  EXPECT_EQ(Details(pending)["status"], "PENDING");
  EXPECT_EQ(json::parse(cluster_->StopJob(pending).body)["stopped"], true);
  EXPECT_EQ(Details(pending)["status"], "STOPPED");
  EXPECT_EQ(json::parse(cluster_->StopJob(running).body)["stopped"], true);
  EXPECT_EQ(Details(running)["status"], "RUNNING");  // until its worker exits
  Exit(*a, running, 0, 0, 143);
  EXPECT_EQ(Details(running)["status"], "STOPPED");
  EXPECT_EQ(json::parse(cluster_->StopJob(running).body)["stopped"], false);
  EXPECT_EQ(cluster_->DeleteJob(running).status, 200);
  EXPECT_EQ(cluster_->GetJob(running).status, 404);
}

TEST_F(ClusterTest, BadRequestsChangeNothing) {
  EXPECT_EQ(cluster_->Submit("{not json").status, 400);
  EXPECT_EQ(cluster_->Submit(R"({"entrypoint": "x", "bogus": 1})").status, 400);
  EXPECT_EQ(cluster_->Submit(R"({"runtime_env": {}})").status, 400);
  EXPECT_EQ(cluster_->Submit(R"({"entrypoint": "x", "runtime_env": {"working_dir": "gcs://_ray_pkg_missing.zip"}})").status, 400);
  EXPECT_EQ(json::parse(cluster_->ListJobs().body).size(), 0u);
  Submit({{"entrypoint", "x"}, {"submission_id", "dup"}});
  auto dup = cluster_->Submit(json({{"entrypoint", "y"}, {"submission_id", "dup"}}).dump());
  EXPECT_EQ(dup.status, 400);
  EXPECT_NE(dup.body.find("already exists"), std::string::npos);
  EXPECT_EQ(cluster_->DeleteJob("dup").status, 400);  // not terminal
  EXPECT_EQ(cluster_->StopJob("nope").status, 404);
  EXPECT_EQ(cluster_->JobLogs("nope").status, 404);
  EXPECT_EQ(cluster_->PutPackage("../x.zip", "PK").status, 400);
  EXPECT_EQ(cluster_->PutPackage("_ray_pkg_a.zip", "not a zip").status, 400);
}

TEST_F(ClusterTest, RecordsSurviveARestartAndRunningJobsWaitToReattach) {
  auto a = Join("node-a", 2);
  const std::string done = Submit({{"entrypoint", "true"}});
  Exit(*a, done, 0, 0, 0);
  const std::string running = Submit({{"entrypoint", "sleep 60"}});
  EXPECT_EQ(Details(running)["status"], "RUNNING");
  Open();  // a new head process on the same state
  EXPECT_EQ(Details(done)["status"], "SUCCEEDED");
  EXPECT_EQ(Details(running)["status"], "RUNNING");
  // The agent comes back and reports the worker it still runs.
  auto session = std::make_shared<FakeSession>("node-a");
  rpc::Register reg;
  reg.set_node_id("node-a");
  reg.set_address("10.0.0.1");
  (*reg.mutable_resources())["CPU"] = 2;
  auto* rw = reg.add_running_workers();
  rw->set_job_id(running);
  rw->set_attempt(0);
  rw->set_rank(0);
  rw->set_pid(1234);
  ASSERT_TRUE(cluster_->OnRegister(reg, session).has_registered());
  Exit(*session, running, 0, 0, 0);
  EXPECT_EQ(Details(running)["status"], "SUCCEEDED");
}

}  // namespace
}  // namespace cohort::head
