// The CohortJob reconcile step as a pure function, like Reconcile for
// CohortCluster (reconcile.h): (the CohortJob, the cluster it runs on, what
// the head says of its job, the clock) -> the writes and head calls that
// move it on, plus its new status. No I/O; table-testable.
//
// Life of a CohortJob (docs/gke.md, deploy/crds/cohort.dev_cohortjobs.yaml):
//   suspend: nothing is created (a created cluster is deleted, a submitted
//     job stopped); flipping it to false starts the job (Kueue admission).
//   cluster: spec.clusterSpec -> a CohortCluster "<job>-cluster" owned by the
//     job; spec.clusterSelector -> an existing cluster (the operator finds it).
//   submission: through the head's HTTP API with the cluster's token; the
//     submission id is "cohortjob-<uid>-<attempt>", written to the status
//     before the call, so an operator restart never submits twice (the head
//     refuses a second submission of an id, which counts as submitted).
//   progress: the head's status and the job's last reported metrics, at
//     most every progress_interval_ms.
//   backoffLimit: a job the head FAILED is submitted again (attempt + 1) up
//     to backoffLimit times; activeDeadlineSeconds: a job still running then
//     is stopped and the CohortJob fails with DeadlineExceeded.
//   shutdownAfterJobFinishes + ttlSecondsAfterFinished: after the TTL the
//     cluster it created is deleted, then the CohortJob itself.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cohort::k8s {

inline constexpr const char* kJobKind = "CohortJob";
inline constexpr const char* kJobPlural = "cohortjobs";
inline constexpr const char* kLabelJob = "cohort.dev/job";

// What the operator saw of the job's cluster and head.
struct JobObserved {
  // The CohortCluster the job runs on: its own (clusterSpec) or the selected
  // one (clusterSelector); nullopt when there is none (yet).
  std::optional<nlohmann::json> cluster;
  // The head answered GET /api/jobs/<submission id> (any HTTP status).
  bool head_reachable = false;
  // The head's job details for status.submissionId (nullopt: no such job,
  // or not asked because nothing was submitted).
  std::optional<nlohmann::json> head_job;
  // The job's last reported metrics (GET /api/jobs/<id>/metrics "latest").
  std::optional<nlohmann::json> metrics;
};

struct JobReconcileOptions {
  std::string now = "1970-01-01T00:00:00Z";  // RFC 3339, for status times
  int64_t now_ms = 0;                        // the same instant, Unix ms
  int64_t progress_interval_ms = 10000;      // progress written at most this often
};

struct JobAction {
  enum class Kind {
    kCreateCluster,  // body: the CohortCluster
    kDeleteCluster,  // name: the cluster
    kSubmit,         // body: the REST submit request (POST /api/jobs/)
    kStopJob,        // name: the submission id (POST /api/jobs/<id>/stop)
    kDeleteJob,      // the CohortJob itself (TTL)
  };
  Kind kind = Kind::kSubmit;
  std::string name;
  nlohmann::json body;
  std::string reason;   // Event reason (Submitted, ClusterCreated, ...)
  std::string message;  // Event message
};
std::string JobActionName(JobAction::Kind kind);

struct JobEvent {
  std::string reason;  // Suspended, Resumed, Running, Succeeded, DeadlineExceeded, ...
  std::string message;
  bool warning = false;
};

struct JobReconcileResult {
  std::vector<JobAction> actions;  // the status is written before any of them
  std::vector<JobEvent> events;    // condition transitions (actions carry their own)
  nlohmann::json status;           // the CohortJob's new .status
  bool status_changed = false;     // status differs from the observed one
  std::string error;               // spec invalid: status Failed/InvalidSpec
};

// Never throws on any JSON input.
JobReconcileResult ReconcileJob(const nlohmann::json& job, const JobObserved& observed,
                                const JobReconcileOptions& options);

// "<job>-cluster" (the CohortCluster a clusterSpec job creates).
std::string JobClusterName(const std::string& job);
// "cohortjob-<uid>-<attempt>".
std::string SubmissionIdFor(const std::string& uid, int attempt);
// The REST submit request of a CohortJob's spec (entrypoint, scaling,
// failure, results_uri, runtime_env) with `submission_id`.
nlohmann::json SubmitRequestFor(const nlohmann::json& spec, const std::string& submission_id);

}  // namespace cohort::k8s
