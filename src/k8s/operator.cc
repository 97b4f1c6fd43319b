// The CohortCluster operator loop (see cohort/k8s/operator.h).
#include "cohort/common/base64.h"
#include "cohort/k8s/operator.h"

#include <unistd.h>

#include <cstring>
#include <random>
#include <tuple>
#include <thread>
#include <vector>

#include "cohort/common/json.h"
#include "cohort/common/logging.h"
#include "cohort/k8s/head_status.h"
#include "cohort/net/http_client.h"
#include "json_fields.h"

namespace cohort::k8s {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string RandomHex(int bytes) {
  std::random_device rd;
  std::string out;
  static const char* kHex = "0123456789abcdef";
  for (int i = 0; i < bytes; ++i) {
    unsigned v = rd() & 0xff;
    out.push_back(kHex[v >> 4]);
    out.push_back(kHex[v & 15]);
  }
  return out;
}

// The default fetch_head_status: GET url with the bearer token, within 5 s.
Result<json> GetHeadJson(const std::string& url, const std::string& token) {
  net::HttpRequest req;
  req.url = url;
  if (!token.empty()) req.headers.emplace_back("Authorization", "Bearer " + token);
  req.total_timeout = milliseconds(5000);
  req.stall_timeout = milliseconds(0);
  // A transport failure is Unavailable "GET url: cause".
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse resp, net::SendHttp(req));
  if (resp.status != 200) return Status::Unavailable("GET " + url + ": HTTP " + std::to_string(resp.status));
  try {
    return json::parse(resp.body);
  } catch (const std::exception& e) {
    return Status::Internal("GET " + url + ": bad JSON");
  }
}

// The default call_head: libcurl, 10 s.
Result<OperatorOptions::HeadReply> CallHead(const std::string& method, const std::string& url, const std::string& token,
                                            const std::string& body) {
  net::HttpRequest req;
  req.method = method;
  req.url = url;
  if (!token.empty()) req.headers.emplace_back("Authorization", "Bearer " + token);
  if (!body.empty())
    req.headers.emplace_back("Content-Type", method == "PUT" ? "application/zip" : "application/json");
  req.body = body;
  req.total_timeout = milliseconds(10000);
  req.stall_timeout = milliseconds(0);
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse resp, net::SendHttp(req));
  return OperatorOptions::HeadReply{resp.status, resp.body};
}

// A reply's body as JSON (null when it is not JSON).
json ParseOrNull(const std::string& body) {
  try {
    return json::parse(body);
  } catch (const std::exception&) {
    return json();
  }
}

// "job:ns/name" <-> a CohortJob's key.
constexpr const char* kJobKeyPrefix = "job:";

Resource ResourceFor(const std::string& kind) {
  if (kind == "Pod") return Resource::Pods();
  if (kind == "Service") return Resource::Services();
  if (kind == "Secret") return Resource::Secrets();
  if (kind == "PersistentVolumeClaim") return Resource::PersistentVolumeClaims();
  return Resource::CohortClusters();
}

std::string KeyOf(const json& obj) { return fields::Meta(obj, "namespace") + "/" + fields::Meta(obj, "name"); }

std::string Hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

}  // namespace

Operator::Operator(KubeClient& client, OperatorOptions options) : client_(client), options_(std::move(options)) {
  if (!options_.fetch_head_status) options_.fetch_head_status = GetHeadJson;
  if (!options_.call_head) options_.call_head = CallHead;
  if (options_.identity.empty()) options_.identity = Hostname() + "_" + RandomHex(4);
  if (options_.lease_namespace.empty()) options_.lease_namespace = client_.config().default_namespace;
}

void Operator::Enqueue(const std::string& key, milliseconds delay) {
  std::lock_guard<std::mutex> lock(mu_);
  auto when = Clock::now() + delay;
  auto it = queue_.find(key);
  if (it == queue_.end() || when < it->second) queue_[key] = when;
  cv_.notify_all();
}

// The API token in a cluster's Secret ("" when it has none).
static std::string TokenInSecret(const json& secret) {
  std::string token;
  const json& data = fields::Field(fields::Field(secret, "data"), kTokenKey);
  const json& string_data = fields::Field(fields::Field(secret, "stringData"), kTokenKey);
  if (data.is_string()) {
    if (!cohort::Base64Decode(data.get<std::string>(), &token)) token.clear();
  } else if (string_data.is_string()) {
    token = string_data.get<std::string>();
  }
  return token;
}

std::string Operator::HeadBaseUrl(const json& cluster) const {
  std::string ns = fields::Meta(cluster, "namespace");
  if (ns.empty()) ns = "default";
  std::string port = std::to_string(kDashboardPort);
  const json& hp = fields::Field(fields::Field(fields::Field(cluster, "spec"), "headGroupSpec"), "startParams");
  if (std::string p = fields::Str(hp, "dashboard-port");
      !p.empty() && p.size() <= 5 && p.find_first_not_of("0123456789") == std::string::npos)
    port = p;  // (Reconcile reports an invalid one)
  return "http://" + HeadServiceName(fields::Meta(cluster, "name")) + "." + ns + ".svc." + options_.cluster_domain +
         ":" + port;
}

std::optional<AutoscalerInput> Operator::ReadHead(const json& cluster, const json& secrets) {
  std::string name = fields::Meta(cluster, "name"), ns = fields::Meta(cluster, "namespace");
  if (ns.empty()) ns = "default";
  std::string key = ns + "/" + name;
  std::string token;
  if (secrets.is_array())
    for (const auto& s : secrets)
      if (fields::Meta(s, "name") == TokenSecretName(name)) token = TokenInSecret(s);
  std::string url = HeadBaseUrl(cluster) + "/api/cluster/status";
  auto st = options_.fetch_head_status(url, token);
  if (!st.ok()) {
    COHORT_LOG(INFO) << "autoscaler " << key << ": head not reachable (" << st.status().ToString() << ")";
    return std::nullopt;
  }
  std::optional<HeadStatus> decoded = DecodeHeadStatus(*st);
  if (!decoded) {
    COHORT_LOG(WARN) << "autoscaler " << key << ": the head's status is not a JSON object";
    return std::nullopt;
  }
  AutoscalerInput in;
  in.pending_bundles = std::move(decoded->pending_bundles);
  auto now = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  auto& idle = idle_since_[key];
  std::map<std::string, Clock::time_point> next;
  for (const auto& n : decoded->nodes) {
    HeadNode hn;
    hn.address = n.address;
    hn.alive = n.alive;
    hn.is_head = n.is_head;
    if (!n.busy) {
      auto since = idle.count(hn.address) ? idle[hn.address] : now;
      next[hn.address] = since;
      hn.idle_seconds = std::chrono::duration<double>(now - since).count();
    }
    in.nodes.push_back(hn);
  }
  idle = next;
  return in;
}

Result<std::pair<std::string, std::string>> Operator::HeadAccess(const json& cluster) {
  const std::string name = fields::Meta(cluster, "name");
  std::string ns = fields::Meta(cluster, "namespace");
  if (ns.empty()) ns = "default";
  COHORT_ASSIGN_OR_RETURN(json secret, client_.Get(Resource::Secrets(), ns, TokenSecretName(name)));
  const std::string token = TokenInSecret(secret);
  if (token.empty()) return Status::FailedPrecondition("the Secret " + TokenSecretName(name) + " has no token");
  return std::make_pair(HeadBaseUrl(cluster), token);
}

Status Operator::ResolveConfigMapWorkingDir(const std::string& ns, const std::string& base, const std::string& token,
                                            json& request) {
  const json& wd = fields::Field(fields::Field(request, "runtime_env"), "working_dir");
  const std::string prefix = "configmap://";
  if (!wd.is_string() || wd.get<std::string>().rfind(prefix, 0) != 0) return Status::Ok();
  const std::string cm_name = wd.get<std::string>().substr(prefix.size());
  if (!options_.package_files)
    return Status::FailedPrecondition("this operator cannot package a ConfigMap working dir");
  auto cm = client_.Get(Resource::ConfigMaps(), ns, cm_name);
  if (!cm.ok())
    return cm.status().WithPrefix("runtime_env.working_dir configmap://" + cm_name);
  std::map<std::string, std::string> files;
  const json& data = fields::Field(*cm, "data");
  if (data.is_object())
    for (auto it = data.begin(); it != data.end(); ++it)
      if (it->is_string()) files[it.key()] = it->get<std::string>();
  const json& binary = fields::Field(*cm, "binaryData");
  if (binary.is_object())
    for (auto it = binary.begin(); it != binary.end(); ++it) {
      std::string bytes;
      if (!it->is_string() || !cohort::Base64Decode(it->get<std::string>(), &bytes))
        return Status::InvalidArgument("ConfigMap " + cm_name + ": binaryData." + it.key() + " is not base64");
      files[it.key()] = std::move(bytes);
    }
  COHORT_ASSIGN_OR_RETURN(auto package, options_.package_files(files));
  const std::string url = base + "/api/packages/gcs/" + package.first;
  auto have = options_.call_head("GET", url, token, "");
  if (!have.ok()) return have.status();
  if (have->status != 200) {
    auto put = options_.call_head("PUT", url, token, package.second);
    if (!put.ok()) return put.status();
    if (put->status != 200)
      return Status::Unavailable("PUT " + url + ": HTTP " + std::to_string(put->status) + " " + SanitizeUtf8(put->body.substr(0, 300)));
  }
  request["runtime_env"]["working_dir"] = "gcs://" + package.first;
  return Status::Ok();
}

Result<std::optional<milliseconds>> Operator::ReconcileJobOnce(const std::string& key) {
  auto slash = key.find('/');
  if (slash == std::string::npos) return Status::InvalidArgument("bad key " + key);
  const std::string ns = key.substr(0, slash), name = key.substr(slash + 1);
  auto got = client_.Get(Resource::CohortJobs(), ns, name);
  if (!got.ok()) {
    if (got.status().code() == StatusCode::kNotFound) return std::optional<milliseconds>();
    return got.status();
  }
  json job = *got;
  if (!job.is_object() || !fields::Field(job, "metadata").is_object())
    return Status::Internal("GET cohortjob " + key + ": not a Kubernetes object");
  if (!fields::Field(job["metadata"], "deletionTimestamp").is_null()) return std::optional<milliseconds>();
  const json& spec = fields::Field(job, "spec");
  const std::string submission = fields::Str(fields::Field(job, "status"), "submissionId");

  // The cluster: its own, or the one the selector names.
  JobObserved obs;
  const json& selector = fields::Field(spec, "clusterSelector");
  std::string cluster_name = fields::Field(spec, "clusterSpec").is_object() ? JobClusterName(name)
                                                                            : fields::Str(selector, "clusterName");
  if (!cluster_name.empty()) {
    auto c = client_.Get(Resource::CohortClusters(), ns, cluster_name);
    if (c.ok()) obs.cluster = *c;
    else if (c.status().code() != StatusCode::kNotFound) return c.status();
  } else if (const json& labels = fields::Field(selector, "matchLabels"); labels.is_object() && !labels.empty()) {
    std::string sel;
    for (auto it = labels.begin(); it != labels.end(); ++it)
      if (it->is_string()) sel += (sel.empty() ? "" : ",") + it.key() + "=" + it->get<std::string>();
    COHORT_ASSIGN_OR_RETURN(json list, client_.List(Resource::CohortClusters(), ns, sel));
    const json& items = fields::Field(list, "items");
    if (items.is_array() && !items.empty()) {
      const json* first = nullptr;  // the first by name: the same one every pass
      for (const auto& i : items)
        if (first == nullptr || fields::Meta(i, "name") < fields::Meta(*first, "name")) first = &i;
      obs.cluster = *first;
    }
  }

  // The head: its answer about our submission, and the latest report.
  std::string base, token;
  if (obs.cluster) {
    auto access = HeadAccess(*obs.cluster);
    if (access.ok()) {
      std::tie(base, token) = *access;
      const std::string path = submission.empty() ? "/api/version" : "/api/jobs/" + submission;
      auto reply = options_.call_head("GET", base + path, token, "");
      if (reply.ok() && reply->status > 0) {
        obs.head_reachable = reply->status == 200 || reply->status == 404;
        if (!submission.empty() && reply->status == 200) {
          json details = ParseOrNull(reply->body);
          if (details.is_object()) obs.head_job = details;
        }
      }
      if (obs.head_job && fields::Str(*obs.head_job, "status") != "PENDING") {
        auto m = options_.call_head("GET", base + "/api/jobs/" + submission + "/metrics", token, "");
        if (m.ok() && m->status == 200) {
          const json parsed = ParseOrNull(m->body);
          const json& reports = fields::Field(parsed, "metrics");
          if (reports.is_array())  // rank 0's last report, else anyone's
            for (const auto& rep : reports)
              if (rep.is_object() && (fields::Field(rep, "rank") == 0 || !obs.metrics)) obs.metrics = rep;
        }
      }
    }
  }

  JobReconcileOptions jo;
  const auto wall = std::chrono::system_clock::now();
  jo.now = FormatMicroTime(wall).substr(0, 19) + "Z";
  jo.now_ms = std::chrono::duration_cast<milliseconds>(wall.time_since_epoch()).count();
  jo.progress_interval_ms = options_.job_poll_ms * 2;
  JobReconcileResult r = ReconcileJob(job, obs, jo);
  if (!r.error.empty()) COHORT_LOG(WARN) << key << ": " << r.error;

  // The status first: the submission id is recorded before the call that uses it.
  if (r.status_changed) {
    json updated = job;
    updated["status"] = r.status;
    auto u = client_.UpdateStatus(Resource::CohortJobs(), ns, name, updated);
    if (!u.ok()) {
      if (IsConflict(u.status())) return std::optional<milliseconds>(milliseconds(500));
      return u.status();
    }
  }
  for (const auto& e : r.events)
    (void)client_.RecordEvent(job, e.warning ? "Warning" : "Normal", e.reason, e.message);

  Status first_error;
  for (const auto& a : r.actions) {
    Status s;
    switch (a.kind) {
      case JobAction::Kind::kCreateCluster: {
        auto c = client_.Create(Resource::CohortClusters(), ns, a.body);
        s = c.ok() || c.status().code() == StatusCode::kAlreadyExists ? Status::Ok() : c.status();
        break;
      }
      case JobAction::Kind::kDeleteCluster: s = client_.Delete(Resource::CohortClusters(), ns, a.name); break;
      case JobAction::Kind::kDeleteJob:
        s = client_.Delete(Resource::CohortJobs(), ns, name, fields::Meta(job, "uid"));
        break;
      case JobAction::Kind::kSubmit:
      case JobAction::Kind::kStopJob: {
        if (base.empty()) {
          s = Status::Unavailable("the head of the job's cluster is not reachable");
          break;
        }
        const bool submit = a.kind == JobAction::Kind::kSubmit;
        json body = a.body;
        if (submit) {
          s = ResolveConfigMapWorkingDir(ns, base, token, body);
          if (!s.ok()) break;
        }
        auto reply = submit ? options_.call_head("POST", base + "/api/jobs/", token, body.dump())
                            : options_.call_head("POST", base + "/api/jobs/" + a.name + "/stop", token, "");
        if (!reply.ok()) {
          s = reply.status();
        } else if (reply->status == 200) {
          s = Status::Ok();
        } else if (submit && reply->status == 400 && reply->body.find("already exists") != std::string::npos) {
          s = Status::Ok();  // submitted before (an earlier pass or operator): the same id, one job
        } else {
          s = Status::Unavailable((submit ? "POST /api/jobs/: HTTP " : "POST stop: HTTP ") +
                                  std::to_string(reply->status) + " " + SanitizeUtf8(reply->body.substr(0, 300)));
        }
        break;
      }
    }
    ++actions_;
    if (s.ok()) {
      COHORT_LOG(INFO) << key << ": " << JobActionName(a.kind) << " " << a.name << " (" << a.reason << ")";
      (void)client_.RecordEvent(job, "Normal", a.reason, a.message);
    } else {
      COHORT_LOG(WARN) << key << ": " << JobActionName(a.kind) << " " << a.name << ": " << s.ToString();
      (void)client_.RecordEvent(job, "Warning", "Failed" + a.reason, s.message());
      if (first_error.ok()) first_error = s;
    }
  }
  if (!first_error.ok()) return first_error;
  if (!r.actions.empty()) return std::optional<milliseconds>(milliseconds(1000));
  if (!fields::Str(r.status, "endTime").empty()) {
    if (!fields::Bool(spec, "shutdownAfterJobFinishes")) return std::optional<milliseconds>();
    return std::optional<milliseconds>(milliseconds(5000));  // the TTL's end is at most this late
  }
  return std::optional<milliseconds>(milliseconds(options_.job_poll_ms));
}

Result<std::optional<milliseconds>> Operator::ReconcileOnce(const std::string& key) {
  if (key.rfind(kJobKeyPrefix, 0) == 0) return ReconcileJobOnce(key.substr(std::strlen(kJobKeyPrefix)));
  auto slash = key.find('/');
  std::string ns = key.substr(0, slash), name = key.substr(slash + 1);
  auto got = client_.Get(Resource::CohortClusters(), ns, name);
  if (!got.ok()) {
    if (got.status().code() == StatusCode::kNotFound) {  // deleted: owner references let GC remove the children
      std::lock_guard<std::mutex> lock(mu_);
      idle_since_.erase(key);
      return std::optional<milliseconds>();
    }
    return got.status();
  }
  json cluster = *got;
  if (!cluster.is_object() || !fields::Field(cluster, "metadata").is_object())
    return Status::Internal("GET " + key + ": not a Kubernetes object");
  if (!fields::Field(cluster["metadata"], "deletionTimestamp").is_null()) return std::optional<milliseconds>();
  std::string selector = std::string(kLabelCluster) + "=" + name;
  COHORT_ASSIGN_OR_RETURN(json pods, client_.List(Resource::Pods(), ns, selector));
  COHORT_ASSIGN_OR_RETURN(json svcs, client_.List(Resource::Services(), ns, selector));
  COHORT_ASSIGN_OR_RETURN(json secrets, client_.List(Resource::Secrets(), ns, selector));
  Observed observed{pods["items"], svcs["items"], secrets["items"]};
  // The head's state claim: listed only when asked for (RBAC on PVCs is
  // needed only then).
  if (fields::Field(fields::Field(fields::Field(cluster, "spec"), "headGroupSpec"), "stateVolumeClaim").is_object()) {
    COHORT_ASSIGN_OR_RETURN(json pvcs, client_.List(Resource::PersistentVolumeClaims(), ns, selector));
    observed.pvcs = pvcs["items"];
  }
  std::optional<AutoscalerInput> autoscale;
  const json& spec = fields::Field(cluster, "spec");
  bool autoscaling = fields::Bool(spec, "enableAutoscaling") && !fields::Bool(spec, "suspend");
  if (autoscaling) autoscale = ReadHead(cluster, secrets["items"]);

  ReconcileOptions ro;
  ro.now = FormatMicroTime(std::chrono::system_clock::now()).substr(0, 19) + "Z";
  ro.new_token = RandomHex(32);
  ro.new_join_token = RandomHex(32);
  ro.cluster_domain = options_.cluster_domain;
  ro.default_image = options_.default_image;
  ReconcileResult r = Reconcile(cluster, observed, autoscale, ro);
  if (!r.error.empty())
    (void)client_.RecordEvent(cluster, "Warning", "InvalidSpec", r.error);

  Status first_error;
  for (const auto& a : r.actions) {
    Status s;
    Resource res = ResourceFor(a.kind);
    std::string what = a.kind + (a.name.empty() ? "" : " " + a.name);
    if (a.verb == Action::Verb::kCreate) {
      auto c = client_.Create(res, ns, a.body);
      if (c.ok()) what = a.kind + " " + fields::Meta(*c, "name");
      s = c.ok() || c.status().code() == StatusCode::kAlreadyExists ? Status::Ok() : c.status();
    } else if (a.verb == Action::Verb::kDelete) {
      s = client_.Delete(res, ns, a.name, fields::Str(a.body, "uid"));
    } else {
      auto p = client_.Patch(res, ns, a.name, a.body);
      s = p.ok() ? Status::Ok() : p.status();
      if (p.ok() && a.kind == kKind && fields::Field(*p, "metadata").is_object())  // keep the status write's CAS current
        cluster["metadata"]["resourceVersion"] = fields::Meta(*p, "resourceVersion");
    }
    ++actions_;
    if (s.ok()) {
      COHORT_LOG(INFO) << key << ": " << VerbName(a.verb) << " " << what << " (" << a.reason << ")";
      if (a.kind == "Pod" || a.kind == "PersistentVolumeClaim" || a.reason == "Autoscaled")
        (void)client_.RecordEvent(cluster, "Normal", a.reason,
                                  a.reason == "Autoscaled" ? "worker group replicas changed by the autoscaler"
                                                           : VerbName(a.verb) + "d " + what);
    } else {
      COHORT_LOG(WARN) << key << ": " << VerbName(a.verb) << " " << what << ": " << s.ToString();
      (void)client_.RecordEvent(cluster, "Warning", "Failed" + a.reason, s.message());
      if (first_error.ok()) first_error = s;
    }
  }

  if (cluster.value("status", json::object()) != r.status) {
    json updated = cluster;
    updated["status"] = r.status;
    updated["status"]["lastUpdateTime"] = ro.now;
    json old = cluster.value("status", json::object());
    if (old.is_object()) old.erase("lastUpdateTime");
    if (old != r.status) {
      auto u = client_.UpdateStatus(Resource::CohortClusters(), ns, name, updated);
      if (!u.ok()) {
        if (IsConflict(u.status())) return std::optional<milliseconds>(milliseconds(500));
        if (first_error.ok()) first_error = u.status();
      }
    }
  }
  if (!first_error.ok()) return first_error;
  if (!r.actions.empty()) return std::optional<milliseconds>(milliseconds(2000));
  if (autoscaling) return std::optional<milliseconds>(milliseconds(options_.autoscale_period_s * 1000));
  return std::optional<milliseconds>();
}

std::string Operator::MetricsText() {
  size_t queued;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued = queue_.size();
  }
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, long long v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
           std::to_string(v) + "\n";
  };
  metric("cohort_operator_reconciles_total", "counter", "Reconcile passes run.", reconciles_);
  metric("cohort_operator_reconcile_errors_total", "counter", "Reconcile passes that failed.", reconcile_errors_);
  metric("cohort_operator_actions_total", "counter", "Create/delete/patch calls made on children.", actions_);
  metric("cohort_operator_leader", "gauge", "1 while this replica leads.", leader_ ? 1 : 0);
  metric("cohort_operator_ready", "gauge", "1 once the watches are synced.", ready_ ? 1 : 0);
  metric("cohort_operator_queue_length", "gauge", "Cluster keys waiting for a reconcile.", static_cast<long long>(queued));
  return out;
}

void Operator::Worker(const std::atomic<bool>& stop) {
  std::map<std::string, int> failures;
  while (!stop) {
    std::string key;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto now = Clock::now();
      auto next = Clock::time_point::max();
      for (const auto& [k, when] : queue_) {
        if (when <= now) {
          key = k;
          break;
        }
        next = std::min(next, when);
      }
      if (key.empty()) {
        cv_.wait_until(lock, std::min(next, now + milliseconds(200)));
        continue;
      }
      queue_.erase(key);
    }
    Result<std::optional<milliseconds>> res = Status::Internal("reconcile did not run");
    try {
      res = ReconcileOnce(key);
    } catch (const std::exception& e) {  // a bug: fail this key (with backoff), keep the others going
      res = Status::Internal(std::string("reconcile threw: ") + e.what());
    }
    ++reconciles_;
    if (!res.ok()) {
      ++reconcile_errors_;
      int n = ++failures[key];
      auto delay = milliseconds(std::min<long long>(30000, 1000LL << std::min(n, 5)));
      COHORT_LOG(WARN) << "reconcile " << key << ": " << res.status().ToString();
      Enqueue(key, delay);
      continue;
    }
    failures.erase(key);
    Enqueue(key, res->value_or(milliseconds(options_.resync_s * 1000)));
  }
}

Status Operator::Run(const std::atomic<bool>& stop) {
  std::atomic<bool> local_stop{false};
  std::atomic<bool> lost{false};
  std::unique_ptr<LeaderElector> elector;
  if (options_.leader_elect) {
    elector = std::make_unique<LeaderElector>(
        client_, LeaderElector::Options{options_.lease_namespace, options_.lease_name, options_.identity, 15});
    COHORT_LOG(INFO) << "leader election: waiting for lease " << options_.lease_namespace << "/" << options_.lease_name
                     << " as " << options_.identity;
    while (!stop) {
      auto r = elector->TryAcquireOrRenew();
      if (r.ok() && *r) break;
      if (!r.ok()) COHORT_LOG(WARN) << "leader election: " << r.status().ToString();
      for (int i = 0; i < 20 && !stop; ++i) std::this_thread::sleep_for(milliseconds(100));
    }
    if (stop) return Status::Ok();
    COHORT_LOG(INFO) << "leader election: acquired";
  }
  leader_ = true;
  auto all_stop = [&] { return stop.load() || local_stop.load(); };
  std::atomic<bool> combined{false};
  std::thread watcher([&] {
    while (!all_stop()) std::this_thread::sleep_for(milliseconds(50));
    combined = true;
  });

  auto on_cluster = [this](const std::string& type, const json& obj) {
    if (type != "DELETED" && !fields::Meta(obj, "name").empty()) Enqueue(KeyOf(obj));
    // A CohortJob's own cluster changed (ready, deleted): that job too.
    std::string job = fields::Str(fields::Field(fields::Field(obj, "metadata"), "labels"), kLabelJob);
    if (!job.empty()) Enqueue(kJobKeyPrefix + fields::Meta(obj, "namespace") + "/" + job, milliseconds(200));
  };
  auto on_job = [this](const std::string& type, const json& obj) {
    if (type != "DELETED" && !fields::Meta(obj, "name").empty()) Enqueue(kJobKeyPrefix + KeyOf(obj));
  };
  auto on_child = [this](const std::string&, const json& obj) {
    std::string cluster = fields::Str(fields::Field(fields::Field(obj, "metadata"), "labels"), kLabelCluster);
    if (!cluster.empty()) Enqueue(fields::Meta(obj, "namespace") + "/" + cluster, milliseconds(200));
  };
  Reflector::Options ro;
  ro.namespace_ = options_.namespace_;
  Reflector clusters(client_, Resource::CohortClusters(), ro, on_cluster);
  Reflector jobs(client_, Resource::CohortJobs(), ro, on_job);
  // CohortJobs only where their CRD is installed (Helm installs CRDs only on
  // the first install: an upgraded chart may lack it); CohortClusters work either way.
  bool with_jobs = true;
  if (auto probe = client_.List(Resource::CohortJobs(), options_.namespace_); !probe.ok() &&
      probe.status().code() == StatusCode::kNotFound) {
    with_jobs = false;
    COHORT_LOG(WARN) << "the CohortJob CRD is not installed; CohortJobs are ignored "
                        "(kubectl apply -f deploy/crds/cohort.dev_cohortjobs.yaml, then restart the operator)";
  }
  ro.label_selector = kLabelCluster;
  Reflector pods(client_, Resource::Pods(), ro, on_child);
  Reflector services(client_, Resource::Services(), ro, on_child);
  std::vector<std::thread> threads;
  threads.emplace_back([&] { clusters.Run(combined); });
  if (with_jobs) threads.emplace_back([&] { jobs.Run(combined); });
  threads.emplace_back([&] { pods.Run(combined); });
  threads.emplace_back([&] { services.Run(combined); });
  threads.emplace_back([&] { Worker(combined); });

  Status result;
  auto last_renew = Clock::now();
  while (!all_stop()) {
    for (int i = 0; i < (elector ? 10 : 1) && !all_stop(); ++i) {
      std::this_thread::sleep_for(milliseconds(200));
      ready_ = leader_ && clusters.synced() && (!with_jobs || jobs.synced()) && pods.synced() && services.synced();
    }
    if (!elector || all_stop()) continue;
    auto r = elector->TryAcquireOrRenew();
    if (r.ok() && *r) {
      last_renew = Clock::now();
    } else if (Clock::now() - last_renew > std::chrono::seconds(10)) {
      leader_ = false;
      ready_ = false;
      result = Status::Unavailable("leader election: lost the lease");
      COHORT_LOG(ERROR) << result.ToString();
      local_stop = true;
    }
  }
  combined = true;
  ready_ = false;
  cv_.notify_all();
  for (auto& t : threads) t.join();
  watcher.join();
  if (elector && result.ok()) (void)elector->Release();
  return result;
}

}  // namespace cohort::k8s
