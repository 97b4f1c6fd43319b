// fuzz_k8s_json: the operator's decoding of Kubernetes JSON (src/k8s/).
//
// Input: a watch stream — newline-separated JSON events
//   {"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": {...}}
// as KubeClient::Watch receives them from the API server.
//
//   1. Each line is decoded the way KubeClient::Watch does it (that code is a
//      lambda inside Watch, behind a curl transfer, so the target repeats its
//      steps: Trim, json::parse, value("type"), value("object"), and for
//      ERROR events value("code") and the ApiError message).
//   2. Events update a cache keyed like the Reflector's (kind + name):
//      CohortCluster, Pod, Service, Secret; an object of kind "ClusterStatus"
//      stands for the head's GET /api/cluster/status reply and is decoded the
//      way Operator::ReadHead does it (also private: repeated here) into the
//      AutoscalerInput.
//   3. The public pure functions of cohort/k8s/reconcile.h run on the result:
//      Reconcile(cluster, observed, autoscale, options) for every cluster,
//      PodDead / PodTerminating / PodReady on every pod, GroupCapacity on
//      every group, ParseQuantity on every resource quantity, and
//      kube_client.h's ParseTime on every timestamp.
// Properties checked: Reconcile is deterministic; its status and action
// bodies serialise (PatchStatus / Create send them with dump()); actions are
// on the four kinds it owns; deletes carry a body. reconcile.h's "applying
// the actions and reconciling again yields no actions" is checked only with
// COHORT_FUZZ_K8S_IDEMPOTENCE=1 (it does not hold: see docs/fuzzing.md,
// corpus file service_selector_extra_key.jsonl).
//
// Known crashes found by this target are steered around while fuzzing (the
// "Known bugs" section below, fuzz/regressions/KNOWN_CRASHES); set
// COHORT_FUZZ_NO_GUARDS=1 to let them crash.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cohort/k8s/kube_client.h"
#include "cohort/k8s/reconcile.h"
#include "fuzz_common.h"

namespace {

using nlohmann::json;
namespace k8s = cohort::k8s;

// kube_client.cc's Trim.
std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

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

// Operator::ReadHead's decoding of the head's reply (operator.cc), with a
// fixed clock: a node idle now has been idle for `idle_seconds` of the input.
bool HeadStatusShapeOk(const json& st);

k8s::AutoscalerInput DecodeHeadStatus(json st) {
  k8s::AutoscalerInput in;
  if (!HeadStatusShapeOk(st)) return in;
  const json& pending = st["pending_demand"];
  if (pending.is_array())
    for (const auto& p : pending)
      if (p.contains("bundles") && p["bundles"].is_array())
        for (const auto& b : p["bundles"]) in.pending_bundles.push_back(b);
  const json& nodes = st["nodes"];
  if (nodes.is_array())
    for (const auto& n : nodes) {
      k8s::HeadNode hn;
      hn.address = n.value("address", "");
      if (auto c = hn.address.rfind(':'); c != std::string::npos && hn.address.find(':') == c)
        hn.address = hn.address.substr(0, c);  // host:port -> host
      hn.alive = n.value("state", "") == "ALIVE";
      hn.is_head = n.value("is_head_node", false);
      bool busy = false;
      if (n.contains("resources_used") && n["resources_used"].is_object())
        for (auto it = n["resources_used"].begin(); it != n["resources_used"].end(); ++it)
          if (it->is_number() && it->get<double>() > 0) busy = true;
      if (!busy) hn.idle_seconds = 3600;
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

std::optional<std::chrono::system_clock::time_point> ParseTimeGuarded(const std::string& s);
bool WatchErrorCodeReadable(const json& object);

void VisitTimes(const json& obj) {
  if (!obj.is_object()) return;
  auto meta = obj.find("metadata");
  if (meta == obj.end() || !meta->is_object()) return;
  for (const char* key : {"creationTimestamp", "deletionTimestamp"}) {
    auto t = meta->find(key);
    if (t != meta->end() && t->is_string()) (void)ParseTimeGuarded(t->get<std::string>());
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

// ---- Known bugs (fuzz/regressions/KNOWN_CRASHES) ----------------------------
// While fuzzing, an input that would hit a known, unfixed bug is steered
// around it (the operation is skipped or the input adjusted) so the fuzzer
// keeps finding new ones. COHORT_FUZZ_NO_GUARDS=1 turns the guards off; run.sh
// sets it when it replays the known reproducers. Remove a guard with its fix.

bool NoGuards() {
  static const bool no_guards = std::getenv("COHORT_FUZZ_NO_GUARDS") != nullptr;
  return no_guards;
}

// k8s-parsetime-range: ParseTime's from_time_t / offset arithmetic overflows
// int64 nanoseconds for years outside 1678..2261 or absurd "+HH:MM" offsets.
bool ParseTimeOverflows(const std::string& s) {
  std::tm tm{};
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) return false;
  const long long secs = static_cast<long long>(timegm(&tm));
  if (secs < -9'000'000'000LL || secs > 9'000'000'000LL) return true;
  if (*rest == '.') {
    ++rest;
    while (std::isdigit(static_cast<unsigned char>(*rest))) ++rest;
  }
  if (*rest == '+' || *rest == '-') {
    int hh = 0, mm = 0;
    std::sscanf(rest + 1, "%d:%d", &hh, &mm);
    if (std::llabs(hh) > 1'000'000 || std::llabs(mm) > 60'000'000) return true;
  }
  return false;
}

std::optional<std::chrono::system_clock::time_point> ParseTimeGuarded(const std::string& s) {
  if (!NoGuards() && ParseTimeOverflows(s)) return std::nullopt;
  return k8s::ParseTime(s);
}

// Reconcile's Int(): a JSON number read as long long (a float is cast).
long long IntField(const json& g, const char* key, long long def) {
  auto it = g.is_object() ? g.find(key) : g.end();
  return g.is_object() && it != g.end() && it->is_number() ? it->get<long long>() : def;
}

// k8s-reconcile-int-overflow: Reconcile sums desired/min/max replicas of the
// groups in `int` (maxReplicas defaults to, and the CRD defaults it to,
// 2147483647), so two groups without maxReplicas overflow. The guard lowers
// the maxReplicas (and replicas/minReplicas) of a copy until the sums fit.
// REQUIRES: no float out of long long range (ClampHugeFloats).
json AvoidReplicaSumOverflow(const json& cluster) {
  const json* groups = nullptr;
  if (cluster.contains("spec") && cluster["spec"].is_object() && cluster["spec"].contains("workerGroupSpecs"))
    groups = &cluster["spec"]["workerGroupSpecs"];
  if (groups == nullptr || !groups->is_array()) return cluster;
  long long max_sum = 0;
  for (const auto& g : *groups) {
    max_sum += std::min<long long>(IntField(g, "maxReplicas", 2147483647), 2147483647);
  }
  if (max_sum <= 2147483647) return cluster;
  json copy = cluster;
  for (auto& g : copy["spec"]["workerGroupSpecs"]) {
    if (!g.is_object()) continue;
    g["maxReplicas"] = std::min<long long>(IntField(g, "maxReplicas", 2147483647), 1 << 20);
    if (IntField(g, "minReplicas", 0) > (1 << 20)) g["minReplicas"] = 1 << 20;
    if (IntField(g, "replicas", 0) > (1 << 20)) g["replicas"] = 1 << 20;
  }
  return copy;
}


// k8s-watch-error-code: Watch reads an ERROR event's code with
// ev.object.value("code", 0) outside its try block: an object that is not a
// JSON object, or a code that is not a number, throws out of the curl write
// callback; a float code out of int range is UB.
bool WatchErrorCodeReadable(const json& object) {
  if (NoGuards()) return true;
  if (!object.is_object()) return false;
  auto it = object.find("code");
  if (it == object.end()) return true;
  if (it->is_number_float()) return std::fabs(it->get<double>()) < 2147483647.0;
  return it->is_number() || it->is_boolean();
}

// k8s-readhead-shape: Operator::ReadHead indexes the head's reply with
// operator[] and value() without checking types: a reply that is not an
// object, or a node that is not an object (or has a non-string address /
// state, a non-boolean is_head_node), throws in the operator's worker thread.
bool HeadStatusShapeOk(const json& st) {
  if (NoGuards()) return true;
  if (!st.is_object()) return false;
  auto nodes = st.find("nodes");
  if (nodes == st.end() || !nodes->is_array()) return true;
  for (const auto& n : *nodes) {
    if (!n.is_object()) return false;
    for (const char* key : {"address", "state"}) {
      auto it = n.find(key);
      if (it != n.end() && !it->is_string()) return false;
    }
    auto head = n.find("is_head_node");
    if (head != n.end() && !head->is_boolean()) return false;
  }
  return true;
}

// Reconcile's ParseQuantity on a quantity as ContainerLimits reads it.
double Quantity(const json& v) { return k8s::ParseQuantity(v.is_string() ? v.get<std::string>() : v.dump()); }

// Applies `fn` to the containers[0] of the head's and every group's template.
template <typename Fn>
void ForEachFirstContainerSlot(json& cluster, Fn fn) {
  if (!cluster.contains("spec") || !cluster["spec"].is_object()) return;
  json& spec = cluster["spec"];
  std::vector<json*> groups;
  if (spec.contains("headGroupSpec")) groups.push_back(&spec["headGroupSpec"]);
  if (spec.contains("workerGroupSpecs") && spec["workerGroupSpecs"].is_array())
    for (auto& g : spec["workerGroupSpecs"]) groups.push_back(&g);
  for (json* g : groups) {
    if (!g->is_object() || !g->contains("template") || !(*g)["template"].is_object()) continue;
    json& t = (*g)["template"];
    if (!t.contains("spec") || !t["spec"].is_object()) continue;
    json& cs = t["spec"]["containers"];
    if (cs.is_array() && !cs.empty()) fn(cs[0]);
  }
}

// Replaces every float that Reconcile's Int() would cast out of range.
void ClampHugeFloats(json& j) {
  if (j.is_number_float()) {
    if (!(std::fabs(j.get<double>()) < 9.2e18)) j = 0;
  } else if (j.is_structured()) {
    for (auto& child : j) ClampHugeFloats(child);
  }
}

// All of Reconcile's known bugs, steered around on a copy of the cluster.
json AvoidKnownReconcileBugs(const json& observed_cluster) {
  json cluster = observed_cluster;
  if (!NoGuards() && cluster.is_object()) {
    // k8s-reconcile-int-cast: Int() reads replicas, minReplicas, maxReplicas,
    // metadata.generation and a template's containerPort with
    // get<long long>(), which casts a float (1e300) out of range: UB.
    ClampHugeFloats(cluster);
    cluster = AvoidReplicaSumOverflow(cluster);
    // k8s-reconcile-container-type: BuildPod does ctr["image"] = ... on
    // template.spec.containers[0] when it is a string or a number (the CRD
    // keeps templates unvalidated): a type_error escapes Reconcile.
    // k8s-reconcile-quantity-cast: a cpu / memory / *gpu quantity beyond
    // int64 ("1e300", "1e30Ei") is cast to long long (num-cpus, num-gpus,
    // memory, the /dev/shm sizeLimit): UB.
    ForEachFirstContainerSlot(cluster, [](json& ctr) {
      if (!ctr.is_null() && !ctr.is_object()) {
        ctr = json::object();
        return;
      }
      if (!ctr.is_object() || !ctr.contains("resources") || !ctr["resources"].is_object()) return;
      for (const char* which : {"requests", "limits"}) {
        json& m = ctr["resources"][which];
        if (!m.is_object()) continue;
        for (auto& [k, v] : m.items()) {
          double q = Quantity(v);
          if (!(std::fabs(q) < 9.2e18)) v = "1";
        }
      }
    });
    // k8s-reconcile-idle-timeout-type: spec.autoscalerOptions.idleTimeoutSeconds
    // is read with get<double>(): a string throws out of Reconcile.
    if (cluster.contains("spec") && cluster["spec"].is_object() && cluster["spec"].contains("autoscalerOptions")) {
      json& ao = cluster["spec"]["autoscalerOptions"];
      if (ao.is_object() && ao.contains("idleTimeoutSeconds") && !ao["idleTimeoutSeconds"].is_number())
        ao.erase("idleTimeoutSeconds");
    }
  }
  // Not a bug: Reconcile builds one pod body per missing replica, so the
  // harness keeps the replica counts small enough to stay fast.
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
    if (Trim(line).empty()) continue;
    k8s::WatchEvent ev;
    try {
      json j = json::parse(line);
      ev.type = j.value("type", "");
      ev.object = j.value("object", json::object());
    } catch (const std::exception&) {
      break;  // "bad event line": the watch ends with Internal
    }
    if (ev.type == "ERROR") {
      if (!WatchErrorCodeReadable(ev.object)) break;
      int code = ev.object.value("code", 0);
      (void)(ev.object.dump() + std::to_string(code));  // ApiError(code ? code : 500, ev.object.dump(), ...)
      break;
    }
    // The handler: the Reflector's cache (BOOKMARK only moves the resourceVersion).
    if (ev.type == "BOOKMARK" || !ev.object.is_object()) continue;
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
    const json cluster = AvoidKnownReconcileBugs(observed_cluster);
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

    if (std::getenv("COHORT_FUZZ_K8S_IDEMPOTENCE") != nullptr && r.error.empty()) {
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
