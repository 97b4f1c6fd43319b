// The CohortCluster operator: list+watch CohortClusters and the Pods/Services
// they own, a de-duplicating work queue of cluster keys, level-triggered
// reconciles through the pure Reconcile() (cohort/k8s/reconcile.h), status via
// the /status subresource, Events, optional Lease leader election, and the
// autoscaler input read from the head's GET /api/cluster/status.
// Run() owns its threads; ReconcileOnce() may be called directly (tests).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "cohort/common/status.h"
#include "cohort/k8s/job_reconcile.h"
#include "cohort/k8s/kube_client.h"
#include "cohort/k8s/reconcile.h"

namespace cohort::k8s {

struct OperatorOptions {
  std::string namespace_;  // "" = all namespaces
  bool leader_elect = false;
  std::string lease_namespace;  // default: the client's namespace
  std::string lease_name = "cohort-operator";
  std::string identity;         // default: hostname + random
  int resync_s = 300;
  int autoscale_period_s = 10;
  std::string cluster_domain = "cluster.local";
  std::string default_image = "cohort:latest";
  // GET url with the bearer token -> parsed JSON (default: libcurl). Tests override.
  std::function<Result<nlohmann::json>(const std::string& url, const std::string& token)> fetch_head_status;
  // A call to a head's HTTP API for CohortJobs: method, URL, bearer token,
  // JSON body ("" for none) -> the reply, any HTTP status; Unavailable when
  // none came (default: libcurl, 10 s). Tests override.
  struct HeadReply {
    int status = 0;
    std::string body;
  };
  std::function<Result<HeadReply>(const std::string& method, const std::string& url, const std::string& token,
                                  const std::string& body)>
      call_head;
  // How often a running CohortJob's status is refreshed from its head.
  int job_poll_ms = 5000;
  // A CohortJob whose runtime_env.working_dir is "configmap://NAME": the
  // ConfigMap's files (name -> bytes) as a working_dir package: its name
  // ("_ray_pkg_<hash>.zip") and zip bytes, uploaded to the head before the
  // submission (`cohort operator` packages like `cohort job submit
  // --working-dir`). Unset: such jobs fail to submit, saying so.
  std::function<Result<std::pair<std::string, std::string>>(const std::map<std::string, std::string>& files)>
      package_files;
};

class Operator {
 public:
  Operator(KubeClient& client, OperatorOptions options);
  // Blocks until *stop (or leadership is lost: returns Unavailable).
  Status Run(const std::atomic<bool>& stop);
  // One reconcile of "ns/name" (a CohortCluster) or "job:ns/name" (a
  // CohortJob); returns when to requeue (nullopt: at resync).
  Result<std::optional<std::chrono::milliseconds>> ReconcileOnce(const std::string& key);
  Result<std::optional<std::chrono::milliseconds>> ReconcileJobOnce(const std::string& key);
  void Enqueue(const std::string& key, std::chrono::milliseconds delay = std::chrono::milliseconds(0));
  // For /readyz: the watches' first lists are in (and, with leader election, we lead).
  bool Ready() const { return ready_; }
  // For /metrics: Prometheus text (reconciles, errors, leadership, queue length).
  std::string MetricsText();

 private:
  std::optional<AutoscalerInput> ReadHead(const nlohmann::json& cluster, const nlohmann::json& secrets);
  // "http://<svc>.<ns>.svc.<domain>:<dashboard port>" of `cluster`'s head.
  std::string HeadBaseUrl(const nlohmann::json& cluster) const;
  // The head's API base URL and admin token of `cluster`.
  Result<std::pair<std::string, std::string>> HeadAccess(const nlohmann::json& cluster);
  // A submit request whose working_dir is "configmap://NAME": the ConfigMap
  // packaged, uploaded to the head (unless it has it), and named "gcs://...".
  Status ResolveConfigMapWorkingDir(const std::string& ns, const std::string& base, const std::string& token,
                                    nlohmann::json& request);
  void Worker(const std::atomic<bool>& stop);
  KubeClient& client_;
  OperatorOptions options_;
  std::atomic<bool> ready_{false}, leader_{false};
  std::atomic<long long> reconciles_{0}, reconcile_errors_{0}, actions_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::chrono::steady_clock::time_point> queue_;  // key -> not before
  std::set<std::string> active_;
  // cluster key -> node address -> when it was first seen idle.
  std::map<std::string, std::map<std::string, std::chrono::steady_clock::time_point>> idle_since_;
};

}  // namespace cohort::k8s
