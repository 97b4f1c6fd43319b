// Table tests of the pure CohortCluster reconcile: a fake "API server" applies
// the actions to the observed objects, and reconciling again must be a no-op.
#include "cohort/k8s/reconcile.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

namespace cohort::k8s {
namespace {

using json = nlohmann::json;

json Cluster(int replicas = 2, int min = 0, int max = 10) {
  return json::parse(R"({
    "apiVersion": "cohort.dev/v1", "kind": "CohortCluster",
    "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1", "generation": 1},
    "spec": {
      "headGroupSpec": {"startParams": {}, "serviceType": "ClusterIP",
        "template": {"spec": {"containers": [{"name": "cohort", "image": "cohort:1",
          "resources": {"limits": {"cpu": "4", "memory": "24Gi"}}}]}}},
      "workerGroupSpecs": [{"groupName": "gpu", "replicas": )" + std::to_string(replicas) +
                       R"(, "minReplicas": )" + std::to_string(min) + R"(, "maxReplicas": )" + std::to_string(max) +
                       R"(, "startParams": {},
        "template": {"spec": {"containers": [{"name": "cohort", "image": "cohort:1",
          "resources": {"limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 4}}}]}}}]
    }})");
}

// A tiny in-memory API server.
struct World {
  json cluster;
  Observed obs;
  int counter = 0;
  std::string join_token = "jtok";  // ReconcileOptions::new_join_token

  ReconcileResult Step(const std::optional<AutoscalerInput>& as = std::nullopt) {
    ReconcileOptions o;
    o.now = "2026-01-01T00:00:00Z";
    o.new_token = "tok";
    o.new_join_token = join_token;
    return Reconcile(cluster, obs, as, o);
  }
  void Apply(const ReconcileResult& r) {
    for (const auto& a : r.actions) {
      if (a.kind == "CohortCluster") {
        ASSERT_EQ(a.verb, Action::Verb::kPatch);
        cluster.merge_patch(a.body);
        cluster["metadata"]["generation"] = cluster["metadata"]["generation"].get<int>() + 1;
        continue;
      }
      json& list = a.kind == "Pod"                     ? obs.pods
                   : a.kind == "Service"               ? obs.services
                   : a.kind == "PersistentVolumeClaim" ? obs.pvcs
                                                       : obs.secrets;
      if (a.verb == Action::Verb::kCreate) {
        json o = a.body;
        ++counter;
        char ts[64];
        std::snprintf(ts, sizeof(ts), "2026-01-01T00:%02d:%02dZ", counter / 60, counter % 60);
        if (o["metadata"].contains("generateName")) {
          o["metadata"]["name"] = o["metadata"]["generateName"].get<std::string>() + std::to_string(counter);
          o["metadata"].erase("generateName");
        }
        o["metadata"]["uid"] = "u" + std::to_string(counter);
        o["metadata"]["creationTimestamp"] = ts;
        if (a.kind == "Pod")
          o["status"] = {{"phase", "Running"},
                         {"podIP", "10.0.0." + std::to_string(counter)},
                         {"conditions", json::array({{{"type", "Ready"}, {"status", "True"}}})}};
        list.push_back(o);
      } else if (a.verb == Action::Verb::kDelete) {
        json kept = json::array();
        for (auto& o : list)
          if (o["metadata"]["name"] != a.name) kept.push_back(o);
        ASSERT_EQ(kept.size() + 1, list.size()) << "deleted a missing " << a.kind << " " << a.name;
        list = kept;
      } else {
        for (auto& o : list)
          if (o["metadata"]["name"] == a.name) o.merge_patch(a.body);
      }
    }
    cluster["status"] = r.status;
  }
  // Reconcile until no actions (at most n rounds); returns the rounds taken.
  int Converge(const std::optional<AutoscalerInput>& as = std::nullopt, int n = 5) {
    for (int i = 0; i < n; ++i) {
      auto r = Step(as);
      if (r.actions.empty()) {
        cluster["status"] = r.status;
        return i;
      }
      Apply(r);
    }
    return n;
  }
  std::vector<json> Pods(const std::string& type) const {
    std::vector<json> out;
    for (const auto& p : obs.pods)
      if (p["metadata"]["labels"][kLabelNodeType] == type) out.push_back(p);
    return out;
  }
};

int Count(const ReconcileResult& r, Action::Verb v, const std::string& kind) {
  return static_cast<int>(std::count_if(r.actions.begin(), r.actions.end(),
                                        [&](const Action& a) { return a.verb == v && a.kind == kind; }));
}

std::string Cmd(const json& pod) {
  std::string s;
  for (const auto& a : pod["spec"]["containers"][0]["command"]) s += a.get<std::string>() + " ";
  return s;
}

// The pod's volume `name` ({} when it has none).
json Volume(const json& pod, const std::string& name) {
  for (const auto& v : pod["spec"]["volumes"])
    if (v["name"] == name) return v;
  return json::object();
}

// The keys of the cluster Secret the pod mounts, sorted.
std::vector<std::string> MountedSecretKeys(const json& pod) {
  std::vector<std::string> keys;
  json volume = Volume(pod, "cohort-secrets");
  for (const auto& item : volume["secret"]["items"]) {
    keys.push_back(item["key"]);
    EXPECT_EQ(item["path"], item["key"]);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

// No secret reaches a pod through its command line or an environment
// variable: no argument or env value holds a token or an env reference to
// one, and no env var reads the cluster Secret.
void ExpectNoTokenInCommandOrEnv(const json& pod) {
  const json& ctr = pod["spec"]["containers"][0];
  for (const auto& a : ctr["command"]) {
    const std::string arg = a.get<std::string>();
    EXPECT_EQ(arg.find("$(COHORT_TOKEN)"), std::string::npos) << arg;
    EXPECT_NE(arg, "tok");
    EXPECT_NE(arg, "jtok");
  }
  EXPECT_FALSE(ctr.contains("args"));
  for (const auto& e : ctr["env"]) {
    EXPECT_NE(e["name"], "COHORT_TOKEN") << e.dump();
    if (e.contains("value")) {
      const std::string v = e["value"];
      EXPECT_EQ(v.find("$(COHORT_TOKEN)"), std::string::npos) << e.dump();
      EXPECT_NE(v, "tok") << e.dump();
      EXPECT_EQ(v.find("jtok"), std::string::npos) << e.dump();
    }
    if (e.contains("valueFrom") && e["valueFrom"].contains("secretKeyRef"))
      EXPECT_NE(e["valueFrom"]["secretKeyRef"]["name"], "demo-token") << e.dump();
  }
  EXPECT_FALSE(ctr.contains("envFrom"));
}

TEST(ReconcileTest, CreateFromNothing) {
  World w{Cluster(3)};
  auto r = w.Step();
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Secret"), 1);
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Service"), 1);
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Pod"), 4);
  EXPECT_EQ(r.actions.size(), 6u);
  for (const auto& a : r.actions) {
    const json& ref = a.body["metadata"]["ownerReferences"][0];
    EXPECT_EQ(ref["uid"], "uid-1");
    EXPECT_EQ(ref["kind"], "CohortCluster");
    EXPECT_EQ(ref["apiVersion"], "cohort.dev/v1");
    EXPECT_TRUE(ref["controller"].get<bool>());
    EXPECT_TRUE(ref["blockOwnerDeletion"].get<bool>());
    EXPECT_EQ(a.body["metadata"]["labels"][kLabelCluster], "demo");
    EXPECT_EQ(a.body["metadata"]["namespace"], "ml");
  }
  w.Apply(r);
  auto heads = w.Pods("head");
  auto workers = w.Pods("worker");
  ASSERT_EQ(heads.size(), 1u);
  ASSERT_EQ(workers.size(), 3u);
  EXPECT_EQ(heads[0]["metadata"]["labels"][kLabelGroup], "headgroup");
  EXPECT_EQ(workers[0]["metadata"]["labels"][kLabelGroup], "gpu");
  std::string hc = Cmd(heads[0]);
  EXPECT_NE(hc.find("cohort start --head"), std::string::npos) << hc;
  for (const char* f : {"--block", "--state-dir /var/lib/cohort", "--dashboard-port 8265", "--port 6380",
                        "--host 0.0.0.0", "--token-file /etc/cohort/secrets/token",
                        "--join-token-file /etc/cohort/secrets/join_token"})
    EXPECT_NE(hc.find(f), std::string::npos) << f << " in " << hc;
  EXPECT_EQ(hc.find("--token "), std::string::npos) << hc;
  std::string wc = Cmd(workers[0]);
  EXPECT_EQ(wc.find("--head"), std::string::npos);
  for (const char* f : {"--address demo-head-svc.ml.svc.cluster.local:6380", "--num-gpus 4", "--num-cpus 8",
                        "--memory 34359738368", "--metrics-port 8080", "--advertise-address $(COHORT_POD_IP)",
                        "--block", "--join-token-file /etc/cohort/secrets/join_token"})
    EXPECT_NE(wc.find(f), std::string::npos) << f << " in " << wc;
  EXPECT_EQ(wc.find("--token"), std::string::npos) << "a worker holds the admin token: " << wc;
  // Credentials: files of a read-only Secret volume; the head gets both
  // tokens, workers only the join token.
  for (const auto& pod : w.obs.pods) {
    ExpectNoTokenInCommandOrEnv(pod);
    json vol = Volume(pod, "cohort-secrets");
    EXPECT_EQ(vol["secret"]["secretName"], "demo-token") << vol.dump();
    EXPECT_EQ(vol["secret"]["defaultMode"], 0440);
    bool mounted = false;
    for (const auto& m : pod["spec"]["containers"][0]["volumeMounts"])
      if (m["name"] == "cohort-secrets")
        mounted = m["mountPath"] == "/etc/cohort/secrets" && m.value("readOnly", false);
    EXPECT_TRUE(mounted) << pod["spec"]["containers"][0]["volumeMounts"].dump();
    EXPECT_EQ(pod["spec"]["securityContext"]["fsGroup"], 1000);  // the image's group reads the files
  }
  EXPECT_EQ(MountedSecretKeys(heads[0]), (std::vector<std::string>{"join_token", "token"}));
  for (const auto& wp : workers) EXPECT_EQ(MountedSecretKeys(wp), (std::vector<std::string>{"join_token"}));
  const json& ctr = workers[0]["spec"]["containers"][0];
  bool token_file_env = false;
  for (const auto& e : ctr["env"]) token_file_env = token_file_env || e["name"] == "COHORT_TOKEN_FILE";
  EXPECT_FALSE(token_file_env);  // workers are not told where an admin token would be
  for (const auto& e : heads[0]["spec"]["containers"][0]["env"])
    if (e["name"] == "COHORT_TOKEN_FILE") EXPECT_EQ(e["value"], "/etc/cohort/secrets/token");
  EXPECT_EQ(ctr["readinessProbe"]["tcpSocket"]["port"], 8080);
  const json& hctr = heads[0]["spec"]["containers"][0];
  EXPECT_EQ(hctr["readinessProbe"]["httpGet"]["path"], "/api/health");
  EXPECT_EQ(hctr["livenessProbe"]["httpGet"]["port"], 8265);
  // Service: name, ports, selector.
  ASSERT_EQ(w.obs.services.size(), 1u);
  const json& svc = w.obs.services[0];
  EXPECT_EQ(svc["metadata"]["name"], "demo-head-svc");
  EXPECT_EQ(svc["spec"]["selector"][kLabelNodeType], "head");
  std::vector<int> ports;
  for (const auto& p : svc["spec"]["ports"]) ports.push_back(p["port"]);
  std::sort(ports.begin(), ports.end());
  EXPECT_EQ(ports, (std::vector<int>{6380, 8080, 8265}));
  EXPECT_EQ(w.obs.secrets[0]["stringData"]["token"], "tok");
  EXPECT_EQ(w.obs.secrets[0]["stringData"]["join_token"], "jtok");
  // Status after the pods came up.
  auto r2 = w.Step();
  EXPECT_TRUE(r2.actions.empty());
  EXPECT_EQ(r2.status["state"], "ready");
  EXPECT_EQ(r2.status["readyWorkerReplicas"], 3);
  EXPECT_EQ(r2.status["desiredWorkerReplicas"], 3);
  EXPECT_EQ(r2.status["head"]["serviceName"], "demo-head-svc");
  EXPECT_EQ(r2.status["head"]["podIP"], heads[0]["status"]["podIP"]);
  EXPECT_EQ(r2.status["endpoints"]["dashboard"], "8265");
  EXPECT_EQ(r2.status["observedGeneration"], 1);
  EXPECT_EQ(r2.status["workerGroups"][0]["readyReplicas"], 3);
}

// headGroupSpec.stateVolumeClaim: a claim owned by the cluster, created once,
// mounted as the head's state dir; a new head pod (the old one deleted)
// mounts the same claim and nothing else is created. Without it: emptyDir.
TEST(ReconcileTest, HeadStateOnAClaimSurvivesTheHeadPod) {
  World w;
  w.cluster = Cluster(1);
  w.cluster["spec"]["headGroupSpec"]["stateVolumeClaim"] = {{"storage", "20Gi"}, {"storageClassName", "premium-rwo"}};
  auto r = w.Step();
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.status["headStateVolume"], "demo-head-state");
  w.Apply(r);
  ASSERT_EQ(w.obs.pvcs.size(), 1u);
  const json& pvc = w.obs.pvcs[0];
  EXPECT_EQ(pvc["metadata"]["name"], "demo-head-state");
  EXPECT_EQ(pvc["metadata"]["ownerReferences"][0]["uid"], "uid-1");
  EXPECT_EQ(pvc["spec"]["resources"]["requests"]["storage"], "20Gi");
  EXPECT_EQ(pvc["spec"]["storageClassName"], "premium-rwo");
  EXPECT_EQ(pvc["spec"]["accessModes"], json::array({"ReadWriteOnce"}));
  auto head_state_volume = [&]() -> json {
    for (const auto& p : w.obs.pods)
      if (p["metadata"]["labels"][kLabelNodeType] == "head")
        for (const auto& v : p["spec"]["volumes"])
          if (v["name"] == "cohort-state") return v;
    return nullptr;
  };
  EXPECT_EQ(head_state_volume()["persistentVolumeClaim"]["claimName"], "demo-head-state");
  for (const auto& p : w.obs.pods)  // workers keep their scratch state on emptyDir
    if (p["metadata"]["labels"][kLabelNodeType] != "head")
      for (const auto& v : p["spec"]["volumes"])
        if (v["name"] == "cohort-state") EXPECT_TRUE(v.contains("emptyDir")) << v.dump();
  EXPECT_TRUE(w.Step().actions.empty());

  // The head pod is lost: one new head pod, on the same claim; no new claim.
  json kept = json::array();
  for (const auto& p : w.obs.pods)
    if (p["metadata"]["labels"][kLabelNodeType] != "head") kept.push_back(p);
  w.obs.pods = kept;
  r = w.Step();
  ASSERT_EQ(r.actions.size(), 1u);
  EXPECT_EQ(r.actions[0].reason, "CreatedHeadPod");
  w.Apply(r);
  EXPECT_EQ(head_state_volume()["persistentVolumeClaim"]["claimName"], "demo-head-state");
  EXPECT_EQ(w.obs.pvcs.size(), 1u);

  // Without the field: the head's state is on an emptyDir, and no claim.
  World plain;
  plain.cluster = Cluster(1);
  r = plain.Step();
  EXPECT_EQ(r.status["headStateVolume"], "emptyDir");
  for (const auto& a : r.actions) EXPECT_NE(a.kind, "PersistentVolumeClaim");
}

TEST(ReconcileTest, AStateClaimThatCannotBeMadeIsAnInvalidSpec) {
  for (const json& bad : {json("10Gi"), json{{"storage", "lots"}}, json{{"storage", "0"}},
                          json{{"storageClassName", 5}}, json{{"accessModes", json::array()}},
                          json{{"accessModes", {"ReadWriteSometimes"}}}}) {
    World w;
    w.cluster = Cluster(1);
    w.cluster["spec"]["headGroupSpec"]["stateVolumeClaim"] = bad;
    auto r = w.Step();
    EXPECT_NE(r.error.find("stateVolumeClaim"), std::string::npos) << bad.dump() << ": " << r.error;
    EXPECT_TRUE(r.actions.empty()) << bad.dump();
  }
}

TEST(ReconcileTest, IdempotentAfterApply) {
  World w{Cluster(2)};
  EXPECT_EQ(w.Converge(), 1);
  auto r = w.Step();
  EXPECT_TRUE(r.actions.empty());
  EXPECT_EQ(r.status, w.cluster["status"]);  // no status churn either
}

TEST(ReconcileTest, ScaleUpAndSpecChange) {
  World w{Cluster(1)};
  w.Converge();
  w.cluster["spec"]["workerGroupSpecs"][0]["replicas"] = 4;
  w.cluster["metadata"]["generation"] = 2;
  auto r = w.Step();
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Pod"), 3);
  EXPECT_EQ(r.actions.size(), 3u);
  EXPECT_EQ(r.status["observedGeneration"], 2);
  w.Apply(r);
  EXPECT_EQ(w.Pods("worker").size(), 4u);
  EXPECT_TRUE(w.Step().actions.empty());
}

TEST(ReconcileTest, ReplicasClampedToBounds) {
  World w{Cluster(20, 1, 3)};
  w.Converge();
  EXPECT_EQ(w.Pods("worker").size(), 3u);
  w.cluster["spec"]["workerGroupSpecs"][0]["replicas"] = 0;
  w.Converge();
  EXPECT_EQ(w.Pods("worker").size(), 1u);
}

TEST(ReconcileTest, ScaleDownDeletesWorkersToDeleteFirstThenNewest) {
  World w{Cluster(4)};
  w.Converge();
  auto workers = w.Pods("worker");
  ASSERT_EQ(workers.size(), 4u);
  std::string chosen = workers[0]["metadata"]["name"];   // the oldest
  std::string newest = workers[3]["metadata"]["name"];
  w.cluster["spec"]["workerGroupSpecs"][0]["replicas"] = 2;
  w.cluster["spec"]["workerGroupSpecs"][0]["scaleStrategy"] = {{"workersToDelete", {chosen}}};
  auto r = w.Step();
  std::vector<std::string> deleted;
  for (const auto& a : r.actions)
    if (a.verb == Action::Verb::kDelete) deleted.push_back(a.name);
  EXPECT_EQ(deleted, (std::vector<std::string>{chosen, newest}));
  EXPECT_EQ(Count(r, Action::Verb::kPatch, "CohortCluster"), 1);  // workersToDelete consumed
  w.Apply(r);
  EXPECT_TRUE(w.cluster["spec"]["workerGroupSpecs"][0]["scaleStrategy"]["workersToDelete"].empty());
  EXPECT_EQ(w.Pods("worker").size(), 2u);
  EXPECT_TRUE(w.Step().actions.empty());
}

TEST(ReconcileTest, ScaleDownWithoutListDeletesNewestFirst) {
  World w{Cluster(3)};
  w.Converge();
  auto workers = w.Pods("worker");
  w.cluster["spec"]["workerGroupSpecs"][0]["replicas"] = 1;
  auto r = w.Step();
  ASSERT_EQ(Count(r, Action::Verb::kDelete, "Pod"), 2);
  EXPECT_EQ(r.actions[0].name, workers[2]["metadata"]["name"]);
  EXPECT_EQ(r.actions[1].name, workers[1]["metadata"]["name"]);
  EXPECT_EQ(r.actions[0].body["uid"], workers[2]["metadata"]["uid"]);
}

TEST(ReconcileTest, DeadPodsAreReplaced) {
  World w{Cluster(2)};
  w.Converge();
  for (auto& p : w.obs.pods)
    if (p["metadata"]["labels"][kLabelNodeType] == "worker") {
      p["status"]["phase"] = "Failed";
      break;
    }
  auto r = w.Step();
  EXPECT_EQ(Count(r, Action::Verb::kDelete, "Pod"), 1);
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Pod"), 1);
  EXPECT_EQ(r.status["readyWorkerReplicas"], 1);
  w.Apply(r);
  EXPECT_TRUE(w.Step().actions.empty());
  // The head dies: replaced too.
  for (auto& p : w.obs.pods)
    if (p["metadata"]["labels"][kLabelNodeType] == "head") p["status"]["phase"] = "Succeeded";
  auto r2 = w.Step();
  ASSERT_EQ(r2.actions.size(), 2u);
  EXPECT_EQ(r2.actions[0].verb, Action::Verb::kDelete);
  EXPECT_EQ(r2.actions[1].reason, "CreatedHeadPod");
  EXPECT_EQ(r2.status["state"], "pending");
}

TEST(ReconcileTest, TerminatingPodsAreNotCountedNorDeletedAgain) {
  World w{Cluster(2)};
  w.Converge();
  for (auto& p : w.obs.pods)
    if (p["metadata"]["labels"][kLabelNodeType] == "worker") {
      p["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z";
      break;
    }
  auto r = w.Step();
  ASSERT_EQ(r.actions.size(), 1u);
  EXPECT_EQ(r.actions[0].verb, Action::Verb::kCreate);
}

TEST(ReconcileTest, ClusterDeletedOrForeignObjectsAreIgnored) {
  // After the CR is deleted, the garbage collector removes what carries its
  // ownerReference: every child has one (checked in CreateFromNothing). The
  // reconcile of another cluster with the same name but a new uid never
  // touches the old cluster's objects.
  World w{Cluster(1)};
  w.Converge();
  World fresh{Cluster(1)};
  fresh.cluster["metadata"]["uid"] = "uid-2";
  fresh.obs = w.obs;  // the old objects, still being collected
  auto r = fresh.Step();
  EXPECT_EQ(Count(r, Action::Verb::kDelete, "Pod"), 0);
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Pod"), 2);
}

TEST(ReconcileTest, SuspendDeletesAllPodsAndResumes) {
  World w{Cluster(2)};
  w.Converge();
  w.cluster["spec"]["suspend"] = true;
  auto r = w.Step();
  EXPECT_EQ(Count(r, Action::Verb::kDelete, "Pod"), 3);
  EXPECT_EQ(r.actions.size(), 3u);
  EXPECT_EQ(r.status["state"], "suspending");
  w.Apply(r);
  auto r2 = w.Step();
  EXPECT_TRUE(r2.actions.empty());
  EXPECT_EQ(r2.status["state"], "suspended");
  EXPECT_EQ(w.obs.services.size(), 1u);  // service and secret stay
  w.cluster["spec"]["suspend"] = false;
  w.Converge();
  EXPECT_EQ(w.Pods("worker").size(), 2u);
  EXPECT_EQ(w.Pods("head").size(), 1u);
}

TEST(ReconcileTest, ServiceDriftIsPatched) {
  World w{Cluster(0)};
  w.Converge();
  w.obs.services[0]["spec"]["ports"] = json::array();
  w.obs.services[0]["spec"]["clusterIP"] = "None";
  auto r = w.Step();
  ASSERT_EQ(r.actions.size(), 1u);
  EXPECT_EQ(r.actions[0].verb, Action::Verb::kPatch);
  EXPECT_EQ(r.actions[0].kind, "Service");
  w.Apply(r);
  EXPECT_TRUE(w.Step().actions.empty());
}

TEST(ReconcileTest, InvalidSpecFails) {
  World w{Cluster(1, 5, 2)};
  auto r = w.Step();
  EXPECT_TRUE(r.actions.empty());
  EXPECT_EQ(r.status["state"], "failed");
  EXPECT_NE(r.error.find("minReplicas"), std::string::npos);
}

AutoscalerInput Demand(int gpu_bundles) {
  AutoscalerInput in;
  for (int i = 0; i < gpu_bundles; ++i) in.pending_bundles.push_back({{"GPU", 1}, {"CPU", 1}});
  return in;
}

TEST(ReconcileTest, AutoscalingUpWithinBounds) {
  World w{Cluster(0, 0, 3)};
  w.cluster["spec"]["enableAutoscaling"] = true;
  w.Converge(AutoscalerInput{});
  EXPECT_EQ(w.Pods("worker").size(), 0u);
  // 6 one-GPU bundles on 4-GPU workers: 2 workers.
  auto r = w.Step(Demand(6));
  ASSERT_EQ(Count(r, Action::Verb::kPatch, "CohortCluster"), 1);
  EXPECT_EQ(r.actions[0].body["spec"]["workerGroupSpecs"][0]["replicas"], 2);
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Pod"), 2);
  w.Apply(r);
  // The new workers have not joined the head yet: the same demand adds nothing.
  EXPECT_TRUE(w.Step(Demand(6)).actions.empty());
  // Far more demand: capped at maxReplicas.
  w.Converge(Demand(40));
  EXPECT_EQ(w.Pods("worker").size(), 3u);
  EXPECT_EQ(w.cluster["spec"]["workerGroupSpecs"][0]["replicas"], 3);
  // A bundle no worker can hold does not scale.
  AutoscalerInput huge;
  huge.pending_bundles.push_back({{"GPU", 8}});
  World w2{Cluster(0, 0, 3)};
  w2.cluster["spec"]["enableAutoscaling"] = true;
  w2.Converge(huge);
  EXPECT_EQ(w2.Pods("worker").size(), 0u);
}

TEST(ReconcileTest, AutoscalingDownIdleWorkersNotBelowMin) {
  World w{Cluster(3, 1, 5)};
  w.cluster["spec"]["enableAutoscaling"] = true;
  w.Converge(AutoscalerInput{});
  auto workers = w.Pods("worker");
  ASSERT_EQ(workers.size(), 3u);
  AutoscalerInput in;
  for (const auto& p : workers) in.nodes.push_back({p["status"]["podIP"], true, false, 30});
  EXPECT_TRUE(w.Step(in).actions.empty());  // idle, but not for 60 s yet
  for (auto& n : in.nodes) n.idle_seconds = 120;
  in.nodes[0].idle_seconds = 0;  // the oldest worker is busy
  auto r = w.Step(in);
  EXPECT_EQ(Count(r, Action::Verb::kPatch, "CohortCluster"), 1);
  EXPECT_EQ(r.actions[0].body["spec"]["workerGroupSpecs"][0]["replicas"], 1);
  std::vector<std::string> deleted;
  for (const auto& a : r.actions)
    if (a.verb == Action::Verb::kDelete) deleted.push_back(a.name);
  std::vector<std::string> expect = {workers[1]["metadata"]["name"], workers[2]["metadata"]["name"]};
  std::sort(deleted.begin(), deleted.end());
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(deleted, expect);
  w.Apply(r);
  in.nodes.resize(1);
  EXPECT_TRUE(w.Step(in).actions.empty());
  in.nodes[0].idle_seconds = 500;  // min 1 holds
  EXPECT_TRUE(w.Step(in).actions.empty());
  EXPECT_EQ(w.Pods("worker").size(), 1u);
}

TEST(ReconcileTest, AutoscalingPerGroupIdleTimeout) {
  World w{Cluster(2, 0, 5)};
  w.cluster["spec"]["enableAutoscaling"] = true;
  w.cluster["spec"]["workerGroupSpecs"][0]["idleTimeoutSeconds"] = 300;
  w.Converge(AutoscalerInput{});
  AutoscalerInput in;
  for (const auto& p : w.Pods("worker")) in.nodes.push_back({p["status"]["podIP"], true, false, 120});
  EXPECT_TRUE(w.Step(in).actions.empty());  // 120 s < 300 s
  for (auto& n : in.nodes) n.idle_seconds = 301;
  w.Apply(w.Step(in));
  EXPECT_EQ(w.Pods("worker").size(), 0u);
  EXPECT_EQ(w.cluster["spec"]["workerGroupSpecs"][0]["replicas"], 0);
}

TEST(ReconcileTest, AutoscalingOffIgnoresDemand) {
  World w{Cluster(1, 0, 5)};
  w.Converge();
  EXPECT_TRUE(w.Step(Demand(20)).actions.empty());
}

TEST(ReconcileTest, ParseQuantity) {
  EXPECT_DOUBLE_EQ(ParseQuantity("500m"), 0.5);
  EXPECT_DOUBLE_EQ(ParseQuantity("4"), 4);
  EXPECT_DOUBLE_EQ(ParseQuantity("12Gi"), 12.0 * 1073741824.0);
  EXPECT_DOUBLE_EQ(ParseQuantity("1G"), 1e9);
  EXPECT_DOUBLE_EQ(ParseQuantity("bogus"), 0);
}

TEST(ReconcileTest, StartParamsRenderSortedFlags) {
  World w{Cluster(1)};
  w.cluster["spec"]["workerGroupSpecs"][0]["startParams"] = {{"num-gpus", "2"}, {"verbose", "true"}, {"x", "false"}};
  w.cluster["spec"]["headGroupSpec"]["startParams"] = {{"port", "7000"}};
  w.Converge();
  std::string wc = Cmd(w.Pods("worker")[0]);
  EXPECT_NE(wc.find("--num-gpus 2"), std::string::npos) << wc;  // explicit wins over the limit
  EXPECT_NE(wc.find("--verbose "), std::string::npos);
  EXPECT_EQ(wc.find("--x"), std::string::npos);
  EXPECT_NE(wc.find("demo-head-svc.ml.svc.cluster.local:7000"), std::string::npos) << wc;
  EXPECT_NE(Cmd(w.Pods("head")[0]).find("--port 7000"), std::string::npos);
}

// A Secret made before join tokens (no join_token key) is kept as it is;
// workers then join with the admin token's file (the head accepts it, with
// a warning), still never through the command line or the environment.
TEST(ReconcileTest, SecretWithoutJoinTokenKeepsWorkersJoining) {
  World w{Cluster(1)};
  w.obs.secrets.push_back({{"apiVersion", "v1"},
                           {"kind", "Secret"},
                           {"metadata",
                            {{"name", "demo-token"},
                             {"namespace", "ml"},
                             {"ownerReferences", json::array({{{"uid", "uid-1"}, {"controller", true}}})}}},
                           {"data", {{"token", "b2xk"}}}});
  auto r = w.Step();
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Secret"), 0);
  EXPECT_EQ(Count(r, Action::Verb::kPatch, "Secret"), 0);
  w.Apply(r);
  const json head = w.Pods("head")[0], worker = w.Pods("worker")[0];
  EXPECT_EQ(MountedSecretKeys(head), (std::vector<std::string>{"token"}));
  EXPECT_EQ(Cmd(head).find("--join-token"), std::string::npos) << Cmd(head);  // the head makes its own
  EXPECT_EQ(MountedSecretKeys(worker), (std::vector<std::string>{"token"}));
  EXPECT_NE(Cmd(worker).find("--token-file /etc/cohort/secrets/token"), std::string::npos) << Cmd(worker);
  ExpectNoTokenInCommandOrEnv(head);
  ExpectNoTokenInCommandOrEnv(worker);
  EXPECT_TRUE(w.Step().actions.empty());

  // The same when the operator passes no join token for a new Secret.
  World bare{Cluster(1)};
  bare.join_token = "";
  bare.Converge();
  EXPECT_FALSE(bare.obs.secrets[0]["stringData"].contains("join_token"));
  EXPECT_EQ(MountedSecretKeys(bare.Pods("worker")[0]), (std::vector<std::string>{"token"}));
}

TEST(ReconcileTest, TemplateCredentialsAndSecurityContextWin) {
  World w{Cluster(1)};
  w.cluster["spec"]["workerGroupSpecs"][0]["startParams"] = {{"join-token-file", "/mnt/join"}};
  w.cluster["spec"]["headGroupSpec"]["startParams"] = {{"token-file", "/mnt/admin"}};
  w.cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["securityContext"] = {{"fsGroup", 2000}};
  w.Converge();
  const std::string hc = Cmd(w.Pods("head")[0]), wc = Cmd(w.Pods("worker")[0]);
  EXPECT_NE(hc.find("--token-file /mnt/admin"), std::string::npos) << hc;
  EXPECT_EQ(hc.find("--token-file /etc/cohort"), std::string::npos) << hc;
  EXPECT_NE(hc.find("--join-token-file /etc/cohort/secrets/join_token"), std::string::npos) << hc;
  EXPECT_NE(wc.find("--join-token-file /mnt/join"), std::string::npos) << wc;
  EXPECT_EQ(wc.find("/etc/cohort/secrets/join_token"), std::string::npos) << wc;
  EXPECT_EQ(w.Pods("worker")[0]["spec"]["securityContext"]["fsGroup"], 2000);
  EXPECT_FALSE(w.Pods("worker")[0]["spec"]["securityContext"].contains("fsGroupChangePolicy"));
}

// Operator-made pods are restrictive by default (non-root, RuntimeDefault
// seccomp, no privilege escalation, no capabilities, no API token); a
// template that says otherwise wins, field by field.
TEST(ReconcileTest, PodsAreRestrictiveUnlessTheTemplateAsks) {
  World w{Cluster(1)};
  json& wt = w.cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"];
  wt["automountServiceAccountToken"] = true;
  wt["securityContext"] = {{"runAsNonRoot", false}};
  wt["containers"][0]["securityContext"] = {{"capabilities", {{"add", {"SYS_PTRACE"}}}}};
  w.Converge();
  const json head = w.Pods("head")[0]["spec"];
  EXPECT_EQ(head["automountServiceAccountToken"], false);
  EXPECT_EQ(head["securityContext"]["runAsNonRoot"], true);
  EXPECT_EQ(head["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
  EXPECT_EQ(head["containers"][0]["securityContext"]["allowPrivilegeEscalation"], false);
  EXPECT_EQ(head["containers"][0]["securityContext"]["capabilities"]["drop"], json::array({"ALL"}));
  const json worker = w.Pods("worker")[0]["spec"];
  EXPECT_EQ(worker["automountServiceAccountToken"], true);
  EXPECT_EQ(worker["securityContext"]["runAsNonRoot"], false);
  EXPECT_EQ(worker["containers"][0]["securityContext"]["capabilities"]["add"], json::array({"SYS_PTRACE"}));
  EXPECT_EQ(worker["containers"][0]["securityContext"]["allowPrivilegeEscalation"], false);
}

// Two groups left at the CRD's default maxReplicas (2147483647) overflowed
// the int sums of the status; they are summed in int64 and clamped to the
// status fields' int32.
TEST(ReconcileTest, ReplicaTotalsDoNotOverflow) {
  World w{Cluster(1, 0, 2147483647)};
  json second = w.cluster["spec"]["workerGroupSpecs"][0];
  second["groupName"] = "cpu";
  second["replicas"] = 2147483647;
  second["minReplicas"] = 2147483647;
  w.cluster["spec"]["workerGroupSpecs"].push_back(second);
  json third = second;
  third["groupName"] = "other";
  third.erase("maxReplicas");  // the default
  third.erase("minReplicas");
  third["replicas"] = 0;
  w.cluster["spec"]["workerGroupSpecs"].push_back(third);
  // The 2^31 - 1 pods of group "cpu" would take a while: suspended groups
  // still count in the totals of min and max.
  w.cluster["spec"]["workerGroupSpecs"][1]["suspend"] = true;
  auto r = w.Step();
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.status["maxWorkerReplicas"], 2147483647);
  EXPECT_EQ(r.status["minWorkerReplicas"], 2147483647);
  EXPECT_EQ(r.status["desiredWorkerReplicas"], 1);
  EXPECT_EQ(r.desired_replicas.at("gpu"), 1);
  EXPECT_EQ(r.desired_replicas.at("cpu"), 0);
}

// A template's containers[0] (or the template, its spec, the containers
// list) of another JSON type made BuildPod throw json::type_error out of
// Reconcile; it is an invalid spec, reported like the others.
TEST(ReconcileTest, TemplateOfTheWrongShapeIsAnInvalidSpec) {
  struct Case {
    const char* group;  // "head" or "worker"
    const char* path;   // JSON pointer under the group
    json value;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"head", "/template/spec/containers/0", "cohort", "headGroupSpec.template.spec.containers[0] must be an object, not a string"},
      {"head", "/template/spec/containers/0", 7, "headGroupSpec.template.spec.containers[0] must be an object, not 7"},
      {"worker", "/template/spec/containers/0", json::array(), "group gpu: template.spec.containers[0] must be an object"},
      {"worker", "/template/spec/containers", "c", "group gpu: template.spec.containers must be an array"},
      {"worker", "/template/spec", 1, "group gpu: template.spec must be an object"},
      {"worker", "/template/metadata", "m", "group gpu: template.metadata must be an object"},
      {"head", "/template", true, "headGroupSpec.template must be an object, not a boolean"},
  };
  for (const auto& c : cases) {
    World w{Cluster(1)};
    json& group = std::string(c.group) == "head" ? w.cluster["spec"]["headGroupSpec"]
                                                 : w.cluster["spec"]["workerGroupSpecs"][0];
    group[json::json_pointer(c.path)] = c.value;
    ReconcileResult r;
    ASSERT_NO_THROW(r = w.Step()) << c.path;
    EXPECT_NE(r.error.find(c.message), std::string::npos) << r.error;
    EXPECT_TRUE(r.actions.empty()) << c.path;
    EXPECT_EQ(r.status["state"], "failed");
    EXPECT_EQ(r.status["conditions"][0]["reason"], "InvalidSpec");
    EXPECT_EQ(r.status["conditions"][0]["message"], r.error);
  }
  // null is "not there": the defaults apply.
  World w{Cluster(1)};
  w.cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"] = nullptr;
  auto r = w.Step();
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(Count(r, Action::Verb::kCreate, "Pod"), 2);
}

// Quantities beyond int64 ("1e300") were cast to long long (UB) for the
// worker flags and the /dev/shm size; they are clamped, and a quantity that
// is not finite is no quantity (0).
TEST(ReconcileTest, HugeQuantitiesAreClampedNotCast) {
  EXPECT_EQ(ParseQuantity("1e300Ei"), 0);  // inf
  EXPECT_EQ(ParseQuantity("1e999"), 0);    // out of double's range
  EXPECT_DOUBLE_EQ(ParseQuantity("1e300"), 1e300);
  World w{Cluster(1)};
  w.cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"] = {
      {"cpu", "1e300"}, {"memory", "1e300"}, {"nvidia.com/gpu", "1e30"}};
  w.Converge();
  ASSERT_EQ(w.Pods("worker").size(), 1u);
  const json worker = w.Pods("worker")[0];
  const std::string cmd = Cmd(worker);
  EXPECT_NE(cmd.find("--num-cpus 9223372036854775807"), std::string::npos) << cmd;
  EXPECT_NE(cmd.find("--num-gpus 9223372036854775807"), std::string::npos) << cmd;
  EXPECT_NE(cmd.find("--memory 9223372036854775807"), std::string::npos) << cmd;
  EXPECT_EQ(Volume(worker, "shared-mem")["emptyDir"]["sizeLimit"], "9223372036854775807");
  // Negative quantities give no negative flags.
  World neg{Cluster(1)};
  neg.cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"] = {
      {"cpu", "-2"}, {"nvidia.com/gpu", "-4"}};
  neg.Converge();
  EXPECT_NE(Cmd(neg.Pods("worker")[0]).find("--num-gpus 0"), std::string::npos) << Cmd(neg.Pods("worker")[0]);
  EXPECT_EQ(Cmd(neg.Pods("worker")[0]).find("--num-cpus"), std::string::npos);
}

// Int() read floats with get<long long>() (UB beyond int64). The replica
// fields must be integers in [0, 2147483647] (as in the CRD); other numbers
// are clamped.
TEST(ReconcileTest, NumbersOutOfRangeAreCheckedNotCast) {
  for (json bad : {json(1e300), json(-1e300), json(2.5), json(-1), json(2147483648LL), json("4"),
                   json(18446744073709551615ULL)}) {
    for (const char* key : {"replicas", "minReplicas", "maxReplicas"}) {
      World w{Cluster(1)};
      w.cluster["spec"]["workerGroupSpecs"][0][key] = bad;
      auto r = w.Step();
      EXPECT_NE(r.error.find(std::string("group gpu: ") + key + " must be an integer in [0, 2147483647]"),
                std::string::npos)
          << key << "=" << bad.dump() << ": " << r.error;
      EXPECT_TRUE(r.actions.empty());
    }
  }
  World w{Cluster(1)};
  w.cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 4.0;  // a whole float is an integer
  w.cluster["metadata"]["generation"] = 1e300;
  w.cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["ports"] = {
      {{"containerPort", 1e300}}, {{"containerPort", -1e300}}};
  auto r = w.Step();
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.status["observedGeneration"], 9223372036854775807LL);
  w.Apply(r);
  const json ports = w.Pods("worker")[0]["spec"]["containers"][0]["ports"];
  ASSERT_EQ(ports.size(), 3u) << ports.dump();
  EXPECT_EQ(ports[2]["containerPort"], kMetricsPort);
}

// spec.autoscalerOptions.idleTimeoutSeconds was read with get<double>(),
// which threw on a string; it is validated, and honoured when it is a number.
TEST(ReconcileTest, AutoscalerOptionsIdleTimeout) {
  for (json bad : {json("60"), json(-1), json(true)}) {
    World w{Cluster(1, 0, 5)};
    w.cluster["spec"]["enableAutoscaling"] = true;
    w.cluster["spec"]["autoscalerOptions"] = {{"idleTimeoutSeconds", bad}};
    ReconcileResult r;
    ASSERT_NO_THROW(r = w.Step(AutoscalerInput{}));
    EXPECT_NE(r.error.find("spec.autoscalerOptions.idleTimeoutSeconds must be a number >= 0"), std::string::npos)
        << r.error;
    EXPECT_EQ(r.status["state"], "failed");
  }
  World bad_options{Cluster(1)};
  bad_options.cluster["spec"]["autoscalerOptions"] = "fast";
  EXPECT_NE(bad_options.Step().error.find("spec.autoscalerOptions must be an object"), std::string::npos);
  World bad_group{Cluster(1)};
  bad_group.cluster["spec"]["workerGroupSpecs"][0]["idleTimeoutSeconds"] = "300";
  EXPECT_NE(bad_group.Step().error.find("group gpu: idleTimeoutSeconds must be a number >= 0"), std::string::npos);

  World w{Cluster(2, 0, 5)};
  w.cluster["spec"]["enableAutoscaling"] = true;
  w.cluster["spec"]["autoscalerOptions"] = {{"idleTimeoutSeconds", 300}};
  w.Converge(AutoscalerInput{});
  AutoscalerInput in;
  for (const auto& p : w.Pods("worker")) in.nodes.push_back({p["status"]["podIP"], true, false, 120});
  EXPECT_TRUE(w.Step(in).actions.empty());  // 120 s < 300 s (the default would be 60 s)
  for (auto& n : in.nodes) n.idle_seconds = 301;
  w.Apply(w.Step(in));
  EXPECT_EQ(w.Pods("worker").size(), 0u);
}

// A foreign key in the head Service's selector: the merge patch sets it to
// null (a merge patch of {"selector": want} would keep it, and the operator
// patched the Service on every pass).
TEST(ReconcileTest, ServiceSelectorForeignKeyIsRemoved) {
  World w{Cluster(0)};
  w.Converge();
  w.obs.services[0]["spec"]["selector"]["app"] = "legacy";
  auto r = w.Step();
  ASSERT_EQ(r.actions.size(), 1u);
  EXPECT_EQ(r.actions[0].reason, "UpdatedService");
  const json& selector = r.actions[0].body["spec"]["selector"];
  EXPECT_EQ(selector, (json{{"app", nullptr}})) << r.actions[0].body.dump();  // our keys are unchanged
  w.Apply(r);
  EXPECT_EQ(w.obs.services[0]["spec"]["selector"],
            (json{{kLabelCluster, "demo"}, {kLabelNodeType, "head"}}));
  EXPECT_TRUE(w.Step().actions.empty());
  // A changed value of ours and a foreign key at once.
  w.obs.services[0]["spec"]["selector"] = {{kLabelCluster, "other"}, {"x", "y"}};
  auto r2 = w.Step();
  ASSERT_EQ(r2.actions.size(), 1u);
  EXPECT_EQ(r2.actions[0].body["spec"]["selector"],
            (json{{kLabelCluster, "demo"}, {kLabelNodeType, "head"}, {"x", nullptr}}));
  w.Apply(r2);
  EXPECT_TRUE(w.Step().actions.empty());
}

// A head node that reports no address does not make the pods without an IP
// look joined: they stay in flight, and the same demand adds nothing more.
TEST(ReconcileTest, AutoscalingPodsWithoutIpAreInFlight) {
  World w{Cluster(0, 0, 5)};
  w.cluster["spec"]["enableAutoscaling"] = true;
  w.Converge(AutoscalerInput{});
  AutoscalerInput in = Demand(4);
  in.nodes.push_back({"", true, false, 0});
  auto r = w.Step(in);
  ASSERT_EQ(Count(r, Action::Verb::kCreate, "Pod"), 1);
  w.Apply(r);
  for (auto& p : w.obs.pods) p["status"].erase("podIP");  // scheduled, not started
  EXPECT_TRUE(w.Step(in).actions.empty());
}

TEST(ReconcileTest, HeadPortsMustBeValid) {
  for (const char* port : {"0", "65536", "99999999999", "80x", ""}) {
    World w{Cluster(1)};
    w.cluster["spec"]["headGroupSpec"]["startParams"] = {{"port", port}};
    EXPECT_NE(w.Step().error.find("port/dashboard-port is invalid"), std::string::npos) << port;
  }
}

}  // namespace
}  // namespace cohort::k8s
