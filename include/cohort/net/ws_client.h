// WebSocketClient: a small blocking WebSocket client (ws:// only).
//
// Used by `cohort job logs --follow` (the Ray log-tail protocol of
// ray-jobs-api.md §2.8: TEXT frames, then a close frame with code 1000) and by
// tests. Built on Boost.Beast behind a PImpl; no Boost type appears here.
//
// Threading: one thread at a time (thread-compatible), except Abort(), which
// any thread may call while another is inside a call. Every call blocks the
// caller until it finishes or its deadline passes; there is no background
// thread, so pings from the server are answered while ReadMessage runs.
// A call that hits its deadline returns DeadlineExceeded and leaves the
// connection closed (a half-read frame cannot be resumed).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::net {

class WebSocketClient {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  // Opens "ws://host[:port]/path[?query]" and completes the handshake,
  // sending `headers` (e.g. {"Authorization", "Bearer ..."}) with the upgrade.
  // A refused upgrade returns the server's answer: "HTTP 404: Job x does not
  // exist" as NotFound (404), FailedPrecondition (401/403), InvalidArgument
  // (other 4xx), Unavailable (5xx, connect failures). Bad URL: InvalidArgument.
  static Result<std::unique_ptr<WebSocketClient>> Connect(
      std::string_view url, const Headers& headers = {},
      Deadline deadline = Deadline::After(std::chrono::seconds(10)));

  WebSocketClient(const WebSocketClient&) = delete;
  WebSocketClient& operator=(const WebSocketClient&) = delete;
  ~WebSocketClient();  // Close() with a short deadline if still open

  // The next message (TEXT or BINARY, as bytes). nullopt once the server has
  // closed with a close frame (any code; see close_code()), and on every call
  // after that. Unavailable when the connection ended without a close frame
  // (the 1006 case Ray's SDK treats as an error).
  Result<std::optional<std::string>> ReadMessage(Deadline deadline = Deadline::Never());

  // Sends one TEXT frame (servers of the log tail ignore them).
  Status SendText(std::string_view text, Deadline deadline = Deadline::After(std::chrono::seconds(10)));

  // Sends a close frame and waits for the server's; idempotent.
  Status Close(uint16_t code = 1000, Deadline deadline = Deadline::After(std::chrono::seconds(2)));

  // Ends the connection from any thread: a call in progress on another thread
  // returns Cancelled promptly, and so does every later call (Close() and the
  // destructor then send nothing). Idempotent. REQUIRES: the client is not
  // being destroyed concurrently.
  void Abort();

  // Keep-alive for ReadMessage (default: off). With `idle` > 0, a read that
  // has received nothing for idle/2 pings the server, and one that has then
  // received nothing (not even the pong) for another idle/2 ends with
  // Unavailable (1006): a peer that vanished without closing the TCP
  // connection is noticed. 0 turns it off. Takes effect from the next call.
  void SetIdleTimeout(std::chrono::milliseconds idle);

  // The close code the server sent (1000 normal, 1001 going away, ...), or
  // 1006 after an abnormal end; nullopt while open.
  std::optional<uint16_t> close_code() const;
  const std::string& close_reason() const;

 private:
  struct Impl;
  explicit WebSocketClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::net
