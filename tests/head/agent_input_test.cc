// What agents send is untrusted: a node reporting for another node's ranks,
// hostile report lines, huge start messages, reserved env vars; none of it
// changes another job or takes the head down.
#include <gtest/gtest.h>

#include "cluster_fixture.h"
#include "cohort/common/json.h"

namespace cohort::head {
namespace {

using json = nlohmann::json;
using testing::FakeSession;

using AgentInputTest = testing::ClusterFixture;

TEST_F(AgentInputTest, ANodeCannotReportForRanksPlacedElsewhere) {
  auto a = Join("node-a", 1);
  auto b = Join("node-b", 1);
  const std::string id = Submit({{"entrypoint", "train"},
                                 {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 1}}}}}});
  ASSERT_EQ(Details(id)["status"], "RUNNING");
  const std::string node_of_0 = Details(id)["workers"][0]["node_id"];
  FakeSession& other = node_of_0 == "node-a" ? *b : *a;
  // The other node claims rank 0 failed: ignored.
  Exit(other, id, 0, 0, 1);
  EXPECT_EQ(Details(id)["status"], "RUNNING");
  // Log bytes and reports for a job that never ran on a node are dropped.
  auto c = Join("node-c", 1);
  rpc::AgentMessage log;
  log.mutable_log()->set_job_id(id);
  log.mutable_log()->set_data("injected\n");
  cluster_->OnMessage(*c, log);
  EXPECT_EQ(json::parse(cluster_->JobLogs(id).body)["logs"].get<std::string>().find("injected"), std::string::npos);
  // A session that is not the node's current one does not count at all.
  FakeSession stranger("node-a");
  Exit(stranger, id, 0, 0, 1);
  EXPECT_EQ(Details(id)["status"], "RUNNING");
}

TEST_F(AgentInputTest, HostileReportLinesAreDroppedAndGoodOnesKept) {
  auto a = Join("node-a", 1);
  const std::string id = Submit({{"entrypoint", "train"}});
  rpc::AgentMessage m;
  auto* r = m.mutable_metrics();
  r->set_job_id(id);
  r->set_rank(0);
  r->add_json_lines(std::string(100000, '['));                         // nested too deep
  r->add_json_lines(R"({"rank": "zero", "time": "now", "loss": 1.5})");  // wrong types
  r->add_json_lines("[1,2,3]");                                         // not an object
  r->add_json_lines(std::string("{\"na\xffme\": 2}"));                   // invalid UTF-8 key
  r->add_json_lines(R"({"rank": 99999999999, "loss": 2})");             // rank out of range: the worker's
  r->add_json_lines(R"({"loss": 1e999})");                              // overflows: not JSON
  r->add_json_lines(std::string(70000, ' ') + "{}");                    // over the size limit
  r->add_json_lines(R"({"epoch": 1, "loss": 0.5})");
  cluster_->OnMessage(*a, m);
  const auto reply = cluster_->JobMetrics(id, 0);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_TRUE(IsValidUtf8(reply.body));
  const json rows = json::parse(reply.body)["metrics"];
  ASSERT_EQ(rows.size(), 3u) << rows.dump();
  EXPECT_EQ(rows[1]["rank"], 0);
  EXPECT_EQ(rows[0]["rank"], 0);
  EXPECT_TRUE(rows[0]["time"].is_number());
  EXPECT_EQ(rows[2]["loss"], 0.5);
  prom::Writer w;
  cluster_->WritePrometheus(w);
  EXPECT_TRUE(IsValidUtf8(w.Take()));
}

TEST_F(AgentInputTest, ResultsListingsAreBoundedCleanedAndKeptPerNode) {
  auto a = Join("node-a", 1);
  const std::string id = Submit({{"entrypoint", "train"}});
  rpc::AgentMessage m;
  auto* e = m.mutable_worker_exited();
  e->set_job_id(id);
  e->set_exit_code(0);
  auto* r = e->mutable_results();
  r->set_dir(std::string("/res\xff") + std::string(5000, 'd'));
  for (int i = 0; i < 500; ++i) {
    auto* f = r->add_files();
    f->set_path("f" + std::to_string(i) + "\xfe");
    f->set_size_bytes(7);
  }
  r->set_file_count(1000000);
  r->set_total_bytes(7000000);
  cluster_->OnMessage(*a, m);
  const json d = Details(id);
  EXPECT_EQ(d["status"], "SUCCEEDED");
  ASSERT_EQ(d["node_results"].size(), 1u) << d.dump();
  const json& n = d["node_results"][0];
  EXPECT_EQ(n["node_id"], "node-a");
  EXPECT_EQ(n["files"].size(), 64u);
  EXPECT_LE(n["dir"].get<std::string>().size(), 1024u + 3);
  EXPECT_EQ(n["file_count"], 1000000);
  EXPECT_TRUE(IsValidUtf8(d.dump()));
  // A job with a results URI keeps its bucket listing only.
  const std::string uri_job = Submit({{"entrypoint", "train"}, {"results_uri", "file:///nowhere"}});
  e->set_job_id(uri_job);
  cluster_->OnMessage(*a, m);
  EXPECT_TRUE(Details(uri_job)["node_results"].empty()) << Details(uri_job).dump();
}

TEST_F(AgentInputTest, JobsGetTheirOwnTokenNeverTheClustersAndCannotSetReservedVariables) {
  auto a = Join("node-a", 1);
  const std::string id = Submit({{"entrypoint", "env"}, {"runtime_env", {{"env_vars", {{"SECRET", "s3cr3t"}}}}}});
  auto starts = a->Starts();
  ASSERT_EQ(starts.size(), 1u);
  const auto& env = starts[0].env();
  ASSERT_TRUE(env.contains("COHORT_JOB_TOKEN"));
  EXPECT_EQ(cluster_->tokens()->JobOf(env.at("COHORT_JOB_TOKEN")), id);
  EXPECT_FALSE(env.contains("COHORT_TOKEN"));
  auto bad = cluster_->Submit(json{{"entrypoint", "env"}, {"runtime_env", {{"env_vars", {{"COHORT_JOB_TOKEN", "x"}}}}}}.dump());
  EXPECT_EQ(bad.status, 400) << bad.body;
  // env_vars are visible with the cluster token only.
  EXPECT_EQ(json::parse(cluster_->GetJob(id, /*admin=*/true).body)["runtime_env"]["env_vars"]["SECRET"], "s3cr3t");
  EXPECT_EQ(json::parse(cluster_->GetJob(id, /*admin=*/false).body).dump().find("s3cr3t"), std::string::npos);
  EXPECT_EQ(json::parse(cluster_->ListJobs(/*admin=*/false).body).dump().find("s3cr3t"), std::string::npos);
}

TEST_F(AgentInputTest, AStartMessageOverTheAgentsLimitIsRefusedNotSentForever) {
  auto a = Join("node-a", 1);
  auto reply = cluster_->Submit(json{{"entrypoint", std::string(5 << 20, 'x')}}.dump());
  EXPECT_EQ(reply.status, 400);
  EXPECT_NE(reply.body.find("over the limit"), std::string::npos) << reply.body.substr(0, 200);
  EXPECT_TRUE(a->Starts().empty());
  // Many env_vars add up the same way.
  json env = json::object();
  for (int i = 0; i < 5; ++i) env["V" + std::to_string(i)] = std::string(1000000, 'v');
  reply = cluster_->Submit(json{{"entrypoint", "true"}, {"runtime_env", {{"env_vars", env}}}}.dump());
  EXPECT_EQ(reply.status, 400);
  EXPECT_TRUE(a->Starts().empty());
}

}  // namespace
}  // namespace cohort::head

namespace cohort::head {
namespace {

using json = nlohmann::json;
using testing::FakeSession;
using ReregistrationTest = testing::ClusterFixture;

rpc::Register Reg(const std::string& node, double cpus) {
  rpc::Register reg;
  reg.set_node_id(node);
  reg.set_address("10.0.0.9");
  (*reg.mutable_resources())["CPU"] = cpus;
  return reg;
}

TEST_F(ReregistrationTest, AWorkerItsRestartedAgentNoLongerRunsFailsTheAttemptInsteadOfHanging) {
  auto a = Join("node-a", 1);
  auto b = Join("node-b", 1);
  const std::string id = Submit({{"entrypoint", "train"},
                                 {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 1}}}}},
                                 {"failure", {{"max_failures", 1}}}});
  ASSERT_EQ(Details(id)["status"], "RUNNING");
  const std::string node0 = Details(id)["workers"][0]["node_id"];
  const std::string node1 = node0 == "node-a" ? "node-b" : "node-a";
  FakeSession& s0 = node0 == "node-a" ? *a : *b;
  Exit(s0, id, 0, 0, 0);  // rank 0 finished
  // rank 1's agent is killed and restarted: it re-registers at once, running nothing.
  auto fresh = std::make_shared<FakeSession>(node1);
  ASSERT_TRUE(cluster_->OnRegister(Reg(node1, 1), fresh).has_registered());
  const json d = Details(id);
  EXPECT_EQ(d["status"], "PENDING") << d.dump();  // restarting, not RUNNING forever
  EXPECT_NE(d["message"].get<std::string>().find("re-registered without it"), std::string::npos) << d["message"];
}

TEST_F(ReregistrationTest, AnExitTheHeadMissedArrivesWithTheNextRegistration) {
  auto a = Join("node-a", 1);
  const std::string id = Submit({{"entrypoint", "train"}});
  ASSERT_EQ(Details(id)["status"], "RUNNING");
  Open();  // the head was killed; the worker's exit was on the dying stream
  auto fresh = std::make_shared<FakeSession>("node-a");
  rpc::Register reg = Reg("node-a", 1);
  auto* e = reg.add_recent_exits();
  e->set_job_id(id);
  e->set_attempt(0);
  e->set_rank(0);
  e->set_exit_code(0);
  ASSERT_TRUE(cluster_->OnRegister(reg, fresh).has_registered());
  EXPECT_EQ(Details(id)["status"], "SUCCEEDED");
  // Sent again at a later registration: nothing changes.
  ASSERT_TRUE(cluster_->OnRegister(reg, std::make_shared<FakeSession>("node-a")).has_registered());
  EXPECT_EQ(Details(id)["status"], "SUCCEEDED");
}

TEST_F(ReregistrationTest, AWorkerStillBeingPreparedIsNotGone) {
  auto a = Join("node-a", 1);
  const std::string id = Submit({{"entrypoint", "train"}});
  rpc::Register reg = Reg("node-a", 1);
  auto* rw = reg.add_running_workers();  // listed without a pid: accepted, preparing
  rw->set_job_id(id);
  rw->set_rank(0);
  ASSERT_TRUE(cluster_->OnRegister(reg, std::make_shared<FakeSession>("node-a")).has_registered());
  EXPECT_EQ(Details(id)["status"], "RUNNING");
}

}  // namespace
}  // namespace cohort::head
