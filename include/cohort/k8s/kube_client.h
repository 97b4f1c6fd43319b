// A small Kubernetes API client on the shared HTTP client
// (cohort/net/http_client.h): in-cluster and kubeconfig configuration, CRUD +
// merge patch + /status, list (with continue) and a reflector that lists then
// watches with resourceVersion, bookmarks, 410 Gone re-lists and reconnect
// backoff; Events; Lease leader election.
// KubeClient is safe to use from several threads (one connection per call).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "cohort/common/status.h"

namespace cohort::k8s {

struct KubeConfig {
  std::string server;            // https://host:port (or http:// in tests)
  std::string token;             // bearer token (static)
  std::string token_file;        // re-read every minute and after a 401
  std::string ca_file;           // PEM file, or
  std::string ca_data;           // PEM text
  std::string client_cert_file, client_key_file;  // mutual TLS
  std::string client_cert_data, client_key_data;  // PEM text
  bool insecure_skip_tls_verify = false;
  std::string default_namespace = "default";
};

// KUBERNETES_SERVICE_HOST/PORT + /var/run/secrets/kubernetes.io/serviceaccount
// (`sa_dir` overridable for tests).
Result<KubeConfig> InClusterConfig(const std::string& sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount");
// A kubeconfig file (YAML): the current context's (or `context`'s) cluster
// server, CA (data or file), user token / tokenFile / client cert+key. An
// unreadable file, a missing context or cluster server, or a field of the
// wrong type is InvalidArgument "kubeconfig <path>: ..."; never throws.
Result<KubeConfig> LoadKubeconfig(const std::string& path, const std::string& context = "");
// $KUBECONFIG or ~/.kube/config when present, else in-cluster.
Result<KubeConfig> DefaultConfig(const std::string& kubeconfig_path = "");

struct Resource {
  std::string group;  // "" for core
  std::string version;
  std::string plural;
  bool namespaced = true;
  static Resource Pods() { return {"", "v1", "pods", true}; }
  static Resource Services() { return {"", "v1", "services", true}; }
  static Resource Secrets() { return {"", "v1", "secrets", true}; }
  static Resource ConfigMaps() { return {"", "v1", "configmaps", true}; }
  static Resource PersistentVolumeClaims() { return {"", "v1", "persistentvolumeclaims", true}; }
  static Resource Events() { return {"", "v1", "events", true}; }
  static Resource Leases() { return {"coordination.k8s.io", "v1", "leases", true}; }
  static Resource CohortClusters() { return {"cohort.dev", "v1", "cohortclusters", true}; }
  static Resource CohortJobs() { return {"cohort.dev", "v1", "cohortjobs", true}; }
};
// /api/v1/namespaces/ns/pods/name/status; ns "" = all namespaces (lists).
std::string ResourcePath(const Resource& r, const std::string& ns, const std::string& name = "",
                         const std::string& subresource = "");

// API errors map onto Status: 404 NotFound, 409 AlreadyExists (reason
// AlreadyExists) or FailedPrecondition "conflict: ..." (reason Conflict),
// 410 FailedPrecondition "gone: ...", 400/422 InvalidArgument, 401/403
// FailedPrecondition "forbidden: ...", others / transport Unavailable.
bool IsGone(const Status& s);
bool IsConflict(const Status& s);

struct WatchEvent {
  std::string type;  // ADDED MODIFIED DELETED BOOKMARK ERROR
  nlohmann::json object;
};

class KubeClient {
 public:
  explicit KubeClient(KubeConfig config);

  const KubeConfig& config() const { return config_; }

  Result<nlohmann::json> Get(const Resource& r, const std::string& ns, const std::string& name);
  // Follows metadata.continue; returns {"items": [...], "metadata": {"resourceVersion": RV}}.
  Result<nlohmann::json> List(const Resource& r, const std::string& ns, const std::string& label_selector = "",
                              int limit = 500);
  Result<nlohmann::json> Create(const Resource& r, const std::string& ns, const nlohmann::json& body);
  Result<nlohmann::json> Replace(const Resource& r, const std::string& ns, const std::string& name,
                                 const nlohmann::json& body);
  Result<nlohmann::json> Patch(const Resource& r, const std::string& ns, const std::string& name,
                               const nlohmann::json& merge_patch);
  // Deletes with propagationPolicy Background and, when uid is given, a uid precondition. 404 is OK.
  Status Delete(const Resource& r, const std::string& ns, const std::string& name, const std::string& uid = "");
  // PUT .../{name}/status with the object's resourceVersion (409 on a stale one).
  Result<nlohmann::json> UpdateStatus(const Resource& r, const std::string& ns, const std::string& name,
                                      const nlohmann::json& body);
  Result<nlohmann::json> PatchStatus(const Resource& r, const std::string& ns, const std::string& name,
                                     const nlohmann::json& merge_patch);
  // One watch request from resource_version; calls on_event per line until
  // the server ends the stream, on_event returns false or *stop turns true
  // (then Cancelled). HTTP 410 or an ERROR event with code 410 -> IsGone.
  // A malformed event line, or an exception thrown by on_event, ends it with
  // Internal (nothing throws through libcurl's callback).
  Status Watch(const Resource& r, const std::string& ns, const std::string& label_selector,
               const std::string& resource_version, int timeout_s,
               const std::function<bool(const WatchEvent&)>& on_event, const std::atomic<bool>* stop = nullptr);
  // POST a core/v1 Event about `involved` (type Normal|Warning).
  Status RecordEvent(const nlohmann::json& involved, const std::string& type, const std::string& reason,
                     const std::string& message, const std::string& component = "cohort-operator");

  // Raw request (method, path with query, body) -> parsed JSON body.
  Result<nlohmann::json> Request(const std::string& method, const std::string& path, const std::string& body = "",
                                 const std::string& content_type = "application/json");

 private:
  std::string Token();
  KubeConfig config_;
  std::mutex mu_;
  std::string token_cache_;
  std::chrono::steady_clock::time_point token_read_{};
  void ForceTokenReload();
};

// List + watch of one resource kept as a cache of ns/name -> object, with
// callbacks. Run() loops until *stop: LIST (continue), then WATCH from the
// list's resourceVersion; bookmarks move the RV; a normal stream end
// re-watches; 410 Gone re-lists (synthesising DELETED for vanished objects);
// transport errors back off exponentially with jitter (capped).
class Reflector {
 public:
  struct Options {
    std::string namespace_;  // "" = all namespaces
    std::string label_selector;
    int watch_timeout_s = 300;
    std::chrono::milliseconds backoff_initial{500};
    std::chrono::milliseconds backoff_max{30000};
  };
  using Handler = std::function<void(const std::string& type, const nlohmann::json& object)>;

  Reflector(KubeClient& client, Resource resource, Options options, Handler handler);
  void Run(const std::atomic<bool>& stop);

  std::string resource_version() const;
  int lists() const { return lists_; }
  int watches() const { return watches_; }
  bool synced() const { return synced_; }
  std::map<std::string, nlohmann::json> Snapshot() const;

 private:
  Status ListOnce();
  static std::string Key(const nlohmann::json& obj);
  KubeClient& client_;
  Resource resource_;
  Options options_;
  Handler handler_;
  mutable std::mutex mu_;
  std::string rv_;
  std::map<std::string, nlohmann::json> cache_;
  std::atomic<int> lists_{0}, watches_{0};
  std::atomic<bool> synced_{false};
};

// coordination.k8s.io/v1 Lease leader election.
class LeaderElector {
 public:
  struct Options {
    std::string namespace_ = "default";
    std::string name = "cohort-operator";
    std::string identity;
    int lease_duration_s = 15;
  };
  LeaderElector(KubeClient& client, Options options);
  // One acquire-or-renew attempt: true when we hold the lease afterwards.
  Result<bool> TryAcquireOrRenew();
  // Clears holderIdentity if we hold it.
  Status Release();

 private:
  KubeClient& client_;
  Options options_;
};

// RFC 3339 with microseconds ("2026-01-02T03:04:05.000000Z") and back.
// ParseTime: nullopt when malformed, when the offset is not [+-]HH:MM
// (HH <= 23, MM <= 59), or for years outside 1678..2261 (system_clock's
// int64 nanoseconds end in 1677 and 2262).
std::string FormatMicroTime(std::chrono::system_clock::time_point t);
std::optional<std::chrono::system_clock::time_point> ParseTime(const std::string& s);

}  // namespace cohort::k8s
