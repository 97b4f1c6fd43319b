// Kubernetes API client (see cohort/k8s/kube_client.h).
#include "cohort/common/base64.h"
#include "cohort/k8s/kube_client.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "cohort/common/logging.h"
#include "cohort/net/http_client.h"
#include "json_fields.h"
#include "watch_line.h"

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

WatchLine DecodeWatchLine(const std::string& line, const std::string& what) noexcept {
  WatchLine out;
  try {
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) return out;  // kBlank
    out.kind = WatchLine::Kind::kEnd;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      out.status = Status::Internal(what + ": bad event line: not JSON");
      return out;
    }
    const json& type = fields::Field(j, "type");
    const json& object = fields::Field(j, "object");
    if (!type.is_string()) {
      out.status = Status::Internal(what + ": bad event line: no type");
      return out;
    }
    if (type.get<std::string>() == "ERROR") {
      if (!object.is_object()) {
        out.status = Status::Internal(what + ": ERROR event without a Status object: " +
                                      object.dump(-1, ' ', false, json::error_handler_t::replace));
        return out;
      }
      const long long code = fields::Int(object, "code", 500, 100, 599);
      out.status = ApiError(code, object.dump(-1, ' ', false, json::error_handler_t::replace), what);
      return out;
    }
    if (!object.is_object()) {
      out.status = Status::Internal(what + ": bad event line: the " + type.get<std::string>() + " event's object is " +
                                    object.type_name());
      return out;
    }
    out.kind = WatchLine::Kind::kEvent;
    out.event.type = type.get<std::string>();
    out.event.object = object;
  } catch (const std::exception& e) {  // bad_alloc
    out.kind = WatchLine::Kind::kEnd;
    out.status = Status::Internal(what + ": decoding an event: " + e.what());
  } catch (...) {
    out.kind = WatchLine::Kind::kEnd;
    out.status = Status::Internal(what + ": decoding an event failed");
  }
  return out;
}

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

namespace {

// Reads kubeconfig fields with their types checked: yaml-cpp throws on a
// subscript of a scalar and on a conversion of a mapping or list
// (YAML::BadConversion), so every read goes through this. An absent or null
// field is "not there"; a field of the wrong type sets `error` (the first one).
struct KubeconfigReader {
  std::string error;

  static const char* Kind(const YAML::Node& n) {
    return n.IsMap() ? "mapping" : n.IsSequence() ? "list" : n.IsScalar() ? "scalar" : "null";
  }
  // map[key] when `map` is a mapping holding the (scalar) key with a non-null value.
  static std::optional<YAML::Node> Field(const YAML::Node& map, const std::string& key) {
    if (!map.IsMap()) return std::nullopt;
    for (const auto& kv : map)
      if (kv.first.IsScalar() && kv.first.Scalar() == key) {
        if (!kv.second.IsDefined() || kv.second.IsNull()) return std::nullopt;
        return kv.second;
      }
    return std::nullopt;
  }
  void Fail(const std::string& what) {
    if (error.empty()) error = what;
  }
  std::string String(const YAML::Node& map, const char* key, const std::string& where, const std::string& def = "") {
    auto v = Field(map, key);
    if (!v) return def;
    if (!v->IsScalar()) {
      Fail(where + key + " must be a string, not a " + Kind(*v));
      return def;
    }
    return v->Scalar();
  }
  bool Bool(const YAML::Node& map, const char* key, const std::string& where, bool def) {
    auto v = Field(map, key);
    if (!v) return def;
    bool b = def;
    if (!YAML::convert<bool>::decode(*v, b)) Fail(where + key + " must be true or false");
    return b;
  }
  // map[key] as a mapping (an empty node when absent).
  YAML::Node Map(const YAML::Node& map, const char* key, const std::string& where) {
    auto v = Field(map, key);
    if (!v) return YAML::Node();
    if (!v->IsMap()) {
      Fail(where + key + " must be a mapping, not a " + Kind(*v));
      return YAML::Node();
    }
    return *v;
  }
  // The first mapping in the list root[list] whose name is `name`.
  std::optional<YAML::Node> Named(const YAML::Node& root, const char* list, const std::string& name) {
    auto items = Field(root, list);
    if (!items) return std::nullopt;
    if (!items->IsSequence()) {
      Fail(std::string(list) + " must be a list, not a " + Kind(*items));
      return std::nullopt;
    }
    for (const auto& item : *items) {
      auto n = Field(item, "name");
      if (n && n->IsScalar() && n->Scalar() == name) return YAML::Node(item);
    }
    return std::nullopt;
  }
};

}  // namespace

Result<KubeConfig> LoadKubeconfig(const std::string& path, const std::string& context) {
  auto invalid = [&](const std::string& what) { return Status::InvalidArgument("kubeconfig " + path + ": " + what); };
  try {
    YAML::Node root;
    try {
      root = YAML::LoadFile(path);
    } catch (const std::exception& e) {
      return invalid(e.what());
    }
    if (!root.IsMap() && !root.IsNull()) return invalid(std::string("not a mapping but a ") + KubeconfigReader::Kind(root));
    KubeconfigReader r;
    std::string ctx_name = context.empty() ? r.String(root, "current-context", "") : context;
    std::optional<YAML::Node> ctx_item = r.Named(root, "contexts", ctx_name);
    if (!r.error.empty()) return invalid(r.error);
    const std::string cw = "context '" + ctx_name + "': ";
    YAML::Node ctx = ctx_item ? r.Map(*ctx_item, "context", cw) : YAML::Node();
    if (!r.error.empty()) return invalid(r.error);
    if (!ctx.IsMap()) return invalid("no context '" + ctx_name + "'");
    std::string cluster_name = r.String(ctx, "cluster", cw);
    std::string user_name = r.String(ctx, "user", cw);
    KubeConfig c;
    c.default_namespace = r.String(ctx, "namespace", cw, c.default_namespace);
    std::optional<YAML::Node> cl_item = r.Named(root, "clusters", cluster_name);
    if (!r.error.empty()) return invalid(r.error);
    const std::string clw = "cluster '" + cluster_name + "': ";
    YAML::Node cc = cl_item ? r.Map(*cl_item, "cluster", clw) : YAML::Node();
    if (!r.error.empty()) return invalid(r.error);
    c.server = r.String(cc, "server", clw + "cluster.");
    if (!r.error.empty()) return invalid(r.error);
    if (c.server.empty()) return invalid("no cluster '" + cluster_name + "' with a server");
    std::string base = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    auto rel = [&](std::string p) { return !p.empty() && p[0] != '/' ? base + "/" + p : p; };
    const std::string ccw = clw + "cluster.";
    if (std::string d = r.String(cc, "certificate-authority-data", ccw); !d.empty()) c.ca_data = Base64Decode(d);
    c.ca_file = rel(r.String(cc, "certificate-authority", ccw));
    c.insecure_skip_tls_verify = r.Bool(cc, "insecure-skip-tls-verify", ccw, false);
    std::optional<YAML::Node> u_item = r.Named(root, "users", user_name);
    const std::string uw = "user '" + user_name + "': user.";
    YAML::Node uu = u_item ? r.Map(*u_item, "user", "user '" + user_name + "': ") : YAML::Node();
    if (uu.IsMap()) {
      c.token = r.String(uu, "token", uw);
      c.token_file = rel(r.String(uu, "tokenFile", uw));
      if (std::string d = r.String(uu, "client-certificate-data", uw); !d.empty()) c.client_cert_data = Base64Decode(d);
      if (std::string d = r.String(uu, "client-key-data", uw); !d.empty()) c.client_key_data = Base64Decode(d);
      c.client_cert_file = rel(r.String(uu, "client-certificate", uw));
      c.client_key_file = rel(r.String(uu, "client-key", uw));
      if (KubeconfigReader::Field(uu, "exec"))
        COHORT_LOG(WARN) << "kubeconfig user '" << user_name << "' uses an exec plugin, which cohort does not run";
    }
    if (!r.error.empty()) return invalid(r.error);
    return c;
  } catch (const std::exception& e) {  // none is expected: every read above checks its type
    return invalid(e.what());
  }
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
    rv = fields::Str(fields::Field(page, "metadata"), "resourceVersion", rv);
    cont = fields::Meta(page, "continue");
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
  // Called from libcurl's (C) write callback: nothing may throw out of it.
  req.on_body = [&](const char* data, size_t n) noexcept {
    try {
      line_buf.append(data, n);
      size_t pos;
      while ((pos = line_buf.find('\n')) != std::string::npos) {
        std::string line = line_buf.substr(0, pos);
        line_buf.erase(0, pos + 1);
        WatchLine decoded = DecodeWatchLine(line, "watch " + path);
        if (decoded.kind == WatchLine::Kind::kBlank) continue;
        if (decoded.kind == WatchLine::Kind::kEnd) {
          event_status = decoded.status;
          return false;
        }
        if (!on_event(decoded.event)) {
          ended_by_handler = true;
          return false;
        }
      }
      return true;
    } catch (const std::exception& e) {  // from the handler (or bad_alloc)
      event_status = Status::Internal("watch " + path + ": handling an event: " + e.what());
    } catch (...) {
      event_status = Status::Internal("watch " + path + ": handling an event failed");
    }
    return false;
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
  const json& m = fields::Field(involved, "metadata");
  std::string ns = fields::Str(m, "namespace", config_.default_namespace);
  std::string now = FormatMicroTime(std::chrono::system_clock::now());
  std::string ts = now.substr(0, 19) + "Z";
  static std::atomic<unsigned> seq{0};
  std::mt19937 rng(std::random_device{}());
  char suffix[32];
  std::snprintf(suffix, sizeof(suffix), ".%08x%04x", static_cast<unsigned>(rng()), seq++ & 0xffff);
  json ev = {{"apiVersion", "v1"},
             {"kind", "Event"},
             {"metadata", {{"name", fields::Str(m, "name", "object") + suffix}, {"namespace", ns}}},
             {"involvedObject",
              {{"apiVersion", fields::Str(involved, "apiVersion")},
               {"kind", fields::Str(involved, "kind")},
               {"name", fields::Str(m, "name")},
               {"namespace", ns},
               {"uid", fields::Str(m, "uid")},
               {"resourceVersion", fields::Str(m, "resourceVersion")}}},
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

std::string Reflector::Key(const json& obj) { return fields::Meta(obj, "namespace") + "/" + fields::Meta(obj, "name"); }

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
  for (const auto& it : fields::Field(list, "items")) fresh[Key(it)] = it;
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
    rv_ = fields::Meta(list, "resourceVersion");
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
          std::string rv = fields::Meta(ev.object, "resourceVersion");
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
  // system_clock counts int64 nanoseconds: 1677-09-21 .. 2262-04-11. Whole
  // years inside that, with an offset under a day, cannot overflow it.
  const long long year = static_cast<long long>(tm.tm_year) + 1900;
  if (year < 1678 || year > 2261) return std::nullopt;
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
  if (*rest == '+' || *rest == '-') {  // RFC 3339 time-numoffset: [+-]HH:MM, 00..23 and 00..59
    auto digit = [&](int i) { return std::isdigit(static_cast<unsigned char>(rest[i])) != 0; };
    if (!digit(1) || !digit(2) || rest[3] != ':' || !digit(4) || !digit(5)) return std::nullopt;
    const int hh = (rest[1] - '0') * 10 + (rest[2] - '0'), mm = (rest[4] - '0') * 10 + (rest[5] - '0');
    if (hh > 23 || mm > 59) return std::nullopt;
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
  if (!lease.is_object()) return Status::Internal("lease " + options_.name + ": not a JSON object");
  json& spec = lease["spec"];
  if (!spec.is_object()) spec = json::object();
  std::string holder = fields::Str(spec, "holderIdentity");
  // Written by other replicas (or anyone allowed to): read with range checks
  // (ParseTime's latest time plus a day still fits system_clock).
  long long duration = fields::Int(spec, "leaseDurationSeconds", options_.lease_duration_s, 1, 86400);
  auto renew = ParseTime(fields::Str(spec, "renewTime"));
  bool expired = !renew || *renew + std::chrono::seconds(duration) < now;
  if (!holder.empty() && holder != options_.identity && !expired) return false;
  if (holder != options_.identity) {
    spec["leaseTransitions"] = fields::Int(spec, "leaseTransitions", 0, 0, 2147483646) + (holder.empty() ? 0 : 1);
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
  if (!lease.is_object() || fields::Str(fields::Field(lease, "spec"), "holderIdentity") != options_.identity)
    return Status::Ok();
  lease["spec"]["holderIdentity"] = "";
  auto put = client_.Replace(Resource::Leases(), options_.namespace_, options_.name, lease);
  return put.ok() ? Status::Ok() : put.status();
}

}  // namespace cohort::k8s
