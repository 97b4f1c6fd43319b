// ReconcileJob: see include/cohort/k8s/job_reconcile.h.
#include "cohort/k8s/job_reconcile.h"

#include <cmath>
#include <ctime>

#include "cohort/k8s/reconcile.h"
#include "json_fields.h"

namespace cohort::k8s {
namespace {

using json = nlohmann::json;
using fields::Bool;
using fields::Field;
using fields::Str;

std::string Name(const json& obj) { return fields::Meta(obj, "name"); }

// A status counter (attempt, failed): 0 unless an integer in [0, 10^6].
int Counter(const json& status, const char* key) { return static_cast<int>(fields::Int(status, key, 0, 0, 1000000)); }

constexpr size_t kMaxJobName = 45;  // "<name>-cluster" fits a CohortCluster's 53
constexpr size_t kMaxMessage = 1024;

// At most n bytes (then "..."), never cutting a UTF-8 sequence: the status is
// JSON, and a cut character would make every status write fail.
std::string Clip(const std::string& s, size_t n = kMaxMessage) {
  if (s.size() <= n) return s;
  size_t end = n;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;  // s[end] starts a character
  return s.substr(0, end) + "...";
}

// An optional integer field in [lo, hi]: its value, `fallback` when absent;
// nullopt (and `error` set) when it is of the wrong type or out of range.
std::optional<int64_t> IntField(const json& obj, const char* key, int64_t lo, int64_t hi, int64_t fallback,
                                std::string* error) {
  const json& v = Field(obj, key);
  if (v.is_null()) return fallback;
  if (v.is_number_integer() || v.is_number_unsigned()) {
    // Compared as double first: an unsigned beyond int64 would wrap.
    const double d = v.get<double>();
    if (d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) return v.get<int64_t>();
  }
  if (error->empty()) *error = std::string("spec.") + key + " must be an integer in [" + std::to_string(lo) + ", " +
                               std::to_string(hi) + "], not " + Clip(v.dump(), 64);
  return std::nullopt;
}

// RFC 3339 "2026-01-01T00:00:00Z" -> Unix ms; -1 when malformed.
int64_t ParseTimeMs(const std::string& t) {
  std::tm tm{};
  if (t.size() < 20 || strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) return -1;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

bool Terminal(const std::string& head_status) {
  return head_status == "SUCCEEDED" || head_status == "FAILED" || head_status == "STOPPED";
}

// Sets condition `type` in status.conditions (Kubernetes style); the
// transition time changes only when the status does. True when it changed.
bool SetCondition(json& status, const std::string& type, bool value, const std::string& reason,
                  const std::string& message, const std::string& now) {
  json& conds = status["conditions"];
  if (!conds.is_array()) conds = json::array();
  const std::string want = value ? "True" : "False";
  for (auto& c : conds) {
    if (!c.is_object() || Str(c, "type") != type) continue;
    const bool flipped = Str(c, "status") != want;
    const bool changed = flipped || Str(c, "reason") != reason || Str(c, "message") != Clip(message);
    if (flipped) c["lastTransitionTime"] = now;
    c["status"] = want;
    c["reason"] = reason;
    c["message"] = Clip(message);
    return changed;
  }
  conds.push_back({{"type", type}, {"status", want}, {"reason", reason}, {"message", Clip(message)},
                   {"lastTransitionTime", now}});
  return true;
}

bool ConditionTrue(const json& status, const std::string& type) {
  const json& conds = Field(status, "conditions");
  if (conds.is_array())
    for (const auto& c : conds)
      if (c.is_object() && Str(c, "type") == type) return Str(c, "status") == "True";
  return false;
}

bool OwnedBy(const json& obj, const std::string& uid) {
  const json& refs = Field(Field(obj, "metadata"), "ownerReferences");
  if (refs.is_array())
    for (const auto& r : refs)
      if (r.is_object() && Str(r, "uid") == uid) return true;
  return false;
}

double Number(const json& obj, const char* key, double fallback = std::nan("")) {
  const json& v = Field(obj, key);
  if (!v.is_number()) return fallback;
  const double d = v.get<double>();
  return std::isfinite(d) ? d : fallback;
}

// status.progress from the last report (epoch/epochs, loss, accuracy, samples/s).
json Progress(const json& report, int64_t now_ms) {
  json p = json::object();
  const double epoch = Number(report, "epoch"), epochs = Number(report, "epochs");
  if (std::isfinite(epoch) && std::isfinite(epochs) && epochs > 0 && epoch >= 0 && epoch <= 1e9 && epochs <= 1e9) {
    p["epoch"] = static_cast<int64_t>(epoch);
    p["epochs"] = static_cast<int64_t>(epochs);
    p["percent"] = static_cast<int64_t>(std::floor(std::min(100.0, 100.0 * epoch / epochs)));
    const double epoch_time = Number(report, "epoch_time_s");
    if (std::isfinite(epoch_time) && epoch_time >= 0 && epoch_time < 1e7)
      p["estimatedSecondsLeft"] = static_cast<int64_t>(std::ceil(std::max(0.0, epochs - epoch) * epoch_time));
  }
  json metrics = json::object();
  for (const char* k : {"train_loss", "val_loss", "loss", "val_accuracy", "accuracy", "samples_per_sec"})
    if (double v = Number(report, k); std::isfinite(v)) metrics[k] = v;
  if (!metrics.empty()) p["metrics"] = metrics;
  p["updatedMs"] = now_ms;
  return p;
}

// The spec's problems, or "".
std::string SpecError(const json& job, const json& spec) {
  const std::string name = Str(Field(job, "metadata"), "name");
  if (name.empty()) return "metadata.name is empty";
  if (name.size() > kMaxJobName) return "metadata.name is longer than 45 characters";
  if (Str(Field(job, "metadata"), "uid").empty()) return "metadata.uid is empty";
  if (!spec.is_object()) return "spec must be an object";
  const json& ep = Field(spec, "entrypoint");
  if (!ep.is_string() || ep.get<std::string>().empty()) return "spec.entrypoint must be a non-empty string";
  if (ep.get<std::string>().size() > 64 * 1024) return "spec.entrypoint is longer than 64 KiB";
  const bool has_spec = !Field(spec, "clusterSpec").is_null(), has_selector = !Field(spec, "clusterSelector").is_null();
  if (has_spec == has_selector) return "exactly one of spec.clusterSpec and spec.clusterSelector must be set";
  if (has_spec && !Field(spec, "clusterSpec").is_object()) return "spec.clusterSpec must be an object";
  if (has_selector && !Field(spec, "clusterSelector").is_object()) return "spec.clusterSelector must be an object";
  for (const char* key : {"suspend", "shutdownAfterJobFinishes"}) {
    const json& v = Field(spec, key);
    if (!v.is_null() && !v.is_boolean()) return std::string("spec.") + key + " must be true or false";
  }
  for (const char* key : {"scaling", "failure", "runtime_env"}) {
    const json& v = Field(spec, key);
    if (!v.is_null() && !v.is_object()) return std::string("spec.") + key + " must be an object";
  }
  const json& wd = Field(Field(spec, "runtime_env"), "working_dir");
  if (!wd.is_null() && !wd.is_string()) return "spec.runtime_env.working_dir must be a string";
  if (wd.is_string() && wd.get<std::string>().rfind("configmap://", 0) == 0) {
    const std::string cm = wd.get<std::string>().substr(12);
    if (cm.empty() || cm.size() > 253 ||
        cm.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.") != std::string::npos)
      return "spec.runtime_env.working_dir: configmap://" + Clip(cm, 64) + " does not name a ConfigMap";
  }
  const json& uri = Field(spec, "results_uri");
  if (!uri.is_null() && !uri.is_string()) return "spec.results_uri must be a string";
  std::string error;
  IntField(spec, "activeDeadlineSeconds", 1, int64_t{1} << 40, 0, &error);
  IntField(spec, "backoffLimit", 0, 1000, 0, &error);
  IntField(spec, "ttlSecondsAfterFinished", 0, int64_t{1} << 40, 0, &error);
  return error;
}

}  // namespace

std::string JobActionName(JobAction::Kind kind) {
  switch (kind) {
    case JobAction::Kind::kCreateCluster: return "create-cluster";
    case JobAction::Kind::kDeleteCluster: return "delete-cluster";
    case JobAction::Kind::kSubmit: return "submit";
    case JobAction::Kind::kStopJob: return "stop-job";
    case JobAction::Kind::kDeleteJob: return "delete-job";
  }
  return "?";
}

std::string JobClusterName(const std::string& job) { return job + "-cluster"; }

std::string SubmissionIdFor(const std::string& uid, int attempt) {
  return "cohortjob-" + uid + "-" + std::to_string(attempt);
}

json SubmitRequestFor(const json& spec, const std::string& submission_id) {
  json req = {{"entrypoint", Str(spec, "entrypoint")}, {"submission_id", submission_id}};
  if (const json& s = Field(spec, "scaling"); s.is_object()) req["scaling"] = s;
  if (const json& f = Field(spec, "failure"); f.is_object()) req["failure"] = f;
  if (const json& u = Field(spec, "results_uri"); u.is_string()) req["results_uri"] = u;
  const json& env = Field(spec, "runtime_env");
  if (env.is_object()) {
    json re = json::object();
    if (const json& v = Field(env, "env_vars"); v.is_object()) re["env_vars"] = v;
    if (const json& w = Field(env, "working_dir"); w.is_string()) re["working_dir"] = w;
    if (!re.empty()) req["runtime_env"] = re;
  }
  return req;
}

JobReconcileResult ReconcileJob(const json& job, const JobObserved& observed, const JobReconcileOptions& options) {
  JobReconcileResult r;
  const json& meta = Field(job, "metadata");
  const json& spec = Field(job, "spec");
  const json& old_status = Field(job, "status");
  json status = old_status.is_object() ? old_status : json::object();
  const std::string& now = options.now;
  // A condition set; an Event when its status flips.
  auto transition = [&](const std::string& type, bool value, const std::string& reason, const std::string& message) {
    const bool was = ConditionTrue(status, type);
    SetCondition(status, type, value, reason, message, now);
    if (was != value) r.events.push_back({reason, Clip(message), type == "Failed" && value});
  };
  auto finish = [&]() {
    r.status_changed = status != (old_status.is_object() ? old_status : json::object());
    r.status = status;
    return r;
  };

  if (std::string e = SpecError(job, spec); !e.empty()) {
    r.error = e;
    transition("Failed", true, "InvalidSpec", e);
    status["message"] = Clip(e);
    return finish();
  }
  const std::string name = Str(meta, "name"), ns = Str(meta, "namespace", "default"), uid = Str(meta, "uid");
  std::string unused;
  const int64_t deadline_s = *IntField(spec, "activeDeadlineSeconds", 1, int64_t{1} << 40, 0, &unused);
  const int64_t backoff = *IntField(spec, "backoffLimit", 0, 1000, 0, &unused);
  const int64_t ttl_s = *IntField(spec, "ttlSecondsAfterFinished", 0, int64_t{1} << 40, 0, &unused);
  const bool own_cluster = Field(spec, "clusterSpec").is_object();
  const bool cluster_is_ours = observed.cluster && OwnedBy(*observed.cluster, uid);
  const std::string submission = Str(status, "submissionId");
  const json head_job = observed.head_job.value_or(json());
  const std::string head_status = Str(head_job, "status");

  // --- finished: the TTL, then the cluster, then the CohortJob itself --------
  if (!Str(status, "endTime").empty()) {
    if (Bool(spec, "shutdownAfterJobFinishes")) {
      const int64_t end_ms = ParseTimeMs(Str(status, "endTime"));
      if (end_ms >= 0 && options.now_ms >= end_ms + ttl_s * 1000) {
        if (own_cluster && cluster_is_ours)
          r.actions.push_back({JobAction::Kind::kDeleteCluster, Name(*observed.cluster), json(), "ClusterDeleted",
                               "the job finished " + std::to_string(ttl_s) + " s ago (ttlSecondsAfterFinished)"});
        else
          r.actions.push_back({JobAction::Kind::kDeleteJob, name, json(), "Deleted",
                               "finished, and ttlSecondsAfterFinished passed"});
      }
    }
    return finish();
  }

  // --- suspended: nothing runs --------------------------------------------------
  if (Bool(spec, "suspend")) {
    if (!submission.empty() && observed.head_job && !Terminal(head_status))
      r.actions.push_back({JobAction::Kind::kStopJob, submission, json(), "Stopped", "the CohortJob was suspended"});
    if (own_cluster && cluster_is_ours)
      r.actions.push_back({JobAction::Kind::kDeleteCluster, Name(*observed.cluster), json(), "ClusterDeleted",
                           "the CohortJob was suspended"});
    if (!submission.empty()) {
      // Resuming submits a new attempt (the stopped one does not count
      // against backoffLimit).
      status["attempt"] = Counter(status, "attempt") + 1;
      status.erase("submissionId");
    }
    status.erase("startTime");  // activeDeadlineSeconds counts from the resume
    status["jobStatus"] = "";
    status["message"] = "suspended";
    transition("Suspended", true, "Suspended", "spec.suspend is true: nothing runs");
    SetCondition(status, "Running", false, "Suspended", "", now);
    return finish();
  }
  if (ConditionTrue(status, "Suspended")) transition("Suspended", false, "Resumed", "spec.suspend is false: starting");
  if (Str(status, "startTime").empty()) status["startTime"] = now;

  // --- activeDeadlineSeconds ------------------------------------------------------
  if (deadline_s > 0) {
    const int64_t start_ms = ParseTimeMs(Str(status, "startTime"));
    if (start_ms >= 0 && options.now_ms >= start_ms + deadline_s * 1000) {
      if (!submission.empty() && observed.head_job && !Terminal(head_status))
        r.actions.push_back({JobAction::Kind::kStopJob, submission, json(), "DeadlineExceeded",
                             "activeDeadlineSeconds (" + std::to_string(deadline_s) + ") passed"});
      const std::string msg = "the job ran longer than activeDeadlineSeconds (" + std::to_string(deadline_s) + " s)";
      transition("Failed", true, "DeadlineExceeded", msg);
      SetCondition(status, "Running", false, "DeadlineExceeded", "", now);
      status["message"] = msg;
      status["endTime"] = now;
      return finish();
    }
  }

  // --- the cluster ------------------------------------------------------------------
  if (own_cluster) {
    status["clusterName"] = JobClusterName(name);
    if (!cluster_is_ours) {
      if (observed.cluster) {  // a cluster of that name that is not ours
        const std::string msg = "a CohortCluster " + JobClusterName(name) + " exists that this CohortJob does not own";
        transition("Failed", true, "ClusterConflict", msg);
        status["message"] = msg;
        status["endTime"] = now;
        return finish();
      }
      json cluster = {{"apiVersion", std::string(kGroup) + "/" + kVersion},
                      {"kind", kKind},
                      {"metadata",
                       {{"name", JobClusterName(name)},
                        {"namespace", ns},
                        {"labels", {{kLabelJob, name}}},
                        {"ownerReferences",
                         json::array({{{"apiVersion", std::string(kGroup) + "/" + kVersion},
                                       {"kind", kJobKind},
                                       {"name", name},
                                       {"uid", uid},
                                       {"controller", true},
                                       {"blockOwnerDeletion", true}}})}}},
                      {"spec", Field(spec, "clusterSpec")}};
      r.actions.push_back({JobAction::Kind::kCreateCluster, JobClusterName(name), cluster, "ClusterCreated",
                           "created CohortCluster " + JobClusterName(name)});
      status["message"] = "creating CohortCluster " + JobClusterName(name);
      return finish();
    }
  } else {
    if (!observed.cluster) {
      status["message"] = "waiting for a CohortCluster that matches spec.clusterSelector";
      return finish();
    }
    status["clusterName"] = Name(*observed.cluster);
  }

  // --- submission ---------------------------------------------------------------------
  const int attempt = Counter(status, "attempt");
  if (submission.empty()) {
    // Written to the status before the call: a restart submits this id again,
    // which the head refuses as a duplicate; never a second job.
    status["attempt"] = attempt;
    status["submissionId"] = SubmissionIdFor(uid, attempt);
    status["jobStatus"] = "";
    status["message"] = "submitting";
    if (observed.head_reachable)
      r.actions.push_back({JobAction::Kind::kSubmit, SubmissionIdFor(uid, attempt),
                           SubmitRequestFor(spec, SubmissionIdFor(uid, attempt)), "Submitted",
                           "submitted " + SubmissionIdFor(uid, attempt) + " to the head"});
    SetCondition(status, "Submitted", true, "Submitted", "submission " + SubmissionIdFor(uid, attempt), now);  // Event: the submit action
    return finish();
  }
  if (!observed.head_job) {
    status["message"] = observed.head_reachable ? "submitting" : "waiting for the head to answer";
    if (observed.head_reachable)
      r.actions.push_back({JobAction::Kind::kSubmit, submission, SubmitRequestFor(spec, submission), "Submitted",
                           "submitted " + submission + " to the head"});
    return finish();
  }

  // --- the head's view ------------------------------------------------------------------
  status["jobStatus"] = head_status;
  status["jobId"] = Str(head_job, "job_id", submission);
  const std::string head_message = Str(head_job, "message");
  status["message"] = Clip(head_message.empty() ? "job " + head_status : head_message);
  if (observed.metrics && observed.metrics->is_object()) {
    const json& old = Field(status, "progress");
    const int64_t last = old.is_object() && Field(old, "updatedMs").is_number_integer() ? old["updatedMs"].get<int64_t>() : -1;
    json fresh = Progress(*observed.metrics, options.now_ms);
    const bool epoch_moved = !old.is_object() || Field(old, "epoch") != Field(fresh, "epoch");
    if (last < 0 || options.now_ms - last >= options.progress_interval_ms || epoch_moved) status["progress"] = fresh;
  }
  if (head_status == "RUNNING") {
    transition("Running", true, "Running", "attempt " + std::to_string(attempt) + " is running");
  } else if (head_status == "SUCCEEDED") {
    SetCondition(status, "Running", false, "Succeeded", "", now);
    transition("Succeeded", true, "Succeeded", "the job succeeded");
    if (const json& res = Field(head_job, "results"); res.is_array()) {
      json kept = json::array();  // the status stays small: the first 100 objects
      for (const auto& o : res)
        if (o.is_object() && kept.size() < 100) kept.push_back(o);
      status["results"] = kept;
    }
    status["endTime"] = now;
  } else if (head_status == "FAILED" || head_status == "STOPPED") {
    SetCondition(status, "Running", false, head_status == "FAILED" ? "Failed" : "Stopped", "", now);
    const int failed = Counter(status, "failed") + 1;
    status["failed"] = failed;
    const std::string why = Clip(Str(head_job, "message", head_status == "FAILED" ? "failed" : "stopped"));
    if (head_status == "FAILED" && failed <= backoff) {
      // Submitted again (attempt + 1): the id is new, the spec the same.
      status["attempt"] = attempt + 1;
      status["submissionId"] = SubmissionIdFor(uid, attempt + 1);
      status["jobStatus"] = "";
      status["message"] = "attempt " + std::to_string(attempt) + " failed (" + why + "); submitting again (" +
                          std::to_string(failed) + " of backoffLimit " + std::to_string(backoff) + ")";
      status.erase("progress");
      if (observed.head_reachable)
        r.actions.push_back({JobAction::Kind::kSubmit, SubmissionIdFor(uid, attempt + 1),
                             SubmitRequestFor(spec, SubmissionIdFor(uid, attempt + 1)), "Resubmitted",
                             Clip(status["message"].get<std::string>())});
    } else {
      const std::string reason = head_status == "STOPPED" ? "Stopped"
                                 : backoff > 0        ? "BackoffLimitExceeded"
                                                      : "JobFailed";
      transition("Failed", true, reason, why);
      status["endTime"] = now;
    }
  }
  return finish();
}

}  // namespace cohort::k8s
