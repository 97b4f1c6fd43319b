// fuzz_http_request: HTTP/1.1 request framing as HttpServer parses it
// (src/net/http/http_session.cc), then the request-line helpers of the
// router (src/net/http/router.h, a private header: -I src/net).
//
// Input: the bytes a client sends on one connection (any number of
// pipelined requests), then one trailing byte that chooses how the bytes
// arrive: 0 = everything in one read, n = at most n bytes per read (so the
// parser sees the input split at arbitrary points, as from a slow socket).
//
// Per request the target does what HttpSession::ReadHeader/OnHeader/
// ReadBody do, with the same Beast calls and limits:
//   request_parser<string_body>, header_limit(max_header_bytes = 64 KiB),
//   body_limit(unlimited) for async_read_header, then — unless the
//   Content-Length is over max_body_bytes (100 MiB) — body_limit(100 MiB)
//   and async_read for the body; keep-alive loops to the next request.
// On each header it builds the Request the handlers get (header map with
// repeated names joined, SplitTarget, PercentDecode, ParseQuery), matches the
// head's route table (Router::Match with the head's and dashboard's patterns,
// upgrade or not), and runs the auth helpers (IsPublicPath, HasBearerToken,
// HasTokenCookie) with the head's options. Properties checked: matched path
// parameters are non-empty for {name} segments, a 405 lists methods,
// ConstantTimeEquals agrees with ==, PercentDecode never grows the text.
//
// Not reached: the socket/timer plumbing of HttpSession itself (Reply,
// lingering close, Expect: 100-continue) — it needs a real socket.
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "http/router.h"

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using namespace cohort::net;
using namespace cohort::net::internal;

// HttpServer::Options defaults (include/cohort/net/http_server.h), as the head uses them.
constexpr size_t kMaxHeaderBytes = size_t{64} << 10;
constexpr size_t kMaxBodyBytes = size_t{100} << 20;
const char kToken[] = "s3cr3t-token";
const char kTokenCookie[] = "cohort_token";  // dashboard::kTokenCookie

const std::vector<std::string>& PublicPaths() {
  // head_server.cc + dashboard::kPublicPaths.
  static const std::vector<std::string> paths = {"/api/version", "/api/authentication_mode", "/api/health",
                                                 "/metrics", "/", "/static/*"};
  return paths;
}

// The route table of the head (src/head/head_server.cc) and the dashboard
// (src/dashboard/dashboard.cc), with handlers that are never called.
const Router& HeadRouter() {
  static Router* router = [] {
    auto* r = new Router;
    auto add = [r](RouteKind kind, const char* method, const char* pattern) {
      auto route = std::make_shared<Route>();
      route->kind = kind;
      route->method = method;
      route->pattern = pattern;
      r->Add(route);
    };
    for (const char* p : {"/api/version", "/api/authentication_mode", "/api/health", "/api/jobs/", "/api/jobs/{id}",
                          "/api/jobs/{id}/logs", "/api/jobs/{id}/metrics", "/api/cluster/status", "/metrics",
                          "/api/events", "/api/packages/{protocol}/{name}", "/", "/static/{name}"}) {
      add(RouteKind::kSync, "GET", p);
    }
    add(RouteKind::kSync, "POST", "/api/jobs/");
    add(RouteKind::kSync, "DELETE", "/api/jobs/{id}");
    add(RouteKind::kSync, "POST", "/api/jobs/{id}/stop");
    add(RouteKind::kAsync, "PUT", "/api/packages/{protocol}/{name}");
    add(RouteKind::kSync, "POST", "/api/authenticate");
    add(RouteKind::kSync, "DELETE", "/api/authenticate");
    add(RouteKind::kWebSocket, "GET", "/api/jobs/{id}/logs/tail");
    add(RouteKind::kSync, "GET", "/files/{path*}");  // a rest parameter, as other servers register
    return r;
  }();
  return *router;
}

// What OnHeader decides after a header.
enum class Next {
  kClose,     // answered (400/401/404/405/413) and closing, or upgraded to a WebSocket
  kAnswered,  // answered without reading a body; keep-alive goes on
  kReadBody,  // read the body, dispatch, keep-alive goes on
};

// What OnHeader does with a parsed header (http_session.cc, in its order).
Next OnHeader(const http::request_parser<http::string_body>& parser) {
  const auto& req = parser.get();
  const bool body_unread = !parser.is_done();
  Request request;
  request.method = std::string(req.method_string());
  request.target = std::string(req.target());
  for (const auto& field : req) {
    auto [it, inserted] = request.headers.emplace(std::string(field.name_string()), std::string(field.value()));
    if (!inserted) it->second += ", " + std::string(field.value());
  }
  if (request.target.empty() || request.target.front() != '/') return Next::kClose;  // 400

  std::string_view raw_path, raw_query;
  SplitTarget(request.target, &raw_path, &raw_query);
  FUZZ_CHECK(raw_path.size() + raw_query.size() <= request.target.size(), "SplitTarget grew the target");
  request.path = PercentDecode(raw_path, /*plus_is_space=*/false);
  FUZZ_CHECK(request.path.size() <= raw_path.size(), "PercentDecode grew the path");
  request.query = ParseQuery(raw_query);
  for (const auto& [k, v] : request.query) {
    FUZZ_CHECK(k.size() + v.size() <= raw_query.size(), "ParseQuery produced more text than it read");
  }
  const bool upgrade = websocket::is_upgrade(req);
  RouteMatch match = HeadRouter().Match(request.method, raw_path, upgrade);
  if (match.route) {
    for (const PatternSegment& seg : match.route->segments) {
      if (seg.type == PatternSegment::Type::kParam) {
        auto it = match.params.find(seg.text);
        FUZZ_CHECK(it != match.params.end() && !it->second.empty(),
                   "empty {" + seg.text + "} in a match of " + match.route->pattern);
      }
    }
    FUZZ_CHECK(match.pattern == match.route->pattern, "pattern differs from the matched route's");
  } else if (!match.pattern.empty()) {
    FUZZ_CHECK(!match.allowed.empty(), "a path match without a method list (405 without Allow)");
  }
  (void)MethodLabel(request.method);

  auto auth = request.headers.find(std::string_view("Authorization"));
  if (auth != request.headers.end()) {
    std::string expected = std::string("Bearer ") + kToken;
    FUZZ_CHECK(ConstantTimeEquals(auth->second, expected) == (auth->second == expected),
               "ConstantTimeEquals disagrees with ==");
  }
  if (!IsPublicPath(PublicPaths(), raw_path) && !HasBearerToken(request.headers, kToken) &&
      !HasTokenCookie(request.headers, kTokenCookie, kToken)) {
    return body_unread ? Next::kClose : Next::kAnswered;  // 401
  }
  if (auto length = parser.content_length(); length && *length > kMaxBodyBytes) return Next::kClose;  // 413
  if (!match.route) return body_unread ? Next::kClose : Next::kAnswered;  // 404 / 405
  if (match.route->kind == RouteKind::kWebSocket && upgrade) return Next::kClose;  // 400, or the upgrade
  return body_unread ? Next::kReadBody : Next::kAnswered;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t read_size = data[size - 1];
  std::string_view wire(reinterpret_cast<const char*>(data), size - 1);

  boost::asio::io_context ioc;
  beast::test::stream stream(ioc, beast::string_view(wire.data(), wire.size()));
  if (read_size != 0) stream.read_size(read_size);
  stream.close_remote();  // the client half-closes after its bytes: reads end with EOF
  beast::flat_buffer buffer;

  for (int requests = 0; requests < 64; ++requests) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(kMaxHeaderBytes));
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    beast::error_code ec;
    http::async_read_header(stream, buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
    ioc.run();
    ioc.restart();
    if (ec) break;  // 400 / 431 / the client went away: the connection ends
    Next next = OnHeader(parser);
    if (next == Next::kClose) break;
    if (next == Next::kReadBody) {
      parser.body_limit(kMaxBodyBytes);
      http::async_read(stream, buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
      ioc.run();
      ioc.restart();
      if (ec) break;  // 413 / 400 / gone
      const auto& body = parser.get().body();
      if (auto length = parser.content_length()) {
        FUZZ_CHECK(body.size() == *length, "body size differs from Content-Length");
      }
    }
    if (!parser.get().keep_alive()) break;
  }
  return 0;
}
