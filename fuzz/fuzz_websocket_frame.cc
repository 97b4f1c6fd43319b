// fuzz_websocket_frame: WebSocket frames as the head's WebSocket routes
// (e.g. /api/jobs/{id}/logs/tail) read them (src/net/http/websocket_session.cc).
//
// WsSession itself sits on a TCP socket, so the target rebuilds its stream
// configuration on Beast's in-memory test stream (server role):
//   - a synthetic, valid upgrade request accepted with async_accept(request)
//     and the same decorator, read_message_max(64 KiB), no permessage-deflate
//     (the server enables none);
//   - then the fuzzed bytes arrive as the client's frames, split into reads of
//     at most N bytes (N = the low 7 bits of the input's last byte; 0 = one
//     read), followed by EOF;
//   - the session's read loop: async_read into a flat_buffer, consume, read
//     again, until an error; on websocket::error::closed it reads
//     reason() like WsSession; meanwhile the server side writes a text frame
//     (what SendText does for a log line) and, when the last byte's top
//     bit is set, starts a close (what Close() does) — so control frames (ping,
//     pong, close) interleave with our own writes as on the real connection;
//   - how the session ends, as WsSession does it: the close deadline
//     (src/net/http/ws_close_deadline.h, the class WsSession uses) armed as
//     our async_close starts, and Finish: the code on_close would get, the
//     deadline cancelled, the transport closed, the stream destroyed on a
//     later turn.
// Beast's masking, fragmentation, UTF-8 validation of text frames, control
// frame rules and the message size limit are what gets exercised, and the
// rule that every session ends: every byte is in memory and followed by EOF,
// so an operation still pending once nothing can run is stuck; it must be
// covered by the armed close deadline, and firing it (the target has no
// clock: FireNow) must end the session with 1006 and release everything.
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "http/ws_close_deadline.h"

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;

constexpr size_t kMaxIncomingMessageBytes = 64 << 10;  // websocket_session.cc
constexpr uint16_t kAbnormal = 1006;
constexpr uint16_t kGoingAway = 1001;
constexpr uint16_t kMessageTooBig = 1009;
// Long enough never to pass while one input runs: the deadline fires only
// through FireNow().
constexpr auto kCloseTimeout = std::chrono::hours(1);

http::request<http::string_body> UpgradeRequest() {
  http::request<http::string_body> req{http::verb::get, "/api/jobs/raysubmit_abc/logs/tail", 11};
  req.set(http::field::host, "127.0.0.1:8265");
  req.set(http::field::upgrade, "websocket");
  req.set(http::field::connection, "Upgrade");
  req.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
  req.set(http::field::sec_websocket_version, "13");
  req.set(http::field::cookie, "cohort_token=s3cr3t-token");
  return req;
}

// Runs ready handlers until none is left; false when operations are still
// pending but nothing can make progress (everything here is in memory).
bool RunUntilIdle(boost::asio::io_context& ioc) {
  while (ioc.poll() > 0) {
  }
  return ioc.stopped();
}

struct Session {
  explicit Session(boost::asio::io_context& ioc) : ioc(ioc), peer(ioc), deadline(ioc.get_executor()) {
    ws.emplace(ioc);
    ws->next_layer().connect(peer);
  }

  // WsSession::ReadLoop's decisions, plus the target's checks.
  void ReadLoop() {
    ws->async_read(read_buffer, [this](beast::error_code ec, size_t n) {
      if (done) return;
      if (ec == websocket::error::closed) {
        // The peer's close frame (Beast has answered it and closed the stream).
        return Finish(close_started ? kGoingAway : ws->reason().code);
      }
      if (ec == websocket::error::message_too_big) return Finish(kMessageTooBig);
      if (ec) return Finish(close_started ? kGoingAway : kAbnormal);
      FUZZ_CHECK(n <= kMaxIncomingMessageBytes, "a message over read_message_max was delivered");
      FUZZ_CHECK(read_buffer.size() <= kMaxIncomingMessageBytes, "buffered more than read_message_max");
      if (ws->got_text() && !close_started) {
        // Beast validates UTF-8 in text messages. (got_text() describes the
        // last frame header Beast parsed: once our close has started, the
        // close operation reads ahead and it no longer describes this message.)
        std::string_view text(static_cast<const char*>(read_buffer.data().data()), read_buffer.size());
        FUZZ_CHECK(cohort::fuzz::IsValidUtf8(text), "a text message with invalid UTF-8 was delivered");
      }
      read_buffer.consume(read_buffer.size());
      ++messages;
      ReadLoop();
    });
  }

  // WsSession::MaybeWrite's close: arm the deadline, then async_close.
  void StartClose() {
    close_started = true;
    deadline.Start(kCloseTimeout, [this] {
      if (!done) Finish(kAbnormal);  // WsSession::OnCloseDeadline
    });
    ws->async_close(websocket::close_reason(websocket::close_code::going_away, "server shutting down"),
                    [this](beast::error_code) {
                      if (!done) Finish(kGoingAway);
                    });
  }

  // WsSession::Finish.
  void Finish(uint16_t code) {
    FUZZ_CHECK(!done, "the session ended twice");
    done = true;
    end_code = code;
    deadline.Cancel();
    beast::get_lowest_layer(*ws).close();
    boost::asio::post(ioc, [this] {
      deadline.Release();
      ws.reset();  // destroys operations still suspended inside the stream
    });
  }

  boost::asio::io_context& ioc;
  std::optional<websocket::stream<beast::test::stream>> ws;
  beast::test::stream peer;  // the client's end: receives our 101, frames, pongs, close
  cohort::net::internal::WsCloseDeadline deadline;
  beast::flat_buffer read_buffer;
  int messages = 0;
  bool close_started = false;
  bool done = false;
  int end_code = -1;  // what on_close would get
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t read_size = data[size - 1] & 0x7f;
  const bool server_closes = (data[size - 1] & 0x80) != 0;
  std::string_view frames(reinterpret_cast<const char*>(data), size - 1);

  boost::asio::io_context ioc;
  Session s(ioc);
  s.ws->set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(http::field::server, "cohort"); }));
  s.ws->read_message_max(kMaxIncomingMessageBytes);

  beast::error_code accept_ec;
  s.ws->async_accept(UpgradeRequest(), [&](beast::error_code ec) { accept_ec = ec; });
  RunUntilIdle(ioc);
  ioc.restart();
  FUZZ_CHECK(!accept_ec, "the synthetic upgrade was refused: " + accept_ec.message());

  // The client's frames, then EOF.
  s.ws->next_layer().append(beast::string_view(frames.data(), frames.size()));
  if (read_size != 0) s.ws->next_layer().read_size(read_size);
  s.ws->next_layer().close_remote();

  s.ReadLoop();
  // On-open: one log line goes out (SendText), maybe followed by Close().
  std::string line = "log line 1\n";
  s.ws->text(true);
  s.ws->async_write(boost::asio::buffer(line), [&](beast::error_code ec, size_t) {
    if (s.done) return;
    if (ec) return s.Finish(kAbnormal);
    if (server_closes) s.StartClose();
  });
  if (!RunUntilIdle(ioc)) {
    // Every byte is in memory and followed by EOF, so what is still pending
    // now waits for nothing that can happen: on the server, only a timer can
    // end it. That must be the close deadline (e.g. Beast 1.74 leaving our
    // close and the read waiting on each other:
    // fuzz/regressions/fuzz_websocket_frame/beast-read-close-stuck.bin).
    FUZZ_CHECK(!s.done, "the session ended but operations are still pending");
    FUZZ_CHECK(s.deadline.armed(), "the WebSocket session is stuck with no close deadline armed");
    s.deadline.FireNow();  // its time passes
    RunUntilIdle(ioc);
    FUZZ_CHECK(s.end_code == kAbnormal, "the close deadline fired but the session did not end with 1006");
  }
  // Every session ends, once (Finish checks once), and leaves nothing behind.
  FUZZ_CHECK(s.done, "the session never ended");
  FUZZ_CHECK(ioc.stopped(), "operations still pending after the session ended");
  FUZZ_CHECK(!s.ws, "the stream was not destroyed after the session ended");
  return 0;
}
