// HeadServer: wires the state store, log store, cluster state, HTTP API,
// agent gRPC endpoint and tick thread together; see head_server.h.
//
// Members are created in dependency order in Start() and torn down in
// reverse in Stop(): first the servers (no new events), then the threads,
// then the stores.
#include "cohort/head/head_server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "cluster.h"
#include "cohort/common/atomic_file.h"
#include "cohort/common/json.h"
#include "cohort/common/logging.h"
#include "cohort/common/prometheus.h"
#include "cohort/dashboard/dashboard.h"
#include "cohort/net/http_server.h"

namespace cohort::head {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The caller holds the cluster's token (not a job's).
bool IsAdmin(const net::Request& r) { return r.principal == "admin"; }

net::Response ToResponse(const Cluster::Reply& r) {
  return r.json ? net::Response::Json(r.status, r.body) : net::Response::Text(r.status, r.body);
}

std::string SessionName() {
  char buf[64];
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "session_%Y-%m-%d_%H-%M-%S", &tm);
  return std::string(buf) + "_" + std::to_string(getpid());
}

// cohort_api_requests_total{method,route,code}: the HTTP server's counts by
// route pattern (bounded by the route table; "unmatched" for 404s).
void WriteApiRequests(prom::Writer& w, const std::vector<net::HttpServer::RouteCount>& counts) {
  if (!w.Family("cohort_api_requests_total", prom::Type::kCounter,
                "HTTP requests answered on the dashboard port, by method, route pattern and status code."))
    return;
  for (const auto& c : counts)
    w.Sample({{"method", c.method}, {"route", c.pattern.empty() ? "unmatched" : c.pattern},
              {"code", std::to_string(c.status)}},
             static_cast<double>(c.count));
}

}  // namespace

namespace {

// <state_dir>/<name>: its first line, or a new random 32-hex token written
// there (0600) when the file is missing or empty.
Result<std::string> LoadOrCreateSecret(const std::string& state_dir, const std::string& name) {
  const std::string path = state_dir + "/" + name;
  std::ifstream in(path);
  std::string token;
  if (in && std::getline(in, token) && !token.empty()) return token;
  std::random_device rd;
  char buf[33];
  for (int i = 0; i < 32; i += 8) std::snprintf(buf + i, 9, "%08x", rd());
  token.assign(buf, 32);
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  COHORT_RETURN_IF_ERROR(WriteFileAtomically(path, token + "\n", 0600));
  return token;
}

}  // namespace

Result<std::string> LoadOrCreateToken(const std::string& state_dir) {
  return LoadOrCreateSecret(state_dir, "token");
}

Result<std::string> LoadOrCreateJoinToken(const std::string& state_dir) {
  return LoadOrCreateSecret(state_dir, "join_token");
}

Result<std::string> ReadTokenFile(const std::string& path, const std::string& flag) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return Status::InvalidArgument("cannot read " + flag + " " + path + ": it is a directory");
  errno = 0;
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    return Status::InvalidArgument("cannot read " + flag + " " + path + ": " +
                                   (err != 0 ? std::strerror(err) : "cannot open it"));
  }
  std::string line;
  std::getline(in, line);
  if (in.bad()) return Status::InvalidArgument("cannot read " + flag + " " + path + ": read error");
  const char* blanks = " \t\r\n\v\f";
  const size_t begin = line.find_first_not_of(blanks);
  if (begin == std::string::npos)
    return Status::InvalidArgument(flag + " " + path + " is empty: its first line must hold the token");
  return line.substr(begin, line.find_last_not_of(blanks) - begin + 1);
}

struct HeadServer::Impl {
  HeadOptions options;
  std::string token;       // the API (admin) token
  std::string join_token;  // the agents' token
  std::string session_name;
  std::unique_ptr<StateStore> state;
  std::unique_ptr<LogStore> logs;
  std::unique_ptr<Cluster> cluster;
  std::unique_ptr<net::HttpServer> http;
  std::unique_ptr<rpc::HeadRpcServer> rpc;

  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;          // GUARDED_BY(mu)
  std::thread ticker;
  std::vector<std::thread> tails;  // GUARDED_BY(mu): one per WebSocket log tail
  bool stopped = false;

  void RegisterRoutes();
  void TailLoop(std::string id, std::shared_ptr<net::WebSocketSession> ws);
  void Stop();
};

void HeadServer::Impl::RegisterRoutes() {
  net::HttpServer& s = *http;
  Cluster* c = cluster.get();
  const bool auth = options.auth;
  const std::string session = session_name;
  s.Handle("GET", "/api/version", [session](const net::Request&) {
    json v = {{"version", "4"},        {"ray_version", "2.54.0"},  {"ray_commit", "cohort"},
              {"session_name", session}, {"cohort_version", "0.1.0"}};
    return net::Response::Json(200, v.dump());
  });
  s.Handle("GET", "/api/authentication_mode", [auth](const net::Request&) {
    return net::Response::Json(200, json{{"authentication_mode", auth ? "token" : "disabled"}}.dump());
  });
  s.Handle("GET", "/api/health", [c](const net::Request&) { return ToResponse(c->Health()); });
  dashboard::RegisterDashboard(s);  // GET /, /static/{name}; POST/DELETE /api/authenticate
  // Slow routes (disk reads, zip checks and writes) run on the work pool;
  // the HTTP loop only parses and answers. A full pool answers 503.
  auto offload = [c](std::string method, std::string pattern, std::function<Cluster::Reply(const net::Request&)> fn,
                     net::HttpServer& server) {
    server.HandleAsync(std::move(method), std::move(pattern), [c, fn](net::Request r, net::Responder respond) {
      auto shared = std::make_shared<net::Responder>(std::move(respond));
      auto request = std::make_shared<net::Request>(std::move(r));
      if (!c->pool().TrySubmit([fn, shared, request] { (*shared)(ToResponse(fn(*request))); }))
        (*shared)(net::Response::Text(503, "the head is busy (its work queue is full); retry shortly"));
    });
  };
  s.Handle("POST", "/api/jobs/", [c](const net::Request& r) { return ToResponse(c->Submit(r.body)); });
  s.Handle("GET", "/api/jobs/", [c](const net::Request& r) { return ToResponse(c->ListJobs(IsAdmin(r))); });
  s.Handle("GET", "/api/jobs/{id}", [c](const net::Request& r) {
    return ToResponse(c->GetJob(std::string(r.PathParam("id")), IsAdmin(r)));
  });
  s.Handle("DELETE", "/api/jobs/{id}",
           [c](const net::Request& r) { return ToResponse(c->DeleteJob(std::string(r.PathParam("id")))); });
  s.Handle("POST", "/api/jobs/{id}/stop",
           [c](const net::Request& r) { return ToResponse(c->StopJob(std::string(r.PathParam("id")))); });
  offload("GET", "/api/jobs/{id}/logs",
          [c](const net::Request& r) { return c->JobLogs(std::string(r.PathParam("id"))); }, s);
  offload("GET", "/api/jobs/{id}/metrics", [c](const net::Request& r) {
    int64_t since = 0;
    if (auto q = r.Query("since")) {
      char* end = nullptr;
      errno = 0;
      since = std::strtoll(q->c_str(), &end, 10);
      if (end == q->c_str() || *end != '\0' || since < 0 || errno == ERANGE)
        return Cluster::Reply{400, "since must be a non-negative integer", false};
    }
    return c->JobMetrics(std::string(r.PathParam("id")), since);
  }, s);
  s.Handle("GET", "/api/cluster/status", [c](const net::Request&) { return ToResponse(c->ClusterStatus()); });
  // Prometheus scrapes (public, like Ray's metrics port: ids, addresses and
  // numbers only -- no entrypoints, logs or environments). docs/cluster.md.
  s.Handle("GET", "/metrics", [c, server = &s](const net::Request&) {
    prom::Writer w;
    c->WritePrometheus(w);
    WriteApiRequests(w, server->RouteCounts());
    prom::WriteProcessFamilies(w, prom::ReadProcessStats());
    net::Response r;
    r.content_type = prom::kContentType;
    r.body = w.Take();
    return r;
  });
  s.Handle("GET", "/api/events", [c](const net::Request& r) {
    int64_t since = 0;
    if (auto q = r.Query("since")) {
      char* end = nullptr;
      errno = 0;
      since = std::strtoll(q->c_str(), &end, 10);
      if (end == q->c_str() || *end != '\0' || since < 0 || errno == ERANGE)
        return net::Response::Text(400, "since must be a non-negative integer");
    }
    return ToResponse(c->Events(since));
  });
  auto package_route = [c](const net::Request& r, bool put) {
    if (r.PathParam("protocol") != "gcs")
      return Cluster::Reply{400, "unsupported package protocol '" + SanitizeUtf8(r.PathParam("protocol")) +
                                     "': only gcs:// packages are stored by the head", false};
    const std::string name(r.PathParam("name"));
    return put ? c->PutPackage(name, r.body) : c->PackageExists(name);
  };
  s.Handle("GET", "/api/packages/{protocol}/{name}",
           [package_route](const net::Request& r) { return ToResponse(package_route(r, false)); });
  offload("PUT", "/api/packages/{protocol}/{name}",
          [package_route](const net::Request& r) { return package_route(r, true); }, s);
  s.HandleWebSocket(
      "/api/jobs/{id}/logs/tail",
      [c](const net::Request& r) -> std::optional<net::Response> {
        auto terminal = c->JobIsTerminal(std::string(r.PathParam("id")));
        if (!terminal.ok()) return net::Response::Text(404, terminal.status().message());
        return std::nullopt;
      },
      [this](std::shared_ptr<net::WebSocketSession> ws) {
        std::string id(ws->request().PathParam("id"));
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) {
          ws->Close(1001, "head shutting down");
          return;
        }
        tails.emplace_back([this, id, ws] { TailLoop(id, ws); });
      });
}

// Relays a job's log from its beginning, then follows it; closes with 1000
// once the job is terminal and the log is drained (Ray's protocol, §2.8).
void HeadServer::Impl::TailLoop(std::string id, std::shared_ptr<net::WebSocketSession> ws) {
  uint64_t offset = 0;
  while (!ws->closed()) {
    auto terminal = cluster->JobIsTerminal(id);
    const bool done = !terminal.ok() || *terminal;
    while (!ws->closed()) {
      auto chunk = logs->ReadLines(id, offset, 10, 20000, /*include_partial_line=*/done);
      if (!chunk.ok() || chunk->data.empty()) break;
      offset = chunk->next_offset;
      ws->SendText(std::move(chunk->data));
    }
    if (done) {
      ws->Close(1000);
      return;
    }
    std::unique_lock<std::mutex> lock(mu);
    if (cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return stopping; })) {
      ws->Close(1001, "head shutting down");
      return;
    }
  }
}

void HeadServer::Impl::Stop() {
  if (stopped) return;
  stopped = true;
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
  }
  cv.notify_all();
  if (ticker.joinable()) ticker.join();
  std::vector<std::thread> to_join;
  {
    std::lock_guard<std::mutex> lock(mu);
    to_join.swap(tails);
  }
  for (auto& t : to_join) t.join();
  if (rpc) rpc->Shutdown(Deadline::After(std::chrono::seconds(2)));
  if (http) http->Stop();
  rpc.reset();
  http.reset();
  cluster.reset();
  logs.reset();
  state.reset();
}

Result<std::unique_ptr<HeadServer>> HeadServer::Start(HeadOptions options) {
  if (options.state_dir.empty()) return Status::InvalidArgument("the head needs a state dir");
  std::error_code ec;
  fs::create_directories(options.state_dir + "/packages", ec);
  if (ec) return Status::IoError("cannot create state dir " + options.state_dir + ": " + ec.message());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->session_name = SessionName();
  if (options.auth) {
    if (options.token.empty()) {
      COHORT_ASSIGN_OR_RETURN(impl->token, LoadOrCreateToken(options.state_dir));
    } else {
      impl->token = options.token;
    }
    if (options.join_token.empty()) {
      COHORT_ASSIGN_OR_RETURN(impl->join_token, LoadOrCreateJoinToken(options.state_dir));
    } else {
      impl->join_token = options.join_token;
    }
    if (impl->join_token == impl->token)
      return Status::InvalidArgument(
          "the join token is the API token: agents' machines would hold the admin credential; give the "
          "head a different join token (or none: it creates " + options.state_dir + "/join_token)");
  } else {
    COHORT_LOG(WARN) << "authentication is OFF (--auth none): anyone who can reach ports "
                     << options.dashboard_port << " and " << options.agent_port
                     << " can run commands on this cluster";
  }
  COHORT_ASSIGN_OR_RETURN(impl->state, StateStore::Open(options.state_dir + "/cohort.db"));
  COHORT_ASSIGN_OR_RETURN(impl->logs, LogStore::Open(options.state_dir + "/logs"));
  impl->cluster = std::make_unique<Cluster>(options, impl->state.get(), impl->logs.get());
  COHORT_RETURN_IF_ERROR(impl->cluster->Recover());

  net::HttpServer::Options http_options;
  http_options.host = options.host;
  http_options.port = options.dashboard_port;
  http_options.bearer_token = impl->token;
  http_options.max_body_bytes = options.max_body_bytes;
  http_options.public_paths = {"/api/version", "/api/authentication_mode", "/api/health", "/metrics"};
  for (const char* path : dashboard::kPublicPaths) http_options.public_paths.push_back(path);
  http_options.token_cookie = dashboard::kTokenCookie;  // the page's log WebSocket sends no headers
  // A job's own token (COHORT_JOB_TOKEN) reads that job and nothing else.
  http_options.authorize = [tokens = impl->cluster->tokens()](std::string_view token,
                                                             const net::Request& r) -> std::optional<std::string> {
    auto job = tokens->JobOf(token);
    if (!job || !JobTokenMayAccess(*job, r.method, r.path)) return std::nullopt;
    return "job:" + *job;
  };
  auto http = net::HttpServer::Start(http_options);
  if (!http.ok()) return http.status().WithPrefix("dashboard port");
  impl->http = std::move(http).value();
  impl->RegisterRoutes();

  rpc::HeadRpcServer::Options rpc_options;
  rpc_options.listen_address = options.host + ":" + std::to_string(options.agent_port);
  rpc_options.cluster_token = impl->join_token;
  rpc_options.admin_token = impl->token;  // agents from before join tokens (a WARN, once)
  auto rpc = rpc::HeadRpcServer::Start(rpc_options, impl->cluster.get());
  if (!rpc.ok()) {
    impl->Stop();
    return rpc.status().WithPrefix("agent port " + std::to_string(options.agent_port));
  }
  impl->rpc = std::move(rpc).value();

  Impl* raw = impl.get();
  impl->ticker = std::thread([raw] {
    std::unique_lock<std::mutex> lock(raw->mu);
    while (!raw->cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return raw->stopping; })) {
      lock.unlock();
      raw->cluster->Tick();
      lock.lock();
    }
  });
  return std::unique_ptr<HeadServer>(new HeadServer(std::move(impl)));
}

HeadServer::HeadServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HeadServer::~HeadServer() { Stop(); }
int HeadServer::agent_port() const { return impl_->rpc ? impl_->rpc->port() : 0; }
int HeadServer::dashboard_port() const { return impl_->http ? impl_->http->port() : 0; }
const std::string& HeadServer::token() const { return impl_->token; }
const std::string& HeadServer::join_token() const { return impl_->join_token; }
const std::string& HeadServer::state_dir() const { return impl_->options.state_dir; }
void HeadServer::Stop() {
  if (impl_) impl_->Stop();
}

}  // namespace cohort::head
