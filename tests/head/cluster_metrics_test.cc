// Cluster::WritePrometheus driven with fake agent sessions: node and job
// gauges, submission and restart counters, placement histograms, the
// trainers' last reported values and their bounds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>

#include "cluster_fixture.h"

namespace cohort::head {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using testing::FakeSession;

// The value of the sample written exactly as `series` ("name{a=\"b\"}").
std::optional<double> Value(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(series + " ", 0) == 0) return std::strtod(line.c_str() + series.size() + 1, nullptr);
  return std::nullopt;
}

class ClusterMetricsTest : public testing::ClusterFixture {
 protected:
  void Report(FakeSession& s, const std::string& id, int rank, const std::vector<std::string>& lines) {
    rpc::AgentMessage m;
    auto* r = m.mutable_metrics();
    r->set_job_id(id);
    r->set_rank(rank);
    for (const auto& l : lines) r->add_json_lines(l);
    cluster_->OnMessage(s, m);
  }
  std::string Text() {
    prom::Writer w;
    cluster_->WritePrometheus(w);
    return w.Take();
  }
};

// Heartbeats carry each GPU's model, memory and utilization: the cluster
// status and /metrics show them; what cannot be believed is cut down (at
// most 64 GPUs, names of at most 128 bytes of valid UTF-8, utilization
// 0-100, unknown values left out).
TEST_F(ClusterMetricsTest, GpusFromHeartbeatsAreShownAndChecked) {
  auto a = Join("node-a", 2);
  rpc::AgentMessage m;
  auto add = [&](int index, const std::string& name, int64_t used, int64_t total, double util) {
    rpc::GpuStatus* g = m.mutable_heartbeat()->add_gpus();
    g->set_index(index);
    g->set_name(name);
    g->set_memory_used_bytes(used);
    g->set_memory_total_bytes(total);
    g->set_utilization_percent(util);
  };
  add(0, "NVIDIA H200", int64_t{12} << 30, int64_t{141} << 30, 37);
  add(1, "bad\xff\xfe name", -5, -1, std::nan(""));
  add(2, std::string(1000, 'x'), 1, 2, 1e9);
  for (int i = 3; i < 200; ++i) add(i, "G", 0, 0, 0);
  cluster_->OnMessage(*a, m);

  const json nodes = json::parse(cluster_->ClusterStatus().body)["nodes"];
  ASSERT_EQ(nodes.size(), 1u);
  const json& gpus = nodes[0]["gpus"];
  ASSERT_EQ(gpus.size(), 64u);
  EXPECT_EQ(gpus[0]["name"], "NVIDIA H200");
  EXPECT_EQ(gpus[0]["memory_used_bytes"], int64_t{12} << 30);
  EXPECT_EQ(gpus[0]["utilization_percent"], 37);
  EXPECT_TRUE(gpus[1]["memory_used_bytes"].is_null());
  EXPECT_TRUE(gpus[1]["utilization_percent"].is_null());
  EXPECT_LE(gpus[2]["name"].get<std::string>().size(), 128u);
  EXPECT_EQ(gpus[2]["utilization_percent"], 100);
  EXPECT_NO_THROW((void)nodes.dump());  // valid UTF-8 throughout

  const std::string t = Text();
  EXPECT_EQ(Value(t, "cohort_node_gpu_utilization_percent{node=\"node-a\",gpu=\"0\",model=\"NVIDIA H200\"}"), 37);
  EXPECT_EQ(Value(t, "cohort_node_gpu_memory_total_bytes{node=\"node-a\",gpu=\"0\",model=\"NVIDIA H200\"}"),
            static_cast<double>(int64_t{141} << 30));
  EXPECT_EQ(t.find("gpu=\"1\",model=\"bad"), std::string::npos) << "GPU 1's values are unknown: no samples";
}

TEST_F(ClusterMetricsTest, NodesJobsCountersAndHistograms) {
  std::string t = Text();
  EXPECT_EQ(Value(t, "cohort_nodes{state=\"alive\"}"), 0);
  EXPECT_EQ(Value(t, "cohort_jobs{status=\"PENDING\"}"), 0);
  EXPECT_EQ(Value(t, "cohort_job_submit_to_running_seconds_count"), 0);

  auto a = Join("node-a", 2);
  const std::string big = Submit({{"entrypoint", "t"}, {"scaling", {{"num_workers", 3}, {"resources_per_worker", {{"CPU", 1}}}}}});
  const std::string id = Submit({{"entrypoint", "t"},
                                 {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 1}}}}},
                                 {"failure", {{"max_failures", 1}}}});
  t = Text();
  EXPECT_EQ(Value(t, "cohort_nodes{state=\"alive\"}"), 1);
  EXPECT_EQ(Value(t, "cohort_nodes{state=\"dead\"}"), 0);
  EXPECT_EQ(Value(t, "cohort_node_resources{node=\"node-a\",resource=\"CPU\",kind=\"total\"}"), 2);
  EXPECT_EQ(Value(t, "cohort_node_resources{node=\"node-a\",resource=\"CPU\",kind=\"used\"}"), 2);
  EXPECT_EQ(Value(t, "cohort_jobs{status=\"PENDING\"}"), 1);
  EXPECT_EQ(Value(t, "cohort_jobs{status=\"RUNNING\"}"), 1);
  EXPECT_EQ(Value(t, "cohort_jobs_submitted_total"), 2);
  EXPECT_EQ(Value(t, "cohort_pending_demand_bundles"), 3);
  EXPECT_EQ(Value(t, "cohort_pending_demand_resources{resource=\"CPU\"}"), 3);
  EXPECT_EQ(Value(t, "cohort_job_submit_to_running_seconds_count"), 1);
  EXPECT_EQ(Value(t, "cohort_job_submit_to_running_seconds_bucket{le=\"+Inf\"}"), 1);
  EXPECT_EQ(Value(t, "cohort_job_placement_wait_seconds_count"), 1);
  EXPECT_EQ(Value(t, "cohort_job_restarts_total"), 0);

  // A failure restarts the group: one more placement (a restart), not a
  // first-attempt submission.
  Exit(*a, id, 0, 1, 137);
  cluster_->Tick();
  t = Text();
  EXPECT_EQ(Value(t, "cohort_job_restarts_total"), 1);
  EXPECT_EQ(Value(t, "cohort_job_placement_wait_seconds_count"), 2);
  EXPECT_EQ(Value(t, "cohort_job_submit_to_running_seconds_count"), 1);

  ASSERT_EQ(cluster_->StopJob(big).status, 200);
  cluster_->OnDisconnect(*a, Status::Ok());  // the agent left
  t = Text();
  EXPECT_EQ(Value(t, "cohort_nodes{state=\"alive\"}"), 0);
  EXPECT_EQ(Value(t, "cohort_nodes{state=\"dead\"}"), 1);
  EXPECT_EQ(Value(t, "cohort_jobs{status=\"STOPPED\"}"), 1);
  EXPECT_EQ(Value(t, "cohort_pending_demand_bundles"), 0);
  // Every line parses as a comment or "series value".
  std::istringstream in(t);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# ", 0) == 0) continue;
    const size_t sp = line.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    char* end = nullptr;
    std::strtod(line.c_str() + sp + 1, &end);
    EXPECT_EQ(*end, '\0') << line;
  }
}

TEST_F(ClusterMetricsTest, LastReportedValuesByJobRankAndName) {
  auto a = Join("node-a", 4);
  const std::string id = Submit({{"entrypoint", "t"}, {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 1}}}}}});
  Report(*a, id, 0,
         {R"({"rank":0,"time":1.5,"epoch":1,"train_loss":0.9,"note":"text","flag":true,"diverged":null})",
          R"({"rank":0,"time":2.5,"epoch":2,"train_loss":0.5})", "not json"});
  Report(*a, id, 1, {R"({"rank":1,"time":2.5,"epoch":2,"train_loss":0.25})"});
  Report(*a, "no-such-job", 0, {R"({"rank":0,"loss":1})"});
  std::string t = Text();
  auto series = [&](int rank, const std::string& name) {
    return "cohort_job_metric{job=\"" + id + "\",rank=\"" + std::to_string(rank) + "\",name=\"" + name + "\"}";
  };
  EXPECT_EQ(Value(t, series(0, "train_loss")), 0.5);
  EXPECT_EQ(Value(t, series(0, "epoch")), 2);
  EXPECT_EQ(Value(t, series(1, "train_loss")), 0.25);
  ASSERT_TRUE(Value(t, series(0, "diverged")).has_value());
  EXPECT_TRUE(std::isnan(*Value(t, series(0, "diverged"))));
  EXPECT_FALSE(Value(t, series(0, "time")).has_value());
  EXPECT_FALSE(Value(t, series(0, "rank")).has_value());
  EXPECT_FALSE(Value(t, series(0, "attempt")).has_value());
  EXPECT_FALSE(Value(t, series(0, "note")).has_value());
  EXPECT_FALSE(Value(t, series(0, "flag")).has_value());
  EXPECT_EQ(t.find("no-such-job"), std::string::npos);
  // Still shown once the job finished.
  Exit(*a, id, 0, 0, 0);
  Exit(*a, id, 0, 1, 0);
  ASSERT_EQ(json::parse(cluster_->GetJob(id).body)["status"], "SUCCEEDED");
  EXPECT_EQ(Value(Text(), series(0, "train_loss")), 0.5);
}

TEST_F(ClusterMetricsTest, OnlyTheNewestFinishedJobsKeepTheirValues) {
  auto a = Join("node-a", 1);
  std::vector<std::string> ids;
  for (int i = 0; i < 13; ++i) {
    const std::string id = Submit({{"entrypoint", "t"}, {"submission_id", "job-" + std::to_string(i)}});
    Report(*a, id, 0, {R"({"rank":0,"loss":)" + std::to_string(i) + "}"});
    Exit(*a, id, 0, 0, 0);
    ids.push_back(id);
  }
  const std::string running = Submit({{"entrypoint", "t"}, {"submission_id", "job-running"}});
  Report(*a, running, 0, {R"({"rank":0,"loss":7})"});
  const std::string t = Text();
  int shown = 0;
  for (int i = 0; i < 13; ++i) {
    auto v = Value(t, "cohort_job_metric{job=\"job-" + std::to_string(i) + "\",rank=\"0\",name=\"loss\"}");
    if (v) {
      ++shown;
      EXPECT_GE(i, 3) << "an old finished job is still shown";
      EXPECT_EQ(*v, i);
    }
  }
  EXPECT_EQ(shown, 10);
  EXPECT_EQ(Value(t, "cohort_job_metric{job=\"job-running\",rank=\"0\",name=\"loss\"}"), 7);
  // A deleted job disappears.
  ASSERT_EQ(cluster_->DeleteJob("job-12").status, 200);
  EXPECT_FALSE(Value(Text(), "cohort_job_metric{job=\"job-12\",rank=\"0\",name=\"loss\"}").has_value());
}

}  // namespace
}  // namespace cohort::head
