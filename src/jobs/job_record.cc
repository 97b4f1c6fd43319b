// Job records: status names, default messages (Ray §3.5), the lifecycle state
// machine (invariants in cohort/jobs/job.h), the job-detail JSON (§3.3 +
// cohort's keys) and the persistence form. Pure functions, called by the
// head's job manager on its event loop.
#include <algorithm>
#include <limits>

#include "cohort/jobs/job.h"
#include "json_util.h"

namespace cohort::jobs {
namespace {

using nlohmann::json;

constexpr int kRecordFormat = 1;

json OptString(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }
json OptInt(const std::optional<int>& v) { return v ? json(*v) : json(nullptr); }

json WorkerJson(const WorkerInfo& w) {
  return {{"rank", w.rank}, {"node_id", w.node_id}, {"status", w.status},
          {"pid", OptInt(w.pid)}, {"exit_code", OptInt(w.exit_code)}};
}

json DriverInfoJson(const std::optional<DriverInfo>& d) {
  if (!d) return nullptr;
  return {{"id", d->id}, {"node_ip_address", d->node_ip_address}, {"pid", d->pid}};
}

// ---- Reading the persistence form without exceptions -------------------------

class Reader {
 public:
  explicit Reader(const json& j) : j_(j) {}

  Status Fail(std::string_view key, std::string_view want) const {
    return Status::InvalidArgument("job record: field '" + std::string(key) + "' must be " + std::string(want));
  }
  const json* Find(std::string_view key) const {
    auto it = j_.find(std::string(key));
    return it == j_.end() ? nullptr : &*it;
  }
  Status String(std::string_view key, std::string* out) const {
    const json* v = Find(key);
    if (!v || !v->is_string()) return Fail(key, "a string");
    *out = v->get<std::string>();
    return Status::Ok();
  }
  Status OptString(std::string_view key, std::optional<std::string>* out) const {
    const json* v = Find(key);
    if (!v || v->is_null()) return out->reset(), Status::Ok();
    if (!v->is_string()) return Fail(key, "a string or null");
    *out = v->get<std::string>();
    return Status::Ok();
  }
  Status Int64(std::string_view key, int64_t* out) const {
    const json* v = Find(key);
    if (!v || !v->is_number_integer()) return Fail(key, "an integer");
    *out = v->get<int64_t>();
    return Status::Ok();
  }
  Status OptInt64(std::string_view key, std::optional<int64_t>* out) const {
    const json* v = Find(key);
    if (!v || v->is_null()) return out->reset(), Status::Ok();
    if (!v->is_number_integer()) return Fail(key, "an integer or null");
    *out = v->get<int64_t>();
    return Status::Ok();
  }
  Status Int(std::string_view key, int* out) const {
    int64_t v = 0;
    COHORT_RETURN_IF_ERROR(Int64(key, &v));
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) return Fail(key, "an int");
    *out = static_cast<int>(v);
    return Status::Ok();
  }
  Status OptInt(std::string_view key, std::optional<int>* out) const {
    std::optional<int64_t> v;
    COHORT_RETURN_IF_ERROR(OptInt64(key, &v));
    if (v && (*v < std::numeric_limits<int>::min() || *v > std::numeric_limits<int>::max())) {
      return Fail(key, "an int");
    }
    if (v) {
      *out = static_cast<int>(*v);
    } else {
      out->reset();
    }
    return Status::Ok();
  }
  Status Bool(std::string_view key, bool* out) const {
    const json* v = Find(key);
    if (!v || !v->is_boolean()) return Fail(key, "a boolean");
    *out = v->get<bool>();
    return Status::Ok();
  }

 private:
  const json& j_;
};

}  // namespace

std::string_view JobStatusName(JobStatus status) {
  switch (status) {
    case JobStatus::kPending: return "PENDING";
    case JobStatus::kRunning: return "RUNNING";
    case JobStatus::kStopped: return "STOPPED";
    case JobStatus::kSucceeded: return "SUCCEEDED";
    case JobStatus::kFailed: return "FAILED";
  }
  return "UNKNOWN";
}

std::optional<JobStatus> ParseJobStatus(std::string_view name) {
  for (JobStatus s : {JobStatus::kPending, JobStatus::kRunning, JobStatus::kStopped, JobStatus::kSucceeded,
                      JobStatus::kFailed}) {
    if (JobStatusName(s) == name) return s;
  }
  return std::nullopt;
}

bool IsTerminal(JobStatus status) {
  return status == JobStatus::kStopped || status == JobStatus::kSucceeded || status == JobStatus::kFailed;
}

std::string DefaultMessage(JobStatus status, const JobSpec& spec) {
  switch (status) {
    case JobStatus::kPending: {
      std::string m = "Job has not started yet.";
      if (spec.entrypoint_resources.AnyRequested() || spec.scaling) {
        m += " It may be waiting for resources (CPUs, GPUs, memory, custom resources) to become available.";
      }
      if (spec.runtime_env.is_object() && !spec.runtime_env.empty()) {
        m += " It may be waiting for the runtime environment to be set up.";
      }
      return m;
    }
    case JobStatus::kRunning: return "Job is currently running.";
    case JobStatus::kStopped: return "Job was intentionally stopped.";
    case JobStatus::kSucceeded: return "Job finished successfully.";
    case JobStatus::kFailed: return "Job failed.";
  }
  return "";
}

bool CanTransition(JobStatus from, JobStatus to) {
  if (IsTerminal(from)) return false;
  if (from == to) return true;
  switch (from) {
    case JobStatus::kPending:
      return to == JobStatus::kRunning || to == JobStatus::kStopped || to == JobStatus::kFailed;
    case JobStatus::kRunning:
      return to == JobStatus::kSucceeded || to == JobStatus::kFailed || to == JobStatus::kStopped ||
             to == JobStatus::kPending;
    default:
      return false;
  }
}

JobRecord NewJobRecord(JobSpec spec, int64_t now_ms) {
  JobRecord r;
  r.spec = std::move(spec);
  r.status = JobStatus::kPending;
  r.message = DefaultMessage(JobStatus::kPending, r.spec);
  r.start_time_ms = now_ms;
  return r;
}

Status Transition(JobRecord& record, JobStatus to, std::string_view message, int64_t now_ms,
                  std::optional<std::string> error_type) {
  if (!CanTransition(record.status, to)) {
    return Status::FailedPrecondition("job " + record.spec.submission_id + " cannot go from " +
                                      std::string(JobStatusName(record.status)) + " to " +
                                      std::string(JobStatusName(to)));
  }
  // Invariant 6: a restart.
  if (record.status == JobStatus::kRunning && to == JobStatus::kPending) {
    record.attempt += 1;
    record.workers.clear();
    record.driver_exit_code.reset();
  }
  record.status = to;
  record.message = message.empty() ? DefaultMessage(to, record.spec) : internal::SanitizeUtf8(message);
  record.error_type = to == JobStatus::kFailed ? std::move(error_type) : std::nullopt;
  if (to != JobStatus::kPending) record.pending_reason.clear();
  if (IsTerminal(to)) record.end_time_ms = std::max(now_ms, record.start_time_ms);
  return Status::Ok();
}

bool CanRestart(const JobRecord& record) {
  int max_failures = record.spec.MaxFailures();
  return max_failures == -1 || record.attempt < max_failures;
}

std::string FailedEntrypointMessage(int exit_code, std::string_view log_text) {
  constexpr int kLines = 10;         // Ray's NUM_LOG_LINES_ON_ERROR
  constexpr size_t kMaxBytes = 20000;  // Ray's MAX_LOG_SIZE
  // The last kLines lines; a final line without '\n' counts as a line.
  size_t start = log_text.size();
  size_t search = log_text.size();
  if (search > 0 && log_text[search - 1] == '\n') --search;  // the last line's own terminator
  for (int i = 0; i < kLines; ++i) {
    size_t nl = search == 0 ? std::string_view::npos : log_text.rfind('\n', search - 1);
    if (nl == std::string_view::npos) {
      start = 0;
      break;
    }
    start = nl + 1;
    search = nl;
  }
  std::string_view tail = log_text.substr(start);
  if (tail.size() > kMaxBytes) {
    tail = tail.substr(tail.size() - kMaxBytes);
    // Don't begin inside a UTF-8 sequence.
    while (!tail.empty() && (static_cast<unsigned char>(tail.front()) & 0xC0) == 0x80) tail.remove_prefix(1);
  }
  std::string prefix = "Job entrypoint command failed with exit code " + std::to_string(exit_code);
  if (tail.empty()) return prefix + ". No logs available.";
  return prefix + ", last available logs (truncated to 20,000 chars):\n" + internal::SanitizeUtf8(tail);
}

json JobDetailsJson(const JobRecord& r) {
  const JobSpec& spec = r.spec;
  json spec_json = JobSpecToJson(spec);
  json j = json::object();
  // Ray's 15 keys (§3.3).
  j["type"] = "SUBMISSION";
  j["job_id"] = OptString(r.job_id);
  j["submission_id"] = spec.submission_id;
  j["driver_info"] = DriverInfoJson(r.driver_info);
  j["status"] = std::string(JobStatusName(r.status));
  j["entrypoint"] = spec.entrypoint;
  j["message"] = r.message.empty() ? json(nullptr) : json(r.message);
  j["error_type"] = OptString(r.error_type);
  j["start_time"] = r.start_time_ms;
  j["end_time"] = r.end_time_ms ? json(*r.end_time_ms) : json(nullptr);
  j["metadata"] = spec_json["metadata"];
  j["runtime_env"] = spec_json["runtime_env"];
  j["driver_agent_http_address"] = OptString(r.driver_agent_http_address);
  j["driver_node_id"] = OptString(r.driver_node_id);
  j["driver_exit_code"] = OptInt(r.driver_exit_code);
  // cohort's keys (docs/api.md).
  j["scaling"] = spec_json["scaling"];
  j["failure"] = spec_json["failure"];
  j["results_uri"] = spec_json["results_uri"];
  j["attempt"] = r.attempt;
  json workers = json::array();
  for (const WorkerInfo& w : r.workers) workers.push_back(WorkerJson(w));
  j["workers"] = std::move(workers);
  j["pending_reason"] = r.pending_reason.empty() ? json(nullptr) : json(r.pending_reason);
  return j;
}

json JobRecordToJson(const JobRecord& r) {
  json j = json::object();
  j["format"] = kRecordFormat;
  j["spec"] = JobSpecToJson(r.spec);
  j["status"] = std::string(JobStatusName(r.status));
  j["message"] = r.message;
  j["error_type"] = OptString(r.error_type);
  j["start_time_ms"] = r.start_time_ms;
  j["end_time_ms"] = r.end_time_ms ? json(*r.end_time_ms) : json(nullptr);
  j["driver_exit_code"] = OptInt(r.driver_exit_code);
  j["job_id"] = OptString(r.job_id);
  j["driver_info"] = DriverInfoJson(r.driver_info);
  j["driver_node_id"] = OptString(r.driver_node_id);
  j["driver_agent_http_address"] = OptString(r.driver_agent_http_address);
  j["attempt"] = r.attempt;
  json workers = json::array();
  for (const WorkerInfo& w : r.workers) workers.push_back(WorkerJson(w));
  j["workers"] = std::move(workers);
  j["pending_reason"] = r.pending_reason;
  j["stop_requested"] = r.stop_requested;
  j["internal"] = r.internal.is_object() ? r.internal : json::object();
  return j;
}

Result<JobRecord> JobRecordFromJson(const json& j) {
  if (!j.is_object()) return Status::InvalidArgument("job record must be a JSON object");
  Reader in(j);
  int format = 0;
  COHORT_RETURN_IF_ERROR(in.Int("format", &format));
  if (format != kRecordFormat) {
    return Status::InvalidArgument("job record: unsupported format " + std::to_string(format) + " (expected " +
                                   std::to_string(kRecordFormat) + ")");
  }
  JobRecord r;
  const json* spec = in.Find("spec");
  if (!spec) return in.Fail("spec", "an object");
  auto parsed_spec = JobSpecFromJson(*spec);
  if (!parsed_spec.ok()) return parsed_spec.status().WithPrefix("job record: spec");
  r.spec = std::move(parsed_spec).value();

  std::string status;
  COHORT_RETURN_IF_ERROR(in.String("status", &status));
  auto parsed_status = ParseJobStatus(status);
  if (!parsed_status) return in.Fail("status", "a job status");
  r.status = *parsed_status;
  COHORT_RETURN_IF_ERROR(in.String("message", &r.message));
  COHORT_RETURN_IF_ERROR(in.OptString("error_type", &r.error_type));
  COHORT_RETURN_IF_ERROR(in.Int64("start_time_ms", &r.start_time_ms));
  COHORT_RETURN_IF_ERROR(in.OptInt64("end_time_ms", &r.end_time_ms));
  COHORT_RETURN_IF_ERROR(in.OptInt("driver_exit_code", &r.driver_exit_code));
  COHORT_RETURN_IF_ERROR(in.OptString("job_id", &r.job_id));
  if (const json* d = in.Find("driver_info"); d && !d->is_null()) {
    if (!d->is_object()) return in.Fail("driver_info", "an object or null");
    Reader din(*d);
    DriverInfo info;
    COHORT_RETURN_IF_ERROR(din.String("id", &info.id));
    COHORT_RETURN_IF_ERROR(din.String("node_ip_address", &info.node_ip_address));
    COHORT_RETURN_IF_ERROR(din.String("pid", &info.pid));
    r.driver_info = std::move(info);
  }
  COHORT_RETURN_IF_ERROR(in.OptString("driver_node_id", &r.driver_node_id));
  COHORT_RETURN_IF_ERROR(in.OptString("driver_agent_http_address", &r.driver_agent_http_address));
  COHORT_RETURN_IF_ERROR(in.Int("attempt", &r.attempt));
  const json* workers = in.Find("workers");
  if (!workers || !workers->is_array()) return in.Fail("workers", "an array");
  for (const json& w : *workers) {
    if (!w.is_object()) return in.Fail("workers", "an array of objects");
    Reader win(w);
    WorkerInfo info;
    COHORT_RETURN_IF_ERROR(win.Int("rank", &info.rank));
    COHORT_RETURN_IF_ERROR(win.String("node_id", &info.node_id));
    COHORT_RETURN_IF_ERROR(win.String("status", &info.status));
    COHORT_RETURN_IF_ERROR(win.OptInt("pid", &info.pid));
    COHORT_RETURN_IF_ERROR(win.OptInt("exit_code", &info.exit_code));
    r.workers.push_back(std::move(info));
  }
  COHORT_RETURN_IF_ERROR(in.String("pending_reason", &r.pending_reason));
  COHORT_RETURN_IF_ERROR(in.Bool("stop_requested", &r.stop_requested));
  if (const json* internal = in.Find("internal"); internal && !internal->is_null()) {
    if (!internal->is_object()) return in.Fail("internal", "an object");
    r.internal = *internal;
  }
  return r;
}

}  // namespace cohort::jobs
