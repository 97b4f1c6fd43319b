// The CohortCluster reconcile step as a pure function: (the CR, the pods,
// services and secrets it owns, optional autoscaler input) -> the writes that
// move the world toward the spec, plus the status to record. No I/O, no
// clock, no randomness (the caller passes `now` and a fresh token), so it is
// table-testable and idempotent: applying the actions and reconciling again
// yields no actions. Thread-compatible.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cohort::k8s {

inline constexpr const char* kGroup = "cohort.dev";
inline constexpr const char* kVersion = "v1";
inline constexpr const char* kKind = "CohortCluster";
inline constexpr const char* kPlural = "cohortclusters";
inline constexpr const char* kLabelCluster = "cohort.dev/cluster";
inline constexpr const char* kLabelNodeType = "cohort.dev/node-type";
inline constexpr const char* kLabelGroup = "cohort.dev/group";
inline constexpr int kHeadPort = 6380;       // agents' gRPC port ("gcs")
inline constexpr int kDashboardPort = 8265;  // HTTP API + dashboard
inline constexpr int kMetricsPort = 8080;    // agents' Prometheus port

// The cluster's Secret (TokenSecretName) holds two keys: kTokenKey, the
// head's API (admin) token, and kJoinTokenKey, what agents register with.
// Pods see them only as files of a read-only volume at kSecretsMountPath
// (mode kSecretsMode; the pod's fsGroup, 1000 unless the template sets one,
// makes them readable to the image's non-root user), never as environment
// variables or command-line arguments: the head gets both, workers only the
// join token. A Secret without kJoinTokenKey (made before join tokens)
// keeps working: the head makes its own join token and the workers get
// the admin token file, which the head still accepts from agents (with a
// warning).
inline constexpr const char* kTokenKey = "token";
inline constexpr const char* kJoinTokenKey = "join_token";
inline constexpr const char* kSecretsMountPath = "/etc/cohort/secrets";
inline constexpr int kSecretsMode = 0440;

struct Action {
  enum class Verb { kCreate, kDelete, kPatch };
  Verb verb = Verb::kCreate;
  std::string kind;     // Pod, Service, Secret, CohortCluster
  std::string name;     // empty for pods created with generateName
  nlohmann::json body;  // create: the object; patch: a JSON merge patch; delete: {uid}
  std::string reason;   // Event reason, e.g. CreatedWorkerPod
};
std::string VerbName(Action::Verb v);

// What the head reports (GET /api/cluster/status), as the operator saw it.
struct HeadNode {
  std::string address;        // the agent's advertised address (= pod IP)
  bool alive = true;
  bool is_head = false;
  double idle_seconds = 0;    // how long it has held nothing (0 = busy)
};
struct AutoscalerInput {
  std::vector<nlohmann::json> pending_bundles;  // each {"CPU": 1, "GPU": 1, ...}
  std::vector<HeadNode> nodes;
};

struct Observed {
  nlohmann::json pods = nlohmann::json::array();
  nlohmann::json services = nlohmann::json::array();
  nlohmann::json secrets = nlohmann::json::array();
  // Listed only when headGroupSpec.stateVolumeClaim is set.
  nlohmann::json pvcs = nlohmann::json::array();
};

struct ReconcileOptions {
  std::string now = "1970-01-01T00:00:00Z";  // RFC 3339, for condition times
  // Used only when the Secret must be created: the API token, and the join
  // token (empty: the Secret gets no join token; see kJoinTokenKey).
  std::string new_token;
  std::string new_join_token;
  std::string cluster_domain = "cluster.local";
  std::string default_image = "cohort:latest";
  double default_idle_timeout_s = 60;
};

struct ReconcileResult {
  std::vector<Action> actions;
  nlohmann::json status;                       // the CR's new .status
  std::map<std::string, int> desired_replicas;  // per group, after clamping/autoscaling
  std::string error;                           // spec invalid (state failed)
};

// Never throws on any JSON input. A spec it cannot act on (besides what the
// CRD checks: replica fields that are not integers in [0, 2^31-1], a
// template, its metadata/spec/containers[] of the wrong JSON type, an
// idleTimeoutSeconds that is not a number >= 0, a head port outside
// 1..65535) sets `error`, state "failed" and a Ready=False/InvalidSpec
// condition, and yields no actions.
ReconcileResult Reconcile(const nlohmann::json& cluster, const Observed& observed,
                          const std::optional<AutoscalerInput>& autoscale, const ReconcileOptions& options);

// Helpers shared with the operator and tests.
std::string HeadServiceName(const std::string& cluster);
std::string TokenSecretName(const std::string& cluster);
// The head's state volume (headGroupSpec.stateVolumeClaim): "<cluster>-head-state".
// Owned by the CohortCluster: deleting the cluster deletes the head's state;
// deleting the head pod does not (the new head pod mounts the same claim,
// recovers its job records, and the running jobs re-attach).
std::string StateClaimName(const std::string& cluster);
// Kubernetes quantities: "500m" -> 0.5, "4" -> 4, "12Gi" -> 12*2^30. Always
// finite: a malformed quantity, or one beyond double's range ("1e300Ei"), is 0.
double ParseQuantity(const std::string& q);
// A pod is dead when Failed/Succeeded; terminating when deletionTimestamp is set.
bool PodDead(const nlohmann::json& pod);
bool PodTerminating(const nlohmann::json& pod);
bool PodReady(const nlohmann::json& pod);
// The worker resources a group's pods offer: {"CPU": n, "GPU": n, "memory": bytes}.
nlohmann::json GroupCapacity(const nlohmann::json& group);

}  // namespace cohort::k8s
