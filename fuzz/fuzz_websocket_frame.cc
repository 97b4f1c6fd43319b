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
//     pong, close) interleave with our own writes as on the real connection.
// Beast's masking, fragmentation, UTF-8 validation of text frames, control
// frame rules and the message size limit are what gets exercised.
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_common.h"

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;

constexpr size_t kMaxIncomingMessageBytes = 64 << 10;  // websocket_session.cc

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

bool NoGuards() {
  static const bool no_guards = std::getenv("COHORT_FUZZ_NO_GUARDS") != nullptr;
  return no_guards;
}

// Runs ready handlers until none is left; false when operations are still
// pending but nothing can make progress (everything here is in memory).
bool RunUntilIdle(boost::asio::io_context& ioc) {
  while (ioc.poll() > 0) {
  }
  return ioc.stopped();
}

struct Session {
  explicit Session(boost::asio::io_context& ioc) : ws(ioc), peer(ioc) { ws.next_layer().connect(peer); }

  void ReadLoop() {
    ws.async_read(read_buffer, [this](beast::error_code ec, size_t n) {
      if (ec == websocket::error::closed) {
        close_code = ws.reason().code;  // the peer's close frame
        return;
      }
      if (ec) return;
      FUZZ_CHECK(n <= kMaxIncomingMessageBytes, "a message over read_message_max was delivered");
      FUZZ_CHECK(read_buffer.size() <= kMaxIncomingMessageBytes, "buffered more than read_message_max");
      if (ws.got_text() && !close_started) {
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

  websocket::stream<beast::test::stream> ws;
  beast::test::stream peer;  // the client's end: receives our 101, frames, pongs, close
  beast::flat_buffer read_buffer;
  int messages = 0;
  int close_code = -1;
  bool close_started = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t read_size = data[size - 1] & 0x7f;
  const bool server_closes = (data[size - 1] & 0x80) != 0;
  std::string_view frames(reinterpret_cast<const char*>(data), size - 1);

  boost::asio::io_context ioc;
  Session s(ioc);
  s.ws.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(http::field::server, "cohort"); }));
  s.ws.read_message_max(kMaxIncomingMessageBytes);

  beast::error_code accept_ec;
  s.ws.async_accept(UpgradeRequest(), [&](beast::error_code ec) { accept_ec = ec; });
  RunUntilIdle(ioc);
  ioc.restart();
  FUZZ_CHECK(!accept_ec, "the synthetic upgrade was refused: " + accept_ec.message());

  // The client's frames, then EOF.
  s.ws.next_layer().append(beast::string_view(frames.data(), frames.size()));
  if (read_size != 0) s.ws.next_layer().read_size(read_size);
  s.ws.next_layer().close_remote();

  s.ReadLoop();
  // On-open: one log line goes out (SendText), maybe followed by Close().
  std::string line = "log line 1\n";
  s.ws.text(true);
  s.ws.async_write(boost::asio::buffer(line), [&](beast::error_code ec, size_t) {
    if (ec || !server_closes) return;
    s.close_started = true;
    s.ws.async_close(websocket::close_reason(websocket::close_code::going_away, "server shutting down"),
                     [](beast::error_code) {});
  });
  if (!RunUntilIdle(ioc)) {
    // Every byte is in memory and no timer is set, so an operation still
    // pending now never completes: the session would hang until the server
    // stops (the server's handshake/idle timeouts do not end it either).
    // ws-read-close-stuck (known, Beast 1.74): a ping answered while our
    // write is in flight, then a protocol error while our close starts,
    // leaves the read and the close suspended on each other. Tolerated only
    // in that shape (the server closing) unless COHORT_FUZZ_NO_GUARDS is set;
    // see fuzz/regressions/KNOWN_CRASHES.
    FUZZ_CHECK(server_closes && !NoGuards(), "the WebSocket session is stuck: read/close never complete");
  }
  return 0;
}
