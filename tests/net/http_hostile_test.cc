// HttpServer against hostile clients (include/cohort/net/http_server.h,
// "Behaviour on the wire"): bodies refused before they are read, oversized
// headers, slow clients, connection caps, oversized WebSocket messages and
// odd bytes. Real sockets on loopback; extra client addresses come from
// 127.0.0.0/8 (every address there is local on Linux). Every server binds an
// ephemeral port and states the limits it tests.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cohort/net/http_server.h"
#include "cohort/net/ws_client.h"
#include "http/router.h"

namespace cohort::net {
namespace {

using namespace std::chrono_literals;
using namespace std::string_literals;
using Clock = std::chrono::steady_clock;

// --- clients ---------------------------------------------------------------

// One raw TCP connection to the server, from `from` (a loopback address).
class RawConn {
 public:
  RawConn(int port, const char* from = "127.0.0.1") {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return;
    sockaddr_in local{};
    local.sin_family = AF_INET;
    inet_pton(AF_INET, from, &local.sin_addr);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
        connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawConn() { Close(); }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  bool ok() const { return fd_ >= 0; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }

  // False once the server has closed or reset the connection.
  bool Send(std::string_view bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads until `until` has arrived, the server closes, or `wait` passes.
  // Sets *closed when the server closed (EOF or reset).
  std::string Read(std::chrono::milliseconds wait, std::string_view until = {}, bool* closed = nullptr) {
    std::string out;
    if (closed) *closed = false;
    auto deadline = Clock::now() + wait;
    char buf[4096];
    while (until.empty() || out.find(until) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd_, POLLIN, 0};
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) break;
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        if (closed) *closed = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  // Reads until the server closes; true if it did within `wait`.
  bool WaitClosed(std::chrono::milliseconds wait, std::string* got = nullptr) {
    bool closed = false;
    std::string out = Read(wait, {}, &closed);
    if (got) *got = std::move(out);
    return closed;
  }

 private:
  int fd_ = -1;
};

// One complete exchange on a fresh connection: the answer, up to the end of
// a Content-Length body (or the server's close).
std::string Exchange(int port, const std::string& request, const char* from = "127.0.0.1",
                     std::chrono::milliseconds wait = 5000ms) {
  RawConn c(port, from);
  if (!c.ok()) return "<connect failed>";
  c.Send(request);
  bool closed = false;
  std::string out = c.Read(wait, "\r\n\r\n", &closed);
  size_t end = out.find("\r\n\r\n");
  if (end == std::string::npos) return out;
  size_t cl = out.find("Content-Length: ");
  size_t length = cl == std::string::npos || cl > end ? 0 : std::stoul(out.substr(cl + 16));
  while (!closed && out.size() < end + 4 + length) {
    std::string more = c.Read(wait, {}, &closed);
    if (more.empty()) break;
    out += more;
  }
  return out;
}

std::string Get(int port, const std::string& path, const char* from = "127.0.0.1", const std::string& extra = "") {
  return Exchange(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + extra + "Connection: close\r\n\r\n", from);
}

bool StartsWith(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

std::string BodyOf(const std::string& answer) {
  size_t end = answer.find("\r\n\r\n");
  return end == std::string::npos ? "" : answer.substr(end + 4);
}

std::unique_ptr<HttpServer> StartServer(HttpServer::Options opts) {
  opts.host = "127.0.0.1";
  opts.port = 0;
  auto server = HttpServer::Start(std::move(opts));
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return std::move(server).value();
}

std::string WsUrl(const HttpServer& s, const std::string& path) {
  return "ws://127.0.0.1:" + std::to_string(s.port()) + path;
}

// --- 1. body limits before authentication ------------------------------------

TEST(HttpHostileTest, UnauthenticatedRequestIsRefusedBeforeItsBody) {
  HttpServer::Options opts;
  opts.bearer_token = "s3cret";
  auto server = StartServer(opts);
  std::atomic<int> calls{0};
  server->Handle("POST", "/api/jobs/", [&](const Request&) {
    ++calls;
    return Response::Json(200, "{}");
  });
  server->Handle("GET", "/api/jobs/", [&](const Request&) { return Response::Json(200, "[]"); });

  // A 50 MB body is announced but not sent: the 401 comes on the header alone,
  // and the server closes the connection after it.
  RawConn c(server->port());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c.Send("POST /api/jobs/ HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n"));
  std::string answer = c.Read(3000ms, "Unauthorized: missing or invalid bearer token");
  EXPECT_TRUE(StartsWith(answer, "HTTP/1.1 401")) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  // What the client still sends is discarded, and the server closes.
  c.Send(std::string(64 << 10, 'b'));
  c.ShutdownWrite();
  EXPECT_TRUE(c.WaitClosed(5000ms));
  EXPECT_EQ(calls.load(), 0);

  // A 401 without a body also ends the connection.
  RawConn k(server->port());
  ASSERT_TRUE(k.Send("GET /api/jobs/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n"));
  std::string got;
  EXPECT_TRUE(k.WaitClosed(5000ms, &got));
  EXPECT_TRUE(StartsWith(got, "HTTP/1.1 401")) << got;

  // With the token the same server reads bodies.
  std::string ok = Exchange(server->port(),
                            "POST /api/jobs/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                            "Content-Length: 2\r\nConnection: close\r\n\r\n{}");
  EXPECT_TRUE(StartsWith(ok, "HTTP/1.1 200")) << ok;
  EXPECT_EQ(calls.load(), 1);
}

TEST(HttpHostileTest, DeclaredBodyOverTheLimitIs413BeforeTheBody) {
  HttpServer::Options opts;
  opts.bearer_token = "s3cret";
  opts.max_body_bytes = 4096;
  auto server = StartServer(opts);
  std::atomic<int> calls{0};
  server->Handle("PUT", "/upload", [&](const Request&) {
    ++calls;
    return Response::Text(200, "stored");
  });
  RawConn c(server->port());
  ASSERT_TRUE(c.Send("PUT /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 4097\r\n\r\n"));
  std::string answer = c.Read(3000ms, "bytes");
  EXPECT_TRUE(StartsWith(answer, "HTTP/1.1 413")) << answer;
  EXPECT_NE(answer.find("the body exceeds 4096 bytes"), std::string::npos) << answer;
  c.ShutdownWrite();
  EXPECT_TRUE(c.WaitClosed(5000ms));
  EXPECT_EQ(calls.load(), 0);
}

TEST(HttpHostileTest, PublicPathsHaveTheirOwnSmallBodyLimit) {
  HttpServer::Options opts;
  opts.bearer_token = "s3cret";
  opts.public_paths = {"/api/public", "/open/*"};
  opts.max_public_body_bytes = 1024;
  auto server = StartServer(opts);
  auto size = [](const Request& req) { return Response::Text(200, std::to_string(req.body.size())); };
  server->Handle("POST", "/api/public", size);
  server->Handle("POST", "/open/{rest*}", size);
  server->Handle("POST", "/api/private", size);
  int port = server->port();
  auto post = [&](const std::string& path, size_t n, const std::string& extra = "") {
    return Exchange(port, "POST " + path + " HTTP/1.1\r\nHost: x\r\n" + extra + "Content-Length: " +
                              std::to_string(n) + "\r\nConnection: close\r\n\r\n" + std::string(n, 'p'));
  };
  EXPECT_EQ(BodyOf(post("/api/public", 1024)), "1024");
  EXPECT_TRUE(StartsWith(post("/api/public", 1025), "HTTP/1.1 413"));
  EXPECT_TRUE(StartsWith(post("/open/x/y", 1025), "HTTP/1.1 413"));
  // The path decides, not the caller: the admin token does not lift it.
  EXPECT_TRUE(StartsWith(post("/api/public", 1025, "Authorization: Bearer s3cret\r\n"), "HTTP/1.1 413"));
  // Announced but not sent: refused on the header.
  RawConn c(port);
  ASSERT_TRUE(c.Send("POST /api/public HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"));
  EXPECT_TRUE(StartsWith(c.Read(3000ms, "bytes"), "HTTP/1.1 413"));
  // Chunked: cut off when it crosses the limit.
  std::string chunked = "POST /api/public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  for (int i = 0; i < 5; ++i) chunked += "200\r\n" + std::string(512, 'c') + "\r\n";
  chunked += "0\r\n\r\n";
  EXPECT_TRUE(StartsWith(Exchange(port, chunked), "HTTP/1.1 413"));
  // Non-public paths keep max_body_bytes.
  EXPECT_EQ(BodyOf(post("/api/private", 100000, "Authorization: Bearer s3cret\r\n")), "100000");
}

// --- 2. oversized headers ------------------------------------------------------

TEST(HttpHostileTest, OversizedHeaderBlocksAre431) {
  HttpServer::Options opts;
  opts.max_header_bytes = 8 << 10;
  auto server = StartServer(opts);
  server->Handle("GET", "/ok", [](const Request& req) { return Response::Text(200, std::to_string(req.headers.size())); });
  int port = server->port();

  // One huge header.
  std::string one = "GET /ok HTTP/1.1\r\nHost: x\r\nX-Huge: " + std::string(9 << 10, 'h') + "\r\n\r\n";
  std::string answer = Exchange(port, one);
  EXPECT_TRUE(StartsWith(answer, "HTTP/1.1 431")) << answer.substr(0, 100);
  EXPECT_EQ(BodyOf(answer), "431: Request Header Fields Too Large");
  // Many small headers adding up past the limit.
  std::string many = "GET /ok HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 2000; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
  many += "\r\n";
  EXPECT_TRUE(StartsWith(Exchange(port, many), "HTTP/1.1 431"));
  // The same name repeated (joined by the server) is bounded the same way.
  std::string repeated = "GET /ok HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 2000; ++i) repeated += "X-Same: v\r\n";
  repeated += "\r\n";
  EXPECT_TRUE(StartsWith(Exchange(port, repeated), "HTTP/1.1 431"));
  // A huge request line.
  EXPECT_TRUE(StartsWith(Exchange(port, "GET /ok?" + std::string(9 << 10, 'q') + " HTTP/1.1\r\nHost: x\r\n\r\n"),
                         "HTTP/1.1 431"));
  // Many headers within the limit are fine.
  std::string fits = "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
  for (int i = 0; i < 300; ++i) fits += "X-H" + std::to_string(i) + ": v\r\n";
  fits += "\r\n";
  answer = Exchange(port, fits);
  EXPECT_TRUE(StartsWith(answer, "HTTP/1.1 200")) << answer.substr(0, 100);
  EXPECT_EQ(BodyOf(answer), "302");
}

// --- 3. slow clients -----------------------------------------------------------

TEST(HttpHostileTest, TricklingHeadersAreCutOffAtHeaderTimeout) {
  HttpServer::Options opts;
  opts.header_timeout = 600ms;
  opts.idle_timeout = 30s;
  auto server = StartServer(opts);
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  int port = server->port();

  // Slowloris: a header byte every 50 ms, for ever.
  RawConn slow(port);
  ASSERT_TRUE(slow.ok());
  auto start = Clock::now();
  std::atomic<bool> stop{false};
  std::thread trickler([&] {
    std::string bytes = "GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(10000, 's');
    for (char c : bytes) {
      if (stop || !slow.Send(std::string_view(&c, 1))) return;
      std::this_thread::sleep_for(50ms);
    }
  });
  // Meanwhile other clients are served.
  EXPECT_EQ(BodyOf(Get(port, "/ok")), "ok");
  std::string got;
  EXPECT_TRUE(slow.WaitClosed(5000ms, &got));
  auto took = Clock::now() - start;
  stop = true;
  trickler.join();
  EXPECT_EQ(got, "");  // no answer: the deadline just closes
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 3000ms);

  // A connection that sends nothing at all is closed at the same deadline.
  RawConn silent(port);
  start = Clock::now();
  EXPECT_TRUE(silent.WaitClosed(5000ms));
  EXPECT_LT(Clock::now() - start, 3000ms);
  EXPECT_EQ(BodyOf(Get(port, "/ok")), "ok");
}

TEST(HttpHostileTest, KeepAliveWaitsIdleTimeoutThenHeaderTimeoutApplies) {
  HttpServer::Options opts;
  opts.header_timeout = 600ms;
  opts.idle_timeout = 3000ms;
  auto server = StartServer(opts);
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  RawConn c(server->port());
  const std::string request = "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(c.Send(request));
  EXPECT_TRUE(StartsWith(c.Read(3000ms, "\r\n\r\nok"), "HTTP/1.1 200"));
  // Idle longer than header_timeout but within idle_timeout: still open.
  std::this_thread::sleep_for(1000ms);
  ASSERT_TRUE(c.Send(request));
  EXPECT_TRUE(StartsWith(c.Read(3000ms, "\r\n\r\nok"), "HTTP/1.1 200"));
  // A request that starts late in the idle wait and does not finish: it gets
  // header_timeout from its first byte (the idle wait would end in 1 s).
  std::this_thread::sleep_for(2000ms);
  ASSERT_TRUE(c.Send("GET /ok HTTP/1.1\r\n"));
  auto start = Clock::now();
  EXPECT_TRUE(c.WaitClosed(5000ms));
  auto took = Clock::now() - start;
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 2500ms);

  // Silence after a request: closed at idle_timeout.
  RawConn idle(server->port());
  ASSERT_TRUE(idle.Send(request));
  EXPECT_TRUE(StartsWith(idle.Read(3000ms, "\r\n\r\nok"), "HTTP/1.1 200"));
  start = Clock::now();
  EXPECT_TRUE(idle.WaitClosed(5000ms));
  took = Clock::now() - start;
  EXPECT_GE(took, 2700ms);
  EXPECT_LT(took, 5000ms);
}

TEST(HttpHostileTest, TricklingBodyIsCutOffAtBodyTimeout) {
  HttpServer::Options opts;
  opts.body_timeout = 600ms;
  auto server = StartServer(opts);
  std::atomic<int> calls{0};
  server->Handle("POST", "/in", [&](const Request& req) {
    ++calls;
    return Response::Text(200, std::to_string(req.body.size()));
  });
  int port = server->port();
  RawConn slow(port);
  ASSERT_TRUE(slow.Send("POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"));
  auto start = Clock::now();
  std::atomic<bool> stop{false};
  std::thread trickler([&] {
    for (int i = 0; i < 1000 && !stop; ++i) {
      if (!slow.Send("b")) return;
      std::this_thread::sleep_for(50ms);
    }
  });
  std::string got;
  EXPECT_TRUE(slow.WaitClosed(5000ms, &got));
  auto took = Clock::now() - start;
  stop = true;
  trickler.join();
  EXPECT_EQ(got, "");
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 3000ms);
  EXPECT_EQ(calls.load(), 0);
  // A body that arrives in time is served.
  std::string ok = Exchange(port, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
  EXPECT_EQ(BodyOf(ok), "3");
}

// --- 4. connection caps --------------------------------------------------------

const std::string kTooMany = "503: Service Unavailable: too many connections";

// True once a fresh connection from `from` is served (the server notices
// closed connections asynchronously).
bool ServedWithin(int port, const char* from, std::chrono::milliseconds wait) {
  auto deadline = Clock::now() + wait;
  while (Clock::now() < deadline) {
    if (StartsWith(Get(port, "/ok", from), "HTTP/1.1 200")) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

TEST(HttpHostileTest, PerClientConnectionCap) {
  HttpServer::Options opts;
  opts.max_connections_per_client = 8;
  auto server = StartServer(opts);
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  int port = server->port();

  // Accepts are handled in order, so the first 8 are counted before the 9th.
  std::vector<std::unique_ptr<RawConn>> held;
  for (int i = 0; i < 8; ++i) {
    held.push_back(std::make_unique<RawConn>(port));
    ASSERT_TRUE(held.back()->ok());
  }
  RawConn over(port);
  std::string got;
  EXPECT_TRUE(over.WaitClosed(3000ms, &got));
  EXPECT_TRUE(StartsWith(got, "HTTP/1.1 503")) << got;
  EXPECT_EQ(BodyOf(got), kTooMany);
  EXPECT_NE(got.find("Connection: close"), std::string::npos);
  // Another client is not affected.
  EXPECT_EQ(BodyOf(Get(port, "/ok", "127.0.0.2")), "ok");
  // One held connection is still served.
  ASSERT_TRUE(held[0]->Send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(StartsWith(held[0]->Read(3000ms, "\r\n\r\nok"), "HTTP/1.1 200"));
  // Closing some frees their slots.
  held[1]->Close();
  held[2]->Close();
  EXPECT_TRUE(ServedWithin(port, "127.0.0.1", 3000ms));
}

TEST(HttpHostileTest, WebSocketsCountTowardsTheCaps) {
  HttpServer::Options opts;
  opts.max_connections_per_client = 3;
  auto server = StartServer(opts);
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  server->HandleWebSocket("/ws", nullptr, [](std::shared_ptr<WebSocketSession>) {});
  int port = server->port();
  auto a = WebSocketClient::Connect(WsUrl(*server, "/ws"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = WebSocketClient::Connect(WsUrl(*server, "/ws"));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  RawConn third(port);
  ASSERT_TRUE(third.ok());
  RawConn fourth(port);
  std::string got;
  EXPECT_TRUE(fourth.WaitClosed(3000ms, &got));
  EXPECT_TRUE(StartsWith(got, "HTTP/1.1 503")) << got;
  auto c = WebSocketClient::Connect(WsUrl(*server, "/ws"));
  EXPECT_FALSE(c.ok());
  EXPECT_TRUE((*a)->Close().ok());
  EXPECT_TRUE(ServedWithin(port, "127.0.0.1", 3000ms));
}

TEST(HttpHostileTest, TotalConnectionCap) {
  HttpServer::Options opts;
  opts.max_connections = 12;
  opts.max_connections_per_client = 6;
  auto server = StartServer(opts);
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  int port = server->port();
  std::vector<std::unique_ptr<RawConn>> held;
  for (const char* from : {"127.0.0.2", "127.0.0.3"}) {
    for (int i = 0; i < 6; ++i) {
      held.push_back(std::make_unique<RawConn>(port, from));
      ASSERT_TRUE(held.back()->ok());
    }
  }
  std::string answer = Get(port, "/ok", "127.0.0.4");
  EXPECT_TRUE(StartsWith(answer, "HTTP/1.1 503")) << answer;
  EXPECT_EQ(BodyOf(answer), kTooMany);
  held.back()->Close();
  EXPECT_TRUE(ServedWithin(port, "127.0.0.4", 3000ms));
}

TEST(HttpHostileTest, ThousandsOfIdleConnectionsDoNotStarveOthers) {
  HttpServer::Options opts;
  opts.max_connections_per_client = 32;
  opts.max_connections = 128;
  auto server = StartServer(opts);
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  int port = server->port();

  // The test process holds the client and the server sockets.
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 16384);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  int flood = static_cast<int>(std::min<rlim_t>(3000, limit.rlim_cur > 600 ? limit.rlim_cur - 500 : 100));

  testing::internal::CaptureStderr();
  std::vector<std::unique_ptr<RawConn>> held;
  held.reserve(static_cast<size_t>(flood));
  for (int i = 0; i < flood; ++i) held.push_back(std::make_unique<RawConn>(port, "127.0.0.2"));
  // Every connection of the flood has been accepted and judged once a
  // connection made after them has been.
  RawConn marker(port, "127.0.0.2");
  std::string marker_answer;
  EXPECT_TRUE(marker.WaitClosed(10000ms, &marker_answer));
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(StartsWith(marker_answer, "HTTP/1.1 503")) << marker_answer;

  auto start = Clock::now();
  std::string answer = Get(port, "/ok", "127.0.0.1");
  EXPECT_TRUE(StartsWith(answer, "HTTP/1.1 200")) << answer;
  EXPECT_LT(Clock::now() - start, 2000ms);
  // The flood is refused with one log line, not one per connection.
  size_t lines = 0;
  for (size_t at = log.find("refused a connection from 127.0.0.2"); at != std::string::npos;
       at = log.find("refused a connection from 127.0.0.2", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log.substr(0, 2000);
  // The held ones beyond the cap were closed by the server.
  int refused = 0;
  for (auto& c : held) {
    if (StartsWith(c->Read(50ms, kTooMany), "HTTP/1.1 503")) ++refused;
  }
  EXPECT_EQ(refused, flood - 32);
}

// --- 5. WebSocket message size -------------------------------------------------

TEST(HttpHostileTest, OversizedWebSocketMessageCloses1009) {
  HttpServer::Options opts;
  opts.max_ws_message_bytes = 1024;
  auto server = StartServer(opts);
  std::mutex mu;
  std::vector<std::shared_ptr<WebSocketSession>> sessions;
  std::promise<uint16_t> first_closed;
  server->HandleWebSocket("/ws/{name}", nullptr, [&](std::shared_ptr<WebSocketSession> s) {
    if (s->request().PathParam("name") == "big") {
      s->SetOnClose([&](uint16_t code) { first_closed.set_value(code); });
    }
    std::lock_guard<std::mutex> lock(mu);
    sessions.push_back(s);
  });
  auto big = WebSocketClient::Connect(WsUrl(*server, "/ws/big"));
  ASSERT_TRUE(big.ok()) << big.status().ToString();
  auto small = WebSocketClient::Connect(WsUrl(*server, "/ws/small"));
  ASSERT_TRUE(small.ok()) << small.status().ToString();

  EXPECT_TRUE((*small)->SendText(std::string(1024, 's')).ok());  // at the limit: fine
  EXPECT_TRUE((*big)->SendText(std::string(1025, 'b')).ok());
  auto msg = (*big)->ReadMessage(Deadline::After(5s));
  ASSERT_TRUE(msg.ok()) << msg.status().ToString();
  EXPECT_FALSE(msg->has_value());
  EXPECT_EQ((*big)->close_code(), std::optional<uint16_t>(1009));
  auto code = first_closed.get_future();
  ASSERT_EQ(code.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(code.get(), 1009);

  // The other session still works both ways.
  std::shared_ptr<WebSocketSession> other;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& s : sessions) {
      if (s->request().PathParam("name") == "small") other = s;
    }
  }
  ASSERT_TRUE(other);
  EXPECT_FALSE(other->closed());
  EXPECT_TRUE((*small)->SendText("more").ok());
  EXPECT_TRUE(other->SendText("still here"));
  auto reply = (*small)->ReadMessage(Deadline::After(5s));
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  ASSERT_TRUE(reply->has_value());
  EXPECT_EQ(**reply, "still here");
  EXPECT_TRUE((*small)->Close().ok());
}

// --- 7. odd bytes ----------------------------------------------------------------

TEST(HttpHostileTest, OddBytesInPathsQueriesAndHeadersAreHarmless) {
  HttpServer::Options opts;
  opts.bearer_token = "s3cret";
  opts.token_cookie = "cohort_token";
  opts.public_paths = {"/echo/*"};
  opts.authorize = [](std::string_view token, const Request&) -> std::optional<std::string> {
    if (token == "job") return "job:x";
    return std::nullopt;
  };
  auto server = StartServer(opts);
  server->Handle("GET", "/echo/{p}", [](const Request& req) {
    std::string out = std::string(req.PathParam("p"));
    for (const auto& [k, v] : req.query) out += "|" + k + "=" + v;
    Response r = Response::Text(200, out);
    r.headers["X-Echo"] = std::string(req.PathParam("p"));  // handler copying request bytes into a header
    r.headers["Bad Name\r\nX-Injected"] = "1";
    return r;
  });
  server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
  int port = server->port();

  std::string answer = Get(port, "/echo/%FF%FE%00%C0%AF?a=%FF&%00=%E2%82&%=%%&b=%zz%4");
  EXPECT_TRUE(StartsWith(answer, "HTTP/1.1 200")) << answer;
  EXPECT_EQ(BodyOf(answer), std::string("\xFF\xFE\0\xC0\xAF", 5) + "|" + std::string(1, '\0') + "=\xE2\x82|%=%%|a=\xFF|b=%zz%4");
  // Decoded CR LF in a path parameter cannot split the response.
  answer = Get(port, "/echo/a%0D%0AX-Injected:%20yes");
  EXPECT_TRUE(StartsWith(answer, "HTTP/1.1 200")) << answer;
  std::string head = answer.substr(0, answer.find("\r\n\r\n") + 2);
  EXPECT_EQ(head.find("\r\nX-Injected"), std::string::npos) << answer;
  EXPECT_EQ(head.find("Bad Name"), std::string::npos) << answer;
  EXPECT_NE(answer.find("X-Echo: a  X-Injected: yes\r\n"), std::string::npos) << answer;

  const std::vector<std::string> odd = {
      "GET /echo/\xFF\xFE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /echo/%\xC3\x28?\xF0\x28\x8C\x28=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /echo/a\0b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"s,
      "GET /ok HTTP/1.1\r\nHost: \xFF\xFE\xFD\r\nX-Odd: \x80\x81\xC0\xC1\xF5\xFF\r\nConnection: close\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\nConnection: close\r\n\r\n"s,
      "GET /ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xFF\xFE\x80\r\nConnection: close\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: x\r\nX-Ray-Authorization: Bearer \r\nConnection: close\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\nConnection: close\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: x\r\nCookie: cohort_token=\xFF; ;;=;cohort_token;==\xC0\r\n"
      "Origin: \xFF://\xFE\r\nConnection: close\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: x\r\n\xFF\xFE: v\r\nConnection: close\r\n\r\n",
      "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /echo/" + std::string(2000, '%') + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "\xFF\xFE\xFD\xFC /ok HTTP/1.1\r\n\r\n",
      "GET /ok?" + std::string(3000, '&') + "=" + std::string(1000, '=') +
          " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
  };
  for (const std::string& request : odd) {
    std::string got = Exchange(port, request);
    // Every one gets an HTTP answer (400, 401, 404, ...), none crashes the server.
    EXPECT_TRUE(StartsWith(got, "HTTP/1.1 ")) << got.substr(0, 200);
    EXPECT_FALSE(StartsWith(got, "HTTP/1.1 5")) << got.substr(0, 200);
  }
  // Unauthenticated odd requests on a protected path: 401, and with the
  // scoped token (through the hook) the server answers normally.
  EXPECT_TRUE(StartsWith(Get(port, "/ok", "127.0.0.1", "Authorization: Bearer \xFF\r\n"), "HTTP/1.1 401"));
  EXPECT_EQ(BodyOf(Get(port, "/ok", "127.0.0.1", "Authorization: Bearer job\r\nX-Odd: \xFF\r\n")), "ok");
  EXPECT_EQ(BodyOf(Get(port, "/ok", "127.0.0.1", "Authorization: Bearer s3cret\r\n")), "ok");
}

TEST(HttpHostileTest, PercentDecodeKeepsOddBytes) {
  EXPECT_EQ(internal::PercentDecode("%FF%fe%00", false), std::string("\xFF\xFE\0", 3));
  EXPECT_EQ(internal::PercentDecode("%", false), "%");
  EXPECT_EQ(internal::PercentDecode("%F", false), "%F");
  EXPECT_EQ(internal::PercentDecode("%%FF", false), "%\xFF");
  EXPECT_EQ(internal::PercentDecode("%G0%0G", false), "%G0%0G");
  EXPECT_EQ(internal::PercentDecode("\xFF+", true), "\xFF ");
  auto q = internal::ParseQuery("=&==&%FF=%&&%00");
  EXPECT_EQ(q.count(""), 2u);
  EXPECT_EQ(q.find("\xFF")->second, "%");
  EXPECT_EQ(q.count(std::string(1, '\0')), 1u);
}

}  // namespace
}  // namespace cohort::net
