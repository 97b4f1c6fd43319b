// Kubernetes API client (see cohort/k8s/kube_client.h).
#include "cohort/common/base64.h"
#include "cohort/k8s/kube_client.h"

#include <curl/curl.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "cohort/common/logging.h"

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

std::string UrlEncode(const std::string& s) {
  std::string out;
  static const char* kHex = "0123456789ABCDEF";
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') out.push_back(static_cast<char>(ch));
    else {
      out.push_back('%');
      out.push_back(kHex[ch >> 4]);
      out.push_back(kHex[ch & 15]);
    }
  }
  return out;
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

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

struct Transfer {
  std::string body;
  long code = 0;
  std::function<bool(const char*, size_t)> stream;  // for 2xx streaming
  const std::atomic<bool>* stop = nullptr;
  CURL* curl = nullptr;
};

size_t WriteCb(char* ptr, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t len = size * n;
  if (t->code == 0) curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->code);
  if (t->stream && t->code >= 200 && t->code < 300) return t->stream(ptr, len) ? len : 0;
  t->body.append(ptr, len);
  return len;
}

int ProgressCb(void* ud, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(ud);
  return t->stop && t->stop->load() ? 1 : 0;
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

KubeClient::KubeClient(KubeConfig config) : config_(std::move(config)) {
  static CurlGlobal global;
  (void)global;
}

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

namespace {
struct Easy {
  CURL* h = curl_easy_init();
  curl_slist* headers = nullptr;
  ~Easy() {
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
  }
};

void Configure(Easy& e, const KubeConfig& c, const std::string& token, const std::string& url) {
  curl_easy_setopt(e.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e.h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(e.h, CURLOPT_USERAGENT, "cohort-operator/1");
  if (!c.ca_file.empty()) curl_easy_setopt(e.h, CURLOPT_CAINFO, c.ca_file.c_str());
  if (!c.ca_data.empty()) {
    curl_blob blob{const_cast<char*>(c.ca_data.data()), c.ca_data.size(), CURL_BLOB_COPY};
    curl_easy_setopt(e.h, CURLOPT_CAINFO_BLOB, &blob);
  }
  if (c.insecure_skip_tls_verify) {
    curl_easy_setopt(e.h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e.h, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (!c.client_cert_file.empty()) curl_easy_setopt(e.h, CURLOPT_SSLCERT, c.client_cert_file.c_str());
  if (!c.client_key_file.empty()) curl_easy_setopt(e.h, CURLOPT_SSLKEY, c.client_key_file.c_str());
  if (!c.client_cert_data.empty()) {
    curl_blob blob{const_cast<char*>(c.client_cert_data.data()), c.client_cert_data.size(), CURL_BLOB_COPY};
    curl_easy_setopt(e.h, CURLOPT_SSLCERT_BLOB, &blob);
    curl_easy_setopt(e.h, CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (!c.client_key_data.empty()) {
    curl_blob blob{const_cast<char*>(c.client_key_data.data()), c.client_key_data.size(), CURL_BLOB_COPY};
    curl_easy_setopt(e.h, CURLOPT_SSLKEY_BLOB, &blob);
    curl_easy_setopt(e.h, CURLOPT_SSLKEYTYPE, "PEM");
  }
  e.headers = curl_slist_append(e.headers, "Accept: application/json");
  if (!token.empty()) e.headers = curl_slist_append(e.headers, ("Authorization: Bearer " + token).c_str());
}
}  // namespace

Result<json> KubeClient::Request(const std::string& method, const std::string& path, const std::string& body,
                                 const std::string& content_type) {
  for (int attempt = 0;; ++attempt) {
    Easy e;
    if (!e.h) return Status::Internal("curl_easy_init failed");
    Configure(e, config_, Token(), config_.server + path);
    Transfer t;
    t.curl = e.h;
    curl_easy_setopt(e.h, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(e.h, CURLOPT_TIMEOUT_MS, 60000L);
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
      e.headers = curl_slist_append(e.headers, ("Content-Type: " + content_type).c_str());
      curl_easy_setopt(e.h, CURLOPT_POSTFIELDS, body.c_str());
      curl_easy_setopt(e.h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    }
    curl_easy_setopt(e.h, CURLOPT_HTTPHEADER, e.headers);
    curl_easy_setopt(e.h, CURLOPT_WRITEFUNCTION, WriteCb);
    curl_easy_setopt(e.h, CURLOPT_WRITEDATA, &t);
    CURLcode rc = curl_easy_perform(e.h);
    if (rc != CURLE_OK) return Status::Unavailable(method + " " + path + ": " + curl_easy_strerror(rc));
    curl_easy_getinfo(e.h, CURLINFO_RESPONSE_CODE, &t.code);
    if (t.code == 401 && attempt == 0 && !config_.token_file.empty()) {  // token rotated
      ForceTokenReload();
      continue;
    }
    if (t.code < 200 || t.code >= 300) return ApiError(t.code, t.body, method + " " + path);
    if (t.body.empty()) return json::object();
    try {
      return json::parse(t.body);
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
    if (!selector.empty()) q += "&labelSelector=" + UrlEncode(selector);
    if (!cont.empty()) q += "&continue=" + UrlEncode(cont);
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
  if (!rv.empty()) q += "&resourceVersion=" + UrlEncode(rv);
  if (!selector.empty()) q += "&labelSelector=" + UrlEncode(selector);
  std::string path = ResourcePath(r, ns) + q;
  Easy e;
  if (!e.h) return Status::Internal("curl_easy_init failed");
  Configure(e, config_, Token(), config_.server + path);
  curl_easy_setopt(e.h, CURLOPT_HTTPHEADER, e.headers);
  // A stalled watch (no byte, not even a bookmark) for this long is dead.
  curl_easy_setopt(e.h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(e.h, CURLOPT_LOW_SPEED_TIME, static_cast<long>(timeout_s + 60));
  Transfer t;
  t.curl = e.h;
  t.stop = stop;
  std::string line_buf;
  Status event_status;
  bool ended_by_handler = false;
  t.stream = [&](const char* data, size_t n) {
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
  curl_easy_setopt(e.h, CURLOPT_WRITEFUNCTION, WriteCb);
  curl_easy_setopt(e.h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(e.h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(e.h, CURLOPT_XFERINFOFUNCTION, ProgressCb);
  curl_easy_setopt(e.h, CURLOPT_XFERINFODATA, &t);
  CURLcode rc = curl_easy_perform(e.h);
  if (!event_status.ok()) return event_status;
  if (ended_by_handler) return Status::Ok();
  if (stop && stop->load()) return Status::Cancelled("watch stopped");
  if (rc != CURLE_OK) return Status::Unavailable("watch " + path + ": " + curl_easy_strerror(rc));
  curl_easy_getinfo(e.h, CURLINFO_RESPONSE_CODE, &t.code);
  if (t.code == 401 && !config_.token_file.empty()) ForceTokenReload();
  if (t.code < 200 || t.code >= 300) return ApiError(t.code, t.body, "watch " + path);
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
