// Tests for job records: the job-detail JSON shape (spec §3.3 + docs/api.md),
// the persistence round trip, the lifecycle state machine and its invariants,
// default messages (§3.5) and the failed-entrypoint message.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cohort/jobs/job.h"

namespace cohort::jobs {
namespace {

using nlohmann::json;

constexpr int64_t kT0 = 1738316400123;

JobSpec Spec(std::string_view body) {
  auto r = ParseSubmitRequest(body);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? r.value() : JobSpec{};
}

JobRecord Fresh(std::string_view body = R"({"entrypoint":"echo hello","submission_id":"s1"})") {
  return NewJobRecord(Spec(body), kT0);
}

const std::vector<std::string> kRayKeys = {
    "type",       "job_id",   "submission_id", "driver_info",  "status",
    "entrypoint", "message",  "error_type",    "start_time",   "end_time",
    "metadata",   "runtime_env", "driver_agent_http_address", "driver_node_id", "driver_exit_code"};
const std::vector<std::string> kCohortKeys = {"scaling", "failure", "results_uri",
                                              "attempt", "workers", "pending_reason"};

// ---- status names -------------------------------------------------------------

TEST(JobStatusTest, NamesParseAndTerminal) {
  for (JobStatus s : {JobStatus::kPending, JobStatus::kRunning, JobStatus::kStopped, JobStatus::kSucceeded,
                      JobStatus::kFailed}) {
    EXPECT_EQ(ParseJobStatus(JobStatusName(s)), s);
  }
  EXPECT_EQ(JobStatusName(JobStatus::kSucceeded), "SUCCEEDED");
  EXPECT_FALSE(ParseJobStatus("succeeded").has_value());
  EXPECT_FALSE(ParseJobStatus("").has_value());
  EXPECT_FALSE(IsTerminal(JobStatus::kPending));
  EXPECT_FALSE(IsTerminal(JobStatus::kRunning));
  EXPECT_TRUE(IsTerminal(JobStatus::kStopped));
  EXPECT_TRUE(IsTerminal(JobStatus::kSucceeded));
  EXPECT_TRUE(IsTerminal(JobStatus::kFailed));
}

// ---- details JSON -------------------------------------------------------------

TEST(JobDetailsJsonTest, FreshRecordHasEveryKeyWithNulls) {  // §9.1 S2
  json d = JobDetailsJson(Fresh());
  EXPECT_EQ(d.size(), kRayKeys.size() + kCohortKeys.size()) << d.dump();
  for (const auto& k : kRayKeys) EXPECT_TRUE(d.contains(k)) << k;
  for (const auto& k : kCohortKeys) EXPECT_TRUE(d.contains(k)) << k;
  EXPECT_EQ(d["type"], "SUBMISSION");
  EXPECT_TRUE(d["job_id"].is_null());
  EXPECT_EQ(d["submission_id"], "s1");
  EXPECT_TRUE(d["driver_info"].is_null());
  EXPECT_EQ(d["status"], "PENDING");
  EXPECT_EQ(d["entrypoint"], "echo hello");
  EXPECT_EQ(d["message"], "Job has not started yet.");
  EXPECT_TRUE(d["error_type"].is_null());
  EXPECT_TRUE(d["start_time"].is_number_integer());
  EXPECT_EQ(d["start_time"].get<int64_t>(), kT0);
  EXPECT_TRUE(d["end_time"].is_null());
  EXPECT_TRUE(d["metadata"].is_null());
  EXPECT_TRUE(d["runtime_env"].is_null());
  EXPECT_TRUE(d["driver_agent_http_address"].is_null());
  EXPECT_TRUE(d["driver_node_id"].is_null());
  EXPECT_TRUE(d["driver_exit_code"].is_null());
  EXPECT_TRUE(d["scaling"].is_null());
  EXPECT_TRUE(d["failure"].is_null());
  EXPECT_TRUE(d["results_uri"].is_null());
  EXPECT_EQ(d["attempt"], 0);
  EXPECT_EQ(d["workers"], json::array());
  EXPECT_TRUE(d["pending_reason"].is_null());
}

TEST(JobDetailsJsonTest, FinishedScalingJob) {
  JobRecord r = Fresh(
      R"({"entrypoint":"python train.py","submission_id":"s2","metadata":{"owner":"alice"},)"
      R"("runtime_env":{"env_vars":{"A":"1"}},"scaling":{"num_workers":2,"resources_per_worker":{"GPU":1}},)"
      R"("failure":{"max_failures":1},"results_uri":"gs://b/r"})");
  r.pending_reason = "needs 2 x {GPU: 1}; free: node-a {CPU: 8}";
  json d = JobDetailsJson(r);
  EXPECT_EQ(d["pending_reason"], "needs 2 x {GPU: 1}; free: node-a {CPU: 8}");
  EXPECT_EQ(d["message"],
            "Job has not started yet. It may be waiting for resources (CPUs, GPUs, memory, custom resources) to "
            "become available. It may be waiting for the runtime environment to be set up.");

  r.driver_node_id = "node-a";
  r.driver_agent_http_address = "http://10.0.0.5:52365";
  r.workers = {{0, "node-a", "RUNNING", 4100, std::nullopt}, {1, "node-b", "RUNNING", 4200, std::nullopt}};
  ASSERT_TRUE(Transition(r, JobStatus::kRunning, "", kT0 + 10).ok());
  r.driver_exit_code = 0;
  r.workers[0].status = r.workers[1].status = "SUCCEEDED";
  r.workers[0].exit_code = r.workers[1].exit_code = 0;
  ASSERT_TRUE(Transition(r, JobStatus::kSucceeded, "", kT0 + 5000).ok());
  d = JobDetailsJson(r);
  EXPECT_EQ(d["status"], "SUCCEEDED");
  EXPECT_EQ(d["message"], "Job finished successfully.");
  EXPECT_EQ(d["end_time"].get<int64_t>(), kT0 + 5000);
  EXPECT_EQ(d["driver_exit_code"], 0);
  EXPECT_EQ(d["driver_node_id"], "node-a");
  EXPECT_EQ(d["driver_agent_http_address"], "http://10.0.0.5:52365");
  EXPECT_EQ(d["metadata"], json({{"owner", "alice"}}));
  EXPECT_EQ(d["runtime_env"], json::parse(R"({"env_vars":{"A":"1"}})"));
  EXPECT_EQ(d["scaling"], json::parse(R"({"num_workers":2,"resources_per_worker":{"GPU":1},"placement_strategy":"PACK"})"));
  EXPECT_EQ(d["failure"], json::parse(R"({"max_failures":1})"));
  EXPECT_EQ(d["results_uri"], "gs://b/r");
  EXPECT_EQ(d["workers"], json::parse(R"([{"rank":0,"node_id":"node-a","status":"SUCCEEDED","pid":4100,"exit_code":0},
                                          {"rank":1,"node_id":"node-b","status":"SUCCEEDED","pid":4200,"exit_code":0}])"));
  EXPECT_TRUE(d["pending_reason"].is_null());
  EXPECT_TRUE(d["error_type"].is_null());
  // Nothing here is invalid UTF-8: dump() must not throw.
  EXPECT_NO_THROW(d.dump());
}

TEST(JobDetailsJsonTest, DriverInfoShape) {
  JobRecord r = Fresh();
  r.job_id = "02000000";
  r.driver_info = DriverInfo{"02000000", "10.0.0.5", "41234"};
  json d = JobDetailsJson(r);
  EXPECT_EQ(d["job_id"], "02000000");
  EXPECT_EQ(d["driver_info"], json::parse(R"({"id":"02000000","node_ip_address":"10.0.0.5","pid":"41234"})"));
}

// ---- persistence ------------------------------------------------------------------

TEST(JobRecordJsonTest, RoundTripIsExact) {
  std::vector<JobRecord> records;
  records.push_back(Fresh());
  JobRecord full = Fresh(
      R"({"entrypoint":"python t.py","submission_id":"rt","runtime_env":{"working_dir":"gcs://_ray_pkg_a.zip"},)"
      R"("metadata":{"k":"v"},"entrypoint_label_selector":{"zone":"a"},"failure":{"max_failures":2},)"
      R"("scaling":{"num_workers":3,"resources_per_worker":{"CPU":0.1,"memory":1e9}},"results_uri":"file:///r"})");
  ASSERT_TRUE(Transition(full, JobStatus::kRunning, "", kT0 + 1).ok());
  ASSERT_TRUE(Transition(full, JobStatus::kPending, "restarting after node-b died", kT0 + 2).ok());
  full.pending_reason = "waiting";
  full.workers = {{0, "n0", "PENDING", std::nullopt, std::nullopt}, {1, "n1", "FAILED", 77, -9}};
  full.driver_node_id = "n0";
  full.driver_agent_http_address = "http://n0:1";
  full.job_id = "01000000";
  full.driver_info = DriverInfo{"01000000", "1.2.3.4", "99"};
  full.stop_requested = true;
  full.internal = {{"master_port", 29500}, {"note", "x"}};
  records.push_back(full);
  JobRecord failed = Fresh(R"({"entrypoint":"exit 3","entrypoint_num_cpus":0.3333333333333333})");
  ASSERT_TRUE(Transition(failed, JobStatus::kRunning, "", kT0 + 3).ok());
  failed.driver_exit_code = 3;
  ASSERT_TRUE(Transition(failed, JobStatus::kFailed, FailedEntrypointMessage(3, "boom\n"), kT0 + 4,
                         kErrorEntrypointCommandError)
                  .ok());
  records.push_back(failed);

  for (const JobRecord& r : records) {
    json j = JobRecordToJson(r);
    // Through text, as the head's SQLite store keeps it.
    auto back = JobRecordFromJson(json::parse(j.dump()));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back.value(), r) << j.dump();
    EXPECT_EQ(JobRecordToJson(back.value()), j);
  }
}

TEST(JobRecordJsonTest, MalformedDocumentsAreRefused) {
  json good = JobRecordToJson(Fresh());
  EXPECT_FALSE(JobRecordFromJson(json::array()).ok());
  auto broken = [&](const char* key, json value) {
    json j = good;
    if (value.is_discarded()) {
      j.erase(key);
    } else {
      j[key] = value;
    }
    auto r = JobRecordFromJson(j);
    EXPECT_FALSE(r.ok()) << key << " = " << value.dump();
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    }
    return r.ok() ? std::string() : r.status().message();
  };
  EXPECT_NE(broken("format", 2).find("unsupported format 2"), std::string::npos);
  EXPECT_NE(broken("status", "DONE").find("'status'"), std::string::npos);
  EXPECT_NE(broken("start_time_ms", "soon").find("'start_time_ms'"), std::string::npos);
  EXPECT_NE(broken("workers", json::object()).find("'workers'"), std::string::npos);
  EXPECT_NE(broken("spec", json::parse(R"({"entrypoint":5})")).find("job record: spec"), std::string::npos);
  broken("spec", json(json::value_t::discarded));
  broken("attempt", 1.5);
  broken("driver_exit_code", "0");
  broken("internal", json::array());
  json bad_worker = good;
  bad_worker["workers"] = json::parse(R"([{"rank":0,"node_id":"n","status":"RUNNING","pid":"12","exit_code":null}])");
  EXPECT_FALSE(JobRecordFromJson(bad_worker).ok());
}

// ---- lifecycle ----------------------------------------------------------------------

TEST(TransitionTest, AllowedEdges) {
  using S = JobStatus;
  const S all[] = {S::kPending, S::kRunning, S::kStopped, S::kSucceeded, S::kFailed};
  auto allowed = [](S from, S to) {
    if (IsTerminal(from)) return false;
    if (from == to) return true;
    if (from == S::kPending) return to == S::kRunning || to == S::kStopped || to == S::kFailed;
    return true;  // RUNNING -> anything else, PENDING (restart) included
  };
  for (S from : all) {
    for (S to : all) EXPECT_EQ(CanTransition(from, to), allowed(from, to)) << JobStatusName(from) << "->" << JobStatusName(to);
  }
  EXPECT_FALSE(CanTransition(S::kPending, S::kSucceeded));
}

TEST(TransitionTest, TerminalNeverChangesAndRefusalChangesNothing) {
  for (JobStatus terminal : {JobStatus::kStopped, JobStatus::kSucceeded, JobStatus::kFailed}) {
    JobRecord r = Fresh();
    ASSERT_TRUE(Transition(r, JobStatus::kRunning, "", kT0 + 1).ok());
    ASSERT_TRUE(Transition(r, terminal, "", kT0 + 2).ok());
    const JobRecord before = r;
    for (JobStatus to : {JobStatus::kPending, JobStatus::kRunning, JobStatus::kStopped, JobStatus::kSucceeded,
                         JobStatus::kFailed}) {
      Status s = Transition(r, to, "late", kT0 + 99, "X");
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
      EXPECT_EQ(r, before);
    }
  }
  JobRecord r = Fresh();
  Status s = Transition(r, JobStatus::kSucceeded, "", kT0 + 1);
  EXPECT_EQ(s.message(), "job s1 cannot go from PENDING to SUCCEEDED");
  EXPECT_EQ(r, Fresh());
}

TEST(TransitionTest, EndTimeSetOnceOnEnteringTerminal) {
  JobRecord r = Fresh();
  ASSERT_TRUE(Transition(r, JobStatus::kRunning, "", kT0 + 10).ok());
  EXPECT_FALSE(r.end_time_ms.has_value());
  ASSERT_TRUE(Transition(r, JobStatus::kRunning, "still going", kT0 + 20).ok());
  EXPECT_FALSE(r.end_time_ms.has_value());
  EXPECT_EQ(r.message, "still going");
  ASSERT_TRUE(Transition(r, JobStatus::kStopped, "", kT0 + 30).ok());
  EXPECT_EQ(r.end_time_ms, kT0 + 30);
  EXPECT_FALSE(Transition(r, JobStatus::kStopped, "", kT0 + 40).ok());
  EXPECT_EQ(r.end_time_ms, kT0 + 30);
  EXPECT_EQ(r.message, "Job was intentionally stopped.");
  // A clock that went backwards never puts end before start.
  JobRecord early = Fresh();
  ASSERT_TRUE(Transition(early, JobStatus::kFailed, "", kT0 - 5000).ok());
  EXPECT_EQ(early.end_time_ms, kT0);
}

TEST(TransitionTest, DefaultMessagesFilledIn) {
  JobRecord r = Fresh();
  ASSERT_TRUE(Transition(r, JobStatus::kRunning, "", kT0 + 1).ok());
  EXPECT_EQ(r.message, "Job is currently running.");
  JobRecord f = Fresh();
  ASSERT_TRUE(Transition(f, JobStatus::kFailed, "", kT0 + 1).ok());
  EXPECT_EQ(f.message, "Job failed.");
  JobRecord p = Fresh();
  ASSERT_TRUE(Transition(p, JobStatus::kStopped, "", kT0 + 1).ok());
  EXPECT_EQ(p.message, "Job was intentionally stopped.");
  EXPECT_FALSE(p.driver_exit_code.has_value());
}

TEST(TransitionTest, ErrorTypeOnlyWhileFailed) {
  JobRecord r = Fresh();
  ASSERT_TRUE(Transition(r, JobStatus::kRunning, "", kT0 + 1, kErrorEntrypointCommandError).ok());
  EXPECT_FALSE(r.error_type.has_value());
  ASSERT_TRUE(Transition(r, JobStatus::kFailed, "Job supervisor actor died: node gone", kT0 + 2,
                         kErrorSupervisorDied)
                  .ok());
  EXPECT_EQ(r.error_type, "JOB_SUPERVISOR_ACTOR_DIED");
  EXPECT_EQ(r.message, "Job supervisor actor died: node gone");
}

TEST(TransitionTest, RestartBumpsAttemptAndClearsTheAttemptState) {
  JobRecord r = Fresh(R"({"entrypoint":"t","submission_id":"s1","scaling":{"num_workers":2},"failure":{"max_failures":1}})");
  r.pending_reason = "needs 2 x {CPU: 1}; free: no nodes";
  ASSERT_TRUE(Transition(r, JobStatus::kPending, "", kT0 + 1).ok());  // PENDING -> PENDING keeps the reason
  EXPECT_EQ(r.pending_reason, "needs 2 x {CPU: 1}; free: no nodes");
  r.workers = {{0, "a", "RUNNING", 1, std::nullopt}, {1, "b", "RUNNING", 2, std::nullopt}};
  r.driver_node_id = "a";
  ASSERT_TRUE(Transition(r, JobStatus::kRunning, "", kT0 + 2).ok());
  EXPECT_TRUE(r.pending_reason.empty());
  EXPECT_EQ(r.attempt, 0);
  EXPECT_TRUE(CanRestart(r));
  r.driver_exit_code = 1;
  ASSERT_TRUE(Transition(r, JobStatus::kPending, "worker 1 on node b failed; restarting (attempt 1 of 1)", kT0 + 3).ok());
  EXPECT_EQ(r.attempt, 1);
  EXPECT_TRUE(r.workers.empty());
  EXPECT_FALSE(r.driver_exit_code.has_value());
  EXPECT_EQ(r.driver_node_id, "a");  // kept: the old attempt's log stays reachable
  EXPECT_FALSE(r.end_time_ms.has_value());
  EXPECT_FALSE(CanRestart(r));
  ASSERT_TRUE(Transition(r, JobStatus::kRunning, "", kT0 + 4).ok());
  EXPECT_EQ(r.attempt, 1);  // only RUNNING -> PENDING counts
}

TEST(TransitionTest, CanRestartHonoursMaxFailures) {
  JobRecord none = Fresh();
  EXPECT_FALSE(CanRestart(none));  // default max_failures 0
  JobRecord unlimited = Fresh(R"({"entrypoint":"t","failure":{"max_failures":-1}})");
  unlimited.attempt = 1000;
  EXPECT_TRUE(CanRestart(unlimited));
  JobRecord two = Fresh(R"({"entrypoint":"t","failure":{"max_failures":2}})");
  two.attempt = 1;
  EXPECT_TRUE(CanRestart(two));
  two.attempt = 2;
  EXPECT_FALSE(CanRestart(two));
}

TEST(TransitionTest, InvalidUtf8InMessageIsReplaced) {
  JobRecord r = Fresh();
  ASSERT_TRUE(Transition(r, JobStatus::kFailed, "bad \xff\xfe bytes", kT0 + 1).ok());
  EXPECT_EQ(r.message, "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes");
  EXPECT_NO_THROW(JobDetailsJson(r).dump());
}

// ---- default messages (§3.5) ------------------------------------------------------

TEST(DefaultMessageTest, PendingVariants) {
  const std::string base = "Job has not started yet.";
  const std::string res = " It may be waiting for resources (CPUs, GPUs, memory, custom resources) to become available.";
  const std::string env = " It may be waiting for the runtime environment to be set up.";
  auto pending = [](std::string_view body) { return DefaultMessage(JobStatus::kPending, Spec(body)); };
  EXPECT_EQ(pending(R"({"entrypoint":"t"})"), base);
  EXPECT_EQ(pending(R"({"entrypoint":"t","entrypoint_num_cpus":0})"), base);
  EXPECT_EQ(pending(R"({"entrypoint":"t","entrypoint_num_cpus":100000})"), base + res);  // §9.2 F2
  EXPECT_EQ(pending(R"({"entrypoint":"t","entrypoint_num_gpus":0.5})"), base + res);
  EXPECT_EQ(pending(R"({"entrypoint":"t","entrypoint_memory":1})"), base + res);
  EXPECT_EQ(pending(R"({"entrypoint":"t","entrypoint_resources":{}})"), base);
  EXPECT_EQ(pending(R"({"entrypoint":"t","entrypoint_resources":{"x":0}})"), base + res);  // Ray: dict not in [None, {}]
  EXPECT_EQ(pending(R"({"entrypoint":"t","scaling":{"num_workers":1}})"), base + res);
  EXPECT_EQ(pending(R"({"entrypoint":"t","runtime_env":{}})"), base);
  EXPECT_EQ(pending(R"({"entrypoint":"t","runtime_env":{"env_vars":{}}})"), base + env);
  EXPECT_EQ(pending(R"({"entrypoint":"t","entrypoint_num_cpus":1,"runtime_env":{"pip":["x"]}})"), base + res + env);
}

TEST(DefaultMessageTest, OtherStatuses) {
  JobSpec s = Spec(R"({"entrypoint":"t"})");
  EXPECT_EQ(DefaultMessage(JobStatus::kRunning, s), "Job is currently running.");
  EXPECT_EQ(DefaultMessage(JobStatus::kStopped, s), "Job was intentionally stopped.");
  EXPECT_EQ(DefaultMessage(JobStatus::kSucceeded, s), "Job finished successfully.");
  EXPECT_EQ(DefaultMessage(JobStatus::kFailed, s), "Job failed.");
}

// ---- failed entrypoint message -----------------------------------------------------

TEST(FailedEntrypointMessageTest, LastTenLines) {
  std::string log;
  for (int i = 1; i <= 15; ++i) log += "line" + std::to_string(i) + "\n";
  std::string tail;
  for (int i = 6; i <= 15; ++i) tail += "line" + std::to_string(i) + "\n";
  EXPECT_EQ(FailedEntrypointMessage(3, log),
            "Job entrypoint command failed with exit code 3, last available logs (truncated to 20,000 chars):\n" +
                tail);
  // §9.2 F1
  std::string m = FailedEntrypointMessage(3, "boom\n");
  EXPECT_EQ(m.rfind("Job entrypoint command failed with exit code 3", 0), 0u);
  EXPECT_NE(m.find("boom"), std::string::npos);
  // A last line without a newline counts as a line.
  EXPECT_EQ(FailedEntrypointMessage(1, "a\nb\nc"),
            "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\na\nb\nc");
  EXPECT_EQ(FailedEntrypointMessage(1, std::string(11, '\n') + "x\n"),
            "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n" +
                std::string(9, '\n') + "x\n");
}

TEST(FailedEntrypointMessageTest, NoLogs) {
  EXPECT_EQ(FailedEntrypointMessage(7, ""), "Job entrypoint command failed with exit code 7. No logs available.");
  EXPECT_EQ(FailedEntrypointMessage(-9, ""), "Job entrypoint command failed with exit code -9. No logs available.");
}

TEST(FailedEntrypointMessageTest, TruncatedTo20000Bytes) {
  std::string huge(50000, 'x');
  std::string m = FailedEntrypointMessage(2, "first\n" + huge + "\n");
  const std::string prefix =
      "Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 chars):\n";
  ASSERT_EQ(m.rfind(prefix, 0), 0u);
  EXPECT_EQ(m.size() - prefix.size(), 20000u);
  EXPECT_EQ(m.substr(prefix.size()), huge.substr(0, 19999) + "\n");
  // Never starts inside a UTF-8 sequence, and the result is valid UTF-8.
  std::string euros;
  for (int i = 0; i < 10000; ++i) euros += "\xE2\x82\xAC";  // 30000 bytes
  m = FailedEntrypointMessage(2, euros);
  EXPECT_LE(m.size() - prefix.size(), 20000u);
  EXPECT_EQ((m.size() - prefix.size()) % 3, 0u);
  EXPECT_NO_THROW(json(m).dump());
}

}  // namespace
}  // namespace cohort::jobs
