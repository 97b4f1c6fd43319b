// Operator::ReconcileOnce against an in-memory API server (cpp-httplib):
// creates the children, writes status through /status, records Events,
// converges (a second pass writes nothing), and autoscales from a fake head.
#include <httplib.h>
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <regex>
#include <thread>

#include "cohort/k8s/head_status.h"
#include "cohort/k8s/operator.h"

namespace cohort::k8s {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

class FakeStore {
 public:
  FakeStore() {
    // /api/v1/namespaces/ns/<plural>[/<name>] and /apis/cohort.dev/v1/namespaces/ns/cohortclusters/<name>[/status]
    const std::string re = R"((/api/v1|/apis/cohort\.dev/v1|/apis/coordination\.k8s\.io/v1)/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?(?:/(status))?)";
    auto handler = [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); };
    server_.Get(re, handler);
    server_.Post(re, handler);
    server_.Put(re, handler);
    server_.Patch(re, handler);
    server_.Delete(re, handler);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(1ms);
  }
  ~FakeStore() {
    server_.stop();
    thread_.join();
  }
  KubeConfig Config() const {
    KubeConfig c;
    c.server = "http://127.0.0.1:" + std::to_string(port_);
    c.default_namespace = "ns";
    return c;
  }
  std::mutex mu;
  std::map<std::string, std::map<std::string, json>> objects;  // plural -> name -> object
  std::vector<std::string> writes;                              // "VERB plural[/status]"
  int counter = 0;
  int watches = 0;

 private:
  void Handle(const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    std::string plural = req.matches[3], name = req.matches[4], sub = req.matches[5];
    auto& coll = objects[plural];
    auto reply = [&](int code, const json& j) {
      res.status = code;
      res.set_content(j.dump(), "application/json");
    };
    auto not_found = [&] { reply(404, {{"kind", "Status"}, {"code", 404}, {"reason", "NotFound"}}); };
    if (req.method != "GET") writes.push_back(req.method + " " + plural + (sub.empty() ? "" : "/status"));
    if (req.method == "GET" && name.empty() && req.has_param("watch")) {
      ++watches;
      res.set_chunked_content_provider("application/json", [](size_t, httplib::DataSink& sink) {
        std::this_thread::sleep_for(50ms);  // an empty stream that ends normally
        sink.done();
        return true;
      });
      return;
    }
    if (req.method == "GET" && name.empty()) {
      json items = json::array();
      std::string sel = req.get_param_value("labelSelector");
      for (auto& [n, o] : coll) {
        if (!sel.empty()) {
          auto eq = sel.find('=');
          std::string k = sel.substr(0, eq), v = eq == std::string::npos ? "" : sel.substr(eq + 1);
          json labels = o["metadata"].value("labels", json::object());
          if (!labels.contains(k) || (eq != std::string::npos && labels[k] != v)) continue;
        }
        items.push_back(o);
      }
      return reply(200, {{"items", items}, {"metadata", {{"resourceVersion", std::to_string(counter)}}}});
    }
    if (req.method == "GET") return coll.count(name) ? reply(200, coll[name]) : not_found();
    if (req.method == "POST") {
      json o = json::parse(req.body);
      ++counter;
      if (!o["metadata"].contains("name"))
        o["metadata"]["name"] = o["metadata"]["generateName"].get<std::string>() + std::to_string(counter);
      std::string n = o["metadata"]["name"];
      if (coll.count(n)) return reply(409, {{"kind", "Status"}, {"code", 409}, {"reason", "AlreadyExists"}});
      o["metadata"]["uid"] = "uid-" + std::to_string(counter);
      o["metadata"]["resourceVersion"] = std::to_string(counter);
      o["metadata"]["creationTimestamp"] = "2026-01-01T00:00:" + std::string(counter < 10 ? "0" : "") + std::to_string(counter) + "Z";
      if (plural == "secrets" && o.contains("stringData")) {
        o["data"] = {{"token", "dG9r"}};  // base64("tok")
        o.erase("stringData");
      }
      coll[n] = o;
      return reply(201, o);
    }
    if (!coll.count(name)) return not_found();
    json& cur = coll[name];
    if (req.method == "DELETE") {
      coll.erase(name);
      return reply(200, {{"kind", "Status"}, {"status", "Success"}});
    }
    json body = json::parse(req.body);
    ++counter;
    if (req.method == "PATCH") {
      if (sub.empty()) cur.merge_patch(body);
      else cur["status"].merge_patch(body.value("status", json::object()));
    } else {  // PUT with CAS
      if (body["metadata"].value("resourceVersion", "") != cur["metadata"].value("resourceVersion", ""))
        return reply(409, {{"kind", "Status"}, {"code", 409}, {"reason", "Conflict"}});
      if (sub == "status") cur["status"] = body["status"];
      else cur = body;
    }
    cur["metadata"]["resourceVersion"] = std::to_string(counter);
    reply(200, cur);
  }
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

json Cr(bool autoscale) {
  return json::parse(std::string(R"({"apiVersion": "cohort.dev/v1", "kind": "CohortCluster",
    "metadata": {"name": "demo", "namespace": "ns", "uid": "cr-uid", "generation": 1, "resourceVersion": "1"},
    "spec": {"enableAutoscaling": )") + (autoscale ? "true" : "false") + R"(,
      "headGroupSpec": {"startParams": {}, "template": {"spec": {"containers": [{"name": "cohort", "image": "c"}]}}},
      "workerGroupSpecs": [{"groupName": "cpu", "replicas": 2, "minReplicas": 0, "maxReplicas": 4, "startParams": {},
        "template": {"spec": {"containers": [{"name": "cohort", "image": "c", "resources": {"limits": {"cpu": "2"}}}]}}}]}})");
}

int Count(FakeStore& s, const std::string& w) {
  std::lock_guard<std::mutex> lock(s.mu);
  return static_cast<int>(std::count(s.writes.begin(), s.writes.end(), w));
}

TEST(OperatorTest, ReconcileCreatesChildrenWritesStatusAndConverges) {
  FakeStore store;
  store.objects["cohortclusters"]["demo"] = Cr(false);
  KubeClient client(store.Config());
  Operator op(client, OperatorOptions{});
  auto r = op.ReconcileOnce("ns/demo");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Count(store, "POST pods"), 3);
  EXPECT_EQ(Count(store, "POST services"), 1);
  EXPECT_EQ(Count(store, "POST secrets"), 1);
  EXPECT_EQ(Count(store, "PUT cohortclusters/status"), 1);
  EXPECT_GE(Count(store, "POST events"), 3);  // one per pod
  {
    std::lock_guard<std::mutex> lock(store.mu);
    EXPECT_EQ(store.objects["cohortclusters"]["demo"]["status"]["state"], "pending");
    EXPECT_EQ(store.objects["cohortclusters"]["demo"]["status"]["desiredWorkerReplicas"], 2);
    // The pods come up.
    for (auto& [n, p] : store.objects["pods"])
      p["status"] = {{"phase", "Running"}, {"podIP", "10.1.0." + n.substr(n.size() - 1)},
                     {"conditions", json::array({{{"type", "Ready"}, {"status", "True"}}})}};
    store.writes.clear();
  }
  r = op.ReconcileOnce("ns/demo");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Count(store, "PUT cohortclusters/status"), 1);
  {
    std::lock_guard<std::mutex> lock(store.mu);
    EXPECT_EQ(store.objects["cohortclusters"]["demo"]["status"]["state"], "ready");
    EXPECT_EQ(store.writes.size(), 1u);
    store.writes.clear();
  }
  r = op.ReconcileOnce("ns/demo");  // converged: no writes at all
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  EXPECT_TRUE(store.writes.empty());
  // The CR is deleted: nothing to do (GC removes the children).
  {
    std::lock_guard<std::mutex> lock(store.mu);
    store.objects["cohortclusters"].clear();
  }
  r = op.ReconcileOnce("ns/demo");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(store.writes.empty());
}

// With headGroupSpec.stateVolumeClaim the operator lists and creates the
// claim through the API (persistentvolumeclaims), once.
TEST(OperatorTest, HeadStateClaimIsCreatedOnce) {
  FakeStore store;
  json cr = Cr(false);
  cr["spec"]["headGroupSpec"]["stateVolumeClaim"] = {{"storage", "5Gi"}};
  store.objects["cohortclusters"]["demo"] = cr;
  KubeClient client(store.Config());
  Operator op(client, OperatorOptions{});
  auto r = op.ReconcileOnce("ns/demo");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Count(store, "POST persistentvolumeclaims"), 1);
  {
    std::lock_guard<std::mutex> lock(store.mu);
    ASSERT_TRUE(store.objects["persistentvolumeclaims"].count("demo-head-state"));
    EXPECT_EQ(store.objects["persistentvolumeclaims"]["demo-head-state"]["spec"]["resources"]["requests"]["storage"],
              "5Gi");
    EXPECT_EQ(store.objects["cohortclusters"]["demo"]["status"]["headStateVolume"], "demo-head-state");
    store.writes.clear();
  }
  r = op.ReconcileOnce("ns/demo");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Count(store, "POST persistentvolumeclaims"), 0);
}

// A CohortJob end to end against the fake API server and a fake head: its
// cluster is created, the job submitted once through the head's API with the
// cluster's token, its status, progress and success mirrored, and with
// shutdownAfterJobFinishes (TTL 0) the cluster and then the job deleted.
TEST(OperatorTest, CohortJobRunsThroughTheHeadAndCleansUp) {
  FakeStore store;
  store.objects["cohortjobs"]["mnist"] = json::parse(R"({"apiVersion": "cohort.dev/v1", "kind": "CohortJob",
    "metadata": {"name": "mnist", "namespace": "ns", "uid": "job-uid", "resourceVersion": "1"},
    "spec": {"entrypoint": "fashion_mnist --epochs 2", "scaling": {"num_workers": 2},
      "shutdownAfterJobFinishes": true, "ttlSecondsAfterFinished": 0,
      "clusterSpec": {"headGroupSpec": {"startParams": {}, "template": {"spec": {"containers": [{"name": "c", "image": "c"}]}}}}}})");
  std::mutex head_mu;
  std::map<std::string, json> head_jobs;  // submission id -> details
  std::vector<std::string> head_calls;
  OperatorOptions options;
  options.call_head = [&](const std::string& method, const std::string& url, const std::string& token,
                          const std::string& body) -> Result<OperatorOptions::HeadReply> {
    std::lock_guard<std::mutex> lock(head_mu);
    EXPECT_EQ(url.rfind("http://mnist-cluster-head-svc.ns.svc.cluster.local:8265/api/", 0), 0u) << url;
    if (token != "tok") return OperatorOptions::HeadReply{401, "{}"};
    const std::string path = url.substr(url.find("/api/"));
    head_calls.push_back(method + " " + path);
    if (path == "/api/version") return OperatorOptions::HeadReply{200, R"({"version": "0.1.0"})"};
    if (method == "POST" && path == "/api/jobs/") {
      json req = json::parse(body);
      const std::string id = req["submission_id"];
      if (head_jobs.count(id)) return OperatorOptions::HeadReply{400, "Job with submission_id " + id + " already exists."};
      head_jobs[id] = {{"submission_id", id}, {"job_id", id}, {"status", "RUNNING"}, {"entrypoint", req["entrypoint"]}};
      return OperatorOptions::HeadReply{200, json{{"submission_id", id}}.dump()};
    }
    for (auto& [id, details] : head_jobs) {
      if (path == "/api/jobs/" + id) return OperatorOptions::HeadReply{200, details.dump()};
      if (path == "/api/jobs/" + id + "/metrics")
        return OperatorOptions::HeadReply{200, json{{"metrics", {{{"rank", 0}, {"epoch", 1}, {"epochs", 2}, {"val_loss", 0.5}}}}}.dump()};
    }
    return OperatorOptions::HeadReply{404, R"({"error": "not found"})"};
  };
  KubeClient client(store.Config());
  Operator op(client, options);
  auto job = [&]() {
    std::lock_guard<std::mutex> lock(store.mu);
    return store.objects["cohortjobs"].count("mnist") ? store.objects["cohortjobs"]["mnist"] : json();
  };

  ASSERT_TRUE(op.ReconcileOnce("job:ns/mnist").ok());  // its cluster
  EXPECT_EQ(Count(store, "POST cohortclusters"), 1);
  ASSERT_TRUE(op.ReconcileOnce("ns/mnist-cluster").ok());  // the cluster's pods, Service, Secret
  ASSERT_TRUE(op.ReconcileOnce("job:ns/mnist").ok());      // submitted
  ASSERT_TRUE(op.ReconcileOnce("job:ns/mnist").ok());      // running, with progress
  {
    std::lock_guard<std::mutex> lock(head_mu);
    ASSERT_EQ(head_jobs.size(), 1u);
    EXPECT_TRUE(head_jobs.count("cohortjob-job-uid-0"));
    EXPECT_EQ(std::count(head_calls.begin(), head_calls.end(), "POST /api/jobs/"), 1);
  }
  json st = job()["status"];
  EXPECT_EQ(st["submissionId"], "cohortjob-job-uid-0");
  EXPECT_EQ(st["jobStatus"], "RUNNING");
  EXPECT_EQ(st["progress"]["epoch"], 1);
  EXPECT_EQ(st["progress"]["percent"], 50);
  EXPECT_GE(Count(store, "POST events"), 2);

  {
    std::lock_guard<std::mutex> lock(head_mu);
    head_jobs["cohortjob-job-uid-0"]["status"] = "SUCCEEDED";
  }
  ASSERT_TRUE(op.ReconcileOnce("job:ns/mnist").ok());  // succeeded
  EXPECT_FALSE(job()["status"]["endTime"].get<std::string>().empty());
  ASSERT_TRUE(op.ReconcileOnce("job:ns/mnist").ok());  // TTL 0: the cluster goes
  EXPECT_EQ(Count(store, "DELETE cohortclusters"), 1);
  ASSERT_TRUE(op.ReconcileOnce("job:ns/mnist").ok());  // then the job
  EXPECT_EQ(Count(store, "DELETE cohortjobs"), 1);
  EXPECT_TRUE(job().is_null());
  std::lock_guard<std::mutex> lock(head_mu);
  EXPECT_EQ(std::count(head_calls.begin(), head_calls.end(), "POST /api/jobs/"), 1);
}

// runtime_env.working_dir: configmap://NAME -> the ConfigMap's files packaged,
// uploaded to the head once, and the submission names the package; a
// missing ConfigMap fails the submission saying which.
TEST(OperatorTest, ConfigMapWorkingDirIsPackagedAndUploaded) {
  FakeStore store;
  store.objects["cohortjobs"]["j"] = json::parse(R"({"apiVersion": "cohort.dev/v1", "kind": "CohortJob",
    "metadata": {"name": "j", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
    "spec": {"entrypoint": "python3 train.py", "runtime_env": {"working_dir": "configmap://code"},
      "clusterSelector": {"clusterName": "demo"}}})");
  store.objects["cohortclusters"]["demo"] = Cr(false);
  std::mutex mu;
  std::map<std::string, std::string> packages;
  std::vector<json> submitted;
  std::map<std::string, std::string> packaged_files;
  OperatorOptions options;
  options.package_files = [&](const std::map<std::string, std::string>& files)
      -> Result<std::pair<std::string, std::string>> {
    packaged_files = files;
    return std::make_pair(std::string("_ray_pkg_0123456789abcdef.zip"), std::string("PK-zip-bytes"));
  };
  options.call_head = [&](const std::string& method, const std::string& url, const std::string&,
                          const std::string& body) -> Result<OperatorOptions::HeadReply> {
    std::lock_guard<std::mutex> lock(mu);
    const std::string path = url.substr(url.find("/api/"));
    if (path == "/api/version") return OperatorOptions::HeadReply{200, "{}"};
    if (path.rfind("/api/packages/gcs/", 0) == 0) {
      const std::string name = path.substr(18);
      if (method == "PUT") packages[name] = body;
      return OperatorOptions::HeadReply{method == "PUT" || packages.count(name) ? 200 : 404, ""};
    }
    if (method == "POST" && path == "/api/jobs/") {
      submitted.push_back(json::parse(body));
      return OperatorOptions::HeadReply{200, "{}"};
    }
    return OperatorOptions::HeadReply{404, "{}"};
  };
  KubeClient client(store.Config());
  Operator op(client, options);
  ASSERT_TRUE(op.ReconcileOnce("ns/demo").ok());  // the cluster's Secret
  // No ConfigMap yet: the submission fails, naming it.
  auto r = op.ReconcileOnce("job:ns/j");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("configmap://code"), std::string::npos) << r.status().ToString();
  {
    std::lock_guard<std::mutex> lock(store.mu);
    store.objects["configmaps"]["code"] = {{"metadata", {{"name", "code"}, {"namespace", "ns"}}},
                                           {"data", {{"train.py", "print(1)\n"}}},
                                           {"binaryData", {{"w.bin", "AAEC"}}}};
  }
  ASSERT_TRUE(op.ReconcileOnce("job:ns/j").ok());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(packaged_files["train.py"], "print(1)\n");
  EXPECT_EQ(packaged_files["w.bin"], std::string("\x00\x01\x02", 3));
  ASSERT_EQ(packages.count("_ray_pkg_0123456789abcdef.zip"), 1u);
  EXPECT_EQ(packages["_ray_pkg_0123456789abcdef.zip"], "PK-zip-bytes");
  ASSERT_EQ(submitted.size(), 1u);
  EXPECT_EQ(submitted[0]["runtime_env"]["working_dir"], "gcs://_ray_pkg_0123456789abcdef.zip");
}

TEST(OperatorTest, AutoscalerReadsTheHeadWithTheSecretToken) {
  FakeStore store;
  store.objects["cohortclusters"]["demo"] = Cr(true);
  KubeClient client(store.Config());
  OperatorOptions opts;
  std::string seen_url, seen_token;
  opts.fetch_head_status = [&](const std::string& url, const std::string& token) -> Result<json> {
    seen_url = url;
    seen_token = token;
    return json::parse(R"({"nodes": [], "pending_demand": [{"job_id": "j",
        "bundles": [{"CPU": 2}, {"CPU": 2}, {"CPU": 2}, {"CPU": 2}]}]})");
  };
  Operator op(client, opts);
  ASSERT_TRUE(op.ReconcileOnce("ns/demo").ok());  // creates the secret (head unreachable yet is fine)
  ASSERT_TRUE(op.ReconcileOnce("ns/demo").ok());
  EXPECT_EQ(seen_url, "http://demo-head-svc.ns.svc.cluster.local:8265/api/cluster/status");
  EXPECT_EQ(seen_token, "tok");
  std::lock_guard<std::mutex> lock(store.mu);
  EXPECT_EQ(store.objects["cohortclusters"]["demo"]["spec"]["workerGroupSpecs"][0]["replicas"], 4);
  int workers = 0;
  for (auto& [n, p] : store.objects["pods"]) workers += p["metadata"]["labels"]["cohort.dev/node-type"] == "worker";
  EXPECT_EQ(workers, 4);
}

// Operator::ReadHead called value() on the head's reply without type checks:
// a node that is not an object (or an address that is not a string) threw in
// the worker thread. DecodeHeadStatus checks every type.
TEST(OperatorTest, DecodeHeadStatusChecksEveryType) {
  EXPECT_FALSE(DecodeHeadStatus(json::array({1})).has_value());
  EXPECT_FALSE(DecodeHeadStatus("ok").has_value());
  EXPECT_FALSE(DecodeHeadStatus(json()).has_value());
  auto empty = DecodeHeadStatus(json::object());
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->nodes.empty() && empty->pending_bundles.empty());
  json reply = json::parse(R"({
    "pending_demand": [{"bundles": [{"CPU": 1}, "x", 3, {"GPU": 2}]}, "p", {"bundles": "b"}, {"bundles": [{}]}],
    "nodes": ["10.0.0.5", 7, null,
      {"address": "10.0.0.6:6380", "state": "ALIVE", "is_head_node": true, "resources_used": {"CPU": 1}},
      {"address": 5, "state": ["ALIVE"], "is_head_node": "yes", "resources_used": {"CPU": "1", "GPU": 0}},
      {"address": "fd00::1", "state": "DEAD", "resources_used": [1]}]})");
  std::optional<HeadStatus> st;
  ASSERT_NO_THROW(st = DecodeHeadStatus(reply));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->pending_bundles, (std::vector<json>{{{"CPU", 1}}, {{"GPU", 2}}, json::object()}));
  ASSERT_EQ(st->nodes.size(), 3u);
  EXPECT_EQ(st->nodes[0].address, "10.0.0.6");
  EXPECT_TRUE(st->nodes[0].alive && st->nodes[0].is_head && st->nodes[0].busy);
  EXPECT_EQ(st->nodes[1].address, "");
  EXPECT_FALSE(st->nodes[1].alive || st->nodes[1].is_head || st->nodes[1].busy);
  EXPECT_EQ(st->nodes[2].address, "fd00::1");  // IPv6: no port to strip
  EXPECT_FALSE(st->nodes[2].alive || st->nodes[2].busy);
}

TEST(OperatorTest, MalformedHeadReplyIsNoAutoscalerInput) {
  for (json reply : {json::array({"x"}), json::parse(R"({"nodes": ["10.0.0.5"], "pending_demand": []})"),
                     json::parse(R"({"nodes": [{"address": 1, "state": 2, "is_head_node": 3}]})"),
                     json::parse(R"({"nodes": {}, "pending_demand": [{"bundles": [1, "CPU"]}]})")}) {
    FakeStore store;
    store.objects["cohortclusters"]["demo"] = Cr(true);
    KubeClient client(store.Config());
    OperatorOptions opts;
    opts.fetch_head_status = [&](const std::string&, const std::string&) -> Result<json> { return reply; };
    Operator op(client, opts);
    Result<std::optional<std::chrono::milliseconds>> r = Status::Internal("not run");
    ASSERT_NO_THROW(r = op.ReconcileOnce("ns/demo")) << reply.dump();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_NO_THROW(r = op.ReconcileOnce("ns/demo")) << reply.dump();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::lock_guard<std::mutex> lock(store.mu);
    EXPECT_EQ(store.objects["cohortclusters"]["demo"]["spec"]["workerGroupSpecs"][0]["replicas"], 2) << reply.dump();
  }
}

// A template the reconcile cannot use (containers[0] a string) threw out of
// Reconcile and ended the operator's worker thread; it is an invalid spec:
// status failed, an InvalidSpec Warning event, nothing created.
TEST(OperatorTest, InvalidTemplateIsReportedNotThrown) {
  FakeStore store;
  json cr = Cr(false);
  cr["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"] = json::array({"cohort"});
  store.objects["cohortclusters"]["demo"] = cr;
  KubeClient client(store.Config());
  Operator op(client, OperatorOptions{});
  Result<std::optional<std::chrono::milliseconds>> r = Status::Internal("not run");
  ASSERT_NO_THROW(r = op.ReconcileOnce("ns/demo"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::lock_guard<std::mutex> lock(store.mu);
  const json& status = store.objects["cohortclusters"]["demo"]["status"];
  EXPECT_EQ(status["state"], "failed");
  EXPECT_NE(status["reason"].get<std::string>().find("group cpu: template.spec.containers[0] must be an object"),
            std::string::npos)
      << status.dump();
  EXPECT_EQ(store.objects["pods"].size(), 0u);
  bool event = false;
  for (const auto& [n, e] : store.objects["events"])
    event = event || (e["reason"] == "InvalidSpec" && e["type"] == "Warning");
  EXPECT_TRUE(event);
}

TEST(OperatorTest, RunLoopListsWatchesReconcilesAndStops) {
  FakeStore store;
  store.objects["cohortclusters"]["demo"] = Cr(false);
  // A CohortJob listed at start: the loop creates its cluster too.
  store.objects["cohortjobs"]["j"] = json::parse(R"({"apiVersion": "cohort.dev/v1", "kind": "CohortJob",
    "metadata": {"name": "j", "namespace": "ns", "uid": "j-uid", "resourceVersion": "1"},
    "spec": {"entrypoint": "train", "clusterSpec": {"headGroupSpec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}}})");
  KubeClient client(store.Config());
  OperatorOptions opts;
  opts.namespace_ = "ns";
  opts.leader_elect = true;
  opts.call_head = [](const std::string&, const std::string&, const std::string&,
                      const std::string&) -> Result<OperatorOptions::HeadReply> {
    return Status::Unavailable("no head in this test");
  };
  opts.identity = "me";
  Operator op(client, opts);
  std::atomic<bool> stop{false};
  Status result;
  std::thread t([&] { result = op.Run(stop); });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  bool done = false;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    std::lock_guard<std::mutex> lock(store.mu);
    done = store.objects["pods"].size() >= 3 && store.watches >= 4 &&
           store.objects["cohortclusters"]["demo"].contains("status") &&
           store.objects["cohortclusters"].count("j-cluster") && store.objects["cohortjobs"]["j"].contains("status") &&
           op.Ready();
  }
  std::string metrics = op.MetricsText();
  EXPECT_NE(metrics.find("cohort_operator_leader 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("cohort_operator_reconciles_total "), std::string::npos);
  stop = true;
  t.join();
  EXPECT_TRUE(done);
  EXPECT_TRUE(result.ok()) << result.ToString();
  std::lock_guard<std::mutex> lock(store.mu);
  ASSERT_TRUE(store.objects["leases"].count("cohort-operator"));
  EXPECT_EQ(store.objects["leases"]["cohort-operator"]["spec"]["holderIdentity"], "");  // released on stop
}

}  // namespace
}  // namespace cohort::k8s
