// Table tests of the pure CohortJob reconcile: every transition (cluster
// created, submission, running, success, failure with backoff, deadline,
// suspend and resume, TTL cleanup, cluster selector, an operator restart
// between the status write and the submission) against a tiny world that
// applies the actions.
#include <gtest/gtest.h>

#include "cohort/k8s/job_reconcile.h"
#include "cohort/k8s/reconcile.h"

namespace cohort::k8s {
namespace {

using json = nlohmann::json;

json Job(json spec_extra = json::object()) {
  json job = {{"apiVersion", "cohort.dev/v1"},
              {"kind", "CohortJob"},
              {"metadata", {{"name", "mnist"}, {"namespace", "ml"}, {"uid", "job-uid"}, {"generation", 1}}},
              {"spec",
               {{"entrypoint", "fashion_mnist --epochs 3"},
                {"scaling", {{"num_workers", 2}, {"resources_per_worker", {{"GPU", 1}}}}},
                {"results_uri", "gs://bucket/run1"},
                {"runtime_env", {{"env_vars", {{"A", "1"}}}}},
                {"clusterSpec", {{"headGroupSpec", {{"template", json::object()}}}}}}}};
  job["spec"].merge_patch(spec_extra);
  return job;
}

// The head and the API server, as the operator would see them.
struct World {
  json job = Job();
  JobObserved obs;
  int64_t now_ms = 1'800'000'000'000;  // 2027-01-15T08:00:00Z
  std::map<std::string, json> head_jobs;  // submission id -> details
  int submissions = 0;
  bool head_up = true;
  bool job_deleted = false;
  bool hide_job_once = false;  // the next pass does not see the head's job

  std::string Now() const {
    std::time_t t = now_ms / 1000;
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
  }
  JobReconcileResult Step() {
    obs.head_reachable = head_up && obs.cluster.has_value();
    obs.head_job.reset();
    const std::string id = job.contains("status") ? job["status"].value("submissionId", "") : "";
    if (obs.head_reachable && head_jobs.count(id) && !hide_job_once) obs.head_job = head_jobs[id];
    hide_job_once = false;
    JobReconcileOptions o;
    o.now = Now();
    o.now_ms = now_ms;
    auto r = ReconcileJob(job, obs, o);
    job["status"] = r.status;  // the operator writes the status first
    for (const auto& a : r.actions) {
      switch (a.kind) {
        case JobAction::Kind::kCreateCluster: obs.cluster = a.body; break;
        case JobAction::Kind::kDeleteCluster: obs.cluster.reset(); break;
        case JobAction::Kind::kSubmit:
          ++submissions;
          if (!head_jobs.count(a.name))  // the head refuses a duplicate id
            head_jobs[a.name] = {{"submission_id", a.name}, {"job_id", a.name}, {"status", "PENDING"}};
          break;
        case JobAction::Kind::kStopJob: head_jobs[a.name]["status"] = "STOPPED"; break;
        case JobAction::Kind::kDeleteJob: job_deleted = true; break;
      }
    }
    return r;
  }
  json& HeadJob() { return head_jobs[job["status"]["submissionId"].get<std::string>()]; }
  std::string Condition(const std::string& type) {
    for (const auto& c : job["status"]["conditions"])
      if (c["type"] == type) return c["status"].get<std::string>() + "/" + c["reason"].get<std::string>();
    return "";
  }
};

int Count(const JobReconcileResult& r, JobAction::Kind k) {
  int n = 0;
  for (const auto& a : r.actions) n += a.kind == k;
  return n;
}

TEST(JobReconcileTest, ClusterThenSubmissionThenRunningThenSucceeded) {
  World w;
  auto r = w.Step();
  ASSERT_EQ(Count(r, JobAction::Kind::kCreateCluster), 1);
  const json& cluster = *w.obs.cluster;
  EXPECT_EQ(cluster["metadata"]["name"], "mnist-cluster");
  EXPECT_EQ(cluster["metadata"]["ownerReferences"][0]["uid"], "job-uid");
  EXPECT_EQ(cluster["metadata"]["ownerReferences"][0]["kind"], "CohortJob");
  EXPECT_EQ(cluster["spec"], w.job["spec"]["clusterSpec"]);
  EXPECT_EQ(w.job["status"]["clusterName"], "mnist-cluster");

  r = w.Step();  // the cluster exists and its head answers: submit
  ASSERT_EQ(Count(r, JobAction::Kind::kSubmit), 1);
  EXPECT_EQ(w.job["status"]["submissionId"], "cohortjob-job-uid-0");
  const json& req = r.actions[0].body;
  EXPECT_EQ(req["submission_id"], "cohortjob-job-uid-0");
  EXPECT_EQ(req["entrypoint"], "fashion_mnist --epochs 3");
  EXPECT_EQ(req["scaling"]["num_workers"], 2);
  EXPECT_EQ(req["results_uri"], "gs://bucket/run1");
  EXPECT_EQ(req["runtime_env"]["env_vars"]["A"], "1");
  EXPECT_EQ(w.Condition("Submitted"), "True/Submitted");

  r = w.Step();  // PENDING on the head: nothing to do
  EXPECT_TRUE(r.actions.empty());
  EXPECT_EQ(w.job["status"]["jobStatus"], "PENDING");

  w.HeadJob()["status"] = "RUNNING";
  w.obs.metrics = json{{"epoch", 1}, {"epochs", 3}, {"val_loss", 0.5}, {"samples_per_sec", 9000}, {"epoch_time_s", 7.5}};
  r = w.Step();
  EXPECT_EQ(w.Condition("Running"), "True/Running");
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0].reason, "Running");
  const json& p = w.job["status"]["progress"];
  EXPECT_EQ(p["epoch"], 1);
  EXPECT_EQ(p["percent"], 33);
  EXPECT_EQ(p["estimatedSecondsLeft"], 15);
  EXPECT_EQ(p["metrics"]["val_loss"], 0.5);

  // Progress is rewritten at most every 10 s unless the epoch moves.
  w.obs.metrics = json{{"epoch", 1}, {"epochs", 3}, {"val_loss", 0.4}};
  w.now_ms += 2000;
  r = w.Step();
  EXPECT_FALSE(r.status_changed);
  w.now_ms += 10000;
  r = w.Step();
  EXPECT_TRUE(r.status_changed);
  EXPECT_EQ(w.job["status"]["progress"]["metrics"]["val_loss"], 0.4);

  w.HeadJob()["status"] = "SUCCEEDED";
  w.HeadJob()["results"] = json::array({{{"uri", "gs://bucket/run1/model.pt"}, {"crc32c", "AAAAAA=="}}});
  r = w.Step();
  EXPECT_EQ(w.Condition("Succeeded"), "True/Succeeded");
  EXPECT_EQ(w.Condition("Running"), "False/Succeeded");
  EXPECT_FALSE(w.job["status"]["endTime"].get<std::string>().empty());
  EXPECT_EQ(w.job["status"]["results"][0]["uri"], "gs://bucket/run1/model.pt");
  // Finished, no shutdown asked: the cluster stays, nothing more happens.
  r = w.Step();
  EXPECT_TRUE(r.actions.empty());
  EXPECT_FALSE(r.status_changed);
  EXPECT_TRUE(w.obs.cluster.has_value());
  EXPECT_EQ(w.submissions, 1);
}

TEST(JobReconcileTest, AnOperatorRestartBetweenStatusAndSubmitNeverSubmitsTwice) {
  World w;
  w.Step();                  // cluster
  w.head_up = false;         // the head does not answer yet
  auto r = w.Step();         // the id is written to the status, no call
  EXPECT_EQ(Count(r, JobAction::Kind::kSubmit), 0);
  EXPECT_EQ(w.job["status"]["submissionId"], "cohortjob-job-uid-0");
  EXPECT_EQ(w.job["status"]["message"], "submitting");
  w.head_up = true;
  r = w.Step();              // submitted with the same id
  EXPECT_EQ(Count(r, JobAction::Kind::kSubmit), 1);
  // A pass that does not see the job it submitted (the operator restarted
  // before the head had it, a read raced) submits the same id again, which
  // the head refuses: there is still one job, and the next pass finds it.
  w.hide_job_once = true;
  r = w.Step();
  EXPECT_EQ(Count(r, JobAction::Kind::kSubmit), 1);
  EXPECT_EQ(r.actions[0].name, "cohortjob-job-uid-0");
  EXPECT_EQ(w.head_jobs.size(), 1u);
  w.HeadJob()["status"] = "RUNNING";
  r = w.Step();
  EXPECT_EQ(Count(r, JobAction::Kind::kSubmit), 0);
  EXPECT_EQ(w.job["status"]["jobStatus"], "RUNNING");
}

TEST(JobReconcileTest, FailuresAreSubmittedAgainUpToTheBackoffLimit) {
  World w;
  w.job = Job({{"backoffLimit", 2}});
  w.Step();
  w.Step();
  for (int attempt = 0; attempt < 2; ++attempt) {
    w.HeadJob()["status"] = "FAILED";
    w.HeadJob()["message"] = "rank 1 exited with code 1";
    auto r = w.Step();
    ASSERT_EQ(Count(r, JobAction::Kind::kSubmit), 1) << attempt;
    EXPECT_EQ(w.job["status"]["attempt"], attempt + 1);
    EXPECT_EQ(w.job["status"]["submissionId"], "cohortjob-job-uid-" + std::to_string(attempt + 1));
    EXPECT_EQ(r.actions[0].reason, "Resubmitted");
    EXPECT_TRUE(w.job["status"]["endTime"].is_null());
  }
  w.HeadJob()["status"] = "FAILED";
  auto r = w.Step();
  EXPECT_EQ(Count(r, JobAction::Kind::kSubmit), 0);
  EXPECT_EQ(w.Condition("Failed"), "True/BackoffLimitExceeded");
  EXPECT_EQ(w.job["status"]["failed"], 3);
  EXPECT_EQ(w.submissions, 3);
}

// A long message of multi-byte characters is shortened on a character
// boundary: the status stays valid JSON (a cut character would make every
// status write fail).
TEST(JobReconcileTest, LongMessagesAreCutOnCharacterBoundaries) {
  World w;
  w.Step();
  w.Step();
  std::string msg;
  for (int i = 0; i < 700; ++i) msg += "\xc3\xa9";  // "é" x 700 = 1400 bytes
  w.HeadJob()["status"] = "FAILED";
  w.HeadJob()["message"] = "x" + msg;  // odd offset: byte 1024 is inside a character
  w.Step();
  EXPECT_NO_THROW((void)w.job.dump());
  const std::string got = w.job["status"]["message"];
  EXPECT_LE(got.size(), 1024u + 3);
  EXPECT_EQ(got.substr(got.size() - 3), "...");
}

TEST(JobReconcileTest, WithoutBackoffOneFailureFailsTheJob) {
  World w;
  w.Step();
  w.Step();
  w.HeadJob()["status"] = "FAILED";
  w.HeadJob()["message"] = "the entrypoint exited with code 2";
  w.Step();
  EXPECT_EQ(w.Condition("Failed"), "True/JobFailed");
  EXPECT_EQ(w.job["status"]["message"], "the entrypoint exited with code 2");
}

TEST(JobReconcileTest, TheDeadlineStopsTheJobAndFailsIt) {
  World w;
  w.job = Job({{"activeDeadlineSeconds", 60}});
  w.Step();
  w.Step();
  w.HeadJob()["status"] = "RUNNING";
  w.now_ms += 59'000;
  auto r = w.Step();
  EXPECT_EQ(Count(r, JobAction::Kind::kStopJob), 0);
  w.now_ms += 1'000;
  r = w.Step();
  ASSERT_EQ(Count(r, JobAction::Kind::kStopJob), 1);
  EXPECT_EQ(r.actions[0].name, "cohortjob-job-uid-0");
  EXPECT_EQ(w.Condition("Failed"), "True/DeadlineExceeded");
  EXPECT_EQ(w.HeadJob()["status"], "STOPPED");
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_TRUE(r.events[0].warning);
  r = w.Step();  // finished: nothing more
  EXPECT_TRUE(r.actions.empty());
}

TEST(JobReconcileTest, SuspendCreatesNothingAndResumeStartsIt) {
  World w;
  w.job = Job({{"suspend", true}});
  auto r = w.Step();
  EXPECT_TRUE(r.actions.empty());
  EXPECT_FALSE(w.obs.cluster.has_value());
  EXPECT_EQ(w.Condition("Suspended"), "True/Suspended");
  w.job["spec"]["suspend"] = false;  // Kueue admits it
  r = w.Step();
  EXPECT_EQ(Count(r, JobAction::Kind::kCreateCluster), 1);
  EXPECT_EQ(w.Condition("Suspended"), "False/Resumed");
  w.Step();
  w.HeadJob()["status"] = "RUNNING";
  w.Step();
  // Suspended while running: the job is stopped, the cluster deleted; the
  // resume submits a new attempt, not counted as a failure.
  w.job["spec"]["suspend"] = true;
  r = w.Step();
  EXPECT_EQ(Count(r, JobAction::Kind::kStopJob), 1);
  EXPECT_EQ(Count(r, JobAction::Kind::kDeleteCluster), 1);
  EXPECT_FALSE(w.job["status"].contains("submissionId"));
  w.job["spec"]["suspend"] = false;
  w.Step();  // cluster
  r = w.Step();
  ASSERT_EQ(Count(r, JobAction::Kind::kSubmit), 1);
  EXPECT_EQ(r.actions[0].name, "cohortjob-job-uid-1");
  EXPECT_FALSE(w.job["status"].contains("failed"));
}

TEST(JobReconcileTest, TtlDeletesTheClusterThenTheJob) {
  World w;
  w.job = Job({{"shutdownAfterJobFinishes", true}, {"ttlSecondsAfterFinished", 30}});
  w.Step();
  w.Step();
  w.HeadJob()["status"] = "SUCCEEDED";
  w.Step();
  w.now_ms += 29'000;
  auto r = w.Step();
  EXPECT_TRUE(r.actions.empty());
  w.now_ms += 1'000;
  r = w.Step();
  ASSERT_EQ(Count(r, JobAction::Kind::kDeleteCluster), 1);
  EXPECT_FALSE(w.job_deleted);
  r = w.Step();
  ASSERT_EQ(Count(r, JobAction::Kind::kDeleteJob), 1);
  EXPECT_TRUE(w.job_deleted);
}

TEST(JobReconcileTest, ClusterSelectorWaitsForTheClusterAndNeverDeletesIt) {
  World w;
  w.job = Job({{"clusterSpec", nullptr}, {"clusterSelector", {{"clusterName", "shared"}}},
               {"shutdownAfterJobFinishes", true}});
  auto r = w.Step();
  EXPECT_TRUE(r.actions.empty());
  EXPECT_NE(w.job["status"]["message"].get<std::string>().find("clusterSelector"), std::string::npos);
  w.obs.cluster = json{{"metadata", {{"name", "shared"}, {"uid", "other"}}}};
  r = w.Step();
  ASSERT_EQ(Count(r, JobAction::Kind::kSubmit), 1);
  EXPECT_EQ(w.job["status"]["clusterName"], "shared");
  w.HeadJob()["status"] = "SUCCEEDED";
  w.Step();
  r = w.Step();  // TTL 0: not our cluster, so the CohortJob alone goes
  ASSERT_EQ(r.actions.size(), 1u);
  EXPECT_EQ(r.actions[0].kind, JobAction::Kind::kDeleteJob);
  EXPECT_TRUE(w.obs.cluster.has_value());
}

TEST(JobReconcileTest, AClusterOfThatNameThatIsNotOursFailsTheJob) {
  World w;
  w.obs.cluster = json{{"metadata", {{"name", "mnist-cluster"}, {"uid", "someone-else"}}}};
  auto r = w.Step();
  EXPECT_TRUE(r.actions.empty());
  EXPECT_EQ(w.Condition("Failed"), "True/ClusterConflict");
}

TEST(JobReconcileTest, InvalidSpecsFailWithTheReasonAndDoNothing) {
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"entrypoint", ""}}, "entrypoint"},
      {{{"entrypoint", 5}}, "entrypoint"},
      {{{"clusterSelector", {{"clusterName", "x"}}}}, "exactly one"},
      {{{"clusterSpec", nullptr}}, "exactly one"},
      {{{"clusterSpec", "big"}}, "clusterSpec"},
      {{{"backoffLimit", -1}}, "backoffLimit"},
      {{{"backoffLimit", 1.5}}, "backoffLimit"},
      {{{"activeDeadlineSeconds", 0}}, "activeDeadlineSeconds"},
      {{{"ttlSecondsAfterFinished", "30"}}, "ttlSecondsAfterFinished"},
      {{{"suspend", "yes"}}, "suspend"},
      {{{"scaling", 2}}, "scaling"},
      {{{"activeDeadlineSeconds", 18446744073709551615ull}}, "activeDeadlineSeconds"},
      {{{"runtime_env", {{"working_dir", "configmap://Not_A_Name"}}}}, "does not name a ConfigMap"},
      {{{"runtime_env", {{"working_dir", 7}}}}, "working_dir"},
  };
  for (const auto& [patch, what] : cases) {
    World w;
    w.job["spec"].merge_patch(patch);
    auto r = w.Step();
    EXPECT_NE(r.error.find(what), std::string::npos) << patch.dump() << ": " << r.error;
    EXPECT_TRUE(r.actions.empty()) << patch.dump();
    EXPECT_EQ(w.Condition("Failed"), "True/InvalidSpec") << patch.dump();
  }
  World w;
  w.job["metadata"]["name"] = std::string(46, 'a');
  EXPECT_NE(w.Step().error.find("45"), std::string::npos);
  for (const json& junk : {json(nullptr), json(5), json::array(), json("x")})
    EXPECT_FALSE(ReconcileJob(junk, JobObserved{}, JobReconcileOptions{}).error.empty());
  // A status of the wrong types (edited by hand) is read safely.
  World odd;
  odd.Step();
  odd.job["status"]["attempt"] = "three";
  odd.job["status"]["failed"] = -4;
  EXPECT_NO_THROW(odd.Step());
  EXPECT_EQ(odd.job["status"]["submissionId"], "cohortjob-job-uid-0");
}

}  // namespace
}  // namespace cohort::k8s
