// HttpServer: the HTTP/1.1 + WebSocket server behind the head's port 8265.
//
// Who uses it: the head (Ray-compatible Jobs REST API, /api/jobs/{id}/logs/tail
// log tailing), later the dashboard's static assets. Built on Boost.Beast, but
// no Boost type appears here (PImpl), so including this header is cheap.
//
// Threading (STYLE.md: "one event loop per server process owns its state"):
//   - One thread, the *loop thread*, runs an io_context. Every socket, every
//     handler call, every WebSocket OnOpen/on_close callback runs there.
//   - Handlers must not block. Slow work (disk, cloud) goes to a pool; the pool
//     answers through a Responder (HandleAsync), which may be called from any
//     thread: the server posts the answer back onto the loop.
//   - Handle/HandleAsync/HandleWebSocket may be called from any thread, before
//     or after Start (the route table has its own mutex). A route added after
//     Start serves the next request that arrives.
//   - Post() runs a function on the loop thread; loop() exposes the io_context
//     so a caller that includes Asio itself can put its own timers on it.
//   - Stop() (any thread except the loop thread; also run by the destructor)
//     closes the listener, drops idle/in-flight HTTP connections, sends every
//     open WebSocket a close frame with code 1001 ("going away"), waits at
//     most Options::shutdown_grace for the close handshakes, joins the loop.
//     After Stop, Post/Responder/SendText silently do nothing.
//
// Behaviour on the wire (see docs/api.md and ray-jobs-api.md §1):
//   - Paths are matched exactly; a trailing slash is significant. A pattern is
//     a sequence of '/'-separated segments: literals, "{name}" (one non-empty
//     segment, percent-decoded into path_params["name"]), or a final
//     "{name*}" (the rest of the path, possibly empty). Literal segments beat
//     parameters when several patterns match.
//   - No route for the path: 404 "404: Not Found". A route for the path but not
//     for the method: 405 "405: Method Not Allowed" with an Allow header. HEAD
//     is served by the GET handler without the body.
//   - Malformed request: 400; header block (request line + headers) over
//     max_header_bytes, be it one huge header or many small ones: 431. Both
//     close the connection. Error bodies are text/plain.
//   - Auth: when bearer_token is set, every path not listed in public_paths
//     needs a credential: "Authorization: Bearer <token>", Ray's proxy
//     fallback "X-Ray-Authorization: Bearer <token>", or (with
//     Options::token_cookie set) the cookie of that name holding the token,
//     unless the request's Origin differs from its Host (a browser WebSocket
//     cannot send headers). A public_paths entry is an exact raw path
//     ("/api/version") or a prefix ending in '*' ("/static/*"). The check runs
//     as soon as the header block is read, before any of the body is.
//   - Principal (Request::principal, what handlers authorize on), the first
//     rule that applies:
//       1. auth disabled (empty bearer_token): "admin";
//       2. a credential equal to bearer_token (constant-time): "admin";
//       3. a public path: "" (anonymous; authorize is not called);
//       4. Options::authorize set: each credential presented, in the order
//          listed under Auth, is offered to authorize(token, request) until
//          one returns a principal, which the request proceeds under;
//       5. else 401 "Unauthorized: missing or invalid bearer token", and the
//          connection is closed after the answer (the body is never read).
//     WebSocket upgrades go through the same rules before the upgrade; the
//     session's request() carries the principal.
//   - Body limits, checked after auth: max_body_bytes, or max_public_body_bytes
//     on a public path (whoever asks). A declared Content-Length over the
//     limit is answered 413 before the body is read; a chunked body is cut
//     off with 413 when it crosses the limit. The connection is closed.
//   - Deadlines: a new connection must deliver its first header block within
//     header_timeout of being accepted; a keep-alive connection waits
//     idle_timeout for the first byte of its next request, then allows
//     header_timeout for the rest of the header block; a body must arrive
//     within body_timeout of its header (also the bound on writing one
//     response). Past a deadline the connection is closed without an answer
//     (a trickling client is cut off however steadily it sends).
//   - Connection caps: at most max_connections_per_client open connections
//     per remote IP address and max_connections in total (HTTP and WebSocket
//     alike; 0 = no cap). A connection over a cap is sent 503 "503: Service
//     Unavailable: too many connections" and closed at once, unserved (best
//     effort: a client that sends a lot first may see a reset instead);
//     refusals are logged at most once a minute per client.
//   - Incoming WebSocket messages over max_ws_message_bytes close that session
//     with 1009 (message too big); other sessions are unaffected.
//   - WebSocket close deadline: once the server's close frame starts out
//     (Close() or Stop(), after the frames queued before it), the connection
//     ends within ws_close_timeout whatever the peer sends or leaves unsent;
//     past it the TCP connection is dropped and on_close gets 1006. (Without
//     it, Beast 1.74 can leave a session whose peer sent a bad frame as our
//     close started open until Stop(), counted against the caps.) The other
//     phases are bounded too: the upgrade by a 5 s handshake timeout, an open
//     session by idle_timeout (keep-alive pings at half of it).
//   - Bytes in paths, queries and headers are not validated as UTF-8:
//     percent-decoding yields arbitrary bytes (including "%00"), handed to
//     handlers as they are. In response headers set by handlers, names that
//     are not HTTP tokens are dropped (logged) and control characters in
//     values become spaces, so request bytes cannot split a response.
//   - Keep-alive (HTTP/1.1 default), "Expect: 100-continue" honoured.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cohort/common/status.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace cohort::net {

// Case-insensitive ordering for HTTP header names.
struct CaseInsensitiveLess {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const;
};
// Header name -> value. Repeated request headers are joined with ", ".
using HeaderMap = std::map<std::string, std::string, CaseInsensitiveLess>;

struct Request {
  std::string method;  // as sent, e.g. "GET"
  std::string target;  // raw request-target, e.g. "/api/jobs/?limit=2"
  std::string path;    // percent-decoded path without the query, e.g. "/api/jobs/"
  std::multimap<std::string, std::string> query;  // url-decoded ('+' = space), in order
  HeaderMap headers;
  std::string body;
  std::map<std::string, std::string> path_params;  // from "{name}" segments, decoded
  std::string remote_address;                      // "127.0.0.1:50412"
  // Who is asking: "admin" for the bearer token (or with auth disabled), ""
  // for an anonymous request on a public path, else what Options::authorize
  // returned for the presented token. See "Principal" above.
  std::string principal;

  // The header's value, or "" when absent.
  std::string_view Header(std::string_view name) const;
  bool HasHeader(std::string_view name) const;
  // The first value of query parameter `name`, if present.
  std::optional<std::string> Query(std::string_view name) const;
  // path_params[name], or "" when the pattern has no such parameter.
  std::string_view PathParam(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";  // empty: no Content-Type
  std::string body;
  HeaderMap headers;  // extra headers; Content-Length and Connection are set by the server

  static Response Text(int status, std::string body);
  static Response Json(int status, std::string body);  // application/json
};

namespace internal {
struct ResponderAccess;
}  // namespace internal

// The answer channel of an async handler. Move-only; call it exactly once,
// from any thread, now or later. Later calls are ignored. Destroying an
// unanswered Responder answers 500, so a lost callback never hangs a client.
// (To keep one in a copyable std::function, wrap it in a std::shared_ptr.)
class Responder {
 public:
  Responder(Responder&&) noexcept;
  Responder& operator=(Responder&&) noexcept;
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;
  ~Responder();

  void operator()(Response response);
  // True while this Responder can still answer.
  explicit operator bool() const;

 private:
  friend struct internal::ResponderAccess;
  struct State;
  explicit Responder(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

// One accepted WebSocket connection (server side). The server keeps it alive
// while the socket is open; holders may keep the shared_ptr longer.
// Thread-safe: every method may be called from any thread.
class WebSocketSession {
 public:
  virtual ~WebSocketSession() = default;

  // Queues one TEXT frame; frames go out in call order. Returns false (and
  // drops the text) once Close() was called or the connection has ended.
  virtual bool SendText(std::string text) = 0;
  // Sends a close frame with `code` after every frame already queued, then
  // waits for the peer's close frame, at most Options::ws_close_timeout from
  // the moment the close frame starts out (then the connection is dropped:
  // on_close gets 1006). Later calls are ignored.
  virtual void Close(uint16_t code = 1000, std::string reason = "") = 0;
  // True once Close() was called or the connection has ended.
  virtual bool closed() const = 0;
  // Called once, on the loop thread, when the connection has ended, with the
  // close code: the one we sent, or the peer's, or 1006 when the connection
  // broke without a close frame or was dropped at the close deadline (or at
  // Stop() after shutdown_grace). Set after the end: called soon (posted).
  virtual void SetOnClose(std::function<void(uint16_t code)> on_close) = 0;
  // Bytes queued by SendText and not yet written (for back-pressure).
  virtual size_t buffered_bytes() const = 0;
  // The upgrade request (path params, query, headers; empty body).
  virtual const Request& request() const = 0;
};

class HttpServer {
 public:
  struct Options {
    std::string host = "0.0.0.0";
    int port = 8265;                            // 0 = ephemeral; see port()
    size_t max_body_bytes = size_t{100} << 20;  // 100 MiB, like Ray's aiohttp
    std::string bearer_token;                   // empty = auth disabled
    std::vector<std::string> public_paths;      // no auth: exact, or prefix ending in '*'
    // Also accepted in place of the bearer header: this cookie holding the
    // token, on requests that are not cross-origin (empty: header only).
    std::string token_cookie;
    size_t max_header_bytes = size_t{64} << 10;  // request line + headers; more -> 431
    size_t max_public_body_bytes = size_t{64} << 10;  // body limit on public_paths; more -> 413
    std::chrono::milliseconds header_timeout{10000};  // one whole header block; then close
                                                      // (see "Deadlines" above)
    std::chrono::milliseconds idle_timeout{75000};    // keep-alive wait for the next request
    std::chrono::milliseconds body_timeout{300000};   // reading one request body
    std::chrono::milliseconds shutdown_grace{1000};   // Stop(): WebSocket close handshakes
    // Open connections (HTTP and WebSocket) per remote IP address, and in
    // total; one over a cap -> 503 and closed. 0 = no cap.
    size_t max_connections_per_client = 64;
    size_t max_connections = 1024;
    size_t max_ws_message_bytes = size_t{64} << 10;  // incoming; more -> close 1009 (0: no limit)
    // WebSocket: from our close frame (Close(), Stop()) to the end of the
    // connection; then it is dropped and on_close gets 1006 ("Behaviour on
    // the wire"). Must be positive. (Beast also gives up on a silent peer 5 s
    // after our close frame; when that comes first, on_close gets our code.)
    std::chrono::milliseconds ws_close_timeout{5000};
    // Scoped tokens: called on the loop thread (it must not block) for a
    // request on a non-public path whose bearer credential is not
    // bearer_token, once per credential presented, until it returns a
    // principal (-> Request::principal). std::nullopt: not this token. The
    // request has method, target, path, query, headers and remote_address
    // filled; body, path_params and principal are empty. If it throws, the
    // request is answered 500. Unset: such requests get 401.
    std::function<std::optional<std::string>(std::string_view token, const Request& request)> authorize;
  };

  using Handler = std::function<Response(const Request&)>;
  using AsyncHandler = std::function<void(Request, Responder)>;
  // Runs before a WebSocket upgrade; a Response is sent as plain HTTP instead.
  using PreUpgrade = std::function<std::optional<Response>(const Request&)>;
  using OnOpen = std::function<void(std::shared_ptr<WebSocketSession>)>;

  // One row of the request counter (for Prometheus later).
  struct RouteCount {
    std::string method;   // "GET", ... ("OTHER" for unknown verbs)
    std::string pattern;  // the matched route pattern, or "" when none matched
    int status = 0;       // 101 for accepted WebSocket upgrades
    uint64_t count = 0;
  };

  // Binds and listens synchronously (port() is known on return), then starts
  // the loop thread. Errors: Unavailable "port N is already in use",
  // InvalidArgument for a bad host/port, IoError for other socket failures.
  static Result<std::unique_ptr<HttpServer>> Start(Options options);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();  // Stop()

  int port() const;
  // REQUIRES: not on the loop thread. Idempotent.
  void Stop();

  boost::asio::io_context& loop();
  bool IsLoopThread() const;
  // Runs `fn` on the loop thread (never inline). Dropped after Stop.
  void Post(std::function<void()> fn);

  // Route registration; any thread, any time. Registering the same
  // (method, pattern) twice, or a malformed pattern, is a bug (COHORT_CHECK).
  // `method` is upper case ("GET", "POST", "PUT", "DELETE", ...).
  void Handle(std::string method, std::string pattern, Handler handler);
  void HandleAsync(std::string method, std::string pattern, AsyncHandler handler);
  // A GET route that upgrades to a WebSocket. A plain GET (no upgrade) on it
  // gets 400 after pre_upgrade passes. `pre_upgrade` may be empty.
  void HandleWebSocket(std::string pattern, PreUpgrade pre_upgrade, OnOpen on_open);

  // Snapshot of requests answered so far, per (method, route pattern, status).
  std::vector<RouteCount> RouteCounts() const;

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::net
