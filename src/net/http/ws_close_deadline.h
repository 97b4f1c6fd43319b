// The close deadline of a server-side WebSocket session: once our close has
// started, the session ends within HttpServer::Options::ws_close_timeout
// whatever the peer sends. Used by WsSession (websocket_session.cc) and by
// fuzz/fuzz_websocket_frame.cc, which drives the same rule on Beast's
// in-memory test stream (without a clock: it fires the deadline with
// FireNow() when nothing else can make progress).
//
// Why a deadline of our own (Beast 1.74): a websocket::stream serializes its
// operations with two soft mutexes, rd_block and wr_block. Our async_close
// takes wr_block, sends the close frame, then wants rd_block to read the
// peer's answer. The pending async_read holds rd_block while it parses, and
// when a frame fails it (protocol error, invalid UTF-8, message too big) it
// wants wr_block to send its own close frame. If our close took wr_block
// first -- e.g. it was queued behind the pong the read was sending for a ping
// that arrived while one of our frames was being written -- each waits for
// the other forever. Neither waits on the socket or on a timer, so closing
// the socket (which is all Beast's own handshake/idle timeouts do) does not
// wake them: only destroying the stream does (the suspended operations are
// destroyed with it, their handlers never called).
//
// The rule, for the owner of the stream:
//   - Start() right before async_close: the close has begun;
//   - when the session ends (any path), Cancel();
//   - the expiry function, if it runs, ends the session as a broken
//     connection (on_close 1006): close the lowest layer (operations waiting
//     on the socket complete with an error), then destroy the stream on a
//     later turn of the loop (never from inside a Beast handler), which
//     releases the suspended ones;
//   - Release() before the io_context goes away, if the owner may outlive it.
// Every other state of a session has a timer already: the upgrade Beast's
// handshake timeout, an open session Beast's idle timeout (keep-alive pings;
// it also ends a close that Beast started itself after the peer's close frame
// or a bad frame, which never waits on our close), the frames written before
// the close the peer reading them or the idle timeout.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

namespace cohort::net::internal {

// Not thread-safe: the loop thread (the executor's) only.
class WsCloseDeadline {
 public:
  explicit WsCloseDeadline(const boost::asio::any_io_executor& executor) : timer_(std::in_place, executor) {}
  WsCloseDeadline(const WsCloseDeadline&) = delete;
  WsCloseDeadline& operator=(const WsCloseDeadline&) = delete;

  // Arms the deadline, once (later calls do nothing): `on_expiry` runs on the
  // executor after `timeout`, unless Cancel() or Release() ran first. It may
  // hold a strong reference to the owner: that reference is dropped when the
  // deadline fires or is cancelled.
  void Start(std::chrono::steady_clock::duration timeout, std::function<void()> on_expiry) {
    if (started_ || !timer_) return;
    started_ = true;
    pending_ = std::make_shared<std::function<void()>>(std::move(on_expiry));
    timer_->expires_after(timeout);
    timer_->async_wait([pending = pending_](boost::system::error_code ec) {
      if (!ec) Run(*pending);
    });
  }

  // The session has ended: the deadline will not fire.
  void Cancel() {
    if (timer_) timer_->cancel();
    Drop();  // last: may destroy the owner
  }

  // Fires the deadline now, as if its time had passed (for the fuzz target,
  // which has no clock). False if it was not armed, or already fired or
  // cancelled.
  bool FireNow() {
    if (!pending_ || !*pending_) return false;
    if (timer_) timer_->cancel();
    auto pending = std::move(pending_);
    Run(*pending);
    return true;
  }

  // Destroys the timer (before its io_context is destroyed). Disarms it.
  void Release() {
    timer_.reset();
    Drop();
  }

  // True once Start() has been called.
  bool started() const { return started_; }
  // True while armed: started, not yet fired, cancelled or released.
  bool armed() const { return pending_ && *pending_; }

 private:
  static void Run(std::function<void()>& pending) {
    std::function<void()> fn = std::move(pending);
    pending = nullptr;
    if (fn) fn();
  }
  void Drop() {
    // Destroys the expiry function after this object is no longer touched:
    // it may hold the last reference to the owner (and so to this object).
    auto pending = std::move(pending_);
    if (pending) {
      std::function<void()> fn = std::move(*pending);
      *pending = nullptr;
    }
  }

  std::optional<boost::asio::steady_timer> timer_;
  std::shared_ptr<std::function<void()>> pending_;  // shared with the timer's handler
  bool started_ = false;
};

}  // namespace cohort::net::internal
