// The Kubernetes client against a local cpp-httplib server speaking the
// list/watch protocol: chunked JSON event lines, bookmarks, 410 Gone (HTTP and
// ERROR event) -> re-list, dropped connections -> reconnect with backoff,
// bearer tokens (static and file), kubeconfig / in-cluster config, CRUD,
// pagination, and Lease leader election.
#include <httplib.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "cohort/k8s/kube_client.h"
#include "watch_line.h"  // src/k8s (private): the decoding Watch runs per line

namespace cohort::k8s {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

json Obj(const std::string& name, const std::string& rv) {
  return {{"apiVersion", "cohort.dev/v1"},
          {"kind", "CohortCluster"},
          {"metadata", {{"name", name}, {"namespace", "ns"}, {"resourceVersion", rv}}}};
}
std::string Line(const std::string& type, const json& obj) { return json{{"type", type}, {"object", obj}}.dump() + "\n"; }

// One scripted watch response.
struct WatchReply {
  int http_status = 200;
  std::vector<std::string> lines;
  bool drop = false;  // cut the connection without ending the chunked body
};

class FakeApi {
 public:
  FakeApi() {
    server_.Get("/apis/cohort.dev/v1/namespaces/ns/cohortclusters", [this](const httplib::Request& req,
                                                                            httplib::Response& res) {
      if (req.get_header_value("Authorization") != "Bearer " + token) {
        res.status = 401;
        res.set_content(R"({"kind":"Status","code":401,"reason":"Unauthorized","message":"Unauthorized"})",
                        "application/json");
        return;
      }
      std::lock_guard<std::mutex> lock(mu);
      if (req.has_param("watch")) {
        watch_rvs.push_back(req.get_param_value("resourceVersion"));
        watch_times.push_back(std::chrono::steady_clock::now());
        selectors.push_back(req.get_param_value("labelSelector"));
        bookmarks_requested = bookmarks_requested || req.get_param_value("allowWatchBookmarks") == "true";
        WatchReply reply;
        if (!watches.empty()) {
          reply = watches.front();
          watches.erase(watches.begin());
        } else {
          std::this_thread::sleep_for(30ms);  // an empty, normally-ended stream
        }
        if (reply.http_status != 200) {
          res.status = reply.http_status;
          res.set_content(R"({"kind":"Status","code":410,"reason":"Expired","message":"too old resource version"})",
                          "application/json");
          return;
        }
        auto lines = std::make_shared<std::vector<std::string>>(reply.lines);
        bool drop = reply.drop;
        res.set_chunked_content_provider("application/json", [lines, drop](size_t, httplib::DataSink& sink) {
          for (const auto& l : *lines) sink.write(l.data(), l.size());
          if (drop) return false;
          sink.done();
          return true;
        });
        return;
      }
      list_rvs.push_back(req.get_param_value("resourceVersion"));
      json page;
      if (lists.empty()) {
        page = {{"items", json::array()}, {"metadata", {{"resourceVersion", "1"}}}};
      } else {
        page = lists.front();
        lists.erase(lists.begin());
      }
      ++list_count;
      res.set_content(page.dump(), "application/json");
    });
    port = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(1ms);
  }
  ~FakeApi() {
    server_.stop();
    thread_.join();
  }
  KubeConfig Config() const {
    KubeConfig c;
    c.server = "http://127.0.0.1:" + std::to_string(port);
    c.token = token;
    c.default_namespace = "ns";
    return c;
  }
  httplib::Server& server() { return server_; }

  std::mutex mu;
  std::string token = "secret";
  std::vector<json> lists;
  std::vector<WatchReply> watches;
  std::vector<std::string> watch_rvs, list_rvs, selectors;
  std::vector<std::chrono::steady_clock::time_point> watch_times;
  bool bookmarks_requested = false;
  int list_count = 0;
  int port = 0;

 private:
  httplib::Server server_;
  std::thread thread_;
};

json List(std::vector<json> items, const std::string& rv) { return {{"items", items}, {"metadata", {{"resourceVersion", rv}}}}; }

struct Recorder {
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> events;  // type, name
  void operator()(const std::string& type, const json& obj) {
    std::lock_guard<std::mutex> lock(mu);
    events.emplace_back(type, obj["metadata"].value("name", ""));
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu);
    return events.size();
  }
};

// Runs a reflector until pred() or a timeout; returns whether pred held.
template <typename Pred>
bool RunUntil(Reflector& r, Pred pred, std::chrono::milliseconds timeout = 5000ms) {
  std::atomic<bool> stop{false};
  std::thread t([&] { r.Run(stop); });
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool ok = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) {
      ok = true;
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  stop = true;
  t.join();
  return ok;
}

Reflector::Options FastOptions() {
  Reflector::Options o;
  o.namespace_ = "ns";
  o.watch_timeout_s = 5;
  o.backoff_initial = 100ms;
  o.backoff_max = 400ms;
  return o;
}

TEST(WatchTest, ChunkedEventsAndBookmarksMoveTheResourceVersion) {
  FakeApi api;
  api.lists = {List({Obj("a", "10")}, "10")};
  api.watches = {WatchReply{200, {Line("ADDED", Obj("b", "11")),
                                  Line("BOOKMARK", {{"kind", "CohortCluster"}, {"metadata", {{"resourceVersion", "15"}}}})}},
                 WatchReply{200, {Line("MODIFIED", Obj("a", "16")), Line("DELETED", Obj("b", "17"))}}};
  KubeClient client(api.Config());
  Recorder rec;
  Reflector r(client, Resource::CohortClusters(), FastOptions(), std::ref(rec));
  ASSERT_TRUE(RunUntil(r, [&] {
    std::lock_guard<std::mutex> lock(api.mu);
    return api.watch_rvs.size() >= 3;
  }));
  std::lock_guard<std::mutex> lock(api.mu);
  EXPECT_EQ(api.list_count, 1);  // a normal stream end re-watches, no re-list
  EXPECT_EQ(api.watch_rvs[0], "10");
  EXPECT_EQ(api.watch_rvs[1], "15");  // the bookmark's RV
  EXPECT_EQ(api.watch_rvs[2], "17");
  EXPECT_TRUE(api.bookmarks_requested);
  std::vector<std::pair<std::string, std::string>> want = {
      {"ADDED", "a"}, {"ADDED", "b"}, {"MODIFIED", "a"}, {"DELETED", "b"}};  // no event for the bookmark
  EXPECT_EQ(rec.events, want);
  auto snap = r.Snapshot();
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap.begin()->first, "ns/a");
  EXPECT_TRUE(r.synced());
}

TEST(WatchTest, GoneErrorEventRelistsAndSynthesisesDeletes) {
  FakeApi api;
  api.lists = {List({Obj("a", "10"), Obj("b", "10")}, "10"), List({Obj("b", "20"), Obj("c", "20")}, "20")};
  api.watches = {WatchReply{200, {Line("ERROR", {{"kind", "Status"}, {"code", 410}, {"reason", "Expired"},
                                                  {"message", "too old resource version: 10 (15)"}})}}};
  KubeClient client(api.Config());
  Recorder rec;
  Reflector r(client, Resource::CohortClusters(), FastOptions(), std::ref(rec));
  ASSERT_TRUE(RunUntil(r, [&] {
    std::lock_guard<std::mutex> lock(api.mu);
    return api.watch_rvs.size() >= 2;
  }));
  std::lock_guard<std::mutex> lock(api.mu);
  EXPECT_EQ(api.list_count, 2);
  EXPECT_EQ(api.watch_rvs[1], "20");
  std::vector<std::pair<std::string, std::string>> want = {
      {"ADDED", "a"}, {"ADDED", "b"}, {"DELETED", "a"}, {"MODIFIED", "b"}, {"ADDED", "c"}};
  EXPECT_EQ(rec.events, want);
}

TEST(WatchTest, GoneHttpStatusRelists) {
  FakeApi api;
  api.lists = {List({Obj("a", "10")}, "10"), List({Obj("a", "30")}, "30")};
  api.watches = {WatchReply{410, {}}};
  KubeClient client(api.Config());
  // The raw call reports IsGone.
  Status s = client.Watch(Resource::CohortClusters(), "ns", "", "10", 5, [](const WatchEvent&) { return true; });
  EXPECT_TRUE(IsGone(s)) << s.ToString();
  api.watches = {WatchReply{410, {}}};
  Recorder rec;
  Reflector r(client, Resource::CohortClusters(), FastOptions(), std::ref(rec));
  ASSERT_TRUE(RunUntil(r, [&] {
    std::lock_guard<std::mutex> lock(api.mu);
    return api.list_count >= 2 && api.watch_rvs.size() >= 3;
  }));
  EXPECT_EQ(r.resource_version(), "30");
}

TEST(WatchTest, DroppedConnectionReconnectsWithBackoffFromLastRv) {
  FakeApi api;
  api.lists = {List({}, "5")};
  api.watches = {WatchReply{200, {Line("ADDED", Obj("a", "6"))}, true}, WatchReply{200, {}, true},
                 WatchReply{200, {}, true}};
  KubeClient client(api.Config());
  Recorder rec;
  Reflector r(client, Resource::CohortClusters(), FastOptions(), std::ref(rec));
  ASSERT_TRUE(RunUntil(r, [&] {
    std::lock_guard<std::mutex> lock(api.mu);
    return api.watch_rvs.size() >= 4;
  }));
  std::lock_guard<std::mutex> lock(api.mu);
  EXPECT_EQ(api.list_count, 1);  // a drop is not a 410: resume from the RV
  EXPECT_EQ(api.watch_rvs[1], "6");
  EXPECT_EQ(api.watch_rvs[2], "6");
  auto gap1 = api.watch_times[2] - api.watch_times[1];
  auto gap2 = api.watch_times[3] - api.watch_times[2];
  EXPECT_GE(gap1, 150ms);  // 2nd failure in a row: 200 ms x jitter (0.8..1.2)
  EXPECT_GE(gap2, 300ms);  // 3rd: 400 ms (the cap)
  EXPECT_EQ(rec.size(), 1u);
}

TEST(WatchTest, BearerTokenFromFileAndUnauthorized) {
  FakeApi api;
  api.lists = {List({Obj("a", "1")}, "1")};
  auto dir = std::filesystem::temp_directory_path() / ("k8s_watch_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "token") << "secret\n";
  KubeConfig c = api.Config();
  c.token = "";
  c.token_file = (dir / "token").string();
  KubeClient client(c);
  auto l = client.List(Resource::CohortClusters(), "ns", "cohort.dev/cluster");
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ((*l)["items"].size(), 1u);
  KubeConfig bad = api.Config();
  bad.token = "wrong";
  KubeClient bad_client(bad);
  auto l2 = bad_client.List(Resource::CohortClusters(), "ns");
  ASSERT_FALSE(l2.ok());
  EXPECT_NE(l2.status().message().find("forbidden"), std::string::npos) << l2.status().ToString();
  std::filesystem::remove_all(dir);
}

TEST(WatchTest, LabelSelectorIsSent) {
  FakeApi api;
  KubeClient client(api.Config());
  Status s = client.Watch(Resource::CohortClusters(), "ns", "cohort.dev/cluster=x", "1", 5,
                          [](const WatchEvent&) { return true; });
  EXPECT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(api.selectors.size(), 1u);
  EXPECT_EQ(api.selectors[0], "cohort.dev/cluster=x");
}

// KubeClient::Watch decodes each line with DecodeWatchLine inside libcurl's
// write callback; an ERROR event's code was read outside the try block, so
// a non-object ERROR object threw through C. Nothing in it throws.
TEST(WatchTest, DecodeWatchLineChecksEveryType) {
  const std::string what = "watch /p";
  EXPECT_EQ(DecodeWatchLine("", what).kind, WatchLine::Kind::kBlank);
  EXPECT_EQ(DecodeWatchLine(" \t\r", what).kind, WatchLine::Kind::kBlank);
  WatchLine ok = DecodeWatchLine(Line("ADDED", Obj("a", "1")), what);
  ASSERT_EQ(ok.kind, WatchLine::Kind::kEvent);
  EXPECT_EQ(ok.event.type, "ADDED");
  EXPECT_EQ(ok.event.object["metadata"]["name"], "a");

  struct Case {
    std::string line;
    StatusCode code;
    std::string message;  // a part of it
  };
  const std::vector<Case> cases = {
      {"{", StatusCode::kInternal, "watch /p: bad event line: not JSON"},
      {"[1]", StatusCode::kInternal, "bad event line: no type"},
      {R"({"type": 5, "object": {}})", StatusCode::kInternal, "bad event line: no type"},
      {R"({"type": "ADDED", "object": "x"})", StatusCode::kInternal, "the ADDED event's object is string"},
      {R"({"type": "MODIFIED"})", StatusCode::kInternal, "the MODIFIED event's object is null"},
      {R"({"type": "ERROR", "object": "410 Gone"})", StatusCode::kInternal,
       "watch /p: ERROR event without a Status object: \"410 Gone\""},
      {R"({"type": "ERROR", "object": [410]})", StatusCode::kInternal, "ERROR event without a Status object"},
      {R"({"type": "ERROR"})", StatusCode::kInternal, "ERROR event without a Status object: null"},
      {R"({"type": "ERROR", "object": {"code": "410"}})", StatusCode::kUnavailable, "watch /p: HTTP 500"},
      {R"({"type": "ERROR", "object": {"code": 1e300}})", StatusCode::kUnavailable, "watch /p: HTTP 500"},
      {R"({"type": "ERROR", "object": {"code": -410}})", StatusCode::kUnavailable, "watch /p: HTTP 500"},
      {R"({"type": "ERROR", "object": {"code": 403, "message": {"x": 1}}})", StatusCode::kFailedPrecondition,
       "forbidden: watch /p: HTTP 403"},
  };
  for (const auto& c : cases) {
    WatchLine got;
    ASSERT_NO_THROW(got = DecodeWatchLine(c.line, what)) << c.line;
    ASSERT_EQ(got.kind, WatchLine::Kind::kEnd) << c.line;
    EXPECT_EQ(got.status.code(), c.code) << c.line << ": " << got.status.ToString();
    EXPECT_NE(got.status.message().find(c.message), std::string::npos) << c.line << ": " << got.status.ToString();
  }
  // 410 (an integer, or a float with no fraction) is Gone: the reflector re-lists.
  EXPECT_TRUE(IsGone(DecodeWatchLine(R"({"type": "ERROR", "object": {"code": 410}})", what).status));
  EXPECT_TRUE(IsGone(DecodeWatchLine(R"({"type": "ERROR", "object": {"code": 410.0, "message": 7}})", what).status));
}

TEST(WatchTest, MalformedEventsAndThrowingHandlersEndOnlyTheWatch) {
  FakeApi api;
  api.watches = {WatchReply{200, {R"({"type": "ERROR", "object": "410 Gone"})" "\n"}},
                 WatchReply{200, {R"({"type": "ADDED", "object": {"metadata": "x"}})" "\n"}}};
  KubeClient client(api.Config());
  Status s = client.Watch(Resource::CohortClusters(), "ns", "", "1", 5, [](const WatchEvent&) { return true; });
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();
  EXPECT_NE(s.message().find("ERROR event without a Status object"), std::string::npos) << s.ToString();
  // A handler that throws (here json's type_error) ends the watch with Internal.
  s = client.Watch(Resource::CohortClusters(), "ns", "", "1", 5, [](const WatchEvent& ev) {
    return ev.object["metadata"].value("name", "") != "";  // metadata is a string: throws
  });
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();
  EXPECT_NE(s.message().find("handling an event"), std::string::npos) << s.ToString();

  // The reflector's own reads are type-checked: a metadata that is not an
  // object, a resourceVersion that is not a string.
  api.lists = {List({}, "5")};
  api.watches = {WatchReply{200,
                            {Line("ADDED", {{"kind", "CohortCluster"}, {"metadata", "x"}}),
                             Line("ADDED", {{"kind", "CohortCluster"}, {"metadata", {{"name", 5}, {"resourceVersion", 6}}}}),
                             Line("ADDED", Obj("b", "7"))}}};
  std::mutex mu;
  std::vector<std::string> types;
  Reflector r(client, Resource::CohortClusters(), FastOptions(), [&](const std::string& type, const json&) {
    std::lock_guard<std::mutex> lock(mu);
    types.push_back(type);
  });
  ASSERT_TRUE(RunUntil(r, [&] {
    std::lock_guard<std::mutex> lock(mu);
    return types.size() >= 3;
  }));
  EXPECT_EQ(types, (std::vector<std::string>{"ADDED", "ADDED", "ADDED"}));
  EXPECT_EQ(r.resource_version(), "7");
  EXPECT_EQ(r.Snapshot().count("ns/b"), 1u);
}

TEST(KubeClientTest, CrudPaginationStatusAndDeleteOptions) {
  FakeApi api;
  std::mutex mu;
  std::vector<std::string> seen;  // "METHOD path content-type body"
  auto record = [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(req.method + " " + req.path + " " + req.get_header_value("Content-Type") + " " + req.body);
    res.set_content(R"({"kind":"Pod","metadata":{"name":"p-1","resourceVersion":"9"}})", "application/json");
  };
  api.server().Post("/api/v1/namespaces/ns/pods", record);
  api.server().Patch("/api/v1/namespaces/ns/pods/p-1", record);
  api.server().Put("/apis/cohort.dev/v1/namespaces/ns/cohortclusters/c/status", record);
  api.server().Delete("/api/v1/namespaces/ns/pods/p-1", record);
  api.server().Delete("/api/v1/namespaces/ns/pods/gone", [](const httplib::Request&, httplib::Response& res) {
    res.status = 404;
    res.set_content(R"({"kind":"Status","code":404,"reason":"NotFound"})", "application/json");
  });
  api.server().Get("/api/v1/namespaces/ns/pods", [](const httplib::Request& req, httplib::Response& res) {
    json page;
    if (!req.has_param("continue"))
      page = {{"items", {{{"metadata", {{"name", "p1"}}}}}}, {"metadata", {{"continue", "tok2"}, {"resourceVersion", "7"}}}};
    else
      page = {{"items", {{{"metadata", {{"name", "p2"}}}}}}, {"metadata", {{"resourceVersion", "8"}}}};
    res.set_content(page.dump(), "application/json");
  });
  api.server().Post("/api/v1/namespaces/ns/services", [](const httplib::Request&, httplib::Response& res) {
    res.status = 409;
    res.set_content(R"({"kind":"Status","code":409,"reason":"AlreadyExists","message":"exists"})", "application/json");
  });
  KubeClient client(api.Config());
  auto created = client.Create(Resource::Pods(), "ns", {{"metadata", {{"generateName", "p-"}}}});
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ((*created)["metadata"]["name"], "p-1");
  ASSERT_TRUE(client.Patch(Resource::Pods(), "ns", "p-1", {{"metadata", {{"labels", {{"x", "y"}}}}}}).ok());
  ASSERT_TRUE(client.UpdateStatus(Resource::CohortClusters(), "ns", "c", {{"status", {{"state", "ready"}}}}).ok());
  ASSERT_TRUE(client.Delete(Resource::Pods(), "ns", "p-1", "uid-7").ok());
  EXPECT_TRUE(client.Delete(Resource::Pods(), "ns", "gone").ok());  // 404 = done
  auto list = client.List(Resource::Pods(), "ns");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ((*list)["items"].size(), 2u);
  EXPECT_EQ((*list)["metadata"]["resourceVersion"], "8");
  auto dup = client.Create(Resource::Services(), "ns", json::object());
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].rfind("POST /api/v1/namespaces/ns/pods application/json", 0), 0u) << seen[0];
  EXPECT_EQ(seen[1].rfind("PATCH /api/v1/namespaces/ns/pods/p-1 application/merge-patch+json", 0), 0u) << seen[1];
  EXPECT_EQ(seen[2].rfind("PUT /apis/cohort.dev/v1/namespaces/ns/cohortclusters/c/status", 0), 0u) << seen[2];
  json del = json::parse(seen[3].substr(seen[3].find('{')));
  EXPECT_EQ(del["propagationPolicy"], "Background");
  EXPECT_EQ(del["preconditions"]["uid"], "uid-7");
}

TEST(KubeClientTest, EventsArePosted) {
  FakeApi api;
  json got;
  api.server().Post("/api/v1/namespaces/ns/events", [&](const httplib::Request& req, httplib::Response& res) {
    got = json::parse(req.body);
    res.set_content(req.body, "application/json");
  });
  KubeClient client(api.Config());
  json cr = Obj("demo", "3");
  cr["metadata"]["uid"] = "u1";
  ASSERT_TRUE(client.RecordEvent(cr, "Normal", "CreatedWorkerPod", "created Pod demo-gpu-worker-x").ok());
  EXPECT_EQ(got["involvedObject"]["kind"], "CohortCluster");
  EXPECT_EQ(got["involvedObject"]["uid"], "u1");
  EXPECT_EQ(got["reason"], "CreatedWorkerPod");
  EXPECT_EQ(got["type"], "Normal");
}

TEST(KubeConfigTest, KubeconfigAndInCluster) {
  auto dir = std::filesystem::temp_directory_path() / ("k8s_cfg_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir / "sa");
  std::ofstream(dir / "config") << R"(apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: other
  cluster: {server: "https://wrong:1"}
- name: kind
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
contexts:
- name: dev
  context: {cluster: kind, user: admin, namespace: ml}
users:
- name: admin
  user:
    token: abc123
    client-certificate: certs/client.crt
)";
  auto c = LoadKubeconfig((dir / "config").string());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server, "https://127.0.0.1:6443");
  EXPECT_EQ(c->ca_data, "-----BEGIN CERTIFICATE-----\n");
  EXPECT_EQ(c->token, "abc123");
  EXPECT_EQ(c->default_namespace, "ml");
  EXPECT_EQ(c->client_cert_file, (dir / "certs/client.crt").string());
  EXPECT_FALSE(LoadKubeconfig((dir / "config").string(), "nope").ok());

  std::ofstream(dir / "sa" / "token") << "satoken\n";
  std::ofstream(dir / "sa" / "ca.crt") << "pem";
  std::ofstream(dir / "sa" / "namespace") << "cohort-system";
  setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto ic = InClusterConfig((dir / "sa").string());
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  ASSERT_TRUE(ic.ok()) << ic.status().ToString();
  EXPECT_EQ(ic->server, "https://[fd00::1]:443");
  EXPECT_EQ(ic->ca_file, (dir / "sa" / "ca.crt").string());
  EXPECT_EQ(ic->token_file, (dir / "sa" / "token").string());
  EXPECT_EQ(ic->default_namespace, "cohort-system");
  EXPECT_FALSE(InClusterConfig((dir / "sa").string()).ok());  // env unset
  std::filesystem::remove_all(dir);
}

TEST(KubeClientTest, CaFileOverPlainHttpIsHarmless) {
  FakeApi api;
  KubeConfig c = api.Config();
  c.ca_data = "-----BEGIN CERTIFICATE-----\n";
  c.ca_file = "/nonexistent/ca.crt";
  KubeClient client(c);
  EXPECT_TRUE(client.List(Resource::CohortClusters(), "ns").ok());
}

// kubeconfig fields of the wrong type: .as<std::string>() on a mapping threw
// YAML::BadConversion out of LoadKubeconfig (nothing up to main() caught
// it). Each is an InvalidArgument naming the file and the field.
TEST(KubeConfigTest, MalformedFieldsAreInvalidArgument) {
  auto dir = std::filesystem::temp_directory_path() / ("k8s_cfg_bad_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "config").string();
  const std::string tail = R"(
contexts:
- name: ctx
  context: {cluster: k, user: u}
clusters:
- name: k
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
)";
  struct Case {
    std::string yaml;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"current-context: {name: ctx}" + tail, "current-context must be a string, not a mapping"},
      {"current-context: [ctx]" + tail, "current-context must be a string, not a list"},
      {"current-context: ctx\ncontexts: ctx\n", "contexts must be a list, not a scalar"},
      {"current-context: ctx\ncontexts: [{name: ctx, context: [k]}]\n", "context 'ctx': context must be a mapping"},
      {"current-context: ctx\ncontexts: [{name: ctx, context: {cluster: {a: 1}}}]\n",
       "context 'ctx': cluster must be a string, not a mapping"},
      {"current-context: ctx\ncontexts: [{name: ctx, context: {cluster: k, namespace: [a]}}]\n",
       "context 'ctx': namespace must be a string"},
      {"current-context: ctx\ncontexts: [{name: ctx, context: {cluster: k}}]\nclusters: [{name: k, cluster: {server: {}}}]\n",
       "cluster 'k': cluster.server must be a string, not a mapping"},
      {"current-context: ctx\ncontexts: [{name: ctx, context: {cluster: k}}]\n"
       "clusters: [{name: k, cluster: {server: s, insecure-skip-tls-verify: maybe}}]\n",
       "cluster 'k': cluster.insecure-skip-tls-verify must be true or false"},
      {"current-context: ctx\ncontexts: [{name: ctx, context: {cluster: k, user: u}}]\n"
       "clusters: [{name: k, cluster: {server: s}}]\nusers: [{name: u, user: {token: [a, b]}}]\n",
       "user 'u': user.token must be a string, not a list"},
      {"current-context: ctx\ncontexts: [{name: ctx, context: {cluster: k, user: u}}]\n"
       "clusters: [{name: k, cluster: {server: s}}]\nusers: [{name: u, user: tok}]\n",
       "user 'u': user must be a mapping"},
      {"current-context: ctx\ncontexts: [{name: ctx, context: {cluster: k}}]\nclusters: [{name: k, cluster: {server: }}]\n",
       "no cluster 'k' with a server"},
      {"just a string\n", "not a mapping but a scalar"},
      {"[1, 2]\n", "not a mapping but a list"},
      {"a: [\n", "kubeconfig " + path + ": yaml-cpp"},  // a parse error
  };
  for (const auto& c : cases) {
    std::ofstream(path, std::ios::trunc) << c.yaml;
    Result<KubeConfig> got = Status::Internal("not run");
    ASSERT_NO_THROW(got = LoadKubeconfig(path)) << c.yaml;
    ASSERT_FALSE(got.ok()) << c.yaml;
    EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument) << got.status().ToString();
    EXPECT_NE(got.status().message().find("kubeconfig " + path + ": "), std::string::npos) << got.status().ToString();
    EXPECT_NE(got.status().message().find(c.message), std::string::npos) << c.yaml << "\n" << got.status().ToString();
  }
  // Null fields are "not there"; the explicit context wins over current-context.
  std::ofstream(path, std::ios::trunc) << "current-context: {x: 1}\ncontexts: [{name: ctx, context: {cluster: k, user: ~}}]\n"
                                          "clusters: [{name: k, cluster: {server: s, certificate-authority: ~}}]\n";
  auto ok = LoadKubeconfig(path, "ctx");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->server, "s");
  EXPECT_EQ(ok->ca_file, "");
  std::filesystem::remove_all(dir);
}

// A Lease written by someone else with fields of the wrong type or out of
// range is read with checks (value() threw, a huge float was cast to int).
TEST(LeaderElectionTest, MalformedLeaseIsReadSafely) {
  FakeApi api;
  std::mutex mu;
  json lease = {{"metadata", {{"name", "op"}, {"resourceVersion", "1"}}},
                {"spec",
                 {{"holderIdentity", 7},
                  {"leaseDurationSeconds", 1e300},
                  {"renewTime", "9999-01-01T00:00:00Z"},
                  {"leaseTransitions", "many"}}}};
  const std::string path = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/op";
  api.server().Get(path, [&](const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    res.set_content(lease.dump(), "application/json");
  });
  api.server().Put(path, [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    lease = json::parse(req.body);
    res.set_content(lease.dump(), "application/json");
  });
  KubeClient client(api.Config());
  LeaderElector a(client, {"ns", "op", "a", 15});
  Result<bool> got = false;
  ASSERT_NO_THROW(got = a.TryAcquireOrRenew());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got);  // no (string) holder: free
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(lease["spec"]["holderIdentity"], "a");
  EXPECT_EQ(lease["spec"]["leaseTransitions"], 0);
  EXPECT_EQ(lease["spec"]["leaseDurationSeconds"], 15);
}

// A Lease store with resourceVersion compare-and-swap.
TEST(LeaderElectionTest, AcquireRenewExpireTakeover) {
  FakeApi api;
  std::mutex mu;
  json lease;
  int rv = 0;
  const std::string path = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/op";
  api.server().Get(path, [&](const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    if (lease.is_null()) {
      res.status = 404;
      res.set_content(R"({"kind":"Status","code":404,"reason":"NotFound"})", "application/json");
      return;
    }
    res.set_content(lease.dump(), "application/json");
  });
  api.server().Post("/apis/coordination.k8s.io/v1/namespaces/ns/leases",
                    [&](const httplib::Request& req, httplib::Response& res) {
                      std::lock_guard<std::mutex> lock(mu);
                      if (!lease.is_null()) {
                        res.status = 409;
                        res.set_content(R"({"kind":"Status","code":409,"reason":"AlreadyExists"})", "application/json");
                        return;
                      }
                      lease = json::parse(req.body);
                      lease["metadata"]["resourceVersion"] = std::to_string(++rv);
                      res.status = 201;
                      res.set_content(lease.dump(), "application/json");
                    });
  api.server().Put(path, [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    json body = json::parse(req.body);
    if (body["metadata"].value("resourceVersion", "") != lease["metadata"].value("resourceVersion", "")) {
      res.status = 409;
      res.set_content(R"({"kind":"Status","code":409,"reason":"Conflict"})", "application/json");
      return;
    }
    lease = body;
    lease["metadata"]["resourceVersion"] = std::to_string(++rv);
    res.set_content(lease.dump(), "application/json");
  });
  KubeClient client(api.Config());
  LeaderElector a(client, {"ns", "op", "a", 1});
  LeaderElector b(client, {"ns", "op", "b", 1});
  auto ra = a.TryAcquireOrRenew();
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  EXPECT_TRUE(*ra);
  EXPECT_FALSE(*b.TryAcquireOrRenew());
  EXPECT_TRUE(*a.TryAcquireOrRenew());  // renew
  EXPECT_EQ(lease["spec"]["holderIdentity"], "a");
  EXPECT_EQ(lease["spec"]["leaseDurationSeconds"], 1);
  EXPECT_TRUE(ParseTime(lease["spec"]["renewTime"]).has_value());
  std::this_thread::sleep_for(1300ms);  // a stops renewing: the lease expires
  EXPECT_TRUE(*b.TryAcquireOrRenew());
  EXPECT_EQ(lease["spec"]["holderIdentity"], "b");
  EXPECT_EQ(lease["spec"]["leaseTransitions"], 1);
  EXPECT_FALSE(*a.TryAcquireOrRenew());
  ASSERT_TRUE(b.Release().ok());
  EXPECT_EQ(lease["spec"]["holderIdentity"], "");
  EXPECT_TRUE(*a.TryAcquireOrRenew());  // released: free to take at once
}

TEST(TimeTest, MicroTimeRoundTrip) {
  auto now = std::chrono::system_clock::now();
  std::string s = FormatMicroTime(now);
  ASSERT_EQ(s.size(), 27u) << s;
  auto back = ParseTime(s);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::microseconds>(*back - now).count(), 0);
  auto z = ParseTime("2026-01-01T00:00:00Z");
  auto off = ParseTime("2026-01-01T01:00:00+01:00");
  ASSERT_TRUE(z && off);
  EXPECT_EQ(*z, *off);
}

// system_clock counts int64 nanoseconds (1677-09-21 .. 2262-04-11): years
// outside 1678..2261 overflowed from_time_t (UB); they are rejected, and so
// are offsets that are not [+-]HH:MM with HH <= 23, MM <= 59.
TEST(TimeTest, ParseTimeRejectsWhatTheClockCannotHold) {
  for (const char* bad : {"1012-05-01T12:00:00Z", "1677-12-31T23:59:59Z", "2262-01-01T00:00:00Z",
                          "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2026-01-01T00:00:00+24:00",
                          "2026-01-01T00:00:00+99999999:00", "2026-01-01T00:00:00-1:00", "2026-01-01T00:00:00+01",
                          "2026-01-01T00:00:00+01:60"})
    EXPECT_FALSE(ParseTime(bad).has_value()) << bad;
  auto lo = ParseTime("1678-01-01T00:00:00+23:59");
  auto hi = ParseTime("2261-12-31T23:59:59.999999-23:59");
  ASSERT_TRUE(lo && hi);
  EXPECT_LT(*lo, *hi);
  auto india = ParseTime("2026-01-01T05:30:00+05:30");
  ASSERT_TRUE(india);
  EXPECT_EQ(*india, *ParseTime("2026-01-01T00:00:00Z"));
}

}  // namespace
}  // namespace cohort::k8s
