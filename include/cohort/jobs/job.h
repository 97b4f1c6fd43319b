// Jobs: the submitted job spec (Ray's JobSubmitRequest plus cohort's scaling,
// failure and results_uri), the stored job record, its JSON forms and the
// lifecycle state machine.
//
// Pure logic, no sockets, no clock: callers pass `now_ms`. The head's job
// manager is the only writer of JobRecords; it calls these functions on its
// event loop. Everything here is thread-compatible (value types, free
// functions; NewSubmissionId is thread-safe).
//
// Wire contract: docs/api.md and shared/spec/ray-jobs-api.md (§2.2 submit
// validation, §3 data model, §4 lifecycle).
//
// ---- Lifecycle state machine (Transition) ---------------------------------
//
//   PENDING -> RUNNING | STOPPED | FAILED
//   RUNNING -> SUCCEEDED | FAILED | STOPPED
//   RUNNING -> PENDING    a restart after a worker or node failure: attempt
//                         += 1 and the gang waits for placement again
//   X -> X                for non-terminal X: rewrites the message only
//   STOPPED, SUCCEEDED, FAILED are terminal: nothing leaves them.
//
// Invariants of a JobRecord, kept by NewJobRecord + Transition:
//   1. A terminal status (STOPPED, SUCCEEDED, FAILED) never changes again; any
//      Transition out of one (even to itself) is FailedPrecondition and leaves
//      the record untouched.
//   2. end_time_ms is set exactly when the status is terminal, once, to the
//      `now_ms` of the transition that entered it (never before start_time_ms).
//   3. message is never empty: a transition without a message gets
//      DefaultMessage(to, spec) (Ray §3.5).
//   4. error_type is set only while FAILED (the caller's value, may be null).
//   5. pending_reason is empty unless the status is PENDING.
//   6. attempt counts restarts: it grows by one on RUNNING -> PENDING and
//      nowhere else; workers and driver_exit_code are cleared then.
//   7. A refused transition changes nothing.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cohort/common/status.h"
#include "cohort/jobs/resources.h"

namespace cohort::jobs {

// ---- Status -----------------------------------------------------------------

enum class JobStatus { kPending, kRunning, kStopped, kSucceeded, kFailed };

// "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED" (the wire names).
std::string_view JobStatusName(JobStatus status);
std::optional<JobStatus> ParseJobStatus(std::string_view name);  // exact, upper-case
bool IsTerminal(JobStatus status);  // STOPPED, SUCCEEDED, FAILED

// error_type values written by cohort (Ray §3.6; the field is an open string).
inline constexpr char kErrorRuntimeEnvSetupFailure[] = "RUNTIME_ENV_SETUP_FAILURE";
inline constexpr char kErrorStartTimeout[] = "JOB_SUPERVISOR_ACTOR_START_TIMEOUT";
inline constexpr char kErrorUnschedulable[] = "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE";
inline constexpr char kErrorSupervisorDied[] = "JOB_SUPERVISOR_ACTOR_DIED";
inline constexpr char kErrorEntrypointStartError[] = "JOB_ENTRYPOINT_COMMAND_START_ERROR";
inline constexpr char kErrorEntrypointCommandError[] = "JOB_ENTRYPOINT_COMMAND_ERROR";

// ---- Spec -----------------------------------------------------------------------

// Placement strategies of a gang (Ray placement groups).
inline constexpr char kPack[] = "PACK";
inline constexpr char kSpread[] = "SPREAD";
inline constexpr char kStrictPack[] = "STRICT_PACK";
inline constexpr char kStrictSpread[] = "STRICT_SPREAD";
bool IsValidPlacementStrategy(std::string_view name);

// `scaling`: run the entrypoint as num_workers gang-placed workers.
struct ScalingSpec {
  static constexpr int kMaxWorkers = 4096;
  int num_workers = 1;                          // 1..kMaxWorkers
  Resources resources_per_worker{{"CPU", 1}};   // as submitted (0s dropped); default 1 CPU
  std::string placement_strategy = kPack;       // PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
  bool operator==(const ScalingSpec&) const = default;
};

// `failure`: restart the whole worker group up to max_failures times.
struct FailureSpec {
  int max_failures = 0;  // -1 = unlimited
  bool operator==(const FailureSpec&) const = default;
};

// Ray's entrypoint_* fields: resources reserved for a non-scaling entrypoint.
struct EntrypointResources {
  std::optional<double> num_cpus;       // entrypoint_num_cpus
  std::optional<double> num_gpus;       // entrypoint_num_gpus
  std::optional<int64_t> memory_bytes;  // entrypoint_memory
  // entrypoint_resources as submitted, zeros kept (Ray's PENDING message tells
  // {"x": 0} from {}); never holds CPU, GPU or memory.
  std::optional<std::map<std::string, double>> custom;

  // Ray's test for the PENDING message: any of the numbers > 0 or a non-empty
  // custom map (even one holding only zeros).
  bool AnyRequested() const;
  // {"CPU": num_cpus, "GPU": num_gpus, "memory": memory_bytes} + custom; 0s dropped.
  Resources ToDemand() const;
  bool operator==(const EntrypointResources&) const = default;
};

struct JobSpec {
  std::string submission_id;  // always set after ParseSubmitRequest
  std::string entrypoint;     // non-empty shell command
  nlohmann::json runtime_env;  // null or an object, as submitted
  std::optional<std::map<std::string, std::string>> metadata;  // as submitted
  EntrypointResources entrypoint_resources;
  std::optional<LabelSelector> label_selector;  // entrypoint_label_selector
  // cohort extensions (docs/api.md). With `scaling` the entrypoint_* resources
  // must be absent; the label selector then applies to every worker.
  std::optional<ScalingSpec> scaling;
  std::optional<FailureSpec> failure;
  std::string results_uri;  // "" = none; else file:///..., gs://bucket/..., s3://bucket/...

  // failure->max_failures, or 0 when `failure` was not given.
  int MaxFailures() const { return failure ? failure->max_failures : 0; }
  bool operator==(const JobSpec&) const = default;
};

// Parses and validates a POST /api/jobs/ body the way Ray does (spec §2.2),
// in this order, returning InvalidArgument with the text the HTTP layer sends
// as a text/plain 400:
//   1. not JSON / not an object -> "request body is not a JSON object: <why>"
//      (Ray answers 500 here; we answer 400.)
//   2. top-level keys whose value is null are dropped.
//   3. the first unknown key (in body order) ->
//      "TypeError: __init__() got an unexpected keyword argument 'xyz'";
//      no entrypoint -> "TypeError: __init__() missing 1 required positional argument: 'entrypoint'".
//   4. Ray's type checks, in Ray's order, e.g.
//      "TypeError: entrypoint must be a string, got <class 'int'>",
//      "TypeError: metadata values must be strings, got <class 'int'>",
//      "TypeError: entrypoint_memory must be an integer, got <class 'float'>".
//      As in Python, JSON booleans pass the number checks (true == 1).
//   5. cohort's own rules: entrypoint not empty; entrypoint_* numbers >= 0;
//      entrypoint_resources without CPU/GPU/memory keys; a well-formed label
//      selector; a submission_id usable as a file name (no '/', '\', control
//      characters, not "." / "..", at most 200 bytes); scaling, failure and
//      results_uri (see docs/api.md), and no entrypoint_* resources together
//      with scaling.
// The submission id is submission_id, else job_id (Ray's deprecated alias),
// else NewSubmissionId() (an empty string counts as absent, as in Python).
Result<JobSpec> ParseSubmitRequest(std::string_view body);

// "raysubmit_" + 16 characters from [A-Za-z0-9] without I l o O 0, from the
// kernel's CSPRNG. Thread-safe.
std::string NewSubmissionId();

// The spec as a submit body with every key present (null when absent):
// ParseSubmitRequest(JobSpecToJson(s).dump()) == s.
nlohmann::json JobSpecToJson(const JobSpec& spec);
// Same validation as ParseSubmitRequest, on an already parsed object.
Result<JobSpec> JobSpecFromJson(const nlohmann::json& j);

// ---- Record ---------------------------------------------------------------------

// One worker of the current attempt of a scaling job (docs/api.md `workers`).
struct WorkerInfo {
  int rank = 0;
  std::string node_id;
  std::string status;  // free text owned by the job manager, e.g. "PENDING", "RUNNING", "SUCCEEDED", "FAILED"
  std::optional<int> pid;
  std::optional<int> exit_code;
  bool operator==(const WorkerInfo&) const = default;
};

// Ray's DriverInfo (set only when a Ray driver registers; cohort leaves it null).
struct DriverInfo {
  std::string id;
  std::string node_ip_address;
  std::string pid;  // a string on the wire, as in Ray
  bool operator==(const DriverInfo&) const = default;
};

struct JobRecord {
  JobSpec spec;
  JobStatus status = JobStatus::kPending;
  std::string message;                   // never empty once made by NewJobRecord
  std::optional<std::string> error_type;
  int64_t start_time_ms = 0;             // submission time (Ray semantics)
  std::optional<int64_t> end_time_ms;    // set on entering a terminal status
  std::optional<int> driver_exit_code;   // entrypoint's (or rank 0's) exit code
  std::optional<std::string> job_id;     // Ray core job id (hex); null in cohort
  std::optional<DriverInfo> driver_info;
  std::optional<std::string> driver_node_id;             // node running the entrypoint / rank 0
  std::optional<std::string> driver_agent_http_address;  // "http://ip:port" of that node's agent
  int attempt = 0;                        // 0 = first run; see invariant 6
  std::vector<WorkerInfo> workers;        // current attempt, by rank
  std::string pending_reason;             // why a PENDING job waits; "" = null
  bool stop_requested = false;            // a stop arrived; the job manager acts on it
  // Head-private state persisted with the record (e.g. a rendezvous port),
  // never shown in job details. Always an object.
  nlohmann::json internal = nlohmann::json::object();
  bool operator==(const JobRecord&) const = default;
};

// A fresh PENDING record: start_time_ms = now_ms, message = DefaultMessage(PENDING).
JobRecord NewJobRecord(JobSpec spec, int64_t now_ms);

// The job-detail object of spec §3.3: all 15 Ray keys always present (null when
// absent; type "SUBMISSION"; start_time/end_time integer ms), plus cohort's
// scaling, failure, results_uri, attempt, workers, pending_reason.
nlohmann::json JobDetailsJson(const JobRecord& record);

// Persistence form (everything, including `internal`); exact round trip:
// JobRecordFromJson(JobRecordToJson(r)) == r. FromJson refuses a malformed or
// foreign document with InvalidArgument naming the field.
nlohmann::json JobRecordToJson(const JobRecord& record);
Result<JobRecord> JobRecordFromJson(const nlohmann::json& j);

// ---- Lifecycle ------------------------------------------------------------------

// Ray's default message for a status written without one (§3.5). PENDING says
// "Job has not started yet." plus the resources sentence when the entrypoint
// requests resources or the job has `scaling`, plus the runtime-env sentence
// when runtime_env is a non-empty object.
std::string DefaultMessage(JobStatus status, const JobSpec& spec);

// Allowed edges: PENDING -> RUNNING | STOPPED | FAILED;
// RUNNING -> SUCCEEDED | FAILED | STOPPED | PENDING (restart);
// a non-terminal status -> itself (updates the message only). Nothing leaves a
// terminal status.
bool CanTransition(JobStatus from, JobStatus to);

// Moves `record` to `to` keeping the invariants at the top of this file:
// FailedPrecondition ("job <id> cannot go from SUCCEEDED to RUNNING") when the
// edge is not allowed. `message` empty -> DefaultMessage(to). `error_type` is
// stored only when `to` is FAILED. Invalid UTF-8 in `message` is replaced.
Status Transition(JobRecord& record, JobStatus to, std::string_view message, int64_t now_ms,
                  std::optional<std::string> error_type = std::nullopt);

// True when a failed attempt may be retried: max_failures == -1 or
// attempt < max_failures.
bool CanRestart(const JobRecord& record);

// The FAILED message for an entrypoint that exited with `exit_code`, built
// from the log's text the way Ray does: the last 10 lines, then at most the
// last 20,000 bytes of those:
//   "Job entrypoint command failed with exit code 3, last available logs
//    (truncated to 20,000 chars):\n<tail>"
// or "Job entrypoint command failed with exit code 3. No logs available." when
// the tail is empty. `log_text` may be the whole log or just its end.
std::string FailedEntrypointMessage(int exit_code, std::string_view log_text);

}  // namespace cohort::jobs
