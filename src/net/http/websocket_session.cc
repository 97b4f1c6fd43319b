// Server side of a WebSocket connection (e.g. /api/jobs/{id}/logs/tail).
//
// Created by http_session.cc once the upgrade request passed auth and the
// route's pre-upgrade check. Lives on the loop thread; the public methods
// (SendText, Close, SetOnClose, ...) may be called from any thread and post
// onto the loop through a LoopHandle, so they do nothing once the server has
// stopped.
//
// Invariants (loop thread):
//   - state only moves forward: kAccepting -> kOpen -> kDone.
//   - at most one write-side operation (async_write or async_close) is in
//     flight (`writing_`); frames leave in queue order, the close frame last.
//   - a read is always pending while kOpen, so Beast answers pings and sees
//     the peer's close frame; incoming data frames are discarded. A message
//     over Options::max_ws_message_bytes fails the read: Beast sends close
//     1009 and tears the connection down; on_close reports 1009.
//   - on_close fires exactly once, at kDone (or from ReleaseSocket when the
//     loop was stopped before the close handshake finished).
//   - every pending operation has a timer: Beast's handshake timeout during
//     the upgrade, its idle timeout (keep-alive pings) while open, and from
//     the moment our async_close starts the close deadline
//     (Options::ws_close_timeout, ws_close_deadline.h), which ends the
//     session with 1006 even when Beast 1.74 leaves the read and the close
//     waiting on each other with nothing on the socket.
#include <boost/asio/buffer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <deque>

#include "cohort/common/logging.h"
#include "server_core.h"
#include "ws_close_deadline.h"

namespace cohort::net::internal {
namespace {

namespace websocket = boost::beast::websocket;

constexpr uint16_t kAbnormal = 1006;
constexpr uint16_t kGoingAway = 1001;
constexpr uint16_t kMessageTooBig = 1009;
constexpr uint16_t kInternalError = 1011;

class WsSession : public Connection, public WebSocketSession, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(ServerCore* core, beast::tcp_stream stream, http::request<http::string_body> upgrade,
            Request request, std::shared_ptr<const Route> route, std::string client_ip)
      : Connection(std::move(client_ip)),
        core_(core),
        loop_(core->loop_handle),
        upgrade_(std::move(upgrade)),
        request_(std::move(request)),
        route_(std::move(route)),
        close_deadline_(core->ioc.get_executor()) {
    ws_.emplace(std::move(stream));
  }

  void Run() {
    websocket::stream_base::timeout timeout{};
    // Also Beast's own bound on a close handshake whose peer is silent; every
    // close we start is bounded by ws_close_timeout besides (MaybeWrite).
    timeout.handshake_timeout = std::chrono::seconds(5);
    timeout.idle_timeout = core_->options.idle_timeout;   // ping at half, drop at full
    timeout.keep_alive_pings = true;
    ws_->set_option(timeout);
    ws_->set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "cohort"); }));
    ws_->read_message_max(core_->options.max_ws_message_bytes);  // 0: no limit
    ws_->async_accept(upgrade_, [self = shared_from_this()](beast::error_code ec) { self->OnAccept(ec); });
  }

  // --- WebSocketSession (any thread) ---
  bool SendText(std::string text) override {
    if (closed_.load()) return false;
    size_t n = text.size();
    buffered_ += n;
    bool posted = loop_->Post([self = shared_from_this(), text = std::move(text)]() mutable {
      self->EnqueueOnLoop(std::move(text));
    });
    if (!posted) buffered_ -= n;
    return posted;
  }

  void Close(uint16_t code, std::string reason) override {
    if (closed_.exchange(true)) return;
    loop_->Post([self = shared_from_this(), code, reason = std::move(reason)]() mutable {
      self->CloseOnLoop(code, std::move(reason));
    });
  }

  bool closed() const override { return closed_.load(); }

  void SetOnClose(std::function<void(uint16_t)> on_close) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (final_code_) {
      uint16_t code = *final_code_;
      loop_->Post([on_close = std::move(on_close), code] { on_close(code); });
    } else {
      on_close_ = std::move(on_close);
    }
  }

  size_t buffered_bytes() const override { return buffered_.load(); }
  const Request& request() const override { return request_; }

  // --- Connection (loop thread / Stop) ---
  void BeginShutdown() override {
    if (state_ == State::kDone) return;
    if (state_ == State::kAccepting) return Finish(kAbnormal);
    closed_ = true;
    // Unsent frames are dropped (except one already being written) so the
    // 1001 close frame goes out within the shutdown grace period.
    while (queue_.size() > (writing_ && !close_sent_ ? 1u : 0u)) {
      buffered_ -= queue_.back().size();
      queue_.pop_back();
    }
    if (!pending_close_) pending_close_ = websocket::close_reason(static_cast<websocket::close_code>(kGoingAway), "server shutting down");
    MaybeWrite();
  }

  void ReleaseSocket() override {
    auto self = shared_from_this();  // the deadline may hold the last other reference
    if (state_ != State::kDone) {
      state_ = State::kDone;
      closed_ = true;
      FireOnClose(kAbnormal);
    }
    close_deadline_.Release();
    ws_.reset();
  }

 private:
  enum class State { kAccepting, kOpen, kDone };

  void OnAccept(beast::error_code ec) {
    if (state_ == State::kDone) return;
    if (ec) {
      // Beast has already answered a bad handshake with a 400.
      core_->Count(request_.method, route_->pattern, 400);
      return Finish(kAbnormal);
    }
    state_ = State::kOpen;
    core_->Count(request_.method, route_->pattern, 101);
    ReadLoop();
    if (core_->stopping) return BeginShutdown();
    try {
      route_->on_open(shared_from_this());
    } catch (const std::exception& e) {
      COHORT_LOG(ERROR) << "WebSocket OnOpen for " << route_->pattern << " threw: " << e.what();
      Close(kInternalError, "internal error");
    }
  }

  void ReadLoop() {
    ws_->async_read(read_buffer_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (self->state_ == State::kDone) return;
      if (ec == websocket::error::closed) {
        // The peer's close frame (Beast has answered it and closed the socket).
        uint16_t code = self->pending_close_ ? self->pending_close_->code : self->ws_->reason().code;
        return self->Finish(code);
      }
      if (ec == websocket::error::message_too_big) {
        // Beast has sent close 1009 and torn the connection down.
        COHORT_LOG(WARN) << "WebSocket " << self->route_->pattern << " from " << self->request_.remote_address
                         << ": incoming message over " << self->core_->options.max_ws_message_bytes
                         << " bytes, closed with 1009";
        return self->Finish(kMessageTooBig);
      }
      if (ec) return self->Finish(self->close_sent_ ? self->pending_close_->code : kAbnormal);
      self->read_buffer_.consume(self->read_buffer_.size());
      self->ReadLoop();
    });
  }

  void EnqueueOnLoop(std::string text) {
    if (state_ != State::kOpen || pending_close_) {
      buffered_ -= text.size();
      return;
    }
    queue_.push_back(std::move(text));
    MaybeWrite();
  }

  void CloseOnLoop(uint16_t code, std::string reason) {
    if (state_ == State::kDone || pending_close_) return;
    pending_close_ = websocket::close_reason(static_cast<websocket::close_code>(code), reason);
    MaybeWrite();
  }

  void MaybeWrite() {
    if (state_ != State::kOpen || writing_) return;
    if (!queue_.empty()) {
      writing_ = true;
      ws_->text(true);
      ws_->async_write(asio::buffer(queue_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
        self->writing_ = false;
        if (self->state_ == State::kDone) return;
        self->buffered_ -= self->queue_.front().size();
        self->queue_.pop_front();
        if (ec) return self->Finish(kAbnormal);
        self->MaybeWrite();
      });
      return;
    }
    if (pending_close_ && !close_sent_) {
      close_sent_ = true;
      writing_ = true;
      // From here the session ends within ws_close_timeout, whatever the
      // peer sends (ws_close_deadline.h: Beast 1.74 can leave this close and
      // the pending read waiting on each other forever).
      close_deadline_.Start(core_->options.ws_close_timeout,
                            [self = shared_from_this()] { self->OnCloseDeadline(); });
      ws_->async_close(*pending_close_, [self = shared_from_this()](beast::error_code ec) {
        self->writing_ = false;
        if (self->state_ == State::kDone) return;
        self->Finish(self->pending_close_->code);
      });
    }
  }

  // Our close started ws_close_timeout ago and the session has not ended:
  // drop the connection. Closing the socket ends what waits on it; what
  // waits inside the stream (the stuck read and close) goes away when Finish
  // destroys the stream.
  void OnCloseDeadline() {
    if (state_ == State::kDone) return;
    COHORT_LOG(DEBUG) << "WebSocket " << route_->pattern << " from " << request_.remote_address
                      << ": close handshake not finished within " << core_->options.ws_close_timeout.count()
                      << " ms; connection dropped";
    Finish(kAbnormal);
  }

  void Finish(uint16_t code) {
    if (state_ == State::kDone) return;
    auto self = shared_from_this();  // Unregister may drop the last other reference
    state_ = State::kDone;
    closed_ = true;
    buffered_ = 0;
    queue_.clear();
    close_deadline_.Cancel();
    beast::get_lowest_layer(*ws_).close();
    FireOnClose(code);
    // Destroy the stream on a later turn, when no Beast frame is on the stack
    // (operations still suspended inside it are destroyed with it, which
    // drops their references to this session); a user may keep this object
    // after the server (and its io_context) is gone, so it must not own a
    // socket or a timer by then. Until that turn the session stays
    // registered, and Stop() releases it if the turn never comes.
    asio::post(core_->ioc, [self] {
      self->close_deadline_.Release();
      self->ws_.reset();
      self->core_->Unregister(self.get());
    });
  }

  void FireOnClose(uint16_t code) {
    std::function<void(uint16_t)> on_close;
    {
      std::lock_guard<std::mutex> lock(mu_);
      final_code_ = code;
      on_close = std::move(on_close_);
    }
    if (!on_close) return;
    try {
      on_close(code);
    } catch (const std::exception& e) {
      COHORT_LOG(ERROR) << "WebSocket on_close for " << route_->pattern << " threw: " << e.what();
    }
  }

  ServerCore* const core_;  // loop thread only
  const std::shared_ptr<LoopHandle> loop_;
  std::optional<websocket::stream<beast::tcp_stream>> ws_;  // reset by ReleaseSocket
  http::request<http::string_body> upgrade_;
  const Request request_;
  const std::shared_ptr<const Route> route_;
  beast::flat_buffer read_buffer_;

  // Loop thread.
  State state_ = State::kAccepting;
  std::deque<std::string> queue_;
  bool writing_ = false;
  std::optional<websocket::close_reason> pending_close_;
  bool close_sent_ = false;  // our async_close has started (the deadline is armed)
  WsCloseDeadline close_deadline_;  // released with ws_

  // Any thread.
  std::atomic<bool> closed_{false};
  std::atomic<size_t> buffered_{0};
  std::mutex mu_;
  std::function<void(uint16_t)> on_close_;  // GUARDED_BY(mu_)
  std::optional<uint16_t> final_code_;      // GUARDED_BY(mu_); set at kDone
};

}  // namespace

void StartWebSocketSession(ServerCore* core, beast::tcp_stream stream,
                           http::request<http::string_body> upgrade, Request request,
                           std::shared_ptr<const Route> route, std::string client_ip) {
  auto session = std::make_shared<WsSession>(core, std::move(stream), std::move(upgrade),
                                             std::move(request), std::move(route), std::move(client_ip));
  core->Register(session);
  session->Run();
}

}  // namespace cohort::net::internal
