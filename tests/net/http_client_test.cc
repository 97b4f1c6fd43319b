// Tests of the outgoing HTTP client (include/cohort/net/http_client.h)
// against in-process cpp-httplib servers on loopback: methods and bodies,
// request and response headers, streaming uploads and downloads, receivers
// that stop early, cancellation, timeouts against a server that stalls,
// transport errors (refused, TLS against a plain server) and URL redaction.
#include "cohort/net/http_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace cohort::net {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// An httplib server on 127.0.0.1 (ephemeral port) in its own thread. Handlers
// that wait poll quit(), so the destructor never waits long for them.
class LocalServer {
 public:
  LocalServer() {
    // Every method's request echoed back as JSON.
    auto echo = [](const httplib::Request& req, httplib::Response& res) {
      json headers = json::object();
      for (const auto& [k, v] : req.headers) {
        std::string name = k;
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        headers[name] = v;
      }
      res.status = 200;
      res.set_header("X-Echo", "1");
      res.set_content(json{{"method", req.method}, {"body", req.body}, {"headers", headers}}.dump(),
                      "application/json");
    };
    server_.Get("/echo", echo);
    server_.Post("/echo", echo);
    server_.Put("/echo", echo);
    server_.Patch("/echo", echo);
    server_.Delete("/echo", echo);
  }
  ~LocalServer() {
    quit_ = true;
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  void Start() {
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 500 && !server_.is_running(); ++i) std::this_thread::sleep_for(2ms);
  }
  httplib::Server& server() { return server_; }
  bool quit() const { return quit_; }
  // Sleeps up to d, less when the server is going away.
  void Wait(std::chrono::milliseconds d) const {
    const auto until = Clock::now() + d;
    while (!quit_ && Clock::now() < until) std::this_thread::sleep_for(10ms);
  }
  std::string Url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> quit_{false};
};

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

// A loopback port nothing listens on.
int ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

json Echoed(const Result<HttpResponse>& r) {
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return json::object();
  EXPECT_EQ(r->status, 200) << r->body;
  return json::parse(r->body);
}

// --- methods, bodies, headers --------------------------------------------------

TEST(HttpClientTest, GetReturnsStatusBodyAndHeaders) {
  LocalServer s;
  s.server().Get("/hello", [](const httplib::Request&, httplib::Response& res) {
    res.status = 203;
    res.set_header("X-Multi", "one");
    res.set_header("X-Multi", "two");
    res.set_header("X-Spaced", "  padded value ");
    res.set_content("hello world", "text/plain");
  });
  s.Start();
  HttpRequest req;
  req.url = s.Url("/hello");
  auto r = SendHttp(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 203);
  EXPECT_EQ(r->body, "hello world");
  EXPECT_EQ(r->Header("content-type"), "text/plain");
  EXPECT_EQ(r->Header("content-length"), "11");
  EXPECT_EQ(r->Header("x-multi"), "one");  // the first of repeated headers
  int multi = 0;
  for (const auto& [k, v] : r->headers) multi += k == "x-multi";
  EXPECT_EQ(multi, 2);
  EXPECT_EQ(r->Header("x-spaced"), "padded value");
  EXPECT_EQ(r->Header("X-Multi"), "");  // names are lower case
  EXPECT_EQ(r->Header("absent"), "");
}

TEST(HttpClientTest, ErrorStatusesAreResponses) {
  LocalServer s;
  s.server().Get("/missing", [](const httplib::Request&, httplib::Response& res) {
    res.status = 404;
    res.set_content("no such thing", "text/plain");
  });
  s.server().Get("/broken", [](const httplib::Request&, httplib::Response& res) {
    res.status = 503;
    res.set_header("Retry-After", "7");
    res.set_content("later", "text/plain");
  });
  s.Start();
  HttpRequest req;
  req.url = s.Url("/missing");
  auto missing = SendHttp(req);
  ASSERT_TRUE(missing.ok()) << missing.status().ToString();
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->body, "no such thing");
  req.url = s.Url("/broken");
  auto broken = SendHttp(req);
  ASSERT_TRUE(broken.ok());
  EXPECT_EQ(broken->status, 503);
  EXPECT_EQ(broken->Header("retry-after"), "7");
}

TEST(HttpClientTest, RequestHeadersAreSentAsGivenWithoutCurlDefaults) {
  LocalServer s;
  s.Start();
  HttpRequest req;
  req.method = "POST";
  req.url = s.Url("/echo");
  req.headers = {{"Authorization", "Bearer tok"}, {"X-Custom", "a b c"}};
  const std::string big(200 * 1024, 'x');  // big enough for curl to want "Expect: 100-continue"
  req.body = big;
  req.user_agent = "cohort-test/1";
  json e = Echoed(SendHttp(req));
  EXPECT_EQ(e["method"], "POST");
  EXPECT_EQ(e["body"].get<std::string>().size(), big.size());
  EXPECT_EQ(e["headers"]["authorization"], "Bearer tok");
  EXPECT_EQ(e["headers"]["x-custom"], "a b c");
  EXPECT_EQ(e["headers"]["user-agent"], "cohort-test/1");
  EXPECT_FALSE(e["headers"].contains("content-type")) << e["headers"].dump();  // no form-urlencoded default
  EXPECT_FALSE(e["headers"].contains("expect")) << e["headers"].dump();

  HttpRequest plain;
  plain.url = s.Url("/echo");
  json p = Echoed(SendHttp(plain));
  EXPECT_FALSE(p["headers"].contains("user-agent")) << p["headers"].dump();
}

TEST(HttpClientTest, MethodsAndBodies) {
  LocalServer s;
  s.Start();
  for (const std::string method : {"POST", "PUT", "PATCH", "DELETE"}) {
    SCOPED_TRACE(method);
    HttpRequest req;
    req.method = method;
    req.url = s.Url("/echo");
    const std::string body = R"({"op":")" + method + R"("})";
    req.body = body;
    req.headers = {{"Content-Type", "application/json"}};
    json e = Echoed(SendHttp(req));
    EXPECT_EQ(e["method"], method);
    EXPECT_EQ(e["body"], body);
    EXPECT_EQ(e["headers"]["content-type"], "application/json");
    EXPECT_EQ(e["headers"]["content-length"], std::to_string(body.size()));
  }
  // POST/PUT/PATCH without a body still send one (Content-Length: 0).
  for (const std::string method : {"POST", "PUT", "PATCH"}) {
    SCOPED_TRACE(method);
    HttpRequest req;
    req.method = method;
    req.url = s.Url("/echo");
    json e = Echoed(SendHttp(req));
    EXPECT_EQ(e["method"], method);
    EXPECT_EQ(e["body"], "");
    EXPECT_EQ(e["headers"].value("content-length", "absent"), "0");
  }
  // GET and a DELETE without a body send none.
  for (const std::string method : {"GET", "DELETE"}) {
    SCOPED_TRACE(method);
    HttpRequest req;
    req.method = method;
    req.url = s.Url("/echo");
    json e = Echoed(SendHttp(req));
    EXPECT_EQ(e["method"], method);
    EXPECT_FALSE(e["headers"].contains("content-length")) << e["headers"].dump();
  }
  // HEAD: status and headers, no body.
  HttpRequest head;
  head.method = "HEAD";
  head.url = s.Url("/echo");
  auto h = SendHttp(head);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->Header("x-echo"), "1");
  EXPECT_EQ(h->body, "");
}

TEST(HttpClientTest, StreamingUploadFromACallback) {
  LocalServer s;
  s.Start();
  const std::string data = Pattern(3 * 1024 * 1024 + 17);
  size_t offset = 0;
  int calls = 0;
  HttpRequest req;
  req.method = "PUT";
  req.url = s.Url("/echo");
  req.headers = {{"Content-Type", "application/octet-stream"}};
  req.body_size = data.size();
  req.body_reader = [&](char* buf, size_t max) {
    ++calls;
    const size_t n = std::min(max, data.size() - offset);
    std::memcpy(buf, data.data() + offset, n);
    offset += n;
    return n;
  };
  json e = Echoed(SendHttp(req));
  EXPECT_EQ(e["method"], "PUT");
  EXPECT_EQ(e["headers"]["content-length"], std::to_string(data.size()));
  EXPECT_TRUE(e["body"].get<std::string>() == data);
  EXPECT_GT(calls, 1);  // streamed in pieces
}

// --- streaming downloads ----------------------------------------------------------

TEST(HttpClientTest, StreamingDownloadGoesToTheCallback) {
  LocalServer s;
  const std::string data = Pattern(5 * 1024 * 1024 + 3);
  s.server().Get("/blob", [&](const httplib::Request&, httplib::Response& res) {
    res.set_header("X-Object", "blob");
    res.set_content_provider(data.size(), "application/octet-stream",
                             [&](size_t offset, size_t length, httplib::DataSink& sink) {
                               sink.write(data.data() + offset, std::min<size_t>(length, 64 * 1024));
                               return true;
                             });
  });
  s.Start();
  std::string got;
  int pieces = 0, heads = 0;
  bool head_before_body = true;
  HttpRequest req;
  req.url = s.Url("/blob");
  req.on_response_headers = [&](const HttpResponse& head) {
    ++heads;
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.Header("x-object"), "blob");
    EXPECT_EQ(head.Header("content-length"), std::to_string(data.size()));
    return true;
  };
  req.on_body = [&](const char* p, size_t n) {
    if (heads == 0) head_before_body = false;
    ++pieces;
    got.append(p, n);
    return true;
  };
  auto r = SendHttp(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "");  // streamed, not collected
  EXPECT_EQ(heads, 1);
  EXPECT_TRUE(head_before_body);
  EXPECT_GT(pieces, 1);
  EXPECT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data);
}

TEST(HttpClientTest, ErrorBodiesAreCollectedNotStreamed) {
  LocalServer s;
  s.server().Get("/denied", [](const httplib::Request&, httplib::Response& res) {
    res.status = 403;
    res.set_content(R"({"error":"denied"})", "application/json");
  });
  s.Start();
  bool streamed = false;
  int heads = 0;
  HttpRequest req;
  req.url = s.Url("/denied");
  req.on_response_headers = [&](const HttpResponse& head) {
    ++heads;
    EXPECT_EQ(head.status, 403);
    return true;
  };
  req.on_body = [&](const char*, size_t) { return streamed = true; };
  auto r = SendHttp(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(r->body, R"({"error":"denied"})");
  EXPECT_FALSE(streamed);
  EXPECT_EQ(heads, 1);
}

// A chunked stream that never ends on its own (a Kubernetes watch, a log tail).
void ServeEndlessStream(LocalServer& s, const std::string& path) {
  s.server().Get(path, [&s](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("application/json", [&s](size_t, httplib::DataSink& sink) {
      if (s.quit() || !sink.is_writable()) return false;
      const std::string line = "{\"type\":\"MODIFIED\"}\n";
      if (!sink.write(line.data(), line.size())) return false;
      s.Wait(20ms);
      return true;
    });
  });
}

TEST(HttpClientTest, ReceiverStopsAStreamEarly) {
  LocalServer s;
  ServeEndlessStream(s, "/watch");
  s.Start();
  int lines = 0;
  HttpRequest req;
  req.url = s.Url("/watch?watch=1");
  req.on_body = [&](const char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) lines += p[i] == '\n';
    return lines < 3;
  };
  HttpTransportError error;
  const auto start = Clock::now();
  auto r = SendHttp(req, &error);
  ASSERT_FALSE(r.ok());
  EXPECT_LT(Clock::now() - start, 5s);
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().ToString();
  EXPECT_EQ(r.status().message(), "GET " + req.url + ": download aborted by the receiver");
  EXPECT_EQ(error.kind, HttpTransportError::Kind::kAborted);
  EXPECT_GE(lines, 3);
}

TEST(HttpClientTest, HeaderCallbackCanRefuseTheBody) {
  LocalServer s;
  ServeEndlessStream(s, "/watch");
  s.Start();
  bool body = false;
  HttpRequest req;
  req.url = s.Url("/watch");
  req.on_response_headers = [](const HttpResponse& head) { return head.status == 206; };
  req.on_body = [&](const char*, size_t) { return body = true; };
  HttpTransportError error;
  auto r = SendHttp(req, &error);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().ToString();
  EXPECT_EQ(error.kind, HttpTransportError::Kind::kAborted);
  EXPECT_FALSE(body);
}

TEST(HttpClientTest, CancelStopsASilentStream) {
  LocalServer s;
  s.server().Get("/silent", [&s](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("text/plain", [&s](size_t offset, httplib::DataSink& sink) {
      if (offset == 0) sink.write("x", 1);
      s.Wait(10s);
      return false;
    });
  });
  s.Start();
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(300ms);
    stop = true;
  });
  HttpRequest req;
  req.url = s.Url("/silent");
  req.on_body = [](const char*, size_t) { return true; };
  req.cancel = [&] { return stop.load(); };
  HttpTransportError error;
  const auto start = Clock::now();
  auto r = SendHttp(req, &error);
  const auto took = Clock::now() - start;
  stopper.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().ToString();
  EXPECT_EQ(r.status().message(), "GET " + req.url + ": cancelled");
  EXPECT_EQ(error.kind, HttpTransportError::Kind::kAborted);
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3s);
}

// --- timeouts and transport errors -------------------------------------------------

TEST(HttpClientTest, TotalTimeoutAgainstAServerThatNeverAnswers) {
  LocalServer s;
  s.server().Get("/stall", [&s](const httplib::Request&, httplib::Response& res) {
    s.Wait(10s);
    res.set_content("too late", "text/plain");
  });
  s.Start();
  HttpRequest req;
  req.url = s.Url("/stall");
  req.total_timeout = 400ms;
  HttpTransportError error;
  const auto start = Clock::now();
  auto r = SendHttp(req, &error);
  const auto took = Clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(error.kind, HttpTransportError::Kind::kTimeout);
  EXPECT_EQ(r.status().message(), "GET " + req.url + ": " + error.cause);
  EXPECT_NE(error.cause.find("Timeout was reached"), std::string::npos) << error.cause;
  EXPECT_GE(took, 350ms);
  EXPECT_LT(took, 3s);
}

TEST(HttpClientTest, StallTimeoutEndsAStreamThatGoesSilent) {
  LocalServer s;
  s.server().Get("/trickle", [&s](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("text/plain", [&s](size_t offset, httplib::DataSink& sink) {
      if (offset == 0) sink.write("1", 1);
      s.Wait(15s);  // then nothing
      return false;
    });
  });
  s.Start();
  std::string got;
  HttpRequest req;
  req.url = s.Url("/trickle");
  req.stall_timeout = 1000ms;
  req.on_body = [&](const char* p, size_t n) {
    got.append(p, n);
    return true;
  };
  HttpTransportError error;
  const auto start = Clock::now();
  auto r = SendHttp(req, &error);
  const auto took = Clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(error.kind, HttpTransportError::Kind::kTimeout);
  EXPECT_NE(error.cause.find("Timeout was reached"), std::string::npos) << error.cause;
  EXPECT_NE(error.cause.find("too slow"), std::string::npos) << error.cause;  // curl's detail
  EXPECT_EQ(got, "1");
  // curl averages the speed over a few seconds: the limit trips a little
  // after stall_timeout of silence.
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 10s);
}

TEST(HttpClientTest, ConnectionRefusedNamesTheCause) {
  const int port = ClosedPort();
  HttpRequest req;
  req.url = "http://127.0.0.1:" + std::to_string(port) + "/api/jobs/";
  HttpTransportError error;
  auto r = SendHttp(req, &error);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(error.kind, HttpTransportError::Kind::kConnect);
  const std::string& m = r.status().message();
  EXPECT_EQ(m.rfind("GET " + req.url + ": ", 0), 0u) << m;
  EXPECT_NE(m.find("Couldn't connect to server"), std::string::npos) << m;
  EXPECT_NE(m.find("Connection refused"), std::string::npos) << m;
  EXPECT_NE(m.find(std::to_string(port)), std::string::npos) << m;
}

TEST(HttpClientTest, TlsToAPlainServerIsATlsError) {
  LocalServer s;
  s.Start();
  HttpRequest req;
  req.url = s.Url("/echo");
  req.url.replace(0, 4, "https");
  req.tls.insecure_skip_verify = true;
  req.total_timeout = 5000ms;
  HttpTransportError error;
  auto r = SendHttp(req, &error);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(error.kind, HttpTransportError::Kind::kTls) << error.cause;
}

TEST(HttpClientTest, TlsOptionsAreIgnoredOverPlainHttp) {
  LocalServer s;
  s.Start();
  HttpRequest req;
  req.url = s.Url("/echo");
  req.tls.ca_file = "/nonexistent/ca.crt";
  req.tls.ca_pem = "-----BEGIN CERTIFICATE-----\n";
  req.tls.client_cert_file = "/nonexistent/client.crt";
  req.tls.client_key_file = "/nonexistent/client.key";
  json e = Echoed(SendHttp(req));
  EXPECT_EQ(e["method"], "GET");
}

TEST(HttpClientTest, ErrorsDoNotLeakSecretsFromTheUrl) {
  const int port = ClosedPort();
  HttpRequest req;
  req.method = "PUT";
  req.url = "http://user:hunter2@127.0.0.1:" + std::to_string(port) +
            "/upload/o?uploadType=resumable&upload_id=SESSIONSECRET&access_token=TOKSECRET#frag";
  auto r = SendHttp(req);
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_EQ(m.find("hunter2"), std::string::npos) << m;
  EXPECT_EQ(m.find("SESSIONSECRET"), std::string::npos) << m;
  EXPECT_EQ(m.find("TOKSECRET"), std::string::npos) << m;
  EXPECT_EQ(m.rfind("PUT http://127.0.0.1:" + std::to_string(port) +
                        "/upload/o?uploadType=resumable&upload_id=REDACTED&access_token=REDACTED: ",
                    0),
            0u)
      << m;
}

// --- helpers ---------------------------------------------------------------------

TEST(HttpClientTest, RedactUrl) {
  EXPECT_EQ(RedactUrl("http://127.0.0.1:8265/api/jobs/?limit=5"), "http://127.0.0.1:8265/api/jobs/?limit=5");
  EXPECT_EQ(RedactUrl("https://u:p@host/x"), "https://host/x");
  EXPECT_EQ(RedactUrl("https://u:p@host"), "https://host");
  EXPECT_EQ(RedactUrl("https://host/a?X-Amz-Signature=abc&partNumber=2&x-amz-credential=AK%2F1"),
            "https://host/a?X-Amz-Signature=REDACTED&partNumber=2&x-amz-credential=REDACTED");
  EXPECT_EQ(RedactUrl("https://host/o?uploadType=resumable&upload_id=xyz"),
            "https://host/o?uploadType=resumable&upload_id=REDACTED");
  EXPECT_EQ(RedactUrl("https://host/o?token&key=1#x"), "https://host/o?token&key=REDACTED");
  EXPECT_EQ(RedactUrl("/api/v1/pods?watch=1"), "/api/v1/pods?watch=1");
}

TEST(HttpClientTest, UrlEncode) {
  EXPECT_EQ(UrlEncode("a-b_c.d~e"), "a-b_c.d~e");
  EXPECT_EQ(UrlEncode("dir/file name+1"), "dir%2Ffile%20name%2B1");
  EXPECT_EQ(UrlEncode("app=cohort,tier!=x"), "app%3Dcohort%2Ctier%21%3Dx");
  EXPECT_EQ(UrlEncode("\xff"), "%FF");
}

}  // namespace
}  // namespace cohort::net
