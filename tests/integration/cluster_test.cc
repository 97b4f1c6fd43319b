// The control plane end to end, as a user drives it: a head and agents started
// with `cohort start` as separate processes on loopback, jobs through the
// Ray-compatible REST API (docs/api.md, ../shared/spec/ray-jobs-api.md §9) and
// the `cohort` CLI. Failover and training are in cluster_failover_test.cc.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "integration/cluster_harness.h"

namespace cohort::itest {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

json FindJob(const json& list, const std::string& id) {
  if (list.is_array())
    for (const auto& j : list)
      if (j.value("submission_id", "") == id) return j;
  return nullptr;
}

// §9.1, §9.2: version, submit, status, logs, list, failure, stop, delete.
TEST(ClusterIntegrationTest, JobLifecycleThroughRest) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));

  // V1 (no token needed)
  auto v = Http("GET", c.url() + "/api/version");
  ASSERT_EQ(v.status, 200) << v.body;
  json version = v.Json();
  ASSERT_TRUE(version.is_object()) << v.body;
  ASSERT_TRUE(version["version"].is_string());
  EXPECT_GE(std::stoi(version["version"].get<std::string>()), 4);
  EXPECT_TRUE(version["ray_version"].is_string());
  EXPECT_TRUE(version["ray_commit"].is_string());
  EXPECT_TRUE(version["session_name"].is_string());

  // L0
  auto l0 = c.Get("/api/jobs/");
  ASSERT_EQ(l0.status, 200);
  EXPECT_EQ(l0.Json(), json::array());

  // S1, S2
  const auto submitted_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  auto s1 = c.Post("/api/jobs/", R"({"entrypoint":"echo hello && sleep 1"})");
  ASSERT_EQ(s1.status, 200) << s1.body;
  const std::string id = s1.Json().value("submission_id", "");
  EXPECT_EQ(s1.Json().value("job_id", ""), id);
  EXPECT_TRUE(std::regex_match(id, std::regex("^raysubmit_[A-HJ-NP-Za-kmnp-z1-9]{16}$"))) << id;
  json d = c.Job(id);
  for (const char* key : {"type", "job_id", "submission_id", "driver_info", "status", "entrypoint", "message",
                          "error_type", "start_time", "end_time", "metadata", "runtime_env",
                          "driver_agent_http_address", "driver_node_id", "driver_exit_code"})
    EXPECT_TRUE(d.contains(key)) << "missing key " << key << " in " << d.dump();
  EXPECT_EQ(d["type"], "SUBMISSION");
  EXPECT_EQ(d["submission_id"], id);
  EXPECT_EQ(d["entrypoint"], "echo hello && sleep 1");
  EXPECT_TRUE(d["status"] == "PENDING" || d["status"] == "RUNNING") << d.dump();
  ASSERT_TRUE(d["start_time"].is_number_integer());
  EXPECT_NEAR(static_cast<double>(d["start_time"].get<int64_t>()), static_cast<double>(submitted_ms), 60000);

  // PENDING/RUNNING -> SUCCEEDED
  EXPECT_TRUE(WaitFor([&] { return c.Status(id) != "PENDING"; }, 10s));
  json done = c.WaitStatus(id, "SUCCEEDED", 30s);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump();
  EXPECT_EQ(done["driver_exit_code"], 0);
  EXPECT_EQ(done["message"], "Job finished successfully.");
  EXPECT_TRUE(done["error_type"].is_null());
  EXPECT_GE(done["end_time"].get<int64_t>(), done["start_time"].get<int64_t>());
  EXPECT_EQ(done["driver_node_id"], c.agent(0).node_id);

  // S4, S5
  EXPECT_TRUE(Contains(c.Logs(id), "hello\n")) << c.Logs(id);
  auto list = c.Get("/api/jobs/");
  ASSERT_EQ(list.status, 200);
  ASSERT_TRUE(list.Json().is_array());
  EXPECT_EQ(list.Json().size(), 1u);
  EXPECT_EQ(FindJob(list.Json(), id), c.Job(id));

  // S6: env vars and metadata, a chosen submission id
  auto s6 = c.Post("/api/jobs/", R"({"entrypoint":"echo $A","submission_id":"conf-env-1",)"
                                 R"("runtime_env":{"env_vars":{"A":"xyz"}},"metadata":{"k":"v"}})");
  ASSERT_EQ(s6.status, 200) << s6.body;
  EXPECT_EQ(s6.Json(), (json{{"job_id", "conf-env-1"}, {"submission_id", "conf-env-1"}}));

  // F1: a failing entrypoint
  const std::string failing = c.Submit({{"entrypoint", "echo boom; exit 3"}});
  json failed = c.WaitStatus(failing, "FAILED", 30s);
  ASSERT_EQ(failed.value("status", ""), "FAILED") << failed.dump();
  EXPECT_EQ(failed["driver_exit_code"], 3);
  const std::string message = failed.value("message", "");
  EXPECT_EQ(message.rfind("Job entrypoint command failed with exit code 3", 0), 0u) << message;
  EXPECT_TRUE(Contains(message, "boom")) << message;
  EXPECT_EQ(failed["error_type"], "JOB_ENTRYPOINT_COMMAND_ERROR");

  json env_job = c.WaitStatus("conf-env-1", "SUCCEEDED", 30s);
  EXPECT_EQ(env_job.value("status", ""), "SUCCEEDED") << env_job.dump();
  EXPECT_EQ(env_job["metadata"], (json{{"k", "v"}}));
  EXPECT_EQ(env_job["runtime_env"], (json{{"env_vars", {{"A", "xyz"}}}}));
  EXPECT_TRUE(Contains(c.Logs("conf-env-1"), "xyz")) << c.Logs("conf-env-1");

  // P1: stop a running job
  const std::string sleeper = c.Submit({{"entrypoint", "sleep 60"}});
  ASSERT_TRUE(WaitFor([&] { return c.Status(sleeper) == "RUNNING"; }, 10s)) << c.Job(sleeper).dump();
  // D1 (our answer is 400, docs/api.md): deleting a running job changes nothing
  auto del_running = c.Delete("/api/jobs/" + sleeper);
  EXPECT_EQ(del_running.status, 400) << del_running.body;
  EXPECT_TRUE(Contains(del_running.body, "non-terminal state")) << del_running.body;
  EXPECT_EQ(c.Status(sleeper), "RUNNING");
  const auto stop_sent = std::chrono::steady_clock::now();
  auto stop = c.Post("/api/jobs/" + sleeper + "/stop", "");
  ASSERT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(stop.Json(), (json{{"stopped", true}}));
  json stopped = c.WaitStatus(sleeper, "STOPPED", 10s);
  EXPECT_EQ(stopped.value("status", ""), "STOPPED") << stopped.dump();
  EXPECT_LT(std::chrono::steady_clock::now() - stop_sent, 8s);
  EXPECT_EQ(stopped["message"], "Job was intentionally stopped.");
  EXPECT_TRUE(stopped["driver_exit_code"].is_null());
  // P3: stopping a finished job is a no-op
  auto again = c.Post("/api/jobs/" + id + "/stop", "");
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.Json(), (json{{"stopped", false}}));
  EXPECT_EQ(c.Status(id), "SUCCEEDED");

  // D2: delete, then 404 everywhere
  auto del = c.Delete("/api/jobs/" + id);
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.Json(), (json{{"deleted", true}}));
  auto gone = c.Get("/api/jobs/" + id);
  EXPECT_EQ(gone.status, 404);
  EXPECT_EQ(gone.body, "Job " + id + " does not exist");
  EXPECT_EQ(c.Get("/api/jobs/" + id + "/logs").status, 404);
  EXPECT_TRUE(FindJob(c.Get("/api/jobs/").Json(), id).is_null());
  EXPECT_EQ(c.Get("/api/jobs/").Json().size(), 3u);
}

// The CLI against a running cluster: submit (following and --no-wait), status,
// logs, list, stop, delete, a failing job, `cohort status`, --working-dir.
TEST(ClusterIntegrationTest, CliRoundTrips) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));
  const std::string conn = c.Conn();

  auto hi = c.Cli("job submit" + conn + " -- echo hi");
  EXPECT_EQ(hi.code, 0) << hi.out;
  EXPECT_TRUE(Contains(hi.out, "hi\n")) << hi.out;
  EXPECT_TRUE(Contains(hi.out, "succeeded")) << hi.out;

  auto fail = c.Cli("job submit" + conn + " -- sh -c 'exit 4'");
  EXPECT_EQ(fail.code, 1) << fail.out;
  EXPECT_TRUE(Contains(fail.out, "exit code 4")) << fail.out;

  auto nowait = c.Cli("job submit --no-wait" + conn + " -- sleep 30");
  ASSERT_EQ(nowait.code, 0) << nowait.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(nowait.out, m, std::regex("Job '([A-Za-z0-9_-]+)' submitted successfully")))
      << nowait.out;
  const std::string id = m[1];
  EXPECT_TRUE(WaitFor([&] { return c.Status(id) == "RUNNING"; }, 10s));

  auto status = c.Cli("job status " + id + conn);
  EXPECT_EQ(status.code, 0) << status.out;
  EXPECT_TRUE(Contains(status.out, "Job " + id + ": RUNNING")) << status.out;
  EXPECT_TRUE(Contains(status.out, "sleep 30")) << status.out;
  auto status_json = c.Cli("job status --json " + id + conn);
  EXPECT_EQ(status_json.code, 0) << status_json.out;
  EXPECT_EQ(json::parse(status_json.out, nullptr, false).value("submission_id", ""), id) << status_json.out;

  auto list = c.Cli("job list" + conn);
  EXPECT_EQ(list.code, 0) << list.out;
  EXPECT_TRUE(Contains(list.out, id)) << list.out;
  EXPECT_TRUE(Contains(list.out, "RUNNING")) << list.out;
  EXPECT_TRUE(Contains(list.out, "SUCCEEDED")) << list.out;
  EXPECT_TRUE(Contains(list.out, "FAILED")) << list.out;

  auto del_running = c.Cli("job delete " + id + conn);
  EXPECT_EQ(del_running.code, 1) << del_running.out;
  EXPECT_TRUE(Contains(del_running.out, "non-terminal")) << del_running.out;

  auto stop = c.Cli("job stop " + id + conn);
  EXPECT_EQ(stop.code, 0) << stop.out;
  EXPECT_TRUE(Contains(stop.out, "Stopping job " + id)) << stop.out;
  EXPECT_EQ(c.Status(id), "STOPPED");

  auto logs = c.Cli("job logs " + id + conn);
  EXPECT_EQ(logs.code, 0) << logs.out;
  EXPECT_TRUE(Contains(logs.out, "sleep 30")) << logs.out;
  // --follow of a finished job prints the log and returns.
  auto follow = c.Cli("job logs --follow " + id + conn, 30);
  EXPECT_EQ(follow.code, 0) << follow.out;
  EXPECT_TRUE(Contains(follow.out, "sleep 30")) << follow.out;

  auto del = c.Cli("job delete " + id + conn);
  EXPECT_EQ(del.code, 0) << del.out;
  EXPECT_EQ(c.Get("/api/jobs/" + id).status, 404);
  auto status_gone = c.Cli("job status " + id + conn);
  EXPECT_EQ(status_gone.code, 1) << status_gone.out;
  EXPECT_TRUE(Contains(status_gone.out, "does not exist")) << status_gone.out;

  // A wrong token: a clear refusal, exit 1.
  auto refused = c.Cli("job list --address " + c.url() + " --token wrong");
  EXPECT_EQ(refused.code, 1) << refused.out;
  EXPECT_TRUE(Contains(refused.out, "token")) << refused.out;

  // cohort status lists the node.
  auto cluster = c.Cli("status" + conn);
  EXPECT_EQ(cluster.code, 0) << cluster.out;
  EXPECT_TRUE(Contains(cluster.out, c.agent(0).node_id.substr(0, 16))) << cluster.out;
  EXPECT_TRUE(Contains(cluster.out, "ALIVE")) << cluster.out;
  auto cluster_json = c.Cli("status --json" + conn);
  EXPECT_EQ(cluster_json.code, 0) << cluster_json.out;
  json cj = json::parse(cluster_json.out, nullptr, false);
  ASSERT_TRUE(cj.is_object()) << cluster_json.out;
  ASSERT_EQ(cj["nodes"].size(), 1u) << cluster_json.out;
  EXPECT_EQ(cj["nodes"][0]["node_id"], c.agent(0).node_id);

  // --working-dir: the directory is packaged, uploaded and is the job's cwd.
  const std::string wd = c.dir() + "/project";
  fs::create_directories(wd + "/sub");
  WriteFile(wd + "/run.sh", "echo from-working-dir; cat sub/data.txt\n");
  WriteFile(wd + "/sub/data.txt", "payload-42\n");
  auto packaged = c.Cli("job submit --working-dir " + ShellQuote(wd) + conn + " -- sh run.sh");
  EXPECT_EQ(packaged.code, 0) << packaged.out;
  EXPECT_TRUE(Contains(packaged.out, "from-working-dir")) << packaged.out;
  EXPECT_TRUE(Contains(packaged.out, "payload-42")) << packaged.out;
  // The same directory again: the package is already on the head.
  auto again = c.Cli("job submit --working-dir " + ShellQuote(wd) + conn + " -- sh run.sh");
  EXPECT_EQ(again.code, 0) << again.out;
  json jobs = c.Get("/api/jobs/").Json();
  std::set<std::string> uris;
  for (const auto& j : jobs)
    if (j["runtime_env"].is_object() && j["runtime_env"].contains("working_dir"))
      uris.insert(j["runtime_env"]["working_dir"].get<std::string>());
  ASSERT_EQ(uris.size(), 1u) << jobs.dump();
  EXPECT_TRUE(std::regex_match(*uris.begin(), std::regex("^gcs://_ray_pkg_[0-9a-f]{16}\\.zip$")))
      << *uris.begin();
}

// Gang placement: all workers at once or none; pending demand; the torchrun
// environment; a job that can never fit.
TEST(ClusterIntegrationTest, GangPlacement) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));

  const std::string id =
      c.Submit({{"entrypoint",
                 "sh -c 'echo rank=$RANK world=$WORLD_SIZE local=$LOCAL_RANK "
                 "master=$MASTER_ADDR:$MASTER_PORT'"},
                {"scaling", {{"num_workers", 3}, {"resources_per_worker", {{"CPU", 1}}}}}});
  ASSERT_FALSE(id.empty());
  // 3 x 1 CPU on one 2-CPU node: nothing starts.
  std::this_thread::sleep_for(700ms);
  json pending = c.Job(id);
  EXPECT_EQ(pending.value("status", ""), "PENDING") << pending.dump();
  ASSERT_TRUE(pending["pending_reason"].is_string()) << pending.dump();
  EXPECT_FALSE(pending["pending_reason"].get<std::string>().empty());
  EXPECT_TRUE(Contains(pending["pending_reason"].get<std::string>(), "3 x {CPU: 1}")) << pending.dump();
  EXPECT_TRUE(pending["driver_node_id"].is_null()) << pending.dump();
  json status = c.Get("/api/cluster/status").Json();
  ASSERT_TRUE(status["pending_demand"].is_array()) << status.dump();
  ASSERT_EQ(status["pending_demand"].size(), 1u) << status.dump();
  EXPECT_EQ(status["pending_demand"][0]["job_id"], id);
  EXPECT_EQ(status["pending_demand"][0]["bundles"],
            (json::array({{{"CPU", 1}}, {{"CPU", 1}}, {{"CPU", 1}}})));
  // Nothing holds resources while the gang waits.
  EXPECT_EQ(status["nodes"][0]["resources_used"].value("CPU", 0.0), 0.0) << status.dump();

  // A second node: all three start together.
  ASSERT_TRUE(c.StartAgent("a2", 2));
  json done = c.WaitStatus(id, "SUCCEEDED", 30s);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump() << c.Logs(id);
  EXPECT_TRUE(done["pending_reason"].is_null()) << done.dump();
  ASSERT_EQ(done["workers"].size(), 3u) << done.dump();
  std::map<std::string, int> per_node;
  for (const auto& w : done["workers"]) {
    per_node[w["node_id"].get<std::string>()]++;
    EXPECT_EQ(w["exit_code"], 0) << w.dump();
  }
  EXPECT_EQ(per_node.size(), 2u) << done.dump();
  const std::string logs = c.Logs(id);
  std::smatch m;
  std::set<int> ranks;
  std::set<std::string> masters;
  std::string rest = logs;
  const std::regex line("rank=(\\d) world=(\\d) local=(\\d) master=([0-9.]+):(\\d+)");
  while (std::regex_search(rest, m, line)) {
    const int rank = std::stoi(m[1]);
    ranks.insert(rank);
    EXPECT_EQ(m[2].str(), "3") << logs;
    // Ranks are grouped by node: the local rank is the index on that node.
    const std::string node = done["workers"][rank]["node_id"];
    int expected_local = 0;
    for (int r = 0; r < rank; ++r) expected_local += done["workers"][r]["node_id"] == node ? 1 : 0;
    EXPECT_EQ(std::stoi(m[3]), expected_local) << logs;
    masters.insert(std::string(m[4]) + ":" + std::string(m[5]));
    rest = m.suffix();
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2})) << logs;
  ASSERT_EQ(masters.size(), 1u) << logs;
  EXPECT_EQ(masters.begin()->rfind("127.0.0.1:", 0), 0u) << logs;
  EXPECT_TRUE(c.Get("/api/cluster/status").Json()["pending_demand"].empty());

  // A worker that needs 64 CPUs can never fit: pending with a reason that says so.
  const std::string big = c.Submit({{"entrypoint", "true"},
                                    {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 64}}}}}});
  std::string reason;
  EXPECT_TRUE(WaitFor(
      [&] {
        json j = c.Job(big);
        reason = j["pending_reason"].is_string() ? j["pending_reason"].get<std::string>() : "";
        return !reason.empty();
      },
      5s));
  EXPECT_TRUE(Contains(reason, "can ever")) << reason;
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(c.Status(big), "PENDING");
  // A pending job stops at once.
  EXPECT_EQ(c.Post("/api/jobs/" + big + "/stop", "").Json(), (json{{"stopped", true}}));
  EXPECT_EQ(c.Status(big), "STOPPED");

  // A single-process job with an impossible entrypoint_num_cpus waits too (F2).
  const std::string f2 = c.Submit({{"entrypoint", "true"}, {"entrypoint_num_cpus", 100000}});
  std::this_thread::sleep_for(500ms);
  json f2d = c.Job(f2);
  EXPECT_EQ(f2d.value("status", ""), "PENDING") << f2d.dump();
  EXPECT_TRUE(f2d["driver_agent_http_address"].is_null());
  EXPECT_TRUE(c.Get("/api/jobs/" + f2 + "/logs").status == 200);
}

// `cohort job results ID`: a job without a results_uri has its results
// listed by the nodes that hold them; one with a results_uri lists the
// objects verified in the bucket.
TEST(ClusterIntegrationTest, JobResultsSayWhereTheResultsAre) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 1));
  ASSERT_TRUE(c.StartAgent("a2", 1));
  const std::string conn = c.Conn();

  const std::string spread = c.Submit(
      {{"entrypoint",
        "sh -c 'mkdir -p \"$COHORT_RESULTS_DIR/sub\" && echo $RANK > \"$COHORT_RESULTS_DIR/answer-$RANK.txt\" && "
        "echo x > \"$COHORT_RESULTS_DIR/sub/model-$RANK.pt\" && ln -sf /etc/passwd \"$COHORT_RESULTS_DIR/link-$RANK\" && "
        "printf x > \"$COHORT_RESULTS_DIR/$(printf \"bad\\377name-$RANK\")\"'"},
       {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"CPU", 1}}}}}});
  ASSERT_FALSE(spread.empty());
  json done = c.WaitStatus(spread, "SUCCEEDED", 30s);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump() << c.Logs(spread);
  ASSERT_EQ(done["node_results"].size(), 2u) << done.dump();
  // `job submit` ends by saying where the results are.
  auto followed = c.Cli("job submit" + conn + " -- sh -c 'mkdir -p \"$COHORT_RESULTS_DIR\" && echo 1 > \"$COHORT_RESULTS_DIR/m.pt\"'");
  ASSERT_EQ(followed.code, 0) << followed.out;
  EXPECT_TRUE(Contains(followed.out, "results: 1 file(s) on 1 node(s) (list them: cohort job results ")) << followed.out;

  auto text = c.Cli("job results " + spread + conn);
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_TRUE(Contains(text.out, "results are on 2 node(s)")) << text.out;
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(Contains(text.out, "node " + c.agent(i).node_id)) << text.out;
  // Each node lists at least what its own rank wrote (they share this machine's disk).
  EXPECT_TRUE(Contains(text.out, "answer-0.txt")) << text.out;
  EXPECT_TRUE(Contains(text.out, "answer-1.txt")) << text.out;
  EXPECT_TRUE(Contains(text.out, "sub/model-0.pt")) << text.out;
  EXPECT_FALSE(Contains(text.out, "link-0")) << "symbolic links are not results:\n" << text.out;
  // A file name that is not UTF-8 is listed (made valid) and the agents stay connected.
  EXPECT_TRUE(Contains(text.out, "bad\xEF\xBF\xBDname-0")) << text.out;
  EXPECT_FALSE(Contains(ReadFile(c.dir() + "/head.log"), "disconnected")) << ReadFile(c.dir() + "/head.log");
  EXPECT_TRUE(Contains(text.out, "spread over several nodes")) << text.out;
  EXPECT_TRUE(Contains(text.out, "--results-uri")) << text.out;

  auto as_json = c.Cli("job results --json " + spread + conn);
  ASSERT_EQ(as_json.code, 0) << as_json.out;
  json j = json::parse(as_json.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << as_json.out;
  ASSERT_EQ(j["node_results"].size(), 2u) << as_json.out;
  std::set<std::string> nodes;
  for (const auto& n : j["node_results"]) {
    nodes.insert(n.value("node_id", ""));
    EXPECT_GE(n.value("file_count", 0), 3) << n.dump();
    EXPECT_EQ(n.value("dir", ""), j.value("results_dir", "")) << as_json.out;
    EXPECT_EQ(n.value("node_address", ""), "127.0.0.1") << n.dump();
  }
  EXPECT_EQ(nodes, (std::set<std::string>{c.agent(0).node_id, c.agent(1).node_id}));

  // A job that wrote nothing says so.
  auto quiet = c.Cli("job submit" + conn + " -- true");
  ASSERT_EQ(quiet.code, 0) << quiet.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(quiet.out, m, std::regex("Job '([A-Za-z0-9_-]+)' submitted"))) << quiet.out;
  EXPECT_FALSE(Contains(quiet.out, "results:")) << quiet.out;
  auto none = c.Cli("job results " + std::string(m[1]) + conn);
  EXPECT_EQ(none.code, 0) << none.out;
  EXPECT_TRUE(Contains(none.out, "no results were left")) << none.out;

  // With a results URI: the objects, their sizes and CRC32C.
  const std::string bucket = c.dir() + "/bucket";
  auto uploaded = c.Cli("job submit --results-uri file://" + bucket + "/run" + conn +
                        " -- sh -c 'mkdir -p \"$COHORT_RESULTS_DIR\" && echo weights > \"$COHORT_RESULTS_DIR/model.pt\"'");
  ASSERT_EQ(uploaded.code, 0) << uploaded.out;
  ASSERT_TRUE(std::regex_search(uploaded.out, m, std::regex("Job '([A-Za-z0-9_-]+)' submitted"))) << uploaded.out;
  auto listed = c.Cli("job results " + std::string(m[1]) + conn);
  ASSERT_EQ(listed.code, 0) << listed.out;
  EXPECT_TRUE(Contains(listed.out, "1 object(s)")) << listed.out;
  EXPECT_TRUE(Contains(listed.out, "file://" + bucket + "/run/model.pt")) << listed.out;
  EXPECT_TRUE(Contains(listed.out, "CRC32C")) << listed.out;

  auto unknown = c.Cli("job results no-such-job" + conn);
  EXPECT_EQ(unknown.code, 1) << unknown.out;
  EXPECT_TRUE(Contains(unknown.out, "does not exist")) << unknown.out;
}

// Authentication: the token is required everywhere but the public routes; a
// wrong-token agent is refused; --auth none accepts everyone.
TEST(ClusterIntegrationTest, AuthRefusals) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_FALSE(c.token().empty());
  EXPECT_EQ(fs::status(c.head_state() + "/token").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  const std::string jobs = c.url() + "/api/jobs/";

  auto none = Http("GET", jobs);
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_EQ(none.body, "Unauthorized: missing or invalid bearer token");
  EXPECT_EQ(Http("GET", jobs, "", "wrong").status, 401);
  EXPECT_EQ(Http("POST", jobs, R"({"entrypoint":"true"})").status, 401);
  EXPECT_EQ(Http("POST", jobs, R"({"entrypoint":"true"})", "wrong").status, 401);
  EXPECT_EQ(Http("GET", c.url() + "/api/cluster/status").status, 401);
  EXPECT_EQ(Http("GET", c.url() + "/api/jobs/x/logs").status, 401);
  EXPECT_EQ(Http("DELETE", c.url() + "/api/jobs/x").status, 401);
  EXPECT_EQ(Http("PUT", c.url() + "/api/packages/gcs/_ray_pkg_0123456789abcdef.zip", "x").status, 401);
  EXPECT_EQ(Http("GET", c.url() + "/api/version").status, 200);
  EXPECT_EQ(Http("GET", c.url() + "/api/health").status, 200);
  auto mode = Http("GET", c.url() + "/api/authentication_mode");
  EXPECT_EQ(mode.status, 200);
  EXPECT_EQ(mode.Json(), (json{{"authentication_mode", "token"}}));
  EXPECT_EQ(c.Get("/api/jobs/").status, 200);
  EXPECT_EQ(c.Get("/api/jobs/").Json(), json::array());  // the refused POSTs created nothing

  // An agent with a wrong token: refused, non-zero exit, a clear message.
  ChildProcess bad;
  ASSERT_TRUE(bad.Start({kCohort, "start", "--address", c.agent_address(), "--block", "--state-dir",
                         c.dir() + "/bad-agent", "--num-cpus", "1", "--token", "wrong"},
                        c.dir() + "/bad-agent.log"));
  auto code = bad.ExitCode(30s);
  ASSERT_TRUE(code.has_value()) << "the agent with a wrong token kept running:\n" << bad.Output();
  EXPECT_NE(*code, 0);
  const std::string out = bad.Output();
  EXPECT_TRUE(Contains(out, "token")) << out;
  EXPECT_TRUE(Contains(out, "refused") || Contains(out, "rejected") || Contains(out, "denied")) << out;
  EXPECT_TRUE(c.Get("/api/cluster/status").Json()["nodes"].empty());

  // The right token joins.
  ASSERT_TRUE(c.StartAgent("a1", 1));

  // --auth none
  LocalCluster open;
  ASSERT_TRUE(open.StartHead({"--auth", "none"}));
  EXPECT_TRUE(open.token().empty());
  auto open_mode = Http("GET", open.url() + "/api/authentication_mode");
  EXPECT_EQ(open_mode.Json(), (json{{"authentication_mode", "disabled"}}));
  ASSERT_TRUE(open.StartAgent("a1", 1));
  auto submitted = Http("POST", open.url() + "/api/jobs/", R"({"entrypoint":"echo open"})");
  ASSERT_EQ(submitted.status, 200) << submitted.body;
  const std::string id = submitted.Json().value("submission_id", "");
  EXPECT_EQ(open.WaitStatus(id, "SUCCEEDED", 30s).value("status", ""), "SUCCEEDED");
  EXPECT_EQ(Http("GET", open.url() + "/api/jobs/" + id, "", "anything").status, 200);
}

// Bad input is refused with a 4xx and changes nothing.
TEST(ClusterIntegrationTest, BadInputIsRefused) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 1));

  const std::string first = c.Submit({{"entrypoint", "true"}, {"submission_id", "conf-dup-1"}});
  ASSERT_EQ(first, "conf-dup-1");
  ASSERT_EQ(c.WaitStatus(first, "SUCCEEDED", 30s).value("status", ""), "SUCCEEDED");
  const json before = c.Get("/api/jobs/").Json();

  struct Case {
    std::string body;
    std::string expect;  // a substring of the 400 body
  };
  const std::vector<Case> cases = {
      {"{not json", ""},
      {"[]", ""},
      {"{}", "entrypoint"},
      {R"({"entrypoint":123})", "entrypoint must be a string"},
      {R"({"entrypoint":"true","bogus":1})", "unexpected keyword argument"},
      {R"({"entrypoint":"true","metadata":{"k":1}})", "metadata values must be strings"},
      {R"({"entrypoint":"true","entrypoint_resources":{"Custom":"1"}})", "values must be numbers"},
      {R"({"entrypoint":"true","entrypoint_memory":1.5})", "must be an integer"},
      {R"({"entrypoint":"true","runtime_env":"x"})", "runtime_env must be a dict"},
      {R"({"entrypoint":"true","submission_id":"conf-dup-1"})", "already exists"},
      {R"({"entrypoint":"true","runtime_env":{"working_dir":"gcs://_ray_pkg_ffffffffffffffff.zip"}})",
       "does not exist"},
      {R"({"entrypoint":"true","scaling":{"num_workers":0}})", ""},
      {R"({"entrypoint":"true","scaling":{"num_workers":2,"resources_per_worker":{"CPU":-1}}})", ""},
  };
  for (const auto& tc : cases) {
    auto r = c.Post("/api/jobs/", tc.body);
    EXPECT_EQ(r.status, 400) << tc.body << " -> " << r.body;
    EXPECT_TRUE(Contains(r.body, tc.expect)) << tc.body << " -> " << r.body;
  }
  auto dup = c.Post("/api/jobs/", R"({"entrypoint":"true","submission_id":"conf-dup-1"})");
  EXPECT_TRUE(Contains(dup.body, "Please use a different submission_id")) << dup.body;

  // Unknown ids: 404 on every route (N1-N4).
  for (auto [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/api/jobs/nonexistent_job"},
           {"GET", "/api/jobs/nonexistent_job/logs"},
           {"GET", "/api/jobs/nonexistent_job/metrics"},
           {"POST", "/api/jobs/nonexistent_job/stop"},
           {"DELETE", "/api/jobs/nonexistent_job"}}) {
    auto r = Http(method, c.url() + path, "", c.token());
    EXPECT_EQ(r.status, 404) << method << " " << path << " -> " << r.body;
  }
  EXPECT_EQ(c.Get("/api/jobs/nonexistent_job").body, "Job nonexistent_job does not exist");

  // Packages: a good one works (K1-K4), zip-slip and symlinks are refused.
  const std::string pkg = "/api/packages/gcs/_ray_pkg_0123456789abcdef.zip";
  auto k1 = c.Get(pkg);
  EXPECT_EQ(k1.status, 404);
  EXPECT_EQ(k1.body, "Package gcs://_ray_pkg_0123456789abcdef.zip does not exist");
  auto k2 = c.Put(pkg, MakeZip({{"run.sh", "echo from-package\n"}}));
  EXPECT_EQ(k2.status, 200) << k2.body;
  EXPECT_EQ(c.Get(pkg).status, 200);
  const std::string k4 = c.Submit(
      {{"entrypoint", "sh run.sh"}, {"runtime_env", {{"working_dir", "gcs://_ray_pkg_0123456789abcdef.zip"}}}});
  json k4d = c.WaitStatus(k4, "SUCCEEDED", 30s);
  EXPECT_EQ(k4d.value("status", ""), "SUCCEEDED") << k4d.dump() << c.Logs(k4);
  EXPECT_TRUE(Contains(c.Logs(k4), "from-package")) << c.Logs(k4);
  EXPECT_EQ(k4d["runtime_env"]["working_dir"], "gcs://_ray_pkg_0123456789abcdef.zip");

  const std::vector<std::pair<std::string, std::string>> bad_packages = {
      {"_ray_pkg_1111111111111111.zip", MakeZip({{"ok.txt", "x"}, {"../evil", "pwned"}})},
      {"_ray_pkg_2222222222222222.zip", MakeZip({{"a/../../evil", "pwned"}})},
      {"_ray_pkg_3333333333333333.zip", MakeZip({{"/etc/evil", "pwned"}})},
      {"_ray_pkg_4444444444444444.zip", MakeZip({{"link", "/etc", 0120777}})},
      {"_ray_pkg_5555555555555555.zip", "this is not a zip"},
  };
  for (const auto& [name, body] : bad_packages) {
    auto r = c.Put("/api/packages/gcs/" + name, body);
    EXPECT_EQ(r.status, 400) << name << " -> " << r.body;
    EXPECT_EQ(c.Get("/api/packages/gcs/" + name).status, 404) << name;
  }
  EXPECT_EQ(c.Put("/api/packages/gcs/..%2F..%2Fevil.zip", MakeZip({{"a", "b"}})).status / 100, 4);
  EXPECT_EQ(c.Put("/api/packages/s3/x.zip", MakeZip({{"a", "b"}})).status / 100, 4);
  EXPECT_FALSE(fs::exists(c.head_state() + "/evil"));
  EXPECT_FALSE(fs::exists(c.dir() + "/evil"));

  // A body just over the 100 MiB limit: 413.
  {
    std::string huge(100u * 1024 * 1024 + 1, ' ');
    auto r = Http("POST", c.url() + "/api/jobs/", huge, c.token(), "application/json", 60s);
    EXPECT_EQ(r.status, 413) << r.error << " " << r.body.substr(0, 200);
  }

  // Nothing changed, apart from the one good package job.
  json after = c.Get("/api/jobs/").Json();
  ASSERT_EQ(after.size(), before.size() + 1) << after.dump();
  EXPECT_EQ(after[0], before[0]);
  EXPECT_EQ(after[1]["submission_id"], k4);

  // The head is still healthy and schedules.
  const std::string last = c.Submit({{"entrypoint", "echo still-fine"}});
  EXPECT_EQ(c.WaitStatus(last, "SUCCEEDED", 30s).value("status", ""), "SUCCEEDED");
}

}  // namespace
}  // namespace cohort::itest
