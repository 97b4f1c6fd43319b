// HTTP/1.1 connections of HttpServer, and the Responder of async handlers.
//
// One HttpSession per accepted socket, living on the loop thread. Its cycle:
//   [wait for the first byte] -> read header -> check (parse errors 400/431,
//   auth 401, size 413, route 404/405) -> [100 Continue] -> read body ->
//   dispatch -> write -> repeat
// Deadlines (tcp_stream expiry, one at a time): the first header block of a
// connection is due header_timeout after the accept; later ones idle_timeout
// for their first byte, then header_timeout for the block; the body
// body_timeout; a write body_timeout; the lingering close kDrainTime. No
// state waits without one except a request parked in an async handler.
// A handler answers inline (Handle) or later through a Responder (HandleAsync)
// whose answer is posted back to the loop and matched by request number, so a
// late answer for a connection that has moved on or closed is dropped.
// When an error response leaves an unread body behind, the connection is
// closed "lingering": shut down our side, then read and discard for a few
// seconds, so the client reads our answer instead of a TCP reset.
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <array>
#include <cctype>
#include <exception>

#include "cohort/common/logging.h"
#include "server_core.h"

namespace cohort::net {
namespace internal {

namespace websocket = boost::beast::websocket;

class HttpSession;

// Builds and fires Responders (a friend of Responder).
struct ResponderAccess {
  static Responder Make(std::shared_ptr<LoopHandle> loop, std::weak_ptr<HttpSession> session, uint64_t seq);
  static void Deliver(const std::shared_ptr<Responder::State>& state, Response response);
};

class HttpSession : public Connection, public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(ServerCore* core, asio::ip::tcp::socket socket, std::string client_ip)
      : Connection(std::move(client_ip)), core_(core), stream_(std::move(socket)) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  void Run() { ReadHeader(); }

  void BeginShutdown() override { Finish(); }
  void ReleaseSocket() override {
    beast::error_code ec;
    stream_.socket().close(ec);
  }

  // Loop thread: the answer to request number `seq` from a Responder.
  void Answer(uint64_t seq, Response response) {
    if (state_ != State::kAwaitingHandler || seq != seq_) return;
    Reply(std::move(response), /*close_after=*/false);
  }

 private:
  enum class State { kReading, kAwaitingHandler, kWriting, kClosing, kClosed };

  void ReadHeader();
  void OnFirstBytes(beast::error_code ec, size_t n);
  void ReadHeaderBlock();
  void OnHeader(beast::error_code ec);
  void ReadBody();
  void OnBody(beast::error_code ec);
  void Dispatch();
  void UpgradeWebSocket();
  void Reply(Response response, bool close_after);
  void OnWrite(beast::error_code ec, bool close_after);
  void Drain();
  void Finish();

  ServerCore* const core_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;  // alive during async_write
  std::string remote_;
  State state_ = State::kReading;
  uint64_t seq_ = 0;  // number of the request being served
  bool first_request_ = true;

  // The request being served (fields valid from OnHeader to Reply).
  Request request_;
  RouteMatch match_;
  std::string method_;  // kept after request_ moved into an async handler
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool head_ = false;
  bool body_unread_ = false;
  size_t body_limit_ = 0;  // max_body_bytes or max_public_body_bytes
  std::array<char, 8192> drain_buffer_;
};

namespace {

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr auto kDrainTime = std::chrono::seconds(3);
constexpr size_t kFirstReadBytes = 8192;

Response InternalError() {
  return Response::Text(500, "500 Internal Server Error\n\nServer got itself in trouble");
}

bool IsHttpError(const beast::error_code& ec) {
  return ec.category() == beast::http::make_error_code(http::error::bad_target).category();
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return !CaseInsensitiveLess()(a, b) && !CaseInsensitiveLess()(b, a);
}

// RFC 9110 token characters (header names).
bool IsTokenChar(unsigned char c) {
  if (std::isalnum(c)) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool IsValidHeaderName(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!IsTokenChar(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// A handler may copy request bytes (say a decoded "%0D%0A") into a header
// value: control characters other than TAB become spaces, so a response can
// never be split or carry a NUL.
std::string SafeHeaderValue(std::string_view value) {
  std::string out(value);
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && u != '\t') || u == 0x7f) c = ' ';
  }
  return out;
}

Response Unauthorized() { return Response::Text(401, "Unauthorized: missing or invalid bearer token"); }

Response TooLarge(size_t limit) {
  return Response::Text(413, "413: Request Entity Too Large: the body exceeds " + std::to_string(limit) + " bytes");
}

}  // namespace

void HttpSession::ReadHeader() {
  state_ = State::kReading;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(
      std::min<size_t>(core_->options.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
  // The body limit is applied by hand after auth (see OnHeader); unlimited here
  // so that a large Content-Length does not fail the header read itself.
  parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
  if (first_request_) {
    // A new connection: its first header block is due header_timeout after
    // the accept, however the bytes trickle in.
    first_request_ = false;
    stream_.expires_after(core_->options.header_timeout);
    return ReadHeaderBlock();
  }
  if (buffer_.size() > 0) {  // a pipelined request has begun already
    stream_.expires_after(core_->options.header_timeout);
    return ReadHeaderBlock();
  }
  // Keep-alive: wait idle_timeout for the next request to begin.
  stream_.expires_after(core_->options.idle_timeout);
  stream_.async_read_some(buffer_.prepare(kFirstReadBytes), [self = shared_from_this()](beast::error_code ec,
                                                                                        size_t n) {
    self->OnFirstBytes(ec, n);
  });
}

void HttpSession::OnFirstBytes(beast::error_code ec, size_t n) {
  if (state_ == State::kClosed) return;
  if (ec) return Finish();  // the client closed, timed out, or we are stopping
  buffer_.commit(n);
  stream_.expires_after(core_->options.header_timeout);
  ReadHeaderBlock();
}

void HttpSession::ReadHeaderBlock() {
  http::async_read_header(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void HttpSession::OnHeader(beast::error_code ec) {
  if (state_ == State::kClosed) return;
  ++seq_;
  request_ = Request{};
  match_ = RouteMatch{};
  method_.clear();
  version_ = 11;
  keep_alive_ = false;
  head_ = false;
  body_unread_ = false;
  body_limit_ = core_->options.max_body_bytes;
  if (ec) {
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec == http::error::short_read || !IsHttpError(ec)) {
      return Finish();  // client went away, timed out, or we are stopping
    }
    body_unread_ = true;  // whatever follows is unparsed
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      return Reply(Response::Text(431, "431: Request Header Fields Too Large"), true);
    }
    return Reply(Response::Text(400, "400: Bad Request"), true);
  }

  auto& req = parser_->get();
  request_.method = std::string(req.method_string());
  request_.target = std::string(req.target());
  request_.remote_address = remote_;
  for (const auto& field : req) {
    auto [it, inserted] = request_.headers.emplace(std::string(field.name_string()), std::string(field.value()));
    if (!inserted) it->second += ", " + std::string(field.value());
  }
  method_ = request_.method;
  version_ = req.version();
  keep_alive_ = req.keep_alive();
  head_ = req.method() == http::verb::head;
  body_unread_ = !parser_->is_done();

  if (request_.target.empty() || request_.target.front() != '/') {
    return Reply(Response::Text(400, "400: Bad Request"), true);
  }
  std::string_view raw_path, raw_query;
  SplitTarget(request_.target, &raw_path, &raw_query);
  request_.path = PercentDecode(raw_path, /*plus_is_space=*/false);
  request_.query = ParseQuery(raw_query);
  bool upgrade = websocket::is_upgrade(req);
  match_ = core_->router.Match(request_.method, raw_path, upgrade);

  // Auth and limits come before the body: a refused request's body is
  // never read into memory (the lingering close discards it).
  const HttpServer::Options& opts = core_->options;
  switch (Authenticate(opts, raw_path, &request_)) {
    case AuthOutcome::kAllowed:
      break;
    case AuthOutcome::kDenied:
      return Reply(Unauthorized(), true);
    case AuthOutcome::kHookFailed:
      return Reply(InternalError(), true);
  }
  if (IsPublicPath(opts.public_paths, raw_path)) body_limit_ = opts.max_public_body_bytes;
  if (auto length = parser_->content_length(); length && *length > body_limit_) {
    return Reply(TooLarge(body_limit_), true);
  }
  if (!match_.route) {
    if (match_.allowed.empty()) return Reply(Response::Text(404, "404: Not Found"), body_unread_);
    Response r = Response::Text(405, "405: Method Not Allowed");
    std::string allow;
    for (const auto& m : match_.allowed) allow += (allow.empty() ? "" : ", ") + m;
    r.headers["Allow"] = allow;
    return Reply(std::move(r), body_unread_);
  }
  if (match_.route->kind == RouteKind::kWebSocket && upgrade) {
    if (body_unread_) return Reply(Response::Text(400, "400: Bad Request"), true);
    return UpgradeWebSocket();
  }
  if (body_unread_) return ReadBody();
  Dispatch();
}

void HttpSession::ReadBody() {
  auto read = [this] {
    parser_->body_limit(body_limit_);
    stream_.expires_after(core_->options.body_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  };
  if (version_ >= 11 && EqualsIgnoreCase(request_.Header("Expect"), "100-continue")) {
    stream_.expires_after(core_->options.body_timeout);
    asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                      [self = shared_from_this(), read](beast::error_code ec, size_t) {
                        if (self->state_ == State::kClosed) return;
                        if (ec) return self->Finish();
                        read();
                      });
    return;
  }
  read();
}

void HttpSession::OnBody(beast::error_code ec) {
  if (state_ == State::kClosed) return;
  if (ec == http::error::body_limit) return Reply(TooLarge(body_limit_), true);
  if (ec == http::error::bad_chunk || ec == http::error::bad_chunk_extension) {
    return Reply(Response::Text(400, "400: Bad Request"), true);
  }
  if (ec) return Finish();
  body_unread_ = false;
  request_.body = std::move(parser_->get().body());
  Dispatch();
}

void HttpSession::Dispatch() {
  state_ = State::kAwaitingHandler;
  stream_.expires_never();
  std::shared_ptr<const Route> route = match_.route;
  request_.path_params = std::move(match_.params);
  Response response;
  try {
    switch (route->kind) {
      case RouteKind::kSync:
        response = route->handler(request_);
        break;
      case RouteKind::kAsync: {
        route->async_handler(std::move(request_),
                             ResponderAccess::Make(core_->loop_handle, weak_from_this(), seq_));
        return;  // answered through the Responder (or 500 when it is dropped)
      }
      case RouteKind::kWebSocket: {
        // A plain GET on a WebSocket route: the pre-upgrade check first, so an
        // unknown job is still a 404, then refuse.
        std::optional<Response> early;
        if (route->pre_upgrade) early = route->pre_upgrade(request_);
        response = early ? std::move(*early)
                         : Response::Text(400, "400: Bad Request: expected a WebSocket upgrade");
        break;
      }
    }
  } catch (const std::exception& e) {
    COHORT_LOG(ERROR) << "handler for " << method_ << " " << route->pattern << " threw: " << e.what();
    if (route->kind == RouteKind::kAsync) return;  // the dropped Responder answers 500
    response = InternalError();
  } catch (...) {
    COHORT_LOG(ERROR) << "handler for " << method_ << " " << route->pattern << " threw";
    if (route->kind == RouteKind::kAsync) return;
    response = InternalError();
  }
  Reply(std::move(response), false);
}

void HttpSession::UpgradeWebSocket() {
  std::shared_ptr<const Route> route = match_.route;
  request_.path_params = std::move(match_.params);
  if (route->pre_upgrade) {
    std::optional<Response> early;
    try {
      early = route->pre_upgrade(request_);
    } catch (const std::exception& e) {
      COHORT_LOG(ERROR) << "pre-upgrade check for " << route->pattern << " threw: " << e.what();
      early = InternalError();
    }
    if (early) return Reply(std::move(*early), false);
  }
  // Hand the socket to a WebSocket session; this HTTP session ends here.
  auto self = shared_from_this();
  state_ = State::kClosed;
  stream_.expires_never();
  StartWebSocketSession(core_, std::move(stream_), parser_->release(), std::move(request_), route, client_ip());
  core_->Unregister(this);
}

void HttpSession::Reply(Response response, bool close_after) {
  state_ = State::kWriting;
  int status = response.status;
  if (status < 200 || status > 999) {
    COHORT_LOG(ERROR) << "handler for " << method_ << " " << match_.pattern << " returned status " << status;
    response = InternalError();
    status = 500;
  }
  core_->Count(method_, match_.pattern, status);

  response_ = {};
  response_.version(version_ == 10 ? 10 : 11);
  response_.result(static_cast<unsigned>(status));
  response_.set(http::field::server, "cohort");
  if (!response.content_type.empty()) {
    response_.set(http::field::content_type, SafeHeaderValue(response.content_type));
  }
  for (const auto& [name, value] : response.headers) {
    if (EqualsIgnoreCase(name, "Content-Length") || EqualsIgnoreCase(name, "Transfer-Encoding") ||
        EqualsIgnoreCase(name, "Connection")) {
      continue;
    }
    if (!IsValidHeaderName(name)) {
      COHORT_LOG(ERROR) << "handler for " << method_ << " " << match_.pattern
                        << " set a header with an invalid name; dropped";
      continue;
    }
    response_.set(name, SafeHeaderValue(value));
  }
  bool keep_alive = keep_alive_ && !close_after && !body_unread_ && !core_->stopping;
  response_.keep_alive(keep_alive);
  response_.body() = std::move(response.body);
  response_.prepare_payload();
  if (head_) response_.body().clear();  // Content-Length stays that of the GET
  stream_.expires_after(core_->options.body_timeout);
  http::async_write(stream_, response_,
                    [self = shared_from_this(), keep_alive](beast::error_code ec, size_t) {
                      self->OnWrite(ec, !keep_alive);
                    });
}

void HttpSession::OnWrite(beast::error_code ec, bool close_after) {
  if (state_ == State::kClosed) return;
  if (ec) return Finish();
  if (!close_after) return ReadHeader();
  // Close: FIN first, then discard what the client still sends until it
  // closes too (or kDrainTime passes), so our answer is not lost to a reset.
  state_ = State::kClosing;
  beast::error_code ignored;
  stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  stream_.expires_after(kDrainTime);
  Drain();
}

void HttpSession::Drain() {
  stream_.async_read_some(asio::buffer(drain_buffer_), [self = shared_from_this()](beast::error_code ec, size_t) {
    if (self->state_ == State::kClosed) return;
    if (ec) return self->Finish();
    self->Drain();
  });
}

void HttpSession::Finish() {
  if (state_ == State::kClosed) return;
  auto self = shared_from_this();  // Unregister may drop the last other reference
  state_ = State::kClosed;
  beast::error_code ignored;
  stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream_.close();
  core_->Unregister(this);
}

void StartHttpSession(ServerCore* core, asio::ip::tcp::socket socket, std::string client_ip) {
  beast::error_code ignored;
  socket.set_option(asio::ip::tcp::no_delay(true), ignored);
  auto session = std::make_shared<HttpSession>(core, std::move(socket), std::move(client_ip));
  core->Register(session);
  session->Run();
}

}  // namespace internal

// --- Responder -----------------------------------------------------------------

struct Responder::State {
  std::shared_ptr<internal::LoopHandle> loop;
  std::weak_ptr<internal::HttpSession> session;
  uint64_t seq = 0;
};

namespace internal {

Responder ResponderAccess::Make(std::shared_ptr<LoopHandle> loop, std::weak_ptr<HttpSession> session,
                                uint64_t seq) {
  auto state = std::make_shared<Responder::State>();
  state->loop = std::move(loop);
  state->session = std::move(session);
  state->seq = seq;
  return Responder(std::move(state));
}

void ResponderAccess::Deliver(const std::shared_ptr<Responder::State>& state, Response response) {
  state->loop->Post([session = state->session, seq = state->seq, response = std::move(response)]() mutable {
    if (auto s = session.lock()) s->Answer(seq, std::move(response));
  });
}

}  // namespace internal

Responder::Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}
Responder::Responder(Responder&& other) noexcept = default;

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    if (state_) internal::ResponderAccess::Deliver(state_, internal::InternalError());
    state_ = std::move(other.state_);
  }
  return *this;
}

Responder::~Responder() {
  if (state_) internal::ResponderAccess::Deliver(state_, internal::InternalError());
}

void Responder::operator()(Response response) {
  if (!state_) return;
  std::shared_ptr<State> state = std::move(state_);
  state_.reset();
  internal::ResponderAccess::Deliver(state, std::move(response));
}

Responder::operator bool() const { return state_ != nullptr; }

}  // namespace cohort::net
