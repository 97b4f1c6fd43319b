// Tests of HttpServer (include/cohort/net/http_server.h) driven through
// libcurl and raw sockets on loopback, plus white-box tests of the route
// table (src/net/http/router.h). Every server binds an ephemeral port.
#include "cohort/net/http_server.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>

#include "http/router.h"

namespace cohort::net {
namespace {

using namespace std::chrono_literals;

// --- clients ---------------------------------------------------------------

struct CurlInit {
  CurlInit() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};
const CurlInit kCurlInit;

struct Reply {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  HeaderMap headers;
  long new_connections = 0;
};

size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

size_t AppendHeader(char* data, size_t size, size_t n, void* out) {
  std::string line(data, size * n);
  size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    (*static_cast<HeaderMap*>(out))[line.substr(0, colon)] = value;
  }
  return size * n;
}

// One curl easy handle: reused across calls, so connections are kept alive.
class Client {
 public:
  Client() : curl_(curl_easy_init()) {}
  ~Client() { curl_easy_cleanup(curl_); }

  Reply Fetch(const std::string& method, const std::string& url, const std::string& body = "",
              std::vector<std::string> headers = {}) {
    Reply r;
    curl_easy_reset(curl_);
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    if (method == "HEAD") {
      curl_easy_setopt(curl_, CURLOPT_NOBODY, 1L);
    } else {
      curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, method.c_str());
    }
    if (!body.empty() || method == "POST" || method == "PUT") {
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    curl_slist* list = nullptr;
    for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
    if (list) curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, AppendBody);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, AppendHeader);
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &r.headers);
    r.code = curl_easy_perform(curl_);
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(curl_, CURLINFO_NUM_CONNECTS, &r.new_connections);
    if (list) curl_slist_free_all(list);
    return r;
  }

  CURL* handle() { return curl_; }

 private:
  CURL* curl_;
};

Reply Fetch(const std::string& method, const std::string& url, const std::string& body = "",
            std::vector<std::string> headers = {}) {
  Client c;
  return c.Fetch(method, url, body, std::move(headers));
}

// Sends raw bytes on a fresh connection and returns everything the server
// sends back until it closes (or `wait` passes).
std::string RawExchange(int port, const std::string& bytes, std::chrono::milliseconds wait = 3000ms,
                        bool half_close = false) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "<connect failed>";
  }
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  if (half_close) shutdown(fd, SHUT_WR);
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + wait;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (poll(&p, 1, left > 0 ? left : 0) <= 0) break;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

std::unique_ptr<HttpServer> StartServer(HttpServer::Options opts = {}) {
  opts.host = "127.0.0.1";
  opts.port = 0;
  auto server = HttpServer::Start(std::move(opts));
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return std::move(server).value();
}

std::string Url(const HttpServer& s, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(s.port()) + path;
}

// --- router (white-box) ----------------------------------------------------

TEST(RouterTest, PercentDecodeAndQuery) {
  EXPECT_EQ(internal::PercentDecode("a%20b+c%2F%zz%4", false), "a b+c/%zz%4");
  EXPECT_EQ(internal::PercentDecode("a+b", true), "a b");
  auto q = internal::ParseQuery("a=1&b=x%20y&c&&d=a+b&a=2");
  ASSERT_EQ(q.count("a"), 2u);
  EXPECT_EQ(q.lower_bound("a")->second, "1");
  EXPECT_EQ(q.find("b")->second, "x y");
  EXPECT_EQ(q.find("c")->second, "");
  EXPECT_EQ(q.find("d")->second, "a b");
  EXPECT_TRUE(internal::ConstantTimeEquals("Bearer abc", "Bearer abc"));
  EXPECT_FALSE(internal::ConstantTimeEquals("Bearer ab", "Bearer abc"));
  EXPECT_FALSE(internal::ConstantTimeEquals("Bearer abcd", "Bearer abc"));
  EXPECT_TRUE(internal::IsPublicPath({"/api/version", "/static/*"}, "/static/app.js"));
  EXPECT_FALSE(internal::IsPublicPath({"/api/version", "/static/*"}, "/api/version/"));
}

TEST(RouterTest, PatternsAndPrecedence) {
  std::vector<internal::PatternSegment> segs;
  EXPECT_TRUE(internal::ParsePattern("/api/jobs/{id}/logs", &segs));
  EXPECT_EQ(segs.size(), 4u);
  EXPECT_FALSE(internal::ParsePattern("api/jobs", &segs));
  EXPECT_FALSE(internal::ParsePattern("/api/{}", &segs));
  EXPECT_FALSE(internal::ParsePattern("/a/{rest*}/b", &segs));
  EXPECT_FALSE(internal::ParsePattern("/a/x{y}", &segs));

  internal::Router router;
  auto add = [&](std::string method, std::string pattern) {
    auto r = std::make_shared<internal::Route>();
    r->method = std::move(method);
    r->pattern = std::move(pattern);
    router.Add(r);
  };
  add("GET", "/api/jobs/");
  add("POST", "/api/jobs/");
  add("GET", "/api/jobs/{id}");
  add("GET", "/api/jobs/special");
  add("GET", "/static/{path*}");
  auto m = router.Match("GET", "/api/jobs/special", false);
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.route->pattern, "/api/jobs/special");
  m = router.Match("GET", "/api/jobs/raysubmit_1%2F2", false);
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.params["id"], "raysubmit_1/2");
  m = router.Match("GET", "/api/jobs", false);
  EXPECT_FALSE(m.route);
  EXPECT_TRUE(m.allowed.empty());
  m = router.Match("DELETE", "/api/jobs/", false);
  EXPECT_FALSE(m.route);
  EXPECT_EQ(m.allowed, (std::vector<std::string>{"GET", "HEAD", "POST"}));
  m = router.Match("HEAD", "/api/jobs/x", false);
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.route->pattern, "/api/jobs/{id}");
  m = router.Match("GET", "/static/css/a.css", false);
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.params["path"], "css/a.css");
  m = router.Match("GET", "/api/jobs//", false);  // empty {id} does not match
  EXPECT_FALSE(m.route);
}

// --- server ----------------------------------------------------------------

TEST(HttpServerTest, EphemeralPortAndPortInUse) {
  auto server = StartServer();
  ASSERT_GT(server->port(), 0);
  HttpServer::Options opts;
  opts.host = "127.0.0.1";
  opts.port = server->port();
  auto second = HttpServer::Start(opts);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("port " + std::to_string(server->port()) + " is already in use"),
            std::string::npos)
      << second.status().ToString();
  opts.host = "no-such-host.invalid";
  opts.port = 0;
  EXPECT_FALSE(HttpServer::Start(opts).ok());
}

TEST(HttpServerTest, RoutesWithParamsAndExactPaths) {
  auto server = StartServer();
  server->Handle("GET", "/api/jobs/", [](const Request&) { return Response::Json(200, "[]"); });
  server->Handle("GET", "/api/jobs/{id}/logs", [](const Request& req) {
    return Response::Json(200, "{\"id\":\"" + std::string(req.PathParam("id")) + "\",\"path\":\"" + req.path + "\"}");
  });
  Reply r = Fetch("GET", Url(*server, "/api/jobs/raysubmit_A%20B/logs"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"id":"raysubmit_A B","path":"/api/jobs/raysubmit_A B/logs"})");
  EXPECT_EQ(r.headers["Content-Type"], "application/json");
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/")).body, "[]");
  // Trailing slashes matter, as in Ray.
  r = Fetch("GET", Url(*server, "/api/jobs"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "404: Not Found");
  EXPECT_EQ(r.headers["Content-Type"], "text/plain; charset=utf-8");
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/x/logs/")).status, 404);
  EXPECT_EQ(Fetch("GET", Url(*server, "/nothing")).status, 404);
}

TEST(HttpServerTest, QueryHeadersAndBodyReachTheHandler) {
  auto server = StartServer();
  server->Handle("POST", "/echo", [](const Request& req) {
    std::string out = "a=" + req.Query("a").value_or("-") + ";b=" + req.Query("b").value_or("-") +
                      ";c=" + req.Query("c").value_or("-") + ";missing=" + req.Query("zz").value_or("-") +
                      ";hdr=" + std::string(req.Header("x-custom-HEADER")) + ";body=" + req.body +
                      ";target=" + req.target + ";remote=" + (req.remote_address.empty() ? "no" : "yes");
    Response r = Response::Text(201, out);
    r.headers["X-Reply"] = "yes";
    return r;
  });
  Reply r = Fetch("POST", Url(*server, "/echo?a=1&b=x%20y%26z&c=p+q&a=2"), "payload", {"X-Custom-Header: hi"});
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.body, "a=1;b=x y&z;c=p q;missing=-;hdr=hi;body=payload;target=/echo?a=1&b=x%20y%26z&c=p+q&a=2;remote=yes");
  EXPECT_EQ(r.headers["x-reply"], "yes");
}

TEST(HttpServerTest, MethodNotAllowedAndHead) {
  auto server = StartServer();
  server->Handle("GET", "/api/version", [](const Request&) { return Response::Json(200, "{\"version\":\"4\"}"); });
  server->Handle("POST", "/api/jobs/", [](const Request&) { return Response::Json(200, "{}"); });
  Reply r = Fetch("DELETE", Url(*server, "/api/version"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.body, "405: Method Not Allowed");
  EXPECT_EQ(r.headers["Allow"], "GET, HEAD");
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/")).status, 405);
  r = Fetch("HEAD", Url(*server, "/api/version"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(r.headers["Content-Length"], "15");
}

TEST(HttpServerTest, BodyLimit) {
  HttpServer::Options opts;
  opts.max_body_bytes = 1024;
  auto server = StartServer(opts);
  server->Handle("PUT", "/upload", [](const Request& req) {
    return Response::Text(200, std::to_string(req.body.size()));
  });
  Client client;
  Reply r = client.Fetch("PUT", Url(*server, "/upload"), std::string(1024, 'x'));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "1024");
  // Declared too large: refused before the body is read.
  r = client.Fetch("PUT", Url(*server, "/upload"), std::string(5000, 'x'));
  EXPECT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.body.find("413"), std::string::npos);
  // Chunked: the limit is found while reading.
  r = client.Fetch("PUT", Url(*server, "/upload"), std::string(5000, 'x'), {"Transfer-Encoding: chunked"});
  EXPECT_EQ(r.status, 413);
  // Without "Expect: 100-continue" the client sends everything at once; the
  // answer must still arrive (lingering close, no reset).
  std::string big(256 << 10, 'y');
  std::string raw = "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(big.size()) +
                    "\r\n\r\n" + big;
  std::string answer = RawExchange(server->port(), raw, 5000ms, /*half_close=*/true);
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer.substr(0, 200);
  // The server is fine afterwards.
  EXPECT_EQ(client.Fetch("PUT", Url(*server, "/upload"), "abc").body, "3");
}

TEST(HttpServerTest, ExpectContinueIsAnswered) {
  auto server = StartServer();
  server->Handle("PUT", "/api/packages/gcs/{name}", [](const Request& req) {
    return Response::Text(200, std::to_string(req.body.size()));
  });
  // curl sends "Expect: 100-continue" for large bodies.
  Reply r = Fetch("PUT", Url(*server, "/api/packages/gcs/_ray_pkg_abc.zip"), std::string(4 << 20, 'z'));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, std::to_string(4 << 20));
  // On the wire: the interim 100 comes before the client sends the body.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::string head = "PUT /api/packages/gcs/p.zip HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  std::string got;
  char buf[1024];
  pollfd p{fd, POLLIN, 0};
  while (got.find("\r\n\r\n") == std::string::npos && poll(&p, 1, 5000) > 0) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(got, "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(send(fd, "hello", 5, MSG_NOSIGNAL), 5);
  got.clear();
  while (got.find("\r\n\r\n5") == std::string::npos && poll(&p, 1, 5000) > 0) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
}

TEST(HttpServerTest, BearerTokenAuth) {
  HttpServer::Options opts;
  opts.bearer_token = "s3cret";
  opts.public_paths = {"/api/version", "/api/authentication_mode", "/static/*"};
  auto server = StartServer(opts);
  auto ok = [](const Request&) { return Response::Json(200, "{}"); };
  server->Handle("GET", "/api/version", ok);
  server->Handle("GET", "/api/jobs/", ok);
  server->Handle("GET", "/static/{path*}", ok);
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/version")).status, 200);
  EXPECT_EQ(Fetch("GET", Url(*server, "/static/js/app.js")).status, 200);
  Reply r = Fetch("GET", Url(*server, "/api/jobs/"));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body, "Unauthorized: missing or invalid bearer token");
  EXPECT_EQ(r.headers["Content-Type"], "text/plain; charset=utf-8");
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/"), "", {"Authorization: Bearer wrong"}).status, 401);
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/"), "", {"Authorization: s3cret"}).status, 401);
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/"), "", {"Authorization: Bearer s3cret"}).status, 200);
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/"), "", {"X-Ray-Authorization: Bearer s3cret"}).status, 200);
  // Unknown paths do not reveal themselves without a token.
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/nope")).status, 401);
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/nope"), "", {"Authorization: Bearer s3cret"}).status, 404);
  // An unauthenticated upload is refused without reading its body.
  EXPECT_EQ(Fetch("POST", Url(*server, "/api/jobs/"), std::string(2 << 20, 'b')).status, 401);
}

TEST(HttpServerTest, AuthDisabledAcceptsEverything) {
  auto server = StartServer();
  server->Handle("GET", "/api/jobs/", [](const Request&) { return Response::Json(200, "[]"); });
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/")).status, 200);
  EXPECT_EQ(Fetch("GET", Url(*server, "/api/jobs/"), "", {"Authorization: Bearer anything"}).status, 200);
}

TEST(HttpServerTest, AsyncHandlerAnswersFromAnotherThread) {
  auto server = StartServer();
  std::vector<std::thread> workers;
  std::mutex mu;
  server->HandleAsync("GET", "/slow/{ms}", [&](Request req, Responder respond) {
    EXPECT_TRUE(server->IsLoopThread());
    int ms = std::stoi(std::string(req.PathParam("ms")));
    std::lock_guard<std::mutex> lock(mu);
    workers.emplace_back([ms, respond = std::move(respond), path = req.path]() mutable {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      respond(Response::Text(200, "done " + path));
      respond(Response::Text(500, "ignored"));  // a second answer is ignored
    });
  });
  server->HandleAsync("GET", "/dropped", [](Request, Responder) {});  // never answers
  server->HandleAsync("GET", "/throws", [](Request, Responder) { throw std::runtime_error("boom"); });
  server->Handle("GET", "/sync-throws", [](const Request&) -> Response { throw std::runtime_error("boom"); });

  Client client;  // the same connection keeps working after each answer
  Reply r = client.Fetch("GET", Url(*server, "/slow/30"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "done /slow/30");
  r = client.Fetch("GET", Url(*server, "/dropped"));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(client.Fetch("GET", Url(*server, "/throws")).status, 500);
  EXPECT_EQ(client.Fetch("GET", Url(*server, "/sync-throws")).status, 500);
  EXPECT_EQ(client.Fetch("GET", Url(*server, "/slow/1")).body, "done /slow/1");

  // A parked request does not block other clients: the loop stays free.
  std::promise<Responder> parked;
  server->HandleAsync("GET", "/park", [&](Request, Responder respond) { parked.set_value(std::move(respond)); });
  auto waiting = std::async(std::launch::async, [&] { return Fetch("GET", Url(*server, "/park")); });
  Responder respond = parked.get_future().get();
  EXPECT_EQ(Fetch("GET", Url(*server, "/slow/0")).status, 200);
  EXPECT_EQ(waiting.wait_for(0ms), std::future_status::timeout);
  respond(Response::Text(202, "unparked"));
  Reply late = waiting.get();
  EXPECT_EQ(late.status, 202);
  EXPECT_EQ(late.body, "unparked");
  for (auto& t : workers) t.join();
}

TEST(HttpServerTest, ConcurrentClients) {
  auto server = StartServer();
  std::atomic<int> calls{0};
  server->Handle("GET", "/api/jobs/{id}", [&](const Request& req) {
    ++calls;
    return Response::Json(200, "{\"job_id\":\"" + std::string(req.PathParam("id")) + "\"}");
  });
  constexpr int kThreads = 8;
  constexpr int kRequests = 200;
  std::atomic<int> good{0};
  std::atomic<long> connections{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Client client;
      for (int i = 0; i < kRequests; ++i) {
        std::string id = std::to_string(t) + "_" + std::to_string(i);
        Reply r = client.Fetch("GET", Url(*server, "/api/jobs/" + id));
        if (r.status == 200 && r.body == "{\"job_id\":\"" + id + "\"}") ++good;
        connections += r.new_connections;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), kThreads * kRequests);
  EXPECT_EQ(calls.load(), kThreads * kRequests);
  EXPECT_EQ(connections.load(), kThreads);  // keep-alive: one connection per client
  uint64_t counted = 0;
  for (const auto& row : server->RouteCounts()) {
    if (row.method == "GET" && row.pattern == "/api/jobs/{id}" && row.status == 200) counted = row.count;
  }
  EXPECT_EQ(counted, static_cast<uint64_t>(kThreads * kRequests));
}

TEST(HttpServerTest, RouteCountsPerPatternAndStatus) {
  auto server = StartServer();
  server->Handle("GET", "/api/jobs/{id}", [](const Request& req) {
    return req.PathParam("id") == "missing" ? Response::Text(404, "Job missing does not exist")
                                            : Response::Json(200, "{}");
  });
  Fetch("GET", Url(*server, "/api/jobs/a"));
  Fetch("GET", Url(*server, "/api/jobs/b"));
  Fetch("GET", Url(*server, "/api/jobs/missing"));
  Fetch("GET", Url(*server, "/unknown"));
  Fetch("PATCH", Url(*server, "/api/jobs/a"));
  std::map<std::tuple<std::string, std::string, int>, uint64_t> rows;
  for (const auto& row : server->RouteCounts()) rows[{row.method, row.pattern, row.status}] = row.count;
  EXPECT_EQ((rows[{"GET", "/api/jobs/{id}", 200}]), 2u);
  EXPECT_EQ((rows[{"GET", "/api/jobs/{id}", 404}]), 1u);
  EXPECT_EQ((rows[{"GET", "", 404}]), 1u);
  EXPECT_EQ((rows[{"PATCH", "/api/jobs/{id}", 405}]), 1u);
}

TEST(HttpServerTest, MalformedRequestsDoNotKillTheServer) {
  HttpServer::Options opts;
  opts.max_header_bytes = 8 << 10;
  auto server = StartServer(opts);
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  int port = server->port();

  std::string garbage;
  for (int i = 0; i < 4096; ++i) garbage += static_cast<char>((i * 131 + 7) % 256);
  EXPECT_EQ(RawExchange(port, garbage).rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(RawExchange(port, "GARBAGE\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(RawExchange(port, "GET /ok HTTP/9.9\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(RawExchange(port, "GET http://x/ok HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(RawExchange(port, "POST /ok HTTP/1.1\r\nContent-Length: abc\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(RawExchange(port, "POST /ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").rfind("HTTP/1.1", 0),
            0u);
  // Header block over the limit: 431.
  std::string huge = "GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n";
  EXPECT_EQ(RawExchange(port, huge).rfind("HTTP/1.1 431", 0), 0u);
  // Truncated requests and abrupt closes: no answer needed, no crash.
  RawExchange(port, "GET /ok HTTP/1.1\r\nHost: x\r\n", 200ms, true);
  RawExchange(port, "POST /ok HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort", 200ms, true);
  RawExchange(port, "", 100ms, true);
  // Pipelined requests are answered in order on one connection.
  std::string two = RawExchange(port, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(two.find("HTTP/1.1 200"), 0u);
  EXPECT_NE(two.find("HTTP/1.1 200", 10), std::string::npos);
  // HTTP/1.0 without keep-alive is answered and closed.
  EXPECT_EQ(RawExchange(port, "GET /ok HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 200", 0), 0u);

  Reply r = Fetch("GET", Url(*server, "/ok"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");
}

TEST(HttpServerTest, FuzzedRequestsGetAnAnswerOrAClose) {
  HttpServer::Options opts;
  opts.max_header_bytes = 4 << 10;
  opts.max_body_bytes = 4 << 10;
  opts.header_timeout = 300ms;  // a truncated request is dropped quickly
  auto server = StartServer(opts);
  server->Handle("POST", "/api/jobs/", [](const Request& req) { return Response::Text(200, req.body); });
  const std::string valid =
      "POST /api/jobs/?a=%41 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 17\r\n\r\n{\"entrypoint\":\"1\"}";
  uint32_t seed = 12345;
  auto next = [&seed] {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 16) & 0x7fff;
  };
  int answered = 0;
  for (int i = 0; i < 150; ++i) {
    std::string req = valid;
    int edits = 1 + next() % 4;
    for (int e = 0; e < edits; ++e) {
      size_t pos = next() % req.size();
      switch (next() % 4) {
        case 0: req[pos] = static_cast<char>(next() % 256); break;          // flip a byte
        case 1: req.erase(pos, 1 + next() % 8); break;                     // drop bytes
        case 2: req.insert(pos, std::string(1 + next() % 3000, 'A')); break;  // bloat
        case 3: req.resize(pos); break;                                    // truncate
      }
      if (req.empty()) req = "\r\n";
    }
    std::string answer = RawExchange(server->port(), req, 2000ms, /*half_close=*/true);
    if (answer.rfind("HTTP/1.1 ", 0) == 0) ++answered;
  }
  EXPECT_GT(answered, 0);
  Reply r = Fetch("POST", Url(*server, "/api/jobs/"), "{}");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{}");
}

TEST(HttpServerTest, IdleConnectionsTimeOut) {
  HttpServer::Options opts;
  opts.idle_timeout = 200ms;
  opts.header_timeout = 200ms;  // a new connection's first header block
  auto server = StartServer(opts);
  auto start = std::chrono::steady_clock::now();
  // Half a request line, then silence: the server closes without an answer.
  std::string answer = RawExchange(server->port(), "GET /slowloris HTTP/1.1\r\nHost:", 3000ms);
  EXPECT_EQ(answer, "");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2000ms);
}

TEST(HttpServerTest, RoutesAddedAfterStartAndPost) {
  auto server = StartServer();
  EXPECT_EQ(Fetch("GET", Url(*server, "/late")).status, 404);
  server->Handle("GET", "/late", [](const Request&) { return Response::Text(200, "here"); });
  EXPECT_EQ(Fetch("GET", Url(*server, "/late")).body, "here");

  std::promise<bool> on_loop;
  server->Post([&] { on_loop.set_value(server->IsLoopThread()); });
  EXPECT_TRUE(on_loop.get_future().get());
  EXPECT_FALSE(server->IsLoopThread());
}

TEST(HttpServerTest, StopIsPromptWithOpenConnections) {
  auto server = StartServer();
  std::promise<Responder> parked;
  server->HandleAsync("GET", "/hang", [&](Request, Responder respond) { parked.set_value(std::move(respond)); });
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  // An idle keep-alive connection and a request waiting for its handler.
  Client idle;
  EXPECT_EQ(idle.Fetch("GET", Url(*server, "/ok")).status, 200);
  auto hanging = std::async(std::launch::async, [&] { return Fetch("GET", Url(*server, "/hang")); });
  Responder respond = parked.get_future().get();

  auto start = std::chrono::steady_clock::now();
  server->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);
  EXPECT_NE(hanging.get().status, 200);
  respond(Response::Text(200, "too late"));  // after Stop: a no-op
  server->Post([] { FAIL() << "ran after Stop"; });
  server->Stop();  // idempotent
  EXPECT_NE(Fetch("GET", Url(*server, "/ok")).code, CURLE_OK);
}

}  // namespace
}  // namespace cohort::net
