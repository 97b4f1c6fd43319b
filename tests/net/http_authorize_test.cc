// HttpServer's principal and scoped-token hook (Request::principal,
// Options::authorize; "Principal" in include/cohort/net/http_server.h):
// admin token, hook-granted principals, public paths, auth disabled, the
// WebSocket upgrade, and a hook that throws. Server on an ephemeral port,
// driven by libcurl, raw sockets and the WebSocket client.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cohort/net/http_server.h"
#include "cohort/net/ws_client.h"

namespace cohort::net {
namespace {

using namespace std::chrono_literals;

struct Reply {
  long status = 0;
  std::string body;
};

size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

Reply Fetch(const std::string& method, const std::string& url, std::vector<std::string> headers = {}) {
  Reply r;
  CURL* curl = curl_easy_init();
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  if (list) curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  if (list) curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return r;
}

std::unique_ptr<HttpServer> StartServer(HttpServer::Options opts) {
  opts.host = "127.0.0.1";
  opts.port = 0;
  auto server = HttpServer::Start(std::move(opts));
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return std::move(server).value();
}

// What the hook saw, for checking which request fields are filled.
struct HookCall {
  std::string token, method, path, target, body, principal, header, query;
  size_t path_params = 0;
  bool has_remote = false;
};

// The scoped-token shape the head uses: "job-token-1" may only read job1.
struct Fixture {
  std::mutex mu;
  std::vector<HookCall> calls;

  std::optional<std::string> Authorize(std::string_view token, const Request& req) {
    {
      std::lock_guard<std::mutex> lock(mu);
      calls.push_back({std::string(token), req.method, req.path, req.target, req.body, req.principal,
                       std::string(req.Header("X-Trace")), req.Query("q").value_or(""), req.path_params.size(),
                       !req.remote_address.empty()});
    }
    if (req.principal != "") return std::nullopt;  // never set before the hook
    bool job1 = req.path == "/api/jobs/job1" || req.path.rfind("/api/jobs/job1/", 0) == 0;
    if (token == "job-token-1" && req.method == "GET" && job1) return "job:job1";
    return std::nullopt;
  }
  size_t CallCount() {
    std::lock_guard<std::mutex> lock(mu);
    return calls.size();
  }
  HookCall Last() {
    std::lock_guard<std::mutex> lock(mu);
    return calls.empty() ? HookCall{} : calls.back();
  }
};

HttpServer::Options ScopedOptions(Fixture* f) {
  HttpServer::Options opts;
  opts.bearer_token = "admin-token";
  opts.token_cookie = "cohort_token";
  opts.public_paths = {"/api/version"};
  opts.authorize = [f](std::string_view token, const Request& req) { return f->Authorize(token, req); };
  return opts;
}

void AddRoutes(HttpServer& server) {
  auto who = [](const Request& req) { return Response::Text(200, "principal=" + req.principal); };
  server.Handle("GET", "/api/version", who);
  server.Handle("GET", "/api/jobs/", who);
  server.Handle("GET", "/api/jobs/{id}", who);
  server.Handle("DELETE", "/api/jobs/{id}", who);
  server.Handle("POST", "/api/jobs/{id}/stop", who);
  server.Handle("GET", "/api/jobs/{id}/logs", who);
  server.HandleWebSocket(
      "/api/jobs/{id}/logs/tail",
      [](const Request& req) -> std::optional<Response> {
        if (req.principal.empty()) return Response::Text(500, "no principal before the upgrade");
        return std::nullopt;
      },
      [](std::shared_ptr<WebSocketSession> s) {
        s->SendText("principal=" + s->request().principal);
        s->Close();
      });
}

const char* kJobToken = "Authorization: Bearer job-token-1";
const char* kAdmin = "Authorization: Bearer admin-token";

TEST(HttpAuthorizeTest, ScopedTokenOnlyWhereTheHookAllows) {
  Fixture f;
  auto server = StartServer(ScopedOptions(&f));
  AddRoutes(*server);
  std::string base = "http://127.0.0.1:" + std::to_string(server->port());

  Reply r = Fetch("GET", base + "/api/jobs/job1?q=1", {kJobToken, "X-Trace: t1"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "principal=job:job1");
  // The hook saw method, path, target, query, headers and the remote
  // address; body, path_params and principal were still empty.
  HookCall seen = f.Last();
  EXPECT_EQ(seen.token, "job-token-1");
  EXPECT_EQ(seen.method, "GET");
  EXPECT_EQ(seen.path, "/api/jobs/job1");
  EXPECT_EQ(seen.target, "/api/jobs/job1?q=1");
  EXPECT_EQ(seen.query, "1");
  EXPECT_EQ(seen.header, "t1");
  EXPECT_TRUE(seen.has_remote);
  EXPECT_EQ(seen.path_params, 0u);
  EXPECT_EQ(seen.body, "");
  EXPECT_EQ(seen.principal, "");

  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job1/logs", {kJobToken}).body, "principal=job:job1");
  // Elsewhere, and with other methods: 401 as for a wrong token.
  for (const char* path :
       {"/api/jobs/job2", "/api/jobs/job10", "/api/jobs/", "/api/jobs/job2/logs", "/api/nowhere"}) {
    r = Fetch("GET", base + path, {kJobToken});
    EXPECT_EQ(r.status, 401) << path;
    EXPECT_EQ(r.body, "Unauthorized: missing or invalid bearer token") << path;
  }
  EXPECT_EQ(Fetch("DELETE", base + "/api/jobs/job1", {kJobToken}).status, 401);
  EXPECT_EQ(Fetch("POST", base + "/api/jobs/job1/stop", {kJobToken}).status, 401);
  // An unknown token is offered to the hook and refused.
  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job1", {"Authorization: Bearer other"}).status, 401);
  EXPECT_EQ(f.Last().token, "other");
  // No token: the hook is not called.
  size_t before = f.CallCount();
  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job1").status, 401);
  EXPECT_EQ(f.CallCount(), before);

  // The admin token is "admin" everywhere, without asking the hook.
  before = f.CallCount();
  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job2", {kAdmin}).body, "principal=admin");
  EXPECT_EQ(Fetch("DELETE", base + "/api/jobs/job1", {kAdmin}).body, "principal=admin");
  EXPECT_EQ(f.CallCount(), before);
}

TEST(HttpAuthorizeTest, EveryCredentialIsOfferedInOrder) {
  Fixture f;
  auto server = StartServer(ScopedOptions(&f));
  AddRoutes(*server);
  std::string base = "http://127.0.0.1:" + std::to_string(server->port());
  // Ray's proxy fallback: Authorization belongs to the proxy.
  Reply r = Fetch("GET", base + "/api/jobs/job1",
                  {"Authorization: Bearer proxy-credential", "X-Ray-Authorization: Bearer job-token-1"});
  EXPECT_EQ(r.body, "principal=job:job1");
  {
    std::lock_guard<std::mutex> lock(f.mu);
    ASSERT_GE(f.calls.size(), 2u);
    EXPECT_EQ(f.calls[f.calls.size() - 2].token, "proxy-credential");
    EXPECT_EQ(f.calls.back().token, "job-token-1");
  }
  // The token cookie, same-origin.
  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job1", {"Cookie: cohort_token=job-token-1"}).body, "principal=job:job1");
  // Cross-origin: the cookie is not a credential at all.
  size_t before = f.CallCount();
  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job1", {"Cookie: cohort_token=job-token-1", "Origin: http://evil.example"})
                .status,
            401);
  EXPECT_EQ(f.CallCount(), before);
  // The admin token in the cookie.
  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job2", {"Cookie: cohort_token=admin-token"}).body, "principal=admin");
}

TEST(HttpAuthorizeTest, PublicPathsAndAuthDisabled) {
  Fixture f;
  auto server = StartServer(ScopedOptions(&f));
  AddRoutes(*server);
  std::string base = "http://127.0.0.1:" + std::to_string(server->port());
  size_t before = f.CallCount();
  EXPECT_EQ(Fetch("GET", base + "/api/version").body, "principal=");
  EXPECT_EQ(Fetch("GET", base + "/api/version", {kAdmin}).body, "principal=admin");
  EXPECT_EQ(Fetch("GET", base + "/api/version", {kJobToken}).body, "principal=");
  EXPECT_EQ(Fetch("GET", base + "/api/version", {"Authorization: Bearer junk"}).body, "principal=");
  EXPECT_EQ(f.CallCount(), before);  // public paths never ask the hook

  Fixture g;
  HttpServer::Options open = ScopedOptions(&g);
  open.bearer_token.clear();
  auto unauthenticated = StartServer(open);
  AddRoutes(*unauthenticated);
  base = "http://127.0.0.1:" + std::to_string(unauthenticated->port());
  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job2").body, "principal=admin");
  EXPECT_EQ(Fetch("GET", base + "/api/jobs/job2", {kJobToken}).body, "principal=admin");
  EXPECT_EQ(Fetch("GET", base + "/api/version").body, "principal=admin");
  EXPECT_EQ(g.CallCount(), 0u);
}

TEST(HttpAuthorizeTest, WebSocketUpgradeCarriesThePrincipal) {
  Fixture f;
  auto server = StartServer(ScopedOptions(&f));
  AddRoutes(*server);
  std::string base = "ws://127.0.0.1:" + std::to_string(server->port());
  auto read_first = [](WebSocketClient& c) -> std::string {
    auto msg = c.ReadMessage(Deadline::After(5s));
    if (!msg.ok() || !msg->has_value()) return "<none>";
    return **msg;
  };
  auto job = WebSocketClient::Connect(base + "/api/jobs/job1/logs/tail", {{"Authorization", "Bearer job-token-1"}});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(read_first(**job), "principal=job:job1");
  EXPECT_EQ(f.Last().method, "GET");
  EXPECT_EQ(f.Last().path, "/api/jobs/job1/logs/tail");

  auto admin = WebSocketClient::Connect(base + "/api/jobs/job2/logs/tail", {{"Authorization", "Bearer admin-token"}});
  ASSERT_TRUE(admin.ok()) << admin.status().ToString();
  EXPECT_EQ(read_first(**admin), "principal=admin");

  auto cookie = WebSocketClient::Connect(base + "/api/jobs/job1/logs/tail", {{"Cookie", "cohort_token=job-token-1"}});
  ASSERT_TRUE(cookie.ok()) << cookie.status().ToString();
  EXPECT_EQ(read_first(**cookie), "principal=job:job1");

  auto other = WebSocketClient::Connect(base + "/api/jobs/job2/logs/tail", {{"Authorization", "Bearer job-token-1"}});
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("401"), std::string::npos) << other.status().ToString();
}

// Raw exchange: the answer to `request` on a fresh connection, until the
// server closes or `wait` passes.
std::string RawExchange(int port, const std::string& request, std::chrono::milliseconds wait) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "<connect failed>";
  }
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + wait;
  char buf[4096];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

TEST(HttpAuthorizeTest, RefusedScopedTokenNeverReadsTheBody) {
  Fixture f;
  auto server = StartServer(ScopedOptions(&f));
  AddRoutes(*server);
  // A POST the hook refuses, announcing 10 MB it never sends: 401 at once
  // (the server closes; a body read would wait for the bytes instead).
  auto start = std::chrono::steady_clock::now();
  std::string answer = RawExchange(server->port(),
                                   "POST /api/jobs/job1/stop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                   "job-token-1\r\nContent-Length: 10000000\r\n\r\n",
                                   5000ms);
  EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << answer;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4000ms);
}

TEST(HttpAuthorizeTest, ThrowingHookIs500) {
  HttpServer::Options opts;
  opts.bearer_token = "admin-token";
  opts.authorize = [](std::string_view token, const Request&) -> std::optional<std::string> {
    if (token == "boom") throw std::runtime_error("hook failed");
    return std::nullopt;
  };
  auto server = StartServer(opts);
  server->Handle("GET", "/x", [](const Request& req) { return Response::Text(200, req.principal); });
  std::string base = "http://127.0.0.1:" + std::to_string(server->port());
  EXPECT_EQ(Fetch("GET", base + "/x", {"Authorization: Bearer boom"}).status, 500);
  EXPECT_EQ(Fetch("GET", base + "/x", {"Authorization: Bearer nope"}).status, 401);
  EXPECT_EQ(Fetch("GET", base + "/x", {kAdmin}).body, "admin");
}

}  // namespace
}  // namespace cohort::net
