// HttpServer's WebSocket close deadline (Options::ws_close_timeout,
// src/net/http/ws_close_deadline.h): once the server's close frame starts
// out, the session ends within the deadline whatever the peer does, and its
// connection is released from the caps. Real sockets on loopback; the client
// is a raw socket speaking the frames by hand, so the tests choose exactly
// which bytes arrive and when.
//
// The stuck state (fuzz/regressions/fuzz_websocket_frame/beast-read-close-stuck.bin,
// through the real server): a ping arrives while one of our frames is being
// written (the peer is not reading), followed by a malformed frame; our Close()
// is pending behind that frame. When the peer reads again, Beast 1.74 lets the
// read send its pong, hands the write lock to our close, and the read, now
// failing on the malformed frame, waits for that lock while holding the read
// lock, which our close needs to read the answer: both wait forever, with
// nothing on the socket for a timeout to cancel.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "cohort/net/http_server.h"

namespace cohort::net {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::unique_ptr<HttpServer> StartServer(HttpServer::Options opts) {
  opts.host = "127.0.0.1";
  opts.port = 0;
  auto server = HttpServer::Start(std::move(opts));
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return std::move(server).value();
}

// One frame as the server sent it (servers do not mask).
struct Frame {
  uint8_t opcode = 0;  // 0x1 text, 0x8 close, 0x9 ping, 0xA pong
  bool fin = false;
  std::string payload;
  uint16_t close_code() const {
    return payload.size() >= 2 ? static_cast<uint16_t>((uint8_t(payload[0]) << 8) | uint8_t(payload[1])) : 0;
  }
};

// A client frame: FIN, masked (RFC 6455 requires it of clients), payload < 126 bytes.
std::string ClientFrame(uint8_t opcode, const std::string& payload) {
  const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
  std::string f;
  f += static_cast<char>(0x80 | opcode);
  f += static_cast<char>(0x80 | payload.size());
  for (uint8_t m : mask) f += static_cast<char>(m);
  for (size_t i = 0; i < payload.size(); ++i) f += static_cast<char>(payload[i] ^ mask[i % 4]);
  return f;
}

std::string ClosePayload(uint16_t code) {
  return std::string{static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
}

// A WebSocket client on a raw TCP socket with a small receive buffer, so the
// server's writes block as soon as the client stops reading.
class RawWsClient {
 public:
  explicit RawWsClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return;
    int rcvbuf = 16 << 10;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawWsClient() { Close(); }
  RawWsClient(const RawWsClient&) = delete;
  RawWsClient& operator=(const RawWsClient&) = delete;

  bool ok() const { return fd_ >= 0; }
  bool eof() const { return eof_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool Send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  // The upgrade; true on "101".
  bool Upgrade(const std::string& path) {
    if (!Send("GET " + path +
              " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")) {
      return false;
    }
    auto deadline = Clock::now() + 5s;
    size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadSome(deadline)) return false;
    }
    bool switched = in_.rfind("HTTP/1.1 101", 0) == 0;
    in_.erase(0, end + 4);
    return switched;
  }

  // The next complete frame, or nullopt at EOF or when `deadline` passes.
  std::optional<Frame> NextFrame(Clock::time_point deadline) {
    while (true) {
      if (auto f = Parse()) return f;
      if (!ReadSome(deadline)) return std::nullopt;
    }
  }

  // Raw bytes until `marker` has arrived (or EOF, or `deadline`), then consumed.
  std::string ReadUntil(const std::string& marker, Clock::time_point deadline) {
    while (in_.find(marker) == std::string::npos && ReadSome(deadline)) {
    }
    std::string out = std::move(in_);
    in_.clear();
    return out;
  }

  // Reads until the server closes the connection; true if it did by `deadline`.
  bool WaitEof(Clock::time_point deadline) {
    while (!eof_) {
      if (!ReadSome(deadline)) break;
      in_.clear();
    }
    return eof_;
  }

 private:
  bool ReadSome(Clock::time_point deadline) {
    if (eof_) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd_, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[65536];
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    in_.append(buf, static_cast<size_t>(n));
    return true;
  }

  std::optional<Frame> Parse() {
    if (in_.size() < 2) return std::nullopt;
    const auto* b = reinterpret_cast<const uint8_t*>(in_.data());
    size_t header = 2;
    uint64_t len = b[1] & 0x7f;
    if (len == 126) {
      header = 4;
      if (in_.size() < header) return std::nullopt;
      len = (uint64_t{b[2]} << 8) | b[3];
    } else if (len == 127) {
      header = 10;
      if (in_.size() < header) return std::nullopt;
      len = 0;
      for (int i = 2; i < 10; ++i) len = (len << 8) | b[i];
    }
    if (in_.size() < header + len) return std::nullopt;
    Frame f;
    f.fin = (b[0] & 0x80) != 0;
    f.opcode = b[0] & 0x0f;
    f.payload = in_.substr(header, len);
    in_.erase(0, header + len);
    return f;
  }

  int fd_ = -1;
  bool eof_ = false;
  std::string in_;
};

// True once a plain GET from 127.0.0.1 is answered 200 rather than 503 (the
// caps have room again), trying until `wait` passes.
bool ServedWithin(int port, std::chrono::milliseconds wait) {
  auto deadline = Clock::now() + wait;
  do {
    RawWsClient c(port);
    if (c.ok() && c.Send("GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") &&
        c.ReadUntil("\r\n\r\n", Clock::now() + 2s).rfind("HTTP/1.1 200", 0) == 0) {
      return true;
    }
    std::this_thread::sleep_for(20ms);
  } while (Clock::now() < deadline);
  return false;
}

struct Ended {
  uint16_t code;
  Clock::time_point at;
};

// A server with a /ok route and a /ws route whose sessions are handed to the
// test, their on_close reported through `ended`.
struct Fixture {
  explicit Fixture(HttpServer::Options opts) : server(StartServer(std::move(opts))) {
    server->Handle("GET", "/ok", [](const Request&) { return Response::Text(200, "ok"); });
    server->HandleWebSocket("/ws", nullptr, [this](std::shared_ptr<WebSocketSession> s) {
      s->SetOnClose([this](uint16_t code) { ended.set_value({code, Clock::now()}); });
      opened.set_value(s);
    });
  }
  // Waits until everything posted to the loop so far has run.
  void SyncLoop() {
    std::promise<void> done;
    server->Post([&] { done.set_value(); });
    done.get_future().wait();
  }

  std::unique_ptr<HttpServer> server;
  std::promise<std::shared_ptr<WebSocketSession>> opened;
  std::promise<Ended> ended;
};

TEST(WebSocketCloseDeadlineTest, PingThenBadFrameAsOurCloseStartsEndsAtTheDeadline) {
  HttpServer::Options opts;
  opts.ws_close_timeout = 500ms;
  opts.max_connections_per_client = 1;  // the stuck session holds the only slot
  Fixture fx(opts);
  const int port = fx.server->port();
  RawWsClient client(port);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.Upgrade("/ws"));
  auto opened = fx.opened.get_future();
  ASSERT_EQ(opened.wait_for(5s), std::future_status::ready);
  std::shared_ptr<WebSocketSession> session = opened.get();
  auto ended = fx.ended.get_future();

  // 1. The client does not read. Send single-frame messages (2000 bytes: not
  // fragmented, so Beast cannot slip a control frame into one) one at a time
  // until one stays unwritten: the socket buffers are full and that write,
  // with nothing queued behind it, holds Beast's write lock.
  const std::string line(2000, 'x');
  size_t sent = 0;
  bool blocked = false;
  auto drained_within = [&](std::chrono::milliseconds wait) {
    auto until = Clock::now() + wait;
    while (session->buffered_bytes() != 0 && Clock::now() < until) std::this_thread::sleep_for(100us);
    return session->buffered_bytes() == 0;
  };
  while (!blocked && sent < (size_t{256} << 20)) {
    ASSERT_TRUE(session->SendText(line));
    sent += line.size();
    // Blocked, not just slow on a busy machine: still unwritten 0.7 s later.
    blocked = !drained_within(200ms) && !drained_within(500ms);
  }
  ASSERT_TRUE(blocked) << "the server's writes never blocked after " << sent << " bytes";

  // 2. A ping and a malformed frame (reserved opcode 0x3) in one segment: the
  // read answers the ping first and waits for the write lock, with the bad
  // frame already in its buffer.
  ASSERT_TRUE(client.Send(ClientFrame(0x9, "") + ClientFrame(0x3, "")));
  std::this_thread::sleep_for(300ms);

  // 3. The server closes; the close waits for the blocked write.
  session->Close(4001, "job finished");
  fx.SyncLoop();
  EXPECT_TRUE(session->closed());
  EXPECT_EQ(ended.wait_for(100ms), std::future_status::timeout);
  // The session holds the client's only connection slot.
  {
    RawWsClient over(port);
    ASSERT_TRUE(over.ok());
    over.Send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(over.ReadUntil("\r\n\r\n", Clock::now() + 3s).rfind("HTTP/1.1 503", 0), 0u);
  }

  // 4. The client reads again: the rest of the messages, the pong, then our
  // close frame (4001), which it answers like a well-behaved client. In
  // Beast 1.74 the close and the read are now waiting on each other: nobody
  // reads the answer, and only the close deadline ends the session.
  size_t text_bytes = 0;
  bool pong = false;
  std::optional<Frame> close_frame;
  auto read_deadline = Clock::now() + 10s;
  while (!close_frame) {
    auto f = client.NextFrame(read_deadline);
    ASSERT_TRUE(f) << "no close frame from the server (eof: " << client.eof() << ")";
    if (f->opcode == 0x1) text_bytes += f->payload.size();
    if (f->opcode == 0xA) pong = true;
    if (f->opcode == 0x8) close_frame = f;
  }
  const auto close_seen = Clock::now();
  EXPECT_EQ(text_bytes, sent);
  EXPECT_TRUE(pong);
  EXPECT_EQ(close_frame->close_code(), 4001);
  EXPECT_TRUE(client.Send(ClientFrame(0x8, ClosePayload(4001))));

  // 5. The deadline: on_close with 1006 (the close handshake never finished;
  // had it, on_close would report 4001), the socket dropped, the slot freed.
  ASSERT_EQ(ended.wait_for(5s), std::future_status::ready) << "the session is stuck: on_close never ran";
  Ended end = ended.get();
  EXPECT_EQ(end.code, 1006);
  EXPECT_LT(end.at - close_seen, 3s);
  EXPECT_TRUE(client.WaitEof(Clock::now() + 3s));
  EXPECT_TRUE(ServedWithin(port, 3000ms));
  EXPECT_FALSE(session->SendText("after the end"));
}

TEST(WebSocketCloseDeadlineTest, SilentPeerIsDroppedAtTheDeadline) {
  HttpServer::Options opts;
  opts.ws_close_timeout = 300ms;  // shorter than Beast's own 5 s close timeout
  opts.max_connections_per_client = 1;
  Fixture fx(opts);
  const int port = fx.server->port();
  RawWsClient client(port);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.Upgrade("/ws"));
  auto opened = fx.opened.get_future();
  ASSERT_EQ(opened.wait_for(5s), std::future_status::ready);
  auto ended = fx.ended.get_future();
  opened.get()->Close(4002, "bye");
  // The close frame arrives; the client neither answers nor closes the socket.
  auto f = client.NextFrame(Clock::now() + 5s);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->opcode, 0x8);
  EXPECT_EQ(f->close_code(), 4002);
  const auto close_seen = Clock::now();
  ASSERT_EQ(ended.wait_for(3s), std::future_status::ready);
  Ended end = ended.get();
  EXPECT_EQ(end.code, 1006);
  EXPECT_LT(end.at - close_seen, 2s);
  EXPECT_TRUE(client.WaitEof(Clock::now() + 3s));
  EXPECT_TRUE(ServedWithin(port, 3000ms));
}

TEST(WebSocketCloseDeadlineTest, FramesQueuedBeforeTheCloseAreNotCutOff) {
  // The deadline starts with the close frame, not with Close(): a slow reader
  // still gets everything queued before it (a finished job's whole log).
  HttpServer::Options opts;
  opts.ws_close_timeout = 500ms;
  Fixture fx(opts);
  RawWsClient client(fx.server->port());
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.Upgrade("/ws"));
  auto opened = fx.opened.get_future();
  ASSERT_EQ(opened.wait_for(5s), std::future_status::ready);
  std::shared_ptr<WebSocketSession> session = opened.get();
  auto ended = fx.ended.get_future();
  const std::string chunk(64 << 10, 'l');
  constexpr int kChunks = 128;  // 8 MiB: far more than the socket buffers hold
  for (int i = 0; i < kChunks; ++i) ASSERT_TRUE(session->SendText(chunk));
  session->Close(1000);
  std::this_thread::sleep_for(1500ms);  // not reading, well past the deadline
  EXPECT_EQ(ended.wait_for(0s), std::future_status::timeout);

  size_t text_bytes = 0;
  std::optional<Frame> close_frame;
  while (!close_frame) {
    auto f = client.NextFrame(Clock::now() + 10s);
    ASSERT_TRUE(f) << "eof: " << client.eof();
    if (f->opcode == 0x0 || f->opcode == 0x1) text_bytes += f->payload.size();
    if (f->opcode == 0x8) close_frame = f;
  }
  EXPECT_EQ(text_bytes, chunk.size() * kChunks);
  EXPECT_EQ(close_frame->close_code(), 1000);
  EXPECT_TRUE(client.Send(ClientFrame(0x8, ClosePayload(1000))));
  // The server shuts down its side after the handshake; the client closes then.
  EXPECT_TRUE(client.WaitEof(Clock::now() + 3s));
  client.Close();
  ASSERT_EQ(ended.wait_for(3s), std::future_status::ready);
  EXPECT_EQ(ended.get().code, 1000);
}

}  // namespace
}  // namespace cohort::net
