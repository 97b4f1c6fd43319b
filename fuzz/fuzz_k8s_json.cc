// fuzz_k8s_json: the operator's decoding of Kubernetes JSON (src/k8s/).
//
// Input: a watch stream — newline-separated JSON events
//   {"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": {...}}
// as KubeClient::Watch receives them from the API server.
//
//   1. Each line is decoded by k8s::DecodeWatchLine (src/k8s/watch_line.h),
//      which KubeClient::Watch calls from its curl write callback; an ERROR
//      event or a bad line ends the stream, as it ends the watch.
//   2. Events update a cache keyed like the Reflector's (kind + name):
//      CohortCluster, Pod, Service, Secret; an object of kind "ClusterStatus"
//      stands for the head's GET /api/cluster/status reply and is decoded by
//      k8s::DecodeHeadStatus (cohort/k8s/head_status.h), as Operator::ReadHead
//      does, into the AutoscalerInput (a node that is not busy has been idle
//      for an hour: ReadHead's clock is the only part not run).
//   3. The public pure functions of cohort/k8s/reconcile.h run on the result:
//      Reconcile(cluster, observed, autoscale, options) for every cluster,
//      PodDead / PodTerminating / PodReady on every pod, GroupCapacity on
//      every group, ParseQuantity on every resource quantity, and
//      kube_client.h's ParseTime on every timestamp.
// Properties checked: Reconcile is deterministic; its status and action
// bodies serialise (PatchStatus / Create send them with dump()); actions are
// on the four kinds it owns; deletes carry a body; and reconcile.h's
// "applying the actions and reconciling again yields no actions"
// (COHORT_FUZZ_K8S_IDEMPOTENCE=0 turns that check off).
//
// No known crash of this target is open: the reproducers in
// fuzz/regressions/fuzz_k8s_json/ are ordinary regressions, so there are no
// guards (docs/fuzzing.md, "When a fuzzer crashes").
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cohort/k8s/head_status.h"
#include "cohort/k8s/kube_client.h"
#include "cohort/k8s/reconcile.h"
#include "fuzz_common.h"
#include "k8s/watch_line.h"

namespace {

using nlohmann::json;
namespace k8s = cohort::k8s;

struct Cache {
  std::map<std::string, json> clusters, pods, services, secrets;
  std::optional<json> head_status;
};

std::map<std::string, json>* Bucket(Cache& cache, const std::string& kind) {
  if (kind == "CohortCluster") return &cache.clusters;
  if (kind == "Pod") return &cache.pods;
  if (kind == "Service") return &cache.services;
  if (kind == "Secret") return &cache.secrets;
  return nullptr;
}

// Operator::ReadHead: the real decoding, with a fixed clock (a node that is
// not busy has been idle for an hour).
std::optional<k8s::AutoscalerInput> DecodeHeadStatus(const json& st) {
  std::optional<k8s::HeadStatus> decoded = k8s::DecodeHeadStatus(st);
  if (!decoded) return std::nullopt;  // ReadHead: no autoscaler input this round
  k8s::AutoscalerInput in;
  in.pending_bundles = decoded->pending_bundles;
  for (const auto& n : decoded->nodes) {
    k8s::HeadNode hn;
    hn.address = n.address;
    hn.alive = n.alive;
    hn.is_head = n.is_head;
    if (!n.busy) hn.idle_seconds = 3600;
    in.nodes.push_back(hn);
  }
  return in;
}

void VisitQuantities(const json& container) {
  if (!container.is_object()) return;
  auto res = container.find("resources");
  if (res == container.end() || !res->is_object()) return;
  for (const char* which : {"requests", "limits"}) {
    auto m = res->find(which);
    if (m == res->end() || !m->is_object()) continue;
    for (const auto& [k, v] : m->items()) (void)k8s::ParseQuantity(v.is_string() ? v.get<std::string>() : v.dump());
  }
}

void VisitTimes(const json& obj) {
  if (!obj.is_object()) return;
  auto meta = obj.find("metadata");
  if (meta == obj.end() || !meta->is_object()) return;
  for (const char* key : {"creationTimestamp", "deletionTimestamp"}) {
    auto t = meta->find(key);
    if (t != meta->end() && t->is_string()) (void)k8s::ParseTime(t->get<std::string>());
  }
}

std::string Name(const json& obj) {
  if (!obj.is_object() || !obj.contains("metadata") || !obj["metadata"].is_object()) return "";
  auto it = obj["metadata"].find("name");
  return it != obj["metadata"].end() && it->is_string() ? it->get<std::string>() : "";
}

bool SameResult(const k8s::ReconcileResult& a, const k8s::ReconcileResult& b) {
  if (a.actions.size() != b.actions.size() || a.status != b.status || a.error != b.error ||
      a.desired_replicas != b.desired_replicas)
    return false;
  for (size_t i = 0; i < a.actions.size(); ++i) {
    const auto &x = a.actions[i], &y = b.actions[i];
    if (x.verb != y.verb || x.kind != y.kind || x.name != y.name || x.body != y.body || x.reason != y.reason)
      return false;
  }
  return true;
}

// Applies the actions the way the API server would (creates get a name and a
// uid, deletes remove, merge patches merge), for the idempotence check.
void Apply(const std::vector<k8s::Action>& actions, json& cluster, k8s::Observed& observed) {
  int n = 0;
  for (const auto& a : actions) {
    json* list = a.kind == "Pod" ? &observed.pods : a.kind == "Service" ? &observed.services
                 : a.kind == "Secret"                                    ? &observed.secrets
                                                                         : nullptr;
    if (a.verb == k8s::Action::Verb::kCreate && list) {
      json obj = a.body;
      if (a.name.empty()) obj["metadata"]["name"] = obj["metadata"].value("generateName", "") + "fz" + std::to_string(n++);
      obj["metadata"]["uid"] = "fuzz-uid-" + std::to_string(n++);
      obj["metadata"]["creationTimestamp"] = "2099-01-01T00:00:00Z";
      list->push_back(obj);
    } else if (a.verb == k8s::Action::Verb::kDelete && list) {
      json kept = json::array();
      for (const auto& o : *list)
        if (Name(o) != a.name) kept.push_back(o);
      *list = kept;
    } else if (a.verb == k8s::Action::Verb::kPatch) {
      if (a.kind == k8s::kKind) {
        cluster.merge_patch(a.body);
      } else if (list) {
        for (auto& o : *list)
          if (Name(o) == a.name) o.merge_patch(a.body);
      }
    }
  }
}

bool IdempotenceCheck() {
  static const bool on = [] {
    const char* e = std::getenv("COHORT_FUZZ_K8S_IDEMPOTENCE");
    return e == nullptr || std::string(e) != "0";
  }();
  return on;
}

// Not a bug: Reconcile builds one pod body per missing replica, so the
// harness keeps the replica counts small enough to stay fast (on a copy).
json LimitReplicas(const json& observed_cluster) {
  json cluster = observed_cluster;
  if (cluster.is_object() && cluster.contains("spec") && cluster["spec"].is_object() &&
      cluster["spec"].contains("workerGroupSpecs") && cluster["spec"]["workerGroupSpecs"].is_array()) {
    for (auto& g : cluster["spec"]["workerGroupSpecs"]) {
      if (!g.is_object()) continue;
      for (const char* key : {"replicas", "minReplicas"}) {
        auto it = g.find(key);
        if (it != g.end() && it->is_number() && !(it->get<double>() <= 256)) *it = 256;
      }
    }
  }
  return cluster;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  Cache cache;

  // 1 + 2: the watch stream, line by line (KubeClient::Watch's loop).
  size_t start = 0;
  while (start < input.size()) {
    size_t nl = input.find('\n', start);
    if (nl == std::string_view::npos) break;  // Watch keeps a partial line until more bytes come
    std::string line(input.substr(start, nl - start));
    start = nl + 1;
    k8s::WatchLine decoded = k8s::DecodeWatchLine(line, "watch /fuzz");
    if (decoded.kind == k8s::WatchLine::Kind::kBlank) continue;
    if (decoded.kind == k8s::WatchLine::Kind::kEnd) {
      FUZZ_CHECK(!decoded.status.ok(), "a watch ends with an OK status");
      (void)decoded.status.ToString();
      break;  // the watch ends (bad line: Internal; ERROR: its ApiError)
    }
    const k8s::WatchEvent& ev = decoded.event;
    FUZZ_CHECK(ev.object.is_object() && ev.type != "ERROR", "DecodeWatchLine passed on an event it documents it never does");
    // The handler: the Reflector's cache (BOOKMARK only moves the resourceVersion).
    if (ev.type == "BOOKMARK") continue;
    auto kind_it = ev.object.find("kind");
    const std::string kind = kind_it != ev.object.end() && kind_it->is_string() ? kind_it->get<std::string>() : "";
    if (kind == "ClusterStatus") {
      cache.head_status = ev.object;
      continue;
    }
    auto* bucket = Bucket(cache, kind);
    const std::string name = Name(ev.object);
    if (bucket == nullptr || name.empty()) continue;
    if (ev.type == "DELETED") {
      bucket->erase(name);
    } else {
      (*bucket)[name] = ev.object;
    }
  }

  // 3. The pure functions.
  k8s::Observed observed;
  for (const auto& [name, pod] : cache.pods) {
    (void)k8s::PodDead(pod);
    (void)k8s::PodTerminating(pod);
    (void)k8s::PodReady(pod);
    VisitTimes(pod);
    const json& spec = pod.contains("spec") ? pod["spec"] : json();
    if (spec.is_object() && spec.contains("containers") && spec["containers"].is_array())
      for (const auto& c : spec["containers"]) VisitQuantities(c);
    observed.pods.push_back(pod);
  }
  for (const auto& [name, svc] : cache.services) observed.services.push_back(svc);
  for (const auto& [name, secret] : cache.secrets) observed.secrets.push_back(secret);

  std::optional<k8s::AutoscalerInput> autoscale;
  if (cache.head_status) autoscale = DecodeHeadStatus(*cache.head_status);

  for (const auto& [name, observed_cluster] : cache.clusters) {
    VisitTimes(observed_cluster);
    const json cluster = LimitReplicas(observed_cluster);
    const json* groups = nullptr;
    if (cluster.contains("spec") && cluster["spec"].is_object() && cluster["spec"].contains("workerGroupSpecs"))
      groups = &cluster["spec"]["workerGroupSpecs"];
    if (groups && groups->is_array())
      for (const auto& g : *groups) (void)k8s::GroupCapacity(g);

    k8s::ReconcileOptions options;
    options.now = "2030-01-02T03:04:05Z";
    options.new_token = "0123456789abcdef0123456789abcdef";
    k8s::ReconcileResult r = k8s::Reconcile(cluster, observed, autoscale, options);
    (void)r.status.dump();
    for (const auto& a : r.actions) {
      FUZZ_CHECK(a.kind == "Pod" || a.kind == "Service" || a.kind == "Secret" || a.kind == k8s::kKind,
                 "an action on kind '" + a.kind + "'");
      FUZZ_CHECK(a.verb != k8s::Action::Verb::kDelete || !a.body.is_null(), "a delete without a body");
      (void)a.body.dump();
      (void)k8s::VerbName(a.verb);
    }
    k8s::ReconcileResult again = k8s::Reconcile(cluster, observed, autoscale, options);
    FUZZ_CHECK(SameResult(r, again), "Reconcile is not deterministic");

    if (IdempotenceCheck() && r.error.empty()) {
      json next_cluster = cluster;
      k8s::Observed next = observed;
      Apply(r.actions, next_cluster, next);
      k8s::ReconcileResult second = k8s::Reconcile(next_cluster, next, autoscale, options);
      std::string left;
      for (const auto& a : second.actions) left += " " + k8s::VerbName(a.verb) + " " + a.kind + " " + a.name + ";";
      FUZZ_CHECK(second.actions.empty(), "reconciling after applying the actions wants more:" + left);
    }
  }
  return 0;
}
