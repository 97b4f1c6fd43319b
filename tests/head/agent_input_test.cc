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
