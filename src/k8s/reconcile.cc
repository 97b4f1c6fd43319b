// The pure CohortCluster reconcile (see cohort/k8s/reconcile.h).
#include "cohort/k8s/reconcile.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <set>

namespace cohort::k8s {
namespace {

using json = nlohmann::json;

std::string Str(const json& j, const char* key, const std::string& def = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : def;
}
// A double as long long without the undefined cast: truncated, clamped to
// the int64 range; NaN is 0.
long long ClampToInt64(double v) {
  if (std::isnan(v)) return 0;
  if (v >= 9223372036854775808.0) return LLONG_MAX;  // 2^63
  if (v <= -9223372036854775808.0) return LLONG_MIN;
  return static_cast<long long>(v);
}
// A JSON number as long long: integers beyond int64 and floats are clamped.
long long JsonInt(const json& v) {
  if (v.is_number_unsigned()) {
    auto u = v.get<std::uint64_t>();
    return u > static_cast<std::uint64_t>(LLONG_MAX) ? LLONG_MAX : static_cast<long long>(u);
  }
  if (v.is_number_integer()) return v.get<std::int64_t>();
  return ClampToInt64(v.get<double>());
}
long long Int(const json& j, const char* key, long long def) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? JsonInt(*it) : def;
}
bool Bool(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}
const json& Get(const json& j, const char* key) {
  static const json kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}
std::string Label(const json& obj, const char* key) {
  return Str(Get(Get(obj, "metadata"), "labels"), key);
}
std::string Name(const json& obj) { return Str(Get(obj, "metadata"), "name"); }

bool OwnedBy(const json& obj, const std::string& uid) {
  const json& refs = Get(Get(obj, "metadata"), "ownerReferences");
  if (!refs.is_array()) return false;
  for (const auto& r : refs)
    if (Str(r, "uid") == uid && Bool(r, "controller")) return true;
  return false;
}

std::string FormatNumber(double v) {
  if (!std::isfinite(v)) return "0";
  if (v == std::floor(v)) return std::to_string(ClampToInt64(v));
  return std::to_string(v);
}

// A value for an error message: a number as written, else its JSON type.
std::string Shown(const json& v) {
  if (v.is_number()) return v.dump();
  const std::string type = v.type_name();
  return (type[0] == 'a' || type[0] == 'o' ? "an " : "a ") + type;
}

// The CRD's replica fields are int32 >= 0.
constexpr long long kMaxReplicas = 2147483647;

// "" when `group[key]` is absent (or null) or an integer in [0, kMaxReplicas];
// else what is wrong with it.
std::string ReplicaFieldError(const json& group, const char* key) {
  auto it = group.find(key);
  if (it == group.end() || it->is_null()) return "";
  bool ok = it->is_number();
  if (ok && it->is_number_float()) {
    double v = it->get<double>();
    ok = std::isfinite(v) && v == std::floor(v);
  }
  if (ok) {
    long long v = JsonInt(*it);
    ok = v >= 0 && v <= kMaxReplicas;
  }
  return ok ? "" : std::string(key) + " must be an integer in [0, 2147483647], not " + Shown(*it);
}

// "" when a group's pod template has the shape BuildPod edits (objects where
// it reads or writes fields, containers an array of objects); else what is
// wrong. `where` prefixes the field in the message. The CRD keeps templates
// unvalidated (x-kubernetes-preserve-unknown-fields), so this is the only check.
std::string TemplateShapeError(const json& group, const std::string& where) {
  auto bad = [&](const std::string& field, const char* want, const json& v) {
    return where + field + " must be " + want + ", not " + Shown(v);
  };
  auto t = group.find("template");
  if (t == group.end() || t->is_null()) return "";
  if (!t->is_object()) return bad("template", "an object", *t);
  auto m = t->find("metadata");
  if (m != t->end() && !m->is_null() && !m->is_object()) return bad("template.metadata", "an object", *m);
  auto sp = t->find("spec");
  if (sp == t->end() || sp->is_null()) return "";
  if (!sp->is_object()) return bad("template.spec", "an object", *sp);
  auto cs = sp->find("containers");
  if (cs == sp->end() || cs->is_null()) return "";
  if (!cs->is_array()) return bad("template.spec.containers", "an array", *cs);
  for (size_t i = 0; i < cs->size(); ++i)
    if (!(*cs)[i].is_object()) return bad("template.spec.containers[" + std::to_string(i) + "]", "an object", (*cs)[i]);
  return "";
}

// "" when an idleTimeoutSeconds field (of `obj`, if any) is absent or a number >= 0.
std::string IdleTimeoutError(const json& obj, const std::string& where) {
  auto it = obj.find("idleTimeoutSeconds");
  if (it == obj.end() || it->is_null()) return "";
  if (it->is_number() && it->get<double>() >= 0) return "";
  return where + "idleTimeoutSeconds must be a number >= 0, not " + Shown(*it);
}

// headGroupSpec.stateVolumeClaim: absent, or {storage: a quantity > 0
// (default 10Gi), storageClassName: a string, accessModes: access modes}.
std::string StateClaimError(const json& claim) {
  const std::string where = "headGroupSpec.stateVolumeClaim";
  if (claim.is_null()) return "";
  if (!claim.is_object()) return where + " must be an object, not " + Shown(claim);
  const json& storage = Get(claim, "storage");
  if (!storage.is_null() && !(storage.is_string() && ParseQuantity(storage.get<std::string>()) > 0))
    return where + ".storage must be a quantity > 0 such as \"10Gi\", not " + Shown(storage);
  const json& cls = Get(claim, "storageClassName");
  if (!cls.is_null() && !cls.is_string()) return where + ".storageClassName must be a string, not " + Shown(cls);
  const json& modes = Get(claim, "accessModes");
  if (modes.is_null()) return "";
  static const std::set<std::string> kModes = {"ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany"};
  if (!modes.is_array() || modes.empty()) return where + ".accessModes must be a non-empty array, not " + Shown(modes);
  for (const auto& m : modes)
    if (!m.is_string() || !kModes.count(m.get<std::string>()))
      return where + ".accessModes: " + Shown(m) + " is not an access mode (ReadWriteOnce, ReadWriteOncePod, "
             "ReadWriteMany, ReadOnlyMany)";
  return "";
}

// A port from startParams ("6380"): 1..65535, else 0 (invalid).
int ParsePort(const std::string& s) {
  if (s.empty() || s.size() > 5) return 0;
  int v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return 0;
    v = v * 10 + (ch - '0');
  }
  return v >= 1 && v <= 65535 ? v : 0;
}

// The JSON merge patch (RFC 7386) that turns `have` into `want`: keys of an
// object that `want` lacks are set to null (a merge patch merges objects, so
// sending `want` alone would keep them); other values are replaced.
// REQUIRES: `want` holds no null (a merge patch cannot set one).
json MergePatchFor(const json& have, const json& want) {
  if (!want.is_object() || !have.is_object()) return want;
  json patch = json::object();
  for (auto it = have.begin(); it != have.end(); ++it)
    if (!want.contains(it.key())) patch[it.key()] = nullptr;
  for (auto it = want.begin(); it != want.end(); ++it) {
    auto h = have.find(it.key());
    if (h == have.end()) patch[it.key()] = *it;
    else if (*h != *it) patch[it.key()] = MergePatchFor(*h, *it);
  }
  return patch;
}

// "--key value" flags from a startParams map, keys sorted; "true" -> bare
// flag, "false" -> omitted.
void AppendFlags(std::vector<std::string>& args, const std::map<std::string, std::string>& params) {
  for (const auto& [k, v] : params) {
    if (v == "false") continue;
    args.push_back("--" + k);
    if (v != "true") args.push_back(v);
  }
}

std::map<std::string, std::string> Params(const json& group) {
  std::map<std::string, std::string> out;
  const json& p = Get(group, "startParams");
  if (p.is_object())
    for (auto it = p.begin(); it != p.end(); ++it)
      out[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
  return out;
}

const json& FirstContainer(const json& group) {
  static const json kEmpty = json::object();
  const json& cs = Get(Get(Get(group, "template"), "spec"), "containers");
  return cs.is_array() && !cs.empty() ? cs[0] : kEmpty;
}

struct Limits {
  double cpu = 0, gpu = 0, memory = 0;
};
Limits ContainerLimits(const json& container) {
  Limits l;
  const json& res = Get(container, "resources");
  for (const char* which : {"requests", "limits"}) {  // limits win
    const json& m = Get(res, which);
    if (!m.is_object()) continue;
    for (auto it = m.begin(); it != m.end(); ++it) {
      std::string q = it->is_string() ? it->get<std::string>() : it->dump();
      const std::string& k = it.key();
      if (k == "cpu") l.cpu = ParseQuantity(q);
      else if (k == "memory") l.memory = ParseQuantity(q);
      else if (k.size() >= 3 && k.compare(k.size() - 3, 3, "gpu") == 0) l.gpu = ParseQuantity(q);
    }
  }
  return l;
}

json OwnerRef(const json& cluster) {
  return json::array({{{"apiVersion", std::string(kGroup) + "/" + kVersion},
                       {"kind", kKind},
                       {"name", Name(cluster)},
                       {"uid", Str(Get(cluster, "metadata"), "uid")},
                       {"controller", true},
                       {"blockOwnerDeletion", true}}});
}

json Labels(const std::string& cluster, const std::string& type, const std::string& group) {
  return {{kLabelCluster, cluster},
          {kLabelNodeType, type},
          {kLabelGroup, group},
          {"app.kubernetes.io/name", "cohort"},
          {"app.kubernetes.io/managed-by", "cohort-operator"}};
}

json EnvVar(const std::string& name, const std::string& value) { return {{"name", name}, {"value", value}}; }
json EnvField(const std::string& name, const std::string& path) {
  return {{"name", name}, {"valueFrom", {{"fieldRef", {{"fieldPath", path}}}}}};
}

void SetEnv(json& container, const json& var) {
  json& env = container["env"];
  if (!env.is_array()) env = json::array();
  for (const auto& e : env)
    if (Str(e, "name") == Str(var, "name")) return;  // the user's value wins
  env.push_back(var);
}

void EnsurePort(json& container, const std::string& name, int port) {
  json& ports = container["ports"];
  if (!ports.is_array()) ports = json::array();
  for (const auto& p : ports)
    if (Int(p, "containerPort", -1) == port) return;
  ports.push_back({{"name", name}, {"containerPort", port}, {"protocol", "TCP"}});
}

void EnsureVolume(json& spec, json& container, const json& volume, const std::string& mount_path,
                  bool read_only = false) {
  json& vols = spec["volumes"];
  if (!vols.is_array()) vols = json::array();
  std::string name = Str(volume, "name");
  bool have = false;
  for (const auto& v : vols) have = have || Str(v, "name") == name;
  if (!have) vols.push_back(volume);
  json& mounts = container["volumeMounts"];
  if (!mounts.is_array()) mounts = json::array();
  for (const auto& m : mounts)
    if (Str(m, "mountPath") == mount_path) return;
  json mount = {{"name", name}, {"mountPath", mount_path}};
  if (read_only) mount["readOnly"] = true;
  mounts.push_back(mount);
}

json HttpProbe(const std::string& path, int port, int delay, int period, int failures) {
  return {{"httpGet", {{"path", path}, {"port", port}}},
          {"initialDelaySeconds", delay},
          {"periodSeconds", period},
          {"timeoutSeconds", 5},
          {"failureThreshold", failures}};
}
json TcpProbe(int port, int delay, int period, int failures) {
  return {{"tcpSocket", {{"port", port}}},
          {"initialDelaySeconds", delay},
          {"periodSeconds", period},
          {"timeoutSeconds", 2},
          {"failureThreshold", failures}};
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& a : v) s += (s.empty() ? "" : " ") + a;
  return s;
}

struct Ctx {
  const json& cluster;
  std::string name, ns, uid;
  const ReconcileOptions& opt;
  int head_port = kHeadPort;
  int dashboard_port = kDashboardPort;
  bool secret_has_join_token = false;  // the Secret holds kJoinTokenKey (or will, once created)
  bool persistent_state = false;       // headGroupSpec.stateVolumeClaim: the head's state on a PVC
  std::string HeadFqdn() const { return HeadServiceName(name) + "." + ns + ".svc." + opt.cluster_domain; }
};

// The pod to create for the head (is_head) or a worker of `group`.
json BuildPod(const Ctx& c, const json& group, bool is_head) {
  std::string group_name = is_head ? "headgroup" : Str(group, "groupName");
  json tmpl = Get(group, "template");
  if (!tmpl.is_object()) tmpl = json::object();
  json meta = Get(tmpl, "metadata");
  if (!meta.is_object()) meta = json::object();
  json spec = Get(tmpl, "spec");
  if (!spec.is_object()) spec = json::object();
  if (!spec["containers"].is_array() || spec["containers"].empty())
    spec["containers"] = json::array({{{"name", "cohort"}}});
  json& ctr = spec["containers"][0];
  if (!ctr.is_object()) ctr = json::object();  // Reconcile rejects such templates (TemplateShapeError)
  if (!ctr.contains("image")) ctr["image"] = c.opt.default_image;
  if (!ctr.contains("name")) ctr["name"] = "cohort";

  json labels = Get(meta, "labels");
  if (!labels.is_object()) labels = json::object();
  labels.update(Labels(c.name, is_head ? "head" : "worker", group_name));  // ours cannot be overridden
  meta["labels"] = labels;
  meta.erase("name");
  meta["generateName"] = is_head ? c.name + "-head-" : c.name + "-" + group_name + "-worker-";
  meta["namespace"] = c.ns;
  meta["ownerReferences"] = OwnerRef(c.cluster);

  // The command line.
  std::map<std::string, std::string> params = Params(group);
  Limits lim = ContainerLimits(ctr);
  params.emplace("block", "true");
  params.emplace("state-dir", "/var/lib/cohort");
  // Credentials: files of the Secret's volume (see kSecretsMountPath), unless
  // startParams name their own.
  const std::string dir = kSecretsMountPath;
  const bool own_token = params.count("token") > 0 || params.count("token-file") > 0;
  const bool own_join = params.count("join-token") > 0 || params.count("join-token-file") > 0;
  json items = json::array();
  auto mount_key = [&](const char* key) { items.push_back({{"key", key}, {"path", key}}); };
  if (is_head) {
    mount_key(kTokenKey);
    if (!own_token) params.emplace("token-file", dir + "/" + kTokenKey);
    if (c.secret_has_join_token) {
      mount_key(kJoinTokenKey);
      if (!own_join) params.emplace("join-token-file", dir + "/" + kJoinTokenKey);
    }
  } else if (c.secret_has_join_token) {
    mount_key(kJoinTokenKey);
    if (!own_token && !own_join) params.emplace("join-token-file", dir + "/" + kJoinTokenKey);
  } else {  // a Secret from before join tokens: the admin token still joins
    mount_key(kTokenKey);
    if (!own_token && !own_join) params.emplace("token-file", dir + "/" + kTokenKey);
  }
  std::vector<std::string> args = {"cohort", "start"};
  if (is_head) {
    params.emplace("port", std::to_string(c.head_port));
    params.emplace("dashboard-port", std::to_string(c.dashboard_port));
    params.emplace("host", "0.0.0.0");
    args.push_back("--head");
  } else {
    params.emplace("address", c.HeadFqdn() + ":" + std::to_string(c.head_port));
    params.emplace("advertise-address", "$(COHORT_POD_IP)");
    params.emplace("metrics-port", std::to_string(kMetricsPort));
    // ParseQuantity's values are finite; ClampToInt64 keeps huge ones ("1e300") defined.
    if (lim.cpu > 0) params.emplace("num-cpus", std::to_string(std::max<long long>(1, ClampToInt64(lim.cpu))));
    params.emplace("num-gpus", std::to_string(std::max<long long>(0, ClampToInt64(lim.gpu))));
    if (lim.memory > 0) params.emplace("memory", FormatNumber(std::floor(lim.memory)));
  }
  AppendFlags(args, params);
  bool keep_cmd = Str(Get(meta, "annotations"), "cohort.dev/overwrite-container-cmd") == "true";
  if (!keep_cmd) {
    ctr["command"] = json(args);
    ctr.erase("args");
  }

  // `kubectl exec` into the head: the CLI finds the API token by its path.
  if (is_head) SetEnv(ctr, EnvVar("COHORT_TOKEN_FILE", dir + "/" + kTokenKey));
  SetEnv(ctr, EnvField("COHORT_POD_IP", "status.podIP"));
  SetEnv(ctr, EnvField("COHORT_POD_NAME", "metadata.name"));
  SetEnv(ctr, EnvVar("COHORT_CLUSTER_NAME", c.name));
  SetEnv(ctr, EnvVar("COHORT_NODE_TYPE", is_head ? "head" : "worker"));
  SetEnv(ctr, EnvVar("COHORT_START_CMD", Join(args)));
  SetEnv(ctr, EnvVar("COHORT_HEAD_ADDRESS", is_head ? "127.0.0.1:" + std::to_string(c.head_port)
                                                     : c.HeadFqdn() + ":" + std::to_string(c.head_port)));
  SetEnv(ctr, EnvVar("COHORT_DASHBOARD_URL",
                     "http://" + (is_head ? std::string("127.0.0.1") : c.HeadFqdn()) + ":" +
                         std::to_string(c.dashboard_port)));

  if (is_head) {
    EnsurePort(ctr, "gcs", c.head_port);
    EnsurePort(ctr, "dashboard", c.dashboard_port);
    if (!ctr.contains("readinessProbe")) ctr["readinessProbe"] = HttpProbe("/api/health", c.dashboard_port, 5, 5, 10);
    if (!ctr.contains("livenessProbe")) ctr["livenessProbe"] = HttpProbe("/api/health", c.dashboard_port, 30, 10, 12);
  } else {
    EnsurePort(ctr, "metrics", kMetricsPort);
    if (!ctr.contains("readinessProbe")) ctr["readinessProbe"] = TcpProbe(kMetricsPort, 5, 5, 10);
    if (!ctr.contains("livenessProbe")) ctr["livenessProbe"] = TcpProbe(kMetricsPort, 30, 10, 12);
  }
  json shm = {{"name", "shared-mem"}, {"emptyDir", {{"medium", "Memory"}}}};
  if (lim.memory > 0) shm["emptyDir"]["sizeLimit"] = FormatNumber(std::floor(lim.memory));
  EnsureVolume(spec, ctr, shm, "/dev/shm");
  if (is_head && c.persistent_state) {
    EnsureVolume(spec, ctr,
                 {{"name", "cohort-state"}, {"persistentVolumeClaim", {{"claimName", StateClaimName(c.name)}}}},
                 "/var/lib/cohort");
  } else {
    EnsureVolume(spec, ctr, {{"name", "cohort-state"}, {"emptyDir", json::object()}}, "/var/lib/cohort");
  }
  EnsureVolume(spec, ctr,
               {{"name", "cohort-secrets"},
                {"secret", {{"secretName", TokenSecretName(c.name)}, {"defaultMode", kSecretsMode}, {"items", items}}}},
               dir, /*read_only=*/true);
  // Secret files belong to root and the pod's fsGroup; the image runs as
  // 1000:1000 (Dockerfile). A template's own fsGroup is kept.
  json& security = spec["securityContext"];
  if (!security.is_object()) security = json::object();
  if (!security.contains("fsGroup")) {
    security["fsGroup"] = 1000;
    if (!security.contains("fsGroupChangePolicy")) security["fsGroupChangePolicy"] = "OnRootMismatch";
  }
  // Restrictive unless the template says otherwise: not root (the image runs
  // as 1000), the runtime's seccomp profile, no privilege escalation, no
  // capabilities, and no Kubernetes API token in the pod (cohort never calls
  // the API from a pod; GKE Workload Identity does not need it either).
  if (!security.contains("runAsNonRoot")) security["runAsNonRoot"] = true;
  if (!security.contains("seccompProfile")) security["seccompProfile"] = {{"type", "RuntimeDefault"}};
  if (!spec.contains("automountServiceAccountToken")) spec["automountServiceAccountToken"] = false;
  json& ctr_security = ctr["securityContext"];
  if (!ctr_security.is_object()) ctr_security = json::object();
  if (!ctr_security.contains("allowPrivilegeEscalation")) ctr_security["allowPrivilegeEscalation"] = false;
  if (!ctr_security.contains("capabilities")) ctr_security["capabilities"] = {{"drop", json::array({"ALL"})}};
  if (!spec.contains("restartPolicy")) spec["restartPolicy"] = "Always";

  return {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", meta}, {"spec", spec}};
}

// The metadata of a core/v1 object that belongs to the head (its Service,
// Secret, state claim): in the cluster's namespace, labelled as the head's,
// owned by the cluster (the GC deletes it with the cluster).
json HeadChildMeta(const Ctx& c, const std::string& name) {
  return {{"name", name},
          {"namespace", c.ns},
          {"labels", Labels(c.name, "head", "headgroup")},
          {"ownerReferences", OwnerRef(c.cluster)}};
}

// The head's state claim (validated by StateClaimError).
json BuildStateClaim(const Ctx& c, const json& claim) {
  const json& storage = Get(claim, "storage");
  const json& modes = Get(claim, "accessModes");
  json spec = {{"accessModes", modes.is_array() ? modes : json::array({"ReadWriteOnce"})},
               {"resources", {{"requests", {{"storage", storage.is_string() ? storage : json("10Gi")}}}}}};
  if (const json& cls = Get(claim, "storageClassName"); cls.is_string()) spec["storageClassName"] = cls;
  return {{"apiVersion", "v1"},
          {"kind", "PersistentVolumeClaim"},
          {"metadata", HeadChildMeta(c, StateClaimName(c.name))},
          {"spec", spec}};
}

json BuildHeadService(const Ctx& c) {
  json ports = json::array({
      {{"name", "dashboard"}, {"port", c.dashboard_port}, {"targetPort", c.dashboard_port}, {"protocol", "TCP"}},
      {{"name", "gcs"}, {"port", c.head_port}, {"targetPort", c.head_port}, {"protocol", "TCP"}},
      // The head serves /metrics on its dashboard port; 8080 keeps scrape configs uniform.
      {{"name", "metrics"}, {"port", kMetricsPort}, {"targetPort", c.dashboard_port}, {"protocol", "TCP"}},
  });
  const json& head = Get(Get(c.cluster, "spec"), "headGroupSpec");
  json spec = {{"type", Str(head, "serviceType", "ClusterIP")},
               {"selector", {{kLabelCluster, c.name}, {kLabelNodeType, "head"}}},
               {"ports", ports},
               {"publishNotReadyAddresses", true}};
  return {{"apiVersion", "v1"}, {"kind", "Service"}, {"metadata", HeadChildMeta(c, HeadServiceName(c.name))}, {"spec", spec}};
}

std::string CreationTime(const json& pod) { return Str(Get(pod, "metadata"), "creationTimestamp"); }

// Newest first: by creationTimestamp, then name (both descending).
bool Newer(const json* a, const json* b) {
  auto ka = std::make_pair(CreationTime(*a), Name(*a));
  auto kb = std::make_pair(CreationTime(*b), Name(*b));
  return ka > kb;
}

json DeleteAction(std::vector<Action>& out, const json& pod, const std::string& reason) {
  Action a;
  a.verb = Action::Verb::kDelete;
  a.kind = "Pod";
  a.name = Name(pod);
  a.body = {{"uid", Str(Get(pod, "metadata"), "uid")}};
  a.reason = reason;
  out.push_back(a);
  return json();
}

bool Fits(const json& bundle, const json& cap) {
  if (!bundle.is_object()) return false;
  for (auto it = bundle.begin(); it != bundle.end(); ++it) {
    if (!it->is_number()) continue;
    double need = it->get<double>();
    if (need <= 0) continue;
    std::string k = it.key() == "memory" ? "memory" : it.key();
    if (!cap.contains(k) || cap[k].get<double>() + 1e-9 < need) return false;
  }
  return true;
}

// First-fit packing of bundles onto fresh workers of capacity cap: how many workers.
int WorkersNeeded(const std::vector<json>& bundles, const json& cap) {
  std::vector<json> bins;
  for (const auto& b : bundles) {
    bool placed = false;
    for (auto& bin : bins) {
      if (Fits(b, bin)) {
        for (auto it = b.begin(); it != b.end(); ++it)
          if (it->is_number() && bin.contains(it.key())) bin[it.key()] = bin[it.key()].get<double>() - it->get<double>();
        placed = true;
        break;
      }
    }
    if (placed) continue;
    json bin = cap;
    for (auto it = b.begin(); it != b.end(); ++it)
      if (it->is_number() && bin.contains(it.key())) bin[it.key()] = bin[it.key()].get<double>() - it->get<double>();
    bins.push_back(bin);
  }
  return static_cast<int>(bins.size());
}

json Condition(const json& old_status, const std::string& type, bool ok, const std::string& reason,
               const std::string& message, const std::string& now) {
  std::string status = ok ? "True" : "False";
  std::string when = now;
  const json& conds = Get(old_status, "conditions");
  if (conds.is_array())
    for (const auto& c : conds)
      if (Str(c, "type") == type && Str(c, "status") == status) when = Str(c, "lastTransitionTime", now);
  return {{"type", type}, {"status", status}, {"reason", reason}, {"message", message}, {"lastTransitionTime", when}};
}

}  // namespace

std::string VerbName(Action::Verb v) {
  switch (v) {
    case Action::Verb::kCreate: return "create";
    case Action::Verb::kDelete: return "delete";
    case Action::Verb::kPatch: return "patch";
  }
  return "?";
}

std::string HeadServiceName(const std::string& cluster) { return cluster + "-head-svc"; }
std::string TokenSecretName(const std::string& cluster) { return cluster + "-token"; }
std::string StateClaimName(const std::string& cluster) { return cluster + "-head-state"; }

double ParseQuantity(const std::string& q) {
  if (q.empty()) return 0;
  size_t i = 0;
  while (i < q.size() && (std::isdigit(static_cast<unsigned char>(q[i])) || q[i] == '.' || q[i] == '+' || q[i] == '-' ||
                          ((q[i] == 'e' || q[i] == 'E') && i + 1 < q.size() && (std::isdigit((unsigned char)q[i + 1]) || q[i + 1] == '-' || q[i + 1] == '+'))))
    ++i;
  double v = 0;
  try {
    v = std::stod(q.substr(0, i));
  } catch (...) {
    return 0;
  }
  std::string suf = q.substr(i);
  static const std::map<std::string, double> kMul = {
      {"", 1},        {"m", 1e-3},    {"k", 1e3},     {"M", 1e6},     {"G", 1e9},      {"T", 1e12},
      {"P", 1e15},    {"E", 1e18},    {"Ki", 1024.0}, {"Mi", 1048576.0}, {"Gi", 1073741824.0},
      {"Ti", 1099511627776.0}, {"Pi", 1125899906842624.0}, {"Ei", 1152921504606846976.0}, {"n", 1e-9}, {"u", 1e-6}};
  auto it = kMul.find(suf);
  if (it == kMul.end()) return 0;
  double value = v * it->second;
  return std::isfinite(value) ? value : 0;  // "1e300Ei": not a quantity
}

bool PodTerminating(const json& pod) {
  const json& m = Get(pod, "metadata");
  return m.contains("deletionTimestamp") && !m["deletionTimestamp"].is_null();
}
bool PodDead(const json& pod) {
  std::string phase = Str(Get(pod, "status"), "phase");
  return phase == "Failed" || phase == "Succeeded";
}
bool PodReady(const json& pod) {
  const json& st = Get(pod, "status");
  if (Str(st, "phase") != "Running") return false;
  const json& conds = Get(st, "conditions");
  if (!conds.is_array()) return false;
  for (const auto& c : conds)
    if (Str(c, "type") == "Ready") return Str(c, "status") == "True";
  return false;
}

json GroupCapacity(const json& group) {
  Limits l = ContainerLimits(FirstContainer(group));
  json cap = {{"CPU", std::floor(l.cpu)}, {"GPU", std::floor(l.gpu)}};
  if (l.memory > 0) cap["memory"] = l.memory;
  auto p = Params(group);
  if (auto it = p.find("num-cpus"); it != p.end()) cap["CPU"] = ParseQuantity(it->second);
  if (auto it = p.find("num-gpus"); it != p.end()) cap["GPU"] = ParseQuantity(it->second);
  return cap;
}

ReconcileResult Reconcile(const json& cluster, const Observed& observed, const std::optional<AutoscalerInput>& autoscale,
                          const ReconcileOptions& options) {
  ReconcileResult r;
  const json& meta = Get(cluster, "metadata");
  Ctx c{cluster, Str(meta, "name"), Str(meta, "namespace", "default"), Str(meta, "uid"), options};
  const json& spec = Get(cluster, "spec");
  const json& head_spec = Get(spec, "headGroupSpec");
  const json& groups = Get(spec, "workerGroupSpecs");
  const json& old_status = Get(cluster, "status");
  auto head_params = Params(head_spec);
  if (auto it = head_params.find("port"); it != head_params.end()) c.head_port = ParsePort(it->second);
  if (auto it = head_params.find("dashboard-port"); it != head_params.end())
    c.dashboard_port = ParsePort(it->second);

  // Validate.
  std::string error;
  if (c.name.empty()) error = "metadata.name is empty";
  else if (c.name.size() > 53) error = "metadata.name is longer than 53 characters";
  else if (!head_spec.is_object()) error = "spec.headGroupSpec is required";
  else if (c.head_port <= 0 || c.dashboard_port <= 0) error = "headGroupSpec.startParams port/dashboard-port is invalid";
  else if (!groups.is_null() && !groups.is_array()) error = "spec.workerGroupSpecs must be an array, not " + Shown(groups);
  if (error.empty()) error = TemplateShapeError(head_spec, "headGroupSpec.");
  const json& state_claim = Get(head_spec, "stateVolumeClaim");
  if (error.empty()) error = StateClaimError(state_claim);
  c.persistent_state = state_claim.is_object();
  if (error.empty()) {
    const json& ao = Get(spec, "autoscalerOptions");
    if (!ao.is_null() && !ao.is_object()) error = "spec.autoscalerOptions must be an object, not " + Shown(ao);
    else error = IdleTimeoutError(ao, "spec.autoscalerOptions.");
  }
  std::set<std::string> group_names;
  if (error.empty() && groups.is_array()) {
    for (const auto& g : groups) {
      std::string gn = Str(g, "groupName");
      if (gn.empty()) { error = "workerGroupSpecs[].groupName is required"; break; }
      if (!group_names.insert(gn).second) { error = "duplicate groupName " + gn; break; }
      for (const char* key : {"replicas", "minReplicas", "maxReplicas"})
        if (std::string e = ReplicaFieldError(g, key); !e.empty()) {
          error = "group " + gn + ": " + e;
          break;
        }
      if (error.empty()) error = IdleTimeoutError(g, "group " + gn + ": ");
      if (error.empty()) error = TemplateShapeError(g, "group " + gn + ": ");
      if (!error.empty()) break;
      if (Int(g, "minReplicas", 0) > Int(g, "maxReplicas", kMaxReplicas)) {
        error = "group " + gn + ": minReplicas > maxReplicas";
        break;
      }
    }
  }

  // Owned objects only.
  std::vector<const json*> pods, services, secrets;
  bool have_claim = false;
  for (const auto& v : observed.pvcs)
    if (OwnedBy(v, c.uid) && Name(v) == StateClaimName(c.name)) have_claim = true;
  for (const auto& p : observed.pods) if (OwnedBy(p, c.uid)) pods.push_back(&p);
  for (const auto& s : observed.services) if (OwnedBy(s, c.uid)) services.push_back(&s);
  for (const auto& s : observed.secrets) if (OwnedBy(s, c.uid)) secrets.push_back(&s);

  json status = json::object();
  status["observedGeneration"] = Int(meta, "generation", 0);
  status["endpoints"] = {{"gcs", std::to_string(c.head_port)},
                         {"dashboard", std::to_string(c.dashboard_port)},
                         {"metrics", std::to_string(kMetricsPort)}};
  if (!error.empty()) {
    r.error = error;
    status["state"] = "failed";
    status["reason"] = error;
    status["conditions"] = json::array({Condition(old_status, "Ready", false, "InvalidSpec", error, options.now)});
    r.status = status;
    return r;
  }

  // Secret (created once, never rewritten).
  const json* secret = nullptr;
  for (const auto* s : secrets)
    if (Name(*s) == TokenSecretName(c.name)) secret = s;
  auto has_key = [](const json& obj, const char* key) {
    for (const char* field : {"data", "stringData"}) {
      const json& v = Get(Get(obj, field), key);
      if (v.is_string() && !v.get<std::string>().empty()) return true;
    }
    return false;
  };
  c.secret_has_join_token = secret != nullptr ? has_key(*secret, kJoinTokenKey) : !options.new_join_token.empty();
  if (secret == nullptr) {
    Action a;
    a.kind = "Secret";
    a.name = TokenSecretName(c.name);
    a.reason = "CreatedSecret";
    a.body = {{"apiVersion", "v1"},
              {"kind", "Secret"},
              {"metadata", HeadChildMeta(c, a.name)},
              {"type", "Opaque"},
              {"stringData", {{kTokenKey, options.new_token}}}};
    if (c.secret_has_join_token) a.body["stringData"][kJoinTokenKey] = options.new_join_token;
    r.actions.push_back(a);
  }

  // The head's state volume: created once (its size and class are fixed then).
  status["headStateVolume"] = c.persistent_state ? StateClaimName(c.name) : "emptyDir";
  if (c.persistent_state && !have_claim)
    r.actions.push_back({Action::Verb::kCreate, "PersistentVolumeClaim", StateClaimName(c.name),
                         BuildStateClaim(c, state_claim), "CreatedStateVolumeClaim"});

  // Head service: created, or patched back when ports/selector/type drifted.
  json want_svc = BuildHeadService(c);
  const json* svc = nullptr;
  for (const auto* s : services) if (Name(*s) == HeadServiceName(c.name)) svc = s;
  if (svc == nullptr) {
    r.actions.push_back({Action::Verb::kCreate, "Service", HeadServiceName(c.name), want_svc, "CreatedService"});
  } else {
    const json& have = Get(*svc, "spec");
    json patch = json::object();
    for (const char* k : {"type", "selector", "ports"}) {
      json h = Get(have, k);
      json w = want_svc["spec"][k];
      if (std::string(k) == "ports" && h.is_array()) {  // compare what we set only
        json trimmed = json::array();
        for (const auto& p : h) {
          json t = json::object();
          for (const char* f : {"name", "port", "targetPort", "protocol"}) if (p.contains(f)) t[f] = p[f];
          trimmed.push_back(t);
        }
        h = trimmed;
      }
      // The selector is a map: a key of ours missing is added, a foreign one
      // must be removed (null), or the Service keeps selecting on it.
      if (h != w) patch[k] = std::string(k) == "selector" ? MergePatchFor(h, w) : w;
    }
    if (!patch.empty())
      r.actions.push_back({Action::Verb::kPatch, "Service", HeadServiceName(c.name), {{"spec", patch}}, "UpdatedService"});
  }

  bool suspend = Bool(spec, "suspend");
  std::vector<const json*> heads;
  std::map<std::string, std::vector<const json*>> by_group;
  int terminating = 0;
  for (const auto* p : pods) {
    if (PodTerminating(*p)) { ++terminating; continue; }
    if (Label(*p, kLabelNodeType) == "head") heads.push_back(p);
    else by_group[Label(*p, kLabelGroup)].push_back(p);
  }

  json group_status = json::array();
  // Sums of per-group int32 values: in int64 (64 groups of 2147483647
  // overflow int), clamped to the status fields' int32 when written.
  long long desired_total = 0, ready_total = 0, available_total = 0, min_total = 0, max_total = 0;
  if (suspend) {
    for (const auto* p : heads) DeleteAction(r.actions, *p, "DeletedHeadPod");
    for (auto& [g, v] : by_group)
      for (const auto* p : v) DeleteAction(r.actions, *p, "DeletedWorkerPod");
  } else {
    // Head: exactly one live pod.
    std::vector<const json*> live_heads;
    for (const auto* p : heads) {
      if (PodDead(*p)) DeleteAction(r.actions, *p, "DeletedHeadPod");
      else live_heads.push_back(p);
    }
    std::sort(live_heads.begin(), live_heads.end(), [](const json* a, const json* b) { return Newer(b, a); });
    for (size_t i = 1; i < live_heads.size(); ++i) DeleteAction(r.actions, *live_heads[i], "DeletedHeadPod");
    if (live_heads.empty())
      r.actions.push_back({Action::Verb::kCreate, "Pod", "", BuildPod(c, head_spec, true), "CreatedHeadPod"});
  }

  // Worker groups.
  bool autoscaling = Bool(spec, "enableAutoscaling") && autoscale.has_value();
  json new_groups = groups.is_array() ? groups : json::array();
  bool patch_cr = false;
  std::vector<json> pending = autoscale ? autoscale->pending_bundles : std::vector<json>{};
  double idle_timeout = options.default_idle_timeout_s;
  if (const json& t = Get(Get(spec, "autoscalerOptions"), "idleTimeoutSeconds"); t.is_number())
    idle_timeout = t.get<double>();  // validated above: a number >= 0
  std::set<std::string> alive_addresses;
  std::map<std::string, double> idle_by_address;
  if (autoscale)
    for (const auto& n : autoscale->nodes)
      if (n.alive && !n.address.empty()) {  // a pod without an IP yet is in flight, whatever the head says
        alive_addresses.insert(n.address);
        idle_by_address[n.address] = n.idle_seconds;
      }

  for (size_t gi = 0; gi < new_groups.size(); ++gi) {
    json& g = new_groups[gi];
    std::string gn = Str(g, "groupName");
    long long mn = Int(g, "minReplicas", 0), mx = Int(g, "maxReplicas", kMaxReplicas);  // validated: 0 <= mn <= mx
    long long replicas = Int(g, "replicas", mn);
    long long desired = std::clamp(replicas, mn, mx);
    std::vector<const json*> live;
    std::vector<const json*> dead;
    for (const auto* p : by_group[gn]) (PodDead(*p) ? dead : live).push_back(p);

    std::set<std::string> to_delete;
    const json& wtd = Get(Get(g, "scaleStrategy"), "workersToDelete");
    if (wtd.is_array())
      for (const auto& n : wtd) if (n.is_string()) to_delete.insert(n.get<std::string>());

    if (autoscaling && !suspend && !Bool(g, "suspend")) {
      json cap = GroupCapacity(g);
      std::vector<json> fit, rest;
      for (auto& b : pending) (Fits(b, cap) ? fit : rest).push_back(b);
      pending = rest;  // later groups see only what this one cannot hold
      int inflight = 0;
      for (const auto* p : live)
        if (!alive_addresses.count(Str(Get(*p, "status"), "podIP"))) ++inflight;
      long long target = desired;
      if (!fit.empty()) {
        int need = WorkersNeeded(fit, cap);
        target = std::clamp<long long>(static_cast<long long>(live.size()) + std::max(0, need - inflight), mn, mx);
        target = std::max(target, desired);
      } else {
        // Scale down idle workers, newest first, not below min.
        double group_idle_timeout =
            g.contains("idleTimeoutSeconds") && g["idleTimeoutSeconds"].is_number() ? g["idleTimeoutSeconds"].get<double>()
                                                                                    : idle_timeout;
        std::vector<const json*> idle;
        for (const auto* p : live) {
          auto it = idle_by_address.find(Str(Get(*p, "status"), "podIP"));
          if (it != idle_by_address.end() && it->second >= group_idle_timeout && !to_delete.count(Name(*p))) idle.push_back(p);
        }
        std::sort(idle.begin(), idle.end(), Newer);
        long long count = desired;
        for (const auto* p : idle) {
          if (count <= mn) break;
          to_delete.insert(Name(*p));
          --count;
        }
        target = count;
      }
      if (target != desired) {
        desired = target;
        g["replicas"] = desired;
        patch_cr = true;
      }
    }

    // Consume workersToDelete: delete those pods now, then clear the list.
    bool consumed = false;
    std::vector<const json*> remaining;
    for (const auto* p : live) {
      if (suspend) continue;  // already deleted above
      if (to_delete.count(Name(*p))) {
        DeleteAction(r.actions, *p, "DeletedWorkerPod");
        consumed = true;
      } else {
        remaining.push_back(p);
      }
    }
    if (wtd.is_array() && !wtd.empty()) consumed = true;
    if (consumed && g.contains("scaleStrategy") && g["scaleStrategy"].contains("workersToDelete") &&
        !g["scaleStrategy"]["workersToDelete"].empty()) {
      g["scaleStrategy"]["workersToDelete"] = json::array();
      patch_cr = true;
    }
    if (!suspend)
      for (const auto* p : dead) DeleteAction(r.actions, *p, "DeletedWorkerPod");

    bool group_off = suspend || Bool(g, "suspend");
    long long want = group_off ? 0 : std::max<long long>(0, desired);
    if (group_off) {
      if (!suspend)
        for (const auto* p : remaining) DeleteAction(r.actions, *p, "DeletedWorkerPod");
      remaining.clear();
    }
    long long diff = want - static_cast<long long>(remaining.size());
    for (long long i = 0; i < diff; ++i)
      r.actions.push_back({Action::Verb::kCreate, "Pod", "", BuildPod(c, g, false), "CreatedWorkerPod"});
    if (diff < 0) {
      std::sort(remaining.begin(), remaining.end(), Newer);
      for (long long i = 0; i < -diff; ++i) DeleteAction(r.actions, *remaining[i], "DeletedWorkerPod");
      remaining.resize(remaining.size() + diff);
    }
    r.desired_replicas[gn] = static_cast<int>(want);
    int ready = 0, available = 0;
    for (const auto* p : remaining) {
      if (PodReady(*p)) ++ready;
      if (Str(Get(*p, "status"), "phase") == "Running") ++available;
    }
    group_status.push_back(
        {{"groupName", gn}, {"desiredReplicas", want}, {"readyReplicas", ready}, {"availableReplicas", available}});
    desired_total += want;
    ready_total += ready;
    available_total += available;
    min_total += mn;
    max_total += mx;
  }
  if (patch_cr) {
    Action a;
    a.verb = Action::Verb::kPatch;
    a.kind = kKind;
    a.name = c.name;
    a.body = {{"spec", {{"workerGroupSpecs", new_groups}}}};
    a.reason = "Autoscaled";
    r.actions.insert(r.actions.begin(), a);  // record the decision before acting on it
  }

  // Status.
  const json* head_pod = nullptr;
  for (const auto* p : heads) if (!PodDead(*p) && (head_pod == nullptr || Newer(head_pod, p))) head_pod = p;
  bool head_ready = !suspend && head_pod != nullptr && PodReady(*head_pod);
  json head = {{"serviceName", HeadServiceName(c.name)}};
  if (head_pod && !suspend) {
    head["podName"] = Name(*head_pod);
    std::string ip = Str(Get(*head_pod, "status"), "podIP");
    if (!ip.empty()) head["podIP"] = ip;
  }
  if (svc) {
    std::string ip = Str(Get(*svc, "spec"), "clusterIP");
    if (!ip.empty()) head["serviceIP"] = ip;
  }
  status["head"] = head;
  status["workerGroups"] = group_status;
  auto int32 = [](long long v) { return std::min(v, kMaxReplicas); };
  status["desiredWorkerReplicas"] = int32(desired_total);
  status["readyWorkerReplicas"] = int32(ready_total);
  status["availableWorkerReplicas"] = int32(available_total);
  status["minWorkerReplicas"] = int32(min_total);
  status["maxWorkerReplicas"] = int32(max_total);
  bool all_ready = head_ready && ready_total >= desired_total;
  json conds = json::array();
  if (suspend) {
    bool gone = pods.size() == 0 || (heads.empty() && by_group.empty() && terminating == 0);
    for (auto& [gname, v] : by_group) gone = gone && v.empty();
    status["state"] = gone ? "suspended" : "suspending";
    status["reason"] = gone ? "spec.suspend is set" : "deleting pods";
    conds.push_back(Condition(old_status, "Suspended", gone, gone ? "Suspended" : "Suspending", "", options.now));
  } else {
    status["state"] = all_ready ? "ready" : "pending";
    status["reason"] = all_ready ? "" : (head_ready ? "waiting for workers" : "waiting for the head pod");
    conds.push_back(Condition(old_status, "HeadPodReady", head_ready, head_ready ? "HeadPodRunningAndReady" : "HeadPodNotReady",
                              "", options.now));
  }
  conds.push_back(Condition(old_status, "Ready", all_ready && !suspend, all_ready && !suspend ? "AllPodsReady" : "NotReady",
                            "", options.now));
  status["conditions"] = conds;
  r.status = status;
  return r;
}

}  // namespace cohort::k8s
