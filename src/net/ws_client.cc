// WebSocketClient implementation; see include/cohort/net/ws_client.h.
//
// Each call starts one Beast async operation on a private io_context and pumps
// that context on the caller's thread until the operation completes or the
// deadline passes; on a deadline the socket is closed, which completes the
// operation with an error, and the pump drains it before returning. This gives
// deadlines to a "synchronous" client without a helper thread.
#include "cohort/net/ws_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <functional>

namespace cohort::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using tcp = asio::ip::tcp;

constexpr uint16_t kAbnormal = 1006;
constexpr uint16_t kNoStatus = 1005;

struct ParsedUrl {
  std::string host;  // without brackets
  std::string port;
  std::string target;  // "/path?query"
};

Result<ParsedUrl> ParseWsUrl(std::string_view url) {
  constexpr std::string_view kScheme = "ws://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return Status::InvalidArgument("WebSocket URL must start with ws:// (wss is not supported): '" +
                                   std::string(url) + "'");
  }
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  ParsedUrl out;
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!out.target.empty() && out.target.front() == '?') out.target = "/" + out.target;
  std::string_view host = authority;
  std::string_view port = "80";
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return Status::InvalidArgument("bad host in URL '" + std::string(url) + "'");
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return Status::InvalidArgument("bad port in URL '" + std::string(url) + "'");
      port = authority.substr(close + 2);
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty() || port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) {
    return Status::InvalidArgument("bad host or port in URL '" + std::string(url) + "'");
  }
  out.host = std::string(host);
  out.port = std::string(port);
  return out;
}

Status RefusedUpgrade(std::string_view url, int status, std::string body) {
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r' || body.back() == ' ')) body.pop_back();
  if (body.size() > 2000) body.resize(2000);
  std::string msg = "WebSocket upgrade to " + std::string(url) + " refused: HTTP " + std::to_string(status) +
                    (body.empty() ? "" : ": " + body);
  if (status == 404) return Status::NotFound(std::move(msg));
  if (status == 401 || status == 403) return Status::FailedPrecondition(std::move(msg));
  if (status >= 400 && status < 500) return Status::InvalidArgument(std::move(msg));
  return Status::Unavailable(std::move(msg));
}

}  // namespace

struct WebSocketClient::Impl {
  asio::io_context ioc;
  websocket::stream<beast::tcp_stream> ws{ioc};
  beast::flat_buffer buffer;
  std::string url;
  bool open = false;
  std::optional<uint16_t> close_code;
  std::string close_reason;
  std::atomic<bool> aborted{false};  // set by Abort(), from any thread

  // Pumps the io_context until `done` or the deadline; on the deadline closes
  // the socket (completing the operation) and returns false.
  bool Wait(const bool& done, Deadline deadline) {
    ioc.restart();
    bool never = deadline.when() == Deadline::Clock::time_point::max();
    while (!done) {
      size_t ran = never ? ioc.run_one() : ioc.run_one_until(deadline.when());
      if (ran == 0 && !done) {
        AbortSocket();
        ioc.restart();
        while (!done && ioc.run_one() > 0) {
        }
        return false;
      }
    }
    return true;
  }

  void AbortSocket() {
    beast::error_code ignored;
    beast::get_lowest_layer(ws).socket().close(ignored);
  }

  void MarkAbnormal() {
    open = false;
    if (!close_code) close_code = kAbnormal;
    AbortSocket();
  }

  // After Abort(): the connection is gone, and the call in progress (if any)
  // reports it as Cancelled.
  Status Aborted() {
    MarkAbnormal();
    return Status::Cancelled("WebSocket connection to " + url + " was aborted");
  }

  void RecordPeerClose() {
    open = false;
    uint16_t code = ws.reason().code;
    close_code = code == websocket::close_code::none ? kNoStatus : code;
    close_reason = std::string(ws.reason().reason.c_str());
  }
};

WebSocketClient::WebSocketClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WebSocketClient::~WebSocketClient() {
  if (impl_ && impl_->open && !impl_->aborted.load()) Close(1000, Deadline::After(std::chrono::seconds(1)));
}

void WebSocketClient::Abort() {
  if (impl_->aborted.exchange(true)) return;
  // post() is the io_context's thread-safe entry: the socket is closed on the
  // thread that pumps the context (now, or at its next call), which completes
  // any pending operation with an error.
  asio::post(impl_->ioc, [s = impl_.get()] { s->AbortSocket(); });
}

void WebSocketClient::SetIdleTimeout(std::chrono::milliseconds idle) {
  websocket::stream_base::timeout timeout{};
  timeout.handshake_timeout = websocket::stream_base::none();
  timeout.idle_timeout = idle.count() > 0 ? std::chrono::duration_cast<websocket::stream_base::duration>(idle)
                                          : websocket::stream_base::none();
  timeout.keep_alive_pings = idle.count() > 0;
  impl_->ws.set_option(timeout);
}

Result<std::unique_ptr<WebSocketClient>> WebSocketClient::Connect(std::string_view url, const Headers& headers,
                                                                  Deadline deadline) {
  COHORT_ASSIGN_OR_RETURN(ParsedUrl parsed, ParseWsUrl(url));
  auto impl = std::make_unique<Impl>();
  impl->url = std::string(url);
  std::string where = parsed.host + ":" + parsed.port;

  // Resolve.
  tcp::resolver resolver(impl->ioc);
  tcp::resolver::results_type endpoints;
  beast::error_code ec;
  bool done = false;
  resolver.async_resolve(parsed.host, parsed.port,
                         [&](beast::error_code e, tcp::resolver::results_type r) {
                           ec = e;
                           endpoints = std::move(r);
                           done = true;
                         });
  if (!impl->Wait(done, deadline)) {
    resolver.cancel();
    return Status::DeadlineExceeded("WebSocket connect to " + impl->url + ": resolving " + parsed.host + " timed out");
  }
  if (ec) return Status::Unavailable("WebSocket connect to " + impl->url + ": cannot resolve " + parsed.host + ": " + ec.message());

  // Connect.
  done = false;
  beast::get_lowest_layer(impl->ws).async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) {
    ec = e;
    done = true;
  });
  if (!impl->Wait(done, deadline)) {
    return Status::DeadlineExceeded("WebSocket connect to " + impl->url + " timed out");
  }
  if (ec) return Status::Unavailable("WebSocket connect to " + impl->url + ": cannot connect to " + where + ": " + ec.message());
  beast::error_code ignored;
  beast::get_lowest_layer(impl->ws).socket().set_option(tcp::no_delay(true), ignored);

  // Handshake.
  websocket::stream_base::timeout timeout{};
  timeout.handshake_timeout = websocket::stream_base::none();  // our deadlines govern
  timeout.idle_timeout = websocket::stream_base::none();
  timeout.keep_alive_pings = false;
  impl->ws.set_option(timeout);
  impl->ws.set_option(websocket::stream_base::decorator([headers](websocket::request_type& req) {
    req.set(http::field::user_agent, "cohort");
    for (const auto& [name, value] : headers) req.set(name, value);
  }));
  websocket::response_type response;
  std::string host_header = parsed.port == "80" ? parsed.host : where;
  if (parsed.host.find(':') != std::string::npos) {
    host_header = "[" + parsed.host + "]" + (parsed.port == "80" ? "" : ":" + parsed.port);
  }
  done = false;
  impl->ws.async_handshake(response, host_header, parsed.target, [&](beast::error_code e) {
    ec = e;
    done = true;
  });
  if (!impl->Wait(done, deadline)) {
    return Status::DeadlineExceeded("WebSocket handshake with " + impl->url + " timed out");
  }
  if (ec == websocket::error::upgrade_declined || (ec && response.result_int() != 0 && response.result_int() != 101)) {
    return RefusedUpgrade(impl->url, static_cast<int>(response.result_int()), response.body());
  }
  if (ec) return Status::Unavailable("WebSocket handshake with " + impl->url + " failed: " + ec.message());
  impl->open = true;
  return std::unique_ptr<WebSocketClient>(new WebSocketClient(std::move(impl)));
}

Result<std::optional<std::string>> WebSocketClient::ReadMessage(Deadline deadline) {
  Impl& s = *impl_;
  if (s.aborted.load()) return s.Aborted();
  if (!s.open) {
    if (s.close_code && *s.close_code != kAbnormal) return std::optional<std::string>();
    return Status::Unavailable("WebSocket connection to " + s.url + " is closed");
  }
  s.buffer.clear();
  beast::error_code ec;
  bool done = false;
  s.ws.async_read(s.buffer, [&](beast::error_code e, size_t) {
    ec = e;
    done = true;
  });
  if (!s.Wait(done, deadline)) {
    if (s.aborted.load()) return s.Aborted();
    s.MarkAbnormal();
    return Status::DeadlineExceeded("no WebSocket message from " + s.url + " before the deadline");
  }
  if (ec && s.aborted.load()) return s.Aborted();
  // A close frame arrived (even if the TCP teardown after it then failed,
  // e.g. because the server had already dropped the socket): a normal end.
  if (ec == websocket::error::closed || (ec && s.ws.reason().code != websocket::close_code::none)) {
    s.RecordPeerClose();
    s.AbortSocket();
    return std::optional<std::string>();
  }
  if (ec) {
    s.MarkAbnormal();
    return Status::Unavailable("WebSocket connection to " + s.url + " closed abnormally (1006): " + ec.message());
  }
  return std::optional<std::string>(beast::buffers_to_string(s.buffer.data()));
}

Status WebSocketClient::SendText(std::string_view text, Deadline deadline) {
  Impl& s = *impl_;
  if (s.aborted.load()) return s.Aborted();
  if (!s.open) return Status::FailedPrecondition("WebSocket connection to " + s.url + " is closed");
  beast::error_code ec;
  bool done = false;
  s.ws.text(true);
  s.ws.async_write(asio::buffer(text.data(), text.size()), [&](beast::error_code e, size_t) {
    ec = e;
    done = true;
  });
  if (!s.Wait(done, deadline)) {
    if (s.aborted.load()) return s.Aborted();
    s.MarkAbnormal();
    return Status::DeadlineExceeded("sending to " + s.url + " timed out");
  }
  if (ec && s.aborted.load()) return s.Aborted();
  if (ec) {
    s.MarkAbnormal();
    return Status::Unavailable("sending to " + s.url + " failed: " + ec.message());
  }
  return Status::Ok();
}

Status WebSocketClient::Close(uint16_t code, Deadline deadline) {
  Impl& s = *impl_;
  if (s.aborted.load()) {
    s.MarkAbnormal();
    return Status::Ok();
  }
  if (!s.open) return Status::Ok();
  beast::error_code ec;
  bool done = false;
  s.ws.async_close(websocket::close_reason(code), [&](beast::error_code e) {
    ec = e;
    done = true;
  });
  bool in_time = s.Wait(done, deadline);
  s.open = false;
  if (!in_time) {
    s.MarkAbnormal();
    return Status::DeadlineExceeded("closing the WebSocket to " + s.url + " timed out");
  }
  if (ec && ec != websocket::error::closed && s.ws.reason().code == websocket::close_code::none) {
    s.MarkAbnormal();
    return Status::Unavailable("closing the WebSocket to " + s.url + " failed: " + ec.message());
  }
  s.RecordPeerClose();
  return Status::Ok();
}

std::optional<uint16_t> WebSocketClient::close_code() const { return impl_->close_code; }

const std::string& WebSocketClient::close_reason() const { return impl_->close_reason; }

}  // namespace cohort::net
