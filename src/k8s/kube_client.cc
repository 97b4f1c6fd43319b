// Kubernetes API client (see cohort/k8s/kube_client.h).
#include "cohort/common/base64.h"
#include "cohort/k8s/kube_client.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "cohort/common/logging.h"
#include "cohort/net/http_client.h"

namespace cohort::k8s {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// Base64 data of a kubeconfig or Secret; "" when malformed.
std::string Base64Decode(const std::string& in) {
  std::string out;
  return cohort::Base64Decode(in, &out) ? out : std::string();
}

Status ApiError(long code, const std::string& body, const std::string& what) {
  std::string reason, message = body;
  try {
    json j = json::parse(body);
    reason = j.value("reason", "");
    message = j.value("message", body);
  } catch (...) {
  }
  std::string m = what + ": HTTP " + std::to_string(code) + (message.empty() ? "" : ": " + message);
  switch (code) {
    case 404: return Status::NotFound(m);
    case 409: return reason == "AlreadyExists" ? Status::AlreadyExists(m) : Status::FailedPrecondition("conflict: " + m);
    case 410: return Status::FailedPrecondition("gone: " + m);
    case 400:
    case 422: return Status::InvalidArgument(m);
    case 401:
    case 403: return Status::FailedPrecondition("forbidden: " + m);
    default: return Status::Unavailable(m);
  }
}

// A request to the API server: the config's TLS settings, the bearer token,
// JSON wanted back.
net::HttpRequest ApiRequest(const KubeConfig& c, const std::string& token, const std::string& method,
                            const std::string& url) {
  net::HttpRequest req;
  req.method = method;
  req.url = url;
  req.user_agent = "cohort-operator/1";
  req.connect_timeout = std::chrono::milliseconds(10000);
  req.stall_timeout = std::chrono::milliseconds(0);
  req.tls.ca_file = c.ca_file;
  req.tls.ca_pem = c.ca_data;
  req.tls.client_cert_file = c.client_cert_file;
  req.tls.client_key_file = c.client_key_file;
  req.tls.client_cert_pem = c.client_cert_data;
  req.tls.client_key_pem = c.client_key_data;
  req.tls.insecure_skip_verify = c.insecure_skip_tls_verify;
  req.headers.emplace_back("Accept", "application/json");
  if (!token.empty()) req.headers.emplace_back("Authorization", "Bearer " + token);
  return req;
}

// curl's reason for a transport failure (the status itself when there is none).
std::string TransportCause(const Status& status, const net::HttpTransportError& error) {
  return error.cause.empty() ? status.message() : error.cause;
}

}  // namespace

bool IsGone(const Status& s) { return s.code() == StatusCode::kFailedPrecondition && s.message().rfind("gone:", 0) == 0; }
bool IsConflict(const Status& s) {
  return s.code() == StatusCode::kFailedPrecondition && s.message().rfind("conflict:", 0) == 0;
}

std::string ResourcePath(const Resource& r, const std::string& ns, const std::string& name, const std::string& sub) {
  std::string p = r.group.empty() ? "/api/" + r.version : "/apis/" + r.group + "/" + r.version;
  if (r.namespaced && !ns.empty()) p += "/namespaces/" + ns;
  p += "/" + r.plural;
  if (!name.empty()) p += "/" + name;
  if (!sub.empty()) p += "/" + sub;
  return p;
}

Result<KubeConfig> InClusterConfig(const std::string& sa_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host || !port || !*port)
    return Status::FailedPrecondition("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set");
  KubeConfig c;
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";
  c.server = "https://" + h + ":" + port;
  c.token_file = sa_dir + "/token";
  if (Trim(ReadFile(c.token_file)).empty()) return Status::FailedPrecondition("no service account token in " + c.token_file);
  c.ca_file = sa_dir + "/ca.crt";
  std::string ns = Trim(ReadFile(sa_dir + "/namespace"));
  if (!ns.empty()) c.default_namespace = ns;
  return c;
}

Result<KubeConfig> LoadKubeconfig(const std::string& path, const std::string& context) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("kubeconfig " + path + ": " + e.what());
  }
  auto find_named = [&](const char* list, const std::string& name) -> YAML::Node {
    if (root[list] && root[list].IsSequence())
      for (const auto& item : root[list])
        if (item["name"] && item["name"].as<std::string>() == name) return item;
    return YAML::Node();
  };
  std::string ctx_name = context;
  if (ctx_name.empty() && root["current-context"]) ctx_name = root["current-context"].as<std::string>();
  YAML::Node ctx = find_named("contexts", ctx_name);
  if (!ctx || !ctx["context"]) return Status::InvalidArgument("kubeconfig " + path + ": no context '" + ctx_name + "'");
  std::string cluster_name = ctx["context"]["cluster"] ? ctx["context"]["cluster"].as<std::string>() : "";
  std::string user_name = ctx["context"]["user"] ? ctx["context"]["user"].as<std::string>() : "";
  KubeConfig c;
  if (ctx["context"]["namespace"]) c.default_namespace = ctx["context"]["namespace"].as<std::string>();
  YAML::Node cl = find_named("clusters", cluster_name);
  if (!cl || !cl["cluster"] || !cl["cluster"]["server"])
    return Status::InvalidArgument("kubeconfig " + path + ": no cluster '" + cluster_name + "'");
  std::string base = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  auto rel = [&](std::string p) { return !p.empty() && p[0] != '/' ? base + "/" + p : p; };
  YAML::Node cc = cl["cluster"];
  c.server = cc["server"].as<std::string>();
  if (cc["certificate-authority-data"]) c.ca_data = Base64Decode(cc["certificate-authority-data"].as<std::string>());
  if (cc["certificate-authority"]) c.ca_file = rel(cc["certificate-authority"].as<std::string>());
  if (cc["insecure-skip-tls-verify"]) c.insecure_skip_tls_verify = cc["insecure-skip-tls-verify"].as<bool>();
  YAML::Node u = find_named("users", user_name);
  if (u && u["user"]) {
    YAML::Node uu = u["user"];
    if (uu["token"]) c.token = uu["token"].as<std::string>();
    if (uu["tokenFile"]) c.token_file = rel(uu["tokenFile"].as<std::string>());
    if (uu["client-certificate-data"]) c.client_cert_data = Base64Decode(uu["client-certificate-data"].as<std::string>());
    if (uu["client-key-data"]) c.client_key_data = Base64Decode(uu["client-key-data"].as<std::string>());
    if (uu["client-certificate"]) c.client_cert_file = rel(uu["client-certificate"].as<std::string>());
    if (uu["client-key"]) c.client_key_file = rel(uu["client-key"].as<std::string>());
    if (uu["exec"]) COHORT_LOG(WARN) << "kubeconfig user '" << user_name << "' uses an exec plugin, which cohort does not run";
  }
  return c;
}

Result<KubeConfig> DefaultConfig(const std::string& kubeconfig_path) {
  if (!kubeconfig_path.empty()) return LoadKubeconfig(kubeconfig_path);
  if (std::getenv("KUBERNETES_SERVICE_HOST")) return InClusterConfig();
  std::string p;
  if (const char* k = std::getenv("KUBECONFIG"); k && *k) p = std::string(k).substr(0, std::string(k).find(':'));
  else if (const char* home = std::getenv("HOME")) p = std::string(home) + "/.kube/config";
  if (!p.empty() && std::ifstream(p)) return LoadKubeconfig(p);
  return Status::FailedPrecondition("no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not in a cluster");
}

KubeClient::KubeClient(KubeConfig config) : config_(std::move(config)) {}

std::string KubeClient::Token() {
  if (config_.token_file.empty()) return config_.token;
  std::lock_guard<std::mutex> lock(mu_);
  auto now = Clock::now();
  if (token_cache_.empty() || now - token_read_ > std::chrono::seconds(60)) {
    std::string t = Trim(ReadFile(config_.token_file));
    if (!t.empty()) token_cache_ = t;
    token_read_ = now;
  }
  return token_cache_.empty() ? config_.token : token_cache_;
}

void KubeClient::ForceTokenReload() {
  std::lock_guard<std::mutex> lock(mu_);
  token_cache_.clear();
}

Result<json> KubeClient::Request(const std::string& method, const std::string& path, const std::string& body,
                                 const std::string& content_type) {
  for (int attempt = 0;; ++attempt) {
    net::HttpRequest req = ApiRequest(config_, Token(), method, config_.server + path);
    req.total_timeout = std::chrono::milliseconds(60000);
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
      req.headers.emplace_back("Content-Type", content_type);
      req.body = body;
    }
    net::HttpTransportError error;
    auto resp = net::SendHttp(req, &error);
    if (!resp.ok()) return Status::Unavailable(method + " " + path + ": " + TransportCause(resp.status(), error));
    if (resp->status == 401 && attempt == 0 && !config_.token_file.empty()) {  // token rotated
      ForceTokenReload();
      continue;
    }
    if (resp->status < 200 || resp->status >= 300) return ApiError(resp->status, resp->body, method + " " + path);
    if (resp->body.empty()) return json::object();
    try {
      return json::parse(resp->body);
    } catch (const std::exception& ex) {
      return Status::Internal(method + " " + path + ": bad JSON: " + ex.what());
    }
  }
}

Result<json> KubeClient::Get(const Resource& r, const std::string& ns, const std::string& name) {
  return Request("GET", ResourcePath(r, ns, name));
}

Result<json> KubeClient::List(const Resource& r, const std::string& ns, const std::string& selector, int limit) {
  json items = json::array();
  std::string cont, rv;
  do {
    std::string q = "?limit=" + std::to_string(limit);
    if (!selector.empty()) q += "&labelSelector=" + net::UrlEncode(selector);
    if (!cont.empty()) q += "&continue=" + net::UrlEncode(cont);
    COHORT_ASSIGN_OR_RETURN(json page, Request("GET", ResourcePath(r, ns) + q));
    if (page.contains("items") && page["items"].is_array())
      for (auto& it : page["items"]) items.push_back(std::move(it));
    const json& m = page.contains("metadata") ? page["metadata"] : json::object();
    rv = m.value("resourceVersion", rv);
    cont = m.value("continue", "");
  } while (!cont.empty());
  return json{{"items", items}, {"metadata", {{"resourceVersion", rv}}}};
}

Result<json> KubeClient::Create(const Resource& r, const std::string& ns, const json& body) {
  return Request("POST", ResourcePath(r, ns), body.dump());
}
Result<json> KubeClient::Replace(const Resource& r, const std::string& ns, const std::string& name, const json& body) {
  return Request("PUT", ResourcePath(r, ns, name), body.dump());
}
Result<json> KubeClient::Patch(const Resource& r, const std::string& ns, const std::string& name, const json& patch) {
  return Request("PATCH", ResourcePath(r, ns, name), patch.dump(), "application/merge-patch+json");
}
Status KubeClient::Delete(const Resource& r, const std::string& ns, const std::string& name, const std::string& uid) {
  json opts = {{"kind", "DeleteOptions"}, {"apiVersion", "v1"}, {"propagationPolicy", "Background"}};
  if (!uid.empty()) opts["preconditions"] = {{"uid", uid}};
  auto res = Request("DELETE", ResourcePath(r, ns, name), opts.dump());
  if (!res.ok() && res.status().code() != StatusCode::kNotFound) return res.status();
  return Status::Ok();
}
Result<json> KubeClient::UpdateStatus(const Resource& r, const std::string& ns, const std::string& name,
                                      const json& body) {
  return Request("PUT", ResourcePath(r, ns, name, "status"), body.dump());
}
Result<json> KubeClient::PatchStatus(const Resource& r, const std::string& ns, const std::string& name,
                                     const json& patch) {
  return Request("PATCH", ResourcePath(r, ns, name, "status"), patch.dump(), "application/merge-patch+json");
}

Status KubeClient::Watch(const Resource& r, const std::string& ns, const std::string& selector, const std::string& rv,
                         int timeout_s, const std::function<bool(const WatchEvent&)>& on_event,
                         const std::atomic<bool>* stop) {
  std::string q = "?watch=1&allowWatchBookmarks=true&timeoutSeconds=" + std::to_string(timeout_s);
  if (!rv.empty()) q += "&resourceVersion=" + net::UrlEncode(rv);
  if (!selector.empty()) q += "&labelSelector=" + net::UrlEncode(selector);
  std::string path = ResourcePath(r, ns) + q;
  net::HttpRequest req = ApiRequest(config_, Token(), "GET", config_.server + path);
  // A stalled watch (no byte, not even a bookmark) for this long is dead.
  req.stall_timeout = std::chrono::seconds(timeout_s + 60);
  if (stop) req.cancel = [stop] { return stop->load(); };
  std::string line_buf;
  Status event_status;
  bool ended_by_handler = false;
  req.on_body = [&](const char* data, size_t n) {
    line_buf.append(data, n);
    size_t pos;
    while ((pos = line_buf.find('\n')) != std::string::npos) {
      std::string line = line_buf.substr(0, pos);
      line_buf.erase(0, pos + 1);
      if (Trim(line).empty()) continue;
      WatchEvent ev;
      try {
        json j = json::parse(line);
        ev.type = j.value("type", "");
        ev.object = j.value("object", json::object());
      } catch (const std::exception& ex) {
        event_status = Status::Internal("watch " + path + ": bad event line: " + ex.what());
        return false;
      }
      if (ev.type == "ERROR") {
        int code = ev.object.value("code", 0);
        event_status = ApiError(code ? code : 500, ev.object.dump(), "watch " + path);
        return false;
      }
      if (!on_event(ev)) {
        ended_by_handler = true;
        return false;
      }
    }
    return true;
  };
  net::HttpTransportError error;
  auto resp = net::SendHttp(req, &error);
  if (!event_status.ok()) return event_status;
  if (ended_by_handler) return Status::Ok();
  if (stop && stop->load()) return Status::Cancelled("watch stopped");
  if (!resp.ok()) return Status::Unavailable("watch " + path + ": " + TransportCause(resp.status(), error));
  if (resp->status == 401 && !config_.token_file.empty()) ForceTokenReload();
  if (resp->status < 200 || resp->status >= 300) return ApiError(resp->status, resp->body, "watch " + path);
  return Status::Ok();
}

Status KubeClient::RecordEvent(const json& involved, const std::string& type, const std::string& reason,
                               const std::string& message, const std::string& component) {
  const json& m = involved.contains("metadata") ? involved["metadata"] : json::object();
  std::string ns = m.value("namespace", config_.default_namespace);
  std::string now = FormatMicroTime(std::chrono::system_clock::now());
  std::string ts = now.substr(0, 19) + "Z";
  static std::atomic<unsigned> seq{0};
  std::mt19937 rng(std::random_device{}());
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), ".%08x%04x", static_cast<unsigned>(rng()), seq++ & 0xffff);
  json ev = {{"apiVersion", "v1"},
             {"kind", "Event"},
             {"metadata", {{"name", m.value("name", "object") + suffix}, {"namespace", ns}}},
             {"involvedObject",
              {{"apiVersion", involved.value("apiVersion", "")},
               {"kind", involved.value("kind", "")},
               {"name", m.value("name", "")},
               {"namespace", ns},
               {"uid", m.value("uid", "")},
               {"resourceVersion", m.value("resourceVersion", "")}}},
             {"type", type},
             {"reason", reason},
             {"message", message},
             {"source", {{"component", component}}},
             {"firstTimestamp", ts},
             {"lastTimestamp", ts},
             {"count", 1}};
  auto r = Create(Resource::Events(), ns, ev);
  return r.ok() ? Status::Ok() : r.status();
}

// --- Reflector -------------------------------------------------------------------

Reflector::Reflector(KubeClient& client, Resource resource, Options options, Handler handler)
    : client_(client), resource_(std::move(resource)), options_(std::move(options)), handler_(std::move(handler)) {}

std::string Reflector::Key(const json& obj) {
  const json& m = obj.contains("metadata") ? obj["metadata"] : json::object();
  return m.value("namespace", "") + "/" + m.value("name", "");
}

std::string Reflector::resource_version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rv_;
}

std::map<std::string, json> Reflector::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cache_;
}

Status Reflector::ListOnce() {
  COHORT_ASSIGN_OR_RETURN(json list, client_.List(resource_, options_.namespace_, options_.label_selector));
  ++lists_;
  std::map<std::string, json> fresh;
  for (const auto& it : list["items"]) fresh[Key(it)] = it;
  std::vector<std::pair<std::string, json>> events;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, v] : cache_)
      if (!fresh.count(k)) events.emplace_back("DELETED", v);
    for (const auto& [k, v] : fresh) {
      auto old = cache_.find(k);
      if (old == cache_.end()) events.emplace_back("ADDED", v);
      else if (old->second != v) events.emplace_back("MODIFIED", v);
    }
    cache_ = std::move(fresh);
    rv_ = list["metadata"].value("resourceVersion", "");
  }
  for (const auto& [type, obj] : events) handler_(type, obj);
  synced_ = true;
  return Status::Ok();
}

void Reflector::Run(const std::atomic<bool>& stop) {
  std::mt19937 rng(std::random_device{}());
  auto backoff = options_.backoff_initial;
  auto sleep = [&](std::chrono::milliseconds d) {
    auto jittered = std::chrono::milliseconds(
        static_cast<long long>(d.count() * std::uniform_real_distribution<double>(0.8, 1.2)(rng)));
    auto until = Clock::now() + jittered;
    while (!stop && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  auto fail = [&](const Status& s) {
    COHORT_LOG(WARN) << "k8s " << resource_.plural << ": " << s.ToString() << "; retrying in " << backoff.count()
                     << " ms";
    sleep(backoff);
    backoff = std::min(backoff * 2, options_.backoff_max);
  };
  bool need_list = true;
  while (!stop) {
    if (need_list) {
      Status s = ListOnce();
      if (!s.ok()) {
        fail(s);
        continue;
      }
      need_list = false;
    }
    Status s = client_.Watch(
        resource_, options_.namespace_, options_.label_selector, resource_version(), options_.watch_timeout_s,
        [&](const WatchEvent& ev) {
          backoff = options_.backoff_initial;  // the connection works
          std::string rv = ev.object.contains("metadata") ? ev.object["metadata"].value("resourceVersion", "") : "";
          std::unique_lock<std::mutex> lock(mu_);
          if (!rv.empty()) rv_ = rv;
          if (ev.type == "BOOKMARK") return true;  // only the RV moves
          std::string key = Key(ev.object);
          if (ev.type == "DELETED") cache_.erase(key);
          else cache_[key] = ev.object;
          lock.unlock();
          handler_(ev.type, ev.object);
          return true;
        },
        &stop);
    ++watches_;
    if (stop) break;
    if (IsGone(s)) {
      COHORT_LOG(INFO) << "k8s " << resource_.plural << ": resourceVersion too old, re-listing";
      need_list = true;
      continue;
    }
    if (!s.ok()) fail(s);
  }
}

// --- Leader election -----------------------------------------------------------

std::string FormatMicroTime(std::chrono::system_clock::time_point t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(us % 1000000));
  return buf;
}

std::optional<std::chrono::system_clock::time_point> ParseTime(const std::string& s) {
  std::tm tm{};
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest) return std::nullopt;
  long long us = 0;
  if (*rest == '.') {
    ++rest;
    int digits = 0;
    while (std::isdigit(static_cast<unsigned char>(*rest))) {
      if (digits < 6) { us = us * 10 + (*rest - '0'); ++digits; }
      ++rest;
    }
    while (digits++ < 6) us *= 10;
  }
  auto t = std::chrono::system_clock::from_time_t(timegm(&tm)) + std::chrono::microseconds(us);
  if (*rest == '+' || *rest == '-') {
    int hh = 0, mm = 0;
    std::sscanf(rest + 1, "%d:%d", &hh, &mm);
    auto off = std::chrono::hours(hh) + std::chrono::minutes(mm);
    t = *rest == '+' ? t - off : t + off;
  }
  return t;
}

LeaderElector::LeaderElector(KubeClient& client, Options options) : client_(client), options_(std::move(options)) {}

Result<bool> LeaderElector::TryAcquireOrRenew() {
  auto now = std::chrono::system_clock::now();
  std::string now_s = FormatMicroTime(now);
  auto got = client_.Get(Resource::Leases(), options_.namespace_, options_.name);
  if (!got.ok() && got.status().code() == StatusCode::kNotFound) {
    json lease = {{"apiVersion", "coordination.k8s.io/v1"},
                  {"kind", "Lease"},
                  {"metadata", {{"name", options_.name}, {"namespace", options_.namespace_}}},
                  {"spec",
                   {{"holderIdentity", options_.identity},
                    {"leaseDurationSeconds", options_.lease_duration_s},
                    {"acquireTime", now_s},
                    {"renewTime", now_s},
                    {"leaseTransitions", 0}}}};
    auto c = client_.Create(Resource::Leases(), options_.namespace_, lease);
    if (c.ok()) return true;
    if (c.status().code() == StatusCode::kAlreadyExists) return false;
    return c.status();
  }
  if (!got.ok()) return got.status();
  json lease = *got;
  json& spec = lease["spec"];
  if (!spec.is_object()) spec = json::object();
  std::string holder = spec.value("holderIdentity", "");
  int duration = spec.value("leaseDurationSeconds", options_.lease_duration_s);
  auto renew = ParseTime(spec.value("renewTime", ""));
  bool expired = !renew || *renew + std::chrono::seconds(duration) < now;
  if (!holder.empty() && holder != options_.identity && !expired) return false;
  if (holder != options_.identity) {
    spec["leaseTransitions"] = spec.value("leaseTransitions", 0) + (holder.empty() ? 0 : 1);
    spec["acquireTime"] = now_s;
  }
  spec["holderIdentity"] = options_.identity;
  spec["leaseDurationSeconds"] = options_.lease_duration_s;
  spec["renewTime"] = now_s;
  auto put = client_.Replace(Resource::Leases(), options_.namespace_, options_.name, lease);  // CAS on resourceVersion
  if (put.ok()) return true;
  if (IsConflict(put.status())) return false;
  return put.status();
}

Status LeaderElector::Release() {
  auto got = client_.Get(Resource::Leases(), options_.namespace_, options_.name);
  if (!got.ok()) return got.status().code() == StatusCode::kNotFound ? Status::Ok() : got.status();
  json lease = *got;
  if (lease["spec"].value("holderIdentity", "") != options_.identity) return Status::Ok();
  lease["spec"]["holderIdentity"] = "";
  auto put = client_.Replace(Resource::Leases(), options_.namespace_, options_.name, lease);
  return put.ok() ? Status::Ok() : put.status();
}

}  // namespace cohort::k8s
