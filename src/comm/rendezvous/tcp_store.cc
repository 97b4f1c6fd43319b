// TcpStore: the rendezvous key-value store over TCP (TcpStoreServer and the
// client returned by ConnectTcpStore).
//
// Threads: TcpStoreServer owns one serving thread, a poll(2) loop over the
// listening socket, every client socket and a self-pipe that the destructor
// writes to; all server state is touched only by that thread. The client is
// thread-safe: a mutex serializes whole request/response exchanges, so a Get
// that waits also holds up other callers of the same client until it returns
// (use one client per thread that waits concurrently).
//
// Wire protocol (integers little-endian; one request in flight per connection):
//   request:  u8 op | u32 key_len | key bytes | payload
//     op 1 SET: payload = u32 value_len | value bytes
//     op 2 GET: no payload; the server answers once the key exists
//     op 3 ADD: payload = i64 delta; a missing key counts as 0; the new value
//               is stored as decimal text (so GET returns e.g. "3")
//   response: u8 code | payload
//     code 0 (OK): SET: nothing; GET: u32 value_len | value bytes;
//                  ADD: i64 new value
//     otherwise:   code is a cohort::StatusCode; payload = u32 len | message
// The server answers a connection's requests in order and reads no further
// request from it while its GET waits. Keys are at most 64 KiB and values at
// most 256 MiB; a frame beyond that (or an unknown op) is a protocol error and
// the server drops the connection. A client whose GET times out closes its
// connection (the late answer would otherwise be taken for the answer to its
// next request) and reconnects on its next call; a client whose server closed
// the connection fails every later call with Unavailable.
//
// Authentication (TcpStoreOptions::auth_secret set; the handshake itself is
// described in src/comm/auth.h, with context "store"): the server sends its
// challenge as soon as it accepts a connection. The client sends an AUTH
// frame (op 0xA7, key_len 0) without waiting for it, then its response, and
// reads the verdict; only then does it send requests. A server without a
// secret drops a connection that sends AUTH, so a client with a secret fails
// at once instead of at its deadline; a client without a secret that meets a
// server with one reads 0xA7 where it expects a status code, and says the
// store requires a job token. Until a connection is authenticated the server
// reads no more than the handshake needs and answers nothing else; it drops
// the connection -- with one WARN line naming the peer's address and the
// reason -- when the peer sends anything but AUTH and a correct response,
// closes, or does not finish within auth_timeout. The serving loop never
// blocks on a handshake: other clients are served meanwhile.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "auth.h"
#include "cohort/comm/store.h"
#include "cohort/common/logging.h"

namespace cohort::comm {
namespace {

constexpr uint8_t kOpSet = 1;
constexpr uint8_t kOpGet = 2;
constexpr uint8_t kOpAdd = 3;
// The first frame of an authenticating client; equal to the first byte of a
// challenge, which no response code is.
constexpr uint8_t kOpAuth = 0xA7;
static_assert(kOpAuth == static_cast<uint8_t>(auth::kChallengeMagic[0]));
constexpr size_t kAuthFrameBytes = 5;  // op, key_len = 0
constexpr const char* kAuthContext = "store";
constexpr uint32_t kMaxKeyBytes = 64 * 1024;
constexpr uint32_t kMaxValueBytes = 256u * 1024 * 1024;
constexpr size_t kRequestHeaderBytes = 1 + 4;  // op, key_len
// How long Set and Add wait for the server's answer (they take no deadline).
constexpr std::chrono::seconds kOpTimeout(300);
// How long a client that closed its connection after a Get timeout tries to
// open a new one.
constexpr std::chrono::seconds kReconnectTimeout(5);
constexpr std::chrono::milliseconds kConnectRetryInterval(50);

const char* OpName(uint8_t op) {
  switch (op) {
    case kOpSet: return "SET";
    case kOpGet: return "GET";
    case kOpAdd: return "ADD";
    case kOpAuth: return "AUTH";
  }
  return "?";
}

std::string ErrnoText(int err) { return std::strerror(err); }

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutI64(std::string* out, int64_t value) {
  const auto v = static_cast<uint64_t>(value);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
int64_t GetI64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return static_cast<int64_t>(v);
}

std::string HostPort(const std::string& host, int port) {
  return host + ":" + std::to_string(port);
}

// Numeric IPv4 text of a sockaddr_in.
std::string IpText(const sockaddr_in& addr) {
  char buf[INET_ADDRSTRLEN] = {};
  if (inet_ntop(AF_INET, &addr.sin_addr, buf, sizeof(buf)) == nullptr) return "";
  return buf;
}

std::string AuthFrame() {
  std::string frame(1, static_cast<char>(kOpAuth));
  PutU32(&frame, 0);
  return frame;
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// ---------------------------------------------------------------------------
// Server-side response encoding.

void AppendOk(std::string* out) { out->push_back(0); }
void AppendValue(std::string* out, const std::string& value) {
  AppendOk(out);
  PutU32(out, static_cast<uint32_t>(value.size()));
  out->append(value);
}
void AppendError(std::string* out, const Status& status) {
  out->push_back(static_cast<char>(status.code()));
  PutU32(out, static_cast<uint32_t>(status.message().size()));
  out->append(status.message());
}

}  // namespace

// ---------------------------------------------------------------------------
// TcpStoreServer

struct TcpStoreServer::Impl {
  struct Conn {
    std::string in;       // received bytes; in[in_off..] not yet parsed
    size_t in_off = 0;
    std::string out;      // bytes to send; out[out_off..] not yet sent
    size_t out_off = 0;
    bool waiting = false;  // a GET for waiting_key is outstanding
    std::string waiting_key;
    bool dead = false;     // closed at the end of this loop iteration
    std::string peer;      // the client's "ip:port", for messages
    // With a secret: false until the handshake succeeds; `challenge` holds
    // the nonce sent, `auth_deadline` is when the connection is dropped.
    bool authenticated = true;
    std::optional<auth::Challenge> challenge;
    Deadline::Clock::time_point auth_deadline{};
    bool refused = false;  // the refusal was logged
  };

  ~Impl();
  void Run();
  void Accept();
  void ReadFrom(int fd, Conn& conn);
  void Authenticate(int fd, Conn& conn);
  void Refuse(int fd, Conn& conn, const std::string& reason);
  int HandshakePollTimeoutMs() const;
  void ExpireHandshakes();
  void Process(int fd, Conn& conn);
  void Handle(int fd, Conn& conn, uint8_t op, std::string key, std::string value, int64_t delta);
  void Wake(const std::string& key);
  void Flush(int fd, Conn& conn);
  void CloseDead();

  std::string address;  // host:port, for messages
  int port = 0;
  std::string auth_secret;  // empty: no authentication
  std::chrono::milliseconds auth_timeout{0};
  int listen_fd = -1;
  int wake_read_fd = -1;   // self-pipe: the destructor writes one byte
  int wake_write_fd = -1;
  std::thread thread;

  // Serving-thread state.
  std::map<int, Conn> conns;
  std::map<std::string, std::string> data;
  std::map<std::string, std::vector<int>> waiters;  // key -> fds waiting in GET
  std::deque<int> ready;  // woken fds whose buffered input must be parsed
};

TcpStoreServer::Impl::~Impl() {
  if (thread.joinable()) {
    char byte = 1;
    while (write(wake_write_fd, &byte, 1) < 0 && errno == EINTR) {
    }
    thread.join();
  }
  for (auto& [fd, conn] : conns) close(fd);
  if (listen_fd >= 0) close(listen_fd);
  if (wake_read_fd >= 0) close(wake_read_fd);
  if (wake_write_fd >= 0) close(wake_write_fd);
}

void TcpStoreServer::Impl::Run() {
  std::vector<pollfd> pfds;
  while (true) {
    pfds.clear();
    pfds.push_back({wake_read_fd, POLLIN, 0});
    pfds.push_back({listen_fd, POLLIN, 0});
    for (const auto& [fd, conn] : conns) {
      short events = POLLIN;
      if (conn.out_off < conn.out.size()) events |= POLLOUT;
      pfds.push_back({fd, events, 0});
    }
    int n = poll(pfds.data(), pfds.size(), HandshakePollTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      COHORT_LOG(ERROR) << "rendezvous store at " << address
                        << ": poll failed: " << ErrnoText(errno) << "; stopping";
      break;
    }
    if (pfds[0].revents != 0) break;  // shutdown
    if (pfds[1].revents != 0) Accept();
    for (size_t i = 2; i < pfds.size(); ++i) {
      if (pfds[i].revents == 0) continue;
      const int fd = pfds[i].fd;
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn& conn = it->second;
      if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) ReadFrom(fd, conn);
      if (!conn.authenticated) Authenticate(fd, conn);
      if (!conn.dead && conn.authenticated) Process(fd, conn);
      if (!conn.dead) Flush(fd, conn);
    }
    // Connections woken by a SET/ADD may have more requests buffered.
    while (!ready.empty()) {
      const int fd = ready.front();
      ready.pop_front();
      auto it = conns.find(fd);
      if (it == conns.end() || it->second.dead) continue;
      Process(fd, it->second);
      if (!it->second.dead) Flush(fd, it->second);
    }
    ExpireHandshakes();
    CloseDead();
  }
  // Closing every socket now makes waiting clients fail at once.
  for (auto& [fd, conn] : conns) close(fd);
  conns.clear();
  waiters.clear();
  close(listen_fd);
  listen_fd = -1;
}

void TcpStoreServer::Impl::Accept() {
  while (true) {
    sockaddr_in peer{};
    socklen_t peer_len = sizeof(peer);
    int fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        COHORT_LOG(WARN) << "rendezvous store at " << address
                         << ": accept failed: " << ErrnoText(errno);
        // e.g. EMFILE: the listening socket stays readable; don't spin.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return;
    }
    SetNoDelay(fd);
    Conn& conn = conns[fd] = Conn{};
    conn.peer = HostPort(IpText(peer), ntohs(peer.sin_port));
    if (auth_secret.empty()) continue;
    conn.authenticated = false;
    conn.auth_deadline = Deadline::Clock::now() + auth_timeout;
    Result<auth::Challenge> challenge = auth::Challenge::New();
    if (!challenge.ok()) {
      Refuse(fd, conn, challenge.status().message());
      continue;
    }
    conn.challenge = std::move(challenge).value();
    conn.out = conn.challenge->Wire();
    Flush(fd, conn);
  }
}

// Looks at what an unauthenticated connection sent so far (ReadFrom takes no
// more than the AUTH frame and the response) and accepts or refuses it once
// the response is complete.
void TcpStoreServer::Impl::Authenticate(int fd, Conn& conn) {
  const std::string& in = conn.in;
  if (!in.empty() && static_cast<uint8_t>(in[0]) != kOpAuth) {
    const auto op = static_cast<uint8_t>(in[0]);
    if (op == kOpSet || op == kOpGet || op == kOpAdd) {
      Refuse(fd, conn, "it sent a " + std::string(OpName(op)) +
                           " request without authenticating (a rank without COHORT_JOB_TOKEN?)");
    } else {
      char first[8];
      std::snprintf(first, sizeof(first), "0x%02x", op);
      Refuse(fd, conn, std::string("it does not speak the store protocol (first byte ") + first +
                           ")");
    }
    return;
  }
  if (in.size() >= kAuthFrameBytes && GetU32(in.data() + 1) != 0) {
    Refuse(fd, conn, "it sent a malformed AUTH frame");
    return;
  }
  // Incomplete: wait (an EOF before the response is complete is logged by CloseDead).
  if (in.size() < kAuthFrameBytes + auth::kResponseBytes) return;
  std::string reply;
  const bool ok = conn.challenge->Verify(
      auth_secret, kAuthContext,
      std::string_view(in).substr(kAuthFrameBytes, auth::kResponseBytes), &reply);
  conn.in.clear();
  conn.in_off = 0;
  conn.out.append(reply);
  if (!ok) {
    Refuse(fd, conn, "its authentication proof does not match the job token (a wrong "
                     "COHORT_JOB_TOKEN, a replayed answer, or not a cohort rank)");
    return;
  }
  conn.authenticated = true;
  conn.challenge.reset();
  COHORT_LOG(DEBUG) << "rendezvous store at " << address << ": " << conn.peer << " authenticated";
}

// Sends what is queued (the refusal byte, if any) and drops the connection
// with one WARN line. What the peer already sent is read and discarded first
// (up to 64 KiB), so that closing sends it a FIN rather than a reset that
// could destroy the challenge or verdict before it reads them.
void TcpStoreServer::Impl::Refuse(int fd, Conn& conn, const std::string& reason) {
  if (!conn.dead) {
    Flush(fd, conn);
    char scratch[4096];
    for (int i = 0; i < 16; ++i) {
      ssize_t r = recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT);
      if (r <= 0 && !(r < 0 && errno == EINTR)) break;
    }
  }
  conn.dead = true;
  if (conn.refused) return;
  conn.refused = true;
  COHORT_LOG(WARN) << "rendezvous store at " << address << ": refused a connection from "
                   << conn.peer << ": " << reason;
}

// -1 (no limit) unless a handshake is pending; then until the first one expires.
int TcpStoreServer::Impl::HandshakePollTimeoutMs() const {
  int timeout = -1;
  for (const auto& [fd, conn] : conns) {
    if (conn.authenticated || conn.dead) continue;
    const int ms = Deadline(conn.auth_deadline).RemainingMsForPoll();
    if (timeout < 0 || ms < timeout) timeout = ms;
  }
  return timeout;
}

void TcpStoreServer::Impl::ExpireHandshakes() {
  const auto now = Deadline::Clock::now();
  for (auto& [fd, conn] : conns) {
    if (conn.authenticated || conn.dead || now < conn.auth_deadline) continue;
    Refuse(fd, conn, "it did not complete the authentication handshake within " +
                         std::to_string(auth_timeout.count()) + " ms");
  }
}

void TcpStoreServer::Impl::ReadFrom(int fd, Conn& conn) {
  char buf[64 * 1024];
  while (true) {
    size_t want = sizeof(buf);
    if (!conn.authenticated) {
      // Never more than the handshake needs from a peer not yet trusted.
      const size_t need = kAuthFrameBytes + auth::kResponseBytes;
      if (conn.in.size() >= need) return;
      want = need - conn.in.size();
    }
    ssize_t r = recv(fd, buf, want, 0);
    if (r > 0) {
      conn.in.append(buf, static_cast<size_t>(r));
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    conn.dead = true;  // EOF or a connection error
    return;
  }
}

void TcpStoreServer::Impl::Process(int fd, Conn& conn) {
  while (!conn.waiting && !conn.dead) {
    const size_t avail = conn.in.size() - conn.in_off;
    const char* p = conn.in.data() + conn.in_off;
    if (avail < kRequestHeaderBytes) break;
    const uint8_t op = static_cast<uint8_t>(p[0]);
    const uint32_t key_len = GetU32(p + 1);
    if (op == kOpAuth && auth_secret.empty()) {
      COHORT_LOG(WARN) << "rendezvous store at " << address << ": refused a connection from "
                       << conn.peer << ": it wants to authenticate, but this store runs "
                       << "without a job token (COHORT_JOB_TOKEN differs between ranks)";
      conn.dead = true;
      return;
    }
    if ((op != kOpSet && op != kOpGet && op != kOpAdd) || key_len > kMaxKeyBytes) {
      COHORT_LOG(WARN) << "rendezvous store at " << address << ": protocol error from a client (op "
                       << int{op} << ", key length " << key_len << "); dropping it";
      conn.dead = true;
      return;
    }
    size_t need = kRequestHeaderBytes + key_len + (op == kOpSet ? 4 : op == kOpAdd ? 8 : 0);
    if (avail < need) break;
    const char* payload = p + kRequestHeaderBytes + key_len;
    std::string value;
    int64_t delta = 0;
    if (op == kOpSet) {
      const uint32_t value_len = GetU32(payload);
      if (value_len > kMaxValueBytes) {
        COHORT_LOG(WARN) << "rendezvous store at " << address << ": a client sent a " << value_len
                         << "-byte value (limit " << kMaxValueBytes << "); dropping it";
        conn.dead = true;
        return;
      }
      need += value_len;
      if (avail < need) break;
      value.assign(payload + 4, value_len);
    } else if (op == kOpAdd) {
      delta = GetI64(payload);
    }
    std::string key(p + kRequestHeaderBytes, key_len);
    conn.in_off += need;
    Handle(fd, conn, op, std::move(key), std::move(value), delta);
  }
  if (conn.in_off == conn.in.size()) {
    conn.in.clear();
    conn.in_off = 0;
  } else if (conn.in_off > 64 * 1024) {
    conn.in.erase(0, conn.in_off);
    conn.in_off = 0;
  }
}

void TcpStoreServer::Impl::Handle(int fd, Conn& conn, uint8_t op, std::string key,
                                  std::string value, int64_t delta) {
  switch (op) {
    case kOpSet: {
      data[key] = std::move(value);
      AppendOk(&conn.out);
      Wake(key);
      return;
    }
    case kOpGet: {
      auto it = data.find(key);
      if (it != data.end()) {
        AppendValue(&conn.out, it->second);
        return;
      }
      conn.waiting = true;
      conn.waiting_key = key;
      waiters[key].push_back(fd);
      return;
    }
    case kOpAdd: {
      int64_t current = 0;
      auto it = data.find(key);
      if (it != data.end()) {
        const std::string& text = it->second;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), current);
        if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
          AppendError(&conn.out, Status::InvalidArgument("cannot Add to key '" + key +
                                                         "': its value is not an integer"));
          return;
        }
      }
      int64_t result = 0;
      if (__builtin_add_overflow(current, delta, &result)) {
        AppendError(&conn.out,
                    Status::InvalidArgument("Add(" + std::to_string(delta) + ") to key '" + key +
                                            "' would overflow int64 (value " +
                                            std::to_string(current) + ")"));
        return;
      }
      data[key] = std::to_string(result);
      AppendOk(&conn.out);
      PutI64(&conn.out, result);
      Wake(key);
      return;
    }
  }
}

void TcpStoreServer::Impl::Wake(const std::string& key) {
  auto it = waiters.find(key);
  if (it == waiters.end()) return;
  std::vector<int> fds = std::move(it->second);
  waiters.erase(it);
  const std::string& value = data[key];
  for (int fd : fds) {
    auto c = conns.find(fd);
    if (c == conns.end()) continue;
    c->second.waiting = false;
    c->second.waiting_key.clear();
    AppendValue(&c->second.out, value);
    ready.push_back(fd);
  }
}

void TcpStoreServer::Impl::Flush(int fd, Conn& conn) {
  while (conn.out_off < conn.out.size()) {
    ssize_t w = send(fd, conn.out.data() + conn.out_off, conn.out.size() - conn.out_off,
                     MSG_NOSIGNAL);
    if (w > 0) {
      conn.out_off += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    conn.dead = true;
    return;
  }
  conn.out.clear();
  conn.out_off = 0;
}

void TcpStoreServer::Impl::CloseDead() {
  for (auto it = conns.begin(); it != conns.end();) {
    if (!it->second.dead) {
      ++it;
      continue;
    }
    const int fd = it->first;
    if (!it->second.authenticated && !it->second.refused) {
      COHORT_LOG(WARN) << "rendezvous store at " << address << ": refused a connection from "
                       << it->second.peer << ": it closed the connection before authenticating";
    }
    if (it->second.waiting) {
      auto w = waiters.find(it->second.waiting_key);
      if (w != waiters.end()) {
        auto& fds = w->second;
        fds.erase(std::remove(fds.begin(), fds.end(), fd), fds.end());
        if (fds.empty()) waiters.erase(w);
      }
    }
    close(fd);
    it = conns.erase(it);
  }
}

TcpStoreServer::TcpStoreServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TcpStoreServer::~TcpStoreServer() = default;  // ~Impl stops and joins the thread

int TcpStoreServer::port() const { return impl_->port; }

Result<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const TcpStoreOptions& options) {
  if (options.port < 0 || options.port > 65535) {
    return Status::InvalidArgument("rendezvous store port " + std::to_string(options.port) +
                                   " is out of range: must be in [0, 65535] (0 = any free port)");
  }
  const std::string where = HostPort(options.host, options.port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(options.port));
  if (options.host.empty() || options.host == "0.0.0.0") {
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
  } else {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(options.host.c_str(), nullptr, &hints, &res);
    if (rc != 0 || res == nullptr) {
      return Status::InvalidArgument("cannot bind rendezvous store to " + where +
                                     ": cannot resolve host '" + options.host +
                                     "': " + gai_strerror(rc));
    }
    addr.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
    freeaddrinfo(res);
  }

  auto impl = std::make_unique<Impl>();
  impl->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (impl->listen_fd < 0) {
    return Status::IoError("rendezvous store: socket() failed: " + ErrnoText(errno));
  }
  int one = 1;
  setsockopt(impl->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(impl->listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Status::Unavailable("cannot bind rendezvous store to " + where + ": " +
                               ErrnoText(errno));
  }
  if (listen(impl->listen_fd, SOMAXCONN) != 0) {
    return Status::IoError("cannot listen on rendezvous store address " + where + ": " +
                           ErrnoText(errno));
  }
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  if (getsockname(impl->listen_fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return Status::IoError("rendezvous store: getsockname failed: " + ErrnoText(errno));
  }
  impl->port = ntohs(bound.sin_port);
  impl->address = HostPort(options.host, impl->port);
  impl->auth_secret = options.auth_secret;
  impl->auth_timeout = options.auth_timeout;
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    return Status::IoError("rendezvous store: pipe2 failed: " + ErrnoText(errno));
  }
  impl->wake_read_fd = pipe_fds[0];
  impl->wake_write_fd = pipe_fds[1];
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  COHORT_LOG(DEBUG) << "rendezvous store listening on " << impl->address
                    << (impl->auth_secret.empty() ? ""
                                                  : " (clients authenticate with the job token)");
  return std::unique_ptr<TcpStoreServer>(new TcpStoreServer(std::move(impl)));
}

// ---------------------------------------------------------------------------
// Client

namespace {

// One connect attempt to every IPv4 address of host:port, each bounded by
// `deadline` (at least 50 ms). Returns a connected non-blocking socket, or the
// reason it failed.
Result<int> ConnectOnce(const std::string& host, int port, Deadline deadline) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_text = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return Status::Unavailable("cannot resolve host '" + host + "': " + gai_strerror(rc));
  }
  std::string error = "no IPv4 address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = "socket() failed: " + ErrnoText(errno);
      continue;
    }
    int err = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS || err == EINTR) {
        pollfd p{fd, POLLOUT, 0};
        int pr;
        do {
          pr = poll(&p, 1, std::max(deadline.RemainingMsForPoll(), 50));
        } while (pr < 0 && errno == EINTR);
        if (pr == 0) {
          err = ETIMEDOUT;
        } else {
          socklen_t len = sizeof(err);
          if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        }
      }
    }
    if (err == 0) {
      // Connecting to a local port nobody listens on can, rarely, connect the
      // socket to itself (TCP simultaneous open); that is not the store.
      sockaddr_in self{}, peer{};
      socklen_t self_len = sizeof(self), peer_len = sizeof(peer);
      getsockname(fd, reinterpret_cast<sockaddr*>(&self), &self_len);
      getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len);
      if (self.sin_port == peer.sin_port && self.sin_addr.s_addr == peer.sin_addr.s_addr) {
        err = ECONNREFUSED;
      }
    }
    if (err == 0) {
      freeaddrinfo(res);
      SetNoDelay(fd);
      return fd;
    }
    close(fd);
    error = ErrnoText(err);
  }
  freeaddrinfo(res);
  return Status::Unavailable(error);
}

// Retries ConnectOnce every ~50 ms until it succeeds or the deadline passes
// (at least one attempt is made).
Result<int> ConnectWithRetry(const std::string& host, int port, Deadline deadline) {
  int attempts = 0;
  while (true) {
    ++attempts;
    Result<int> fd = ConnectOnce(host, port, deadline);
    if (fd.ok()) return fd;
    if (deadline.Expired()) {
      return Status::DeadlineExceeded(
          "could not connect to rendezvous store at " + HostPort(host, port) +
          " before the deadline (" + std::to_string(attempts) + " attempt" +
          (attempts == 1 ? "" : "s") + "; last error: " + fd.status().message() + ")");
    }
    auto pause = std::min<Deadline::Clock::duration>(kConnectRetryInterval,
                                                     deadline.when() - Deadline::Clock::now());
    if (pause > Deadline::Clock::duration::zero()) std::this_thread::sleep_for(pause);
  }
}

// ConnectWithRetry, then (with a secret) the handshake, bounded by the same
// deadline. A refused handshake is not retried: the token will not change.
Result<int> ConnectAndAuthenticate(const std::string& host, int port, const std::string& secret,
                                   Deadline deadline) {
  COHORT_ASSIGN_OR_RETURN(int fd, ConnectWithRetry(host, port, deadline));
  if (secret.empty()) return fd;
  Status st = auth::Authenticate(fd, secret, kAuthContext,
                                 "rendezvous store at " + HostPort(host, port), deadline,
                                 AuthFrame());
  if (!st.ok()) {
    close(fd);
    return st;
  }
  return fd;
}

std::string LocalIp(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  return IpText(addr);
}

class TcpStoreClient : public Store {
 public:
  TcpStoreClient(std::string host, int port, std::string auth_secret, int fd)
      : host_(std::move(host)),
        port_(port),
        auth_secret_(std::move(auth_secret)),
        address_(HostPort(host_, port_)),
        local_address_(LocalIp(fd)),
        fd_(fd) {}

  ~TcpStoreClient() override {
    if (fd_ >= 0) close(fd_);
  }

  Status Set(const std::string& key, const std::string& value) override {
    COHORT_RETURN_IF_ERROR(CheckKey(key));
    if (value.size() > kMaxValueBytes) {
      return Status::InvalidArgument("value for key '" + key + "' is " +
                                     std::to_string(value.size()) +
                                     " bytes; the rendezvous store takes at most " +
                                     std::to_string(kMaxValueBytes));
    }
    std::string request = Header(kOpSet, key);
    PutU32(&request, static_cast<uint32_t>(value.size()));
    request.append(value);
    std::lock_guard<std::mutex> lock(mu_);
    return Exchange(kOpSet, key, request, Deadline::After(kOpTimeout)).status();
  }

  Result<std::string> Get(const std::string& key, Deadline deadline) override {
    COHORT_RETURN_IF_ERROR(CheckKey(key));
    std::lock_guard<std::mutex> lock(mu_);
    return Exchange(kOpGet, key, Header(kOpGet, key), deadline);
  }

  Result<int64_t> Add(const std::string& key, int64_t delta) override {
    COHORT_RETURN_IF_ERROR(CheckKey(key));
    std::string request = Header(kOpAdd, key);
    PutI64(&request, delta);
    std::lock_guard<std::mutex> lock(mu_);
    COHORT_ASSIGN_OR_RETURN(std::string payload,
                            Exchange(kOpAdd, key, request, Deadline::After(kOpTimeout)));
    return GetI64(payload.data());
  }

  std::string LocalAddress() const override { return local_address_; }

 private:
  static Status CheckKey(const std::string& key) {
    if (key.size() > kMaxKeyBytes) {
      return Status::InvalidArgument("rendezvous store key of " + std::to_string(key.size()) +
                                     " bytes is too long (at most " +
                                     std::to_string(kMaxKeyBytes) + ")");
    }
    return Status::Ok();
  }

  static std::string Header(uint8_t op, const std::string& key) {
    std::string out;
    out.push_back(static_cast<char>(op));
    PutU32(&out, static_cast<uint32_t>(key.size()));
    out.append(key);
    return out;
  }

  // Sends one request and reads its answer: the GET value, the 8 ADD bytes,
  // or nothing for SET. mu_ must be held.
  Result<std::string> Exchange(uint8_t op, const std::string& key, const std::string& request,
                               Deadline deadline) {
    COHORT_RETURN_IF_ERROR(EnsureConnected());
    const std::string timeout_message =
        op == kOpGet ? "key '" + key + "' was not set in rendezvous store at " + address_ +
                           " before the deadline"
                     : "rendezvous store at " + address_ + " did not answer " + OpName(op) +
                           " '" + key + "' within " + std::to_string(kOpTimeout.count()) + " s";
    COHORT_RETURN_IF_ERROR(SendAll(request, deadline, timeout_message));
    char code = 0;
    COHORT_RETURN_IF_ERROR(RecvAll(&code, 1, deadline, timeout_message));
    if (static_cast<uint8_t>(code) == kOpAuth && auth_secret_.empty()) {
      // A challenge: the server authenticates its clients.
      Disconnect();
      server_closed_ = true;
      refusal_ = Status::FailedPrecondition(
          "rendezvous store at " + address_ +
          " requires a job token, and this rank has none (set COHORT_JOB_TOKEN to the job's "
          "token; every rank of a job needs the same one)");
      return refusal_;
    }
    if (code != 0) {
      std::string message;
      COHORT_RETURN_IF_ERROR(RecvBlob(&message, deadline, timeout_message));
      const int c = static_cast<uint8_t>(code);
      if (c > static_cast<int>(StatusCode::kInternal)) return ProtocolError("bad status code");
      return Status(static_cast<StatusCode>(c), message);
    }
    std::string payload;
    if (op == kOpGet) {
      COHORT_RETURN_IF_ERROR(RecvBlob(&payload, deadline, timeout_message));
    } else if (op == kOpAdd) {
      payload.resize(8);
      COHORT_RETURN_IF_ERROR(RecvAll(payload.data(), 8, deadline, timeout_message));
    }
    return payload;
  }

  Status EnsureConnected() {
    if (server_closed_) return Closed();
    if (fd_ >= 0) return Status::Ok();
    Result<int> fd =
        ConnectAndAuthenticate(host_, port_, auth_secret_, Deadline::After(kReconnectTimeout));
    if (!fd.ok()) {
      return Status::Unavailable("lost the connection to rendezvous store at " + address_ +
                                 " and could not reconnect: " + fd.status().message());
    }
    fd_ = *fd;
    return Status::Ok();
  }

  Status Closed() const {
    if (!refusal_.ok()) return refusal_;
    return Status::Unavailable("rendezvous store at " + address_ + " closed the connection");
  }

  void Disconnect() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  // The server went away (or reset the connection): every later call fails fast.
  Status ConnectionLost(int err) {
    Disconnect();
    server_closed_ = true;
    if (err == 0 || err == EPIPE || err == ECONNRESET) return Closed();
    return Status::Unavailable("connection to rendezvous store at " + address_ +
                               " failed: " + ErrnoText(err));
  }

  Status ProtocolError(const std::string& what) {
    Disconnect();
    server_closed_ = true;
    return Status::Internal("rendezvous store at " + address_ +
                            " sent a malformed answer: " + what);
  }

  // Waits for `events` on fd_; false when the deadline passed.
  Result<bool> WaitFor(short events, Deadline deadline) {
    while (true) {
      pollfd p{fd_, events, 0};
      int pr = poll(&p, 1, deadline.RemainingMsForPoll());
      if (pr > 0) return true;
      if (pr < 0 && errno != EINTR) {
        return Status::Internal("poll on rendezvous store connection failed: " +
                                ErrnoText(errno));
      }
      if (pr == 0 && deadline.Expired()) return false;
    }
  }

  Status SendAll(const std::string& data, Deadline deadline, const std::string& timeout_message) {
    size_t sent = 0;
    while (sent < data.size()) {
      ssize_t w = send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (w > 0) {
        sent += static_cast<size_t>(w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return ConnectionLost(errno);
      COHORT_ASSIGN_OR_RETURN(bool ready, WaitFor(POLLOUT, deadline));
      if (!ready) {
        Disconnect();
        return Status::DeadlineExceeded(timeout_message);
      }
    }
    return Status::Ok();
  }

  Status RecvAll(char* buf, size_t n, Deadline deadline, const std::string& timeout_message) {
    size_t got = 0;
    while (got < n) {
      ssize_t r = recv(fd_, buf + got, n - got, 0);
      if (r > 0) {
        got += static_cast<size_t>(r);
        continue;
      }
      if (r == 0) return ConnectionLost(0);
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return ConnectionLost(errno);
      COHORT_ASSIGN_OR_RETURN(bool ready, WaitFor(POLLIN, deadline));
      if (!ready) {
        // The answer may still come; this connection can no longer be trusted.
        Disconnect();
        return Status::DeadlineExceeded(timeout_message);
      }
    }
    return Status::Ok();
  }

  // Reads u32 length | bytes.
  Status RecvBlob(std::string* out, Deadline deadline, const std::string& timeout_message) {
    char len_bytes[4];
    COHORT_RETURN_IF_ERROR(RecvAll(len_bytes, 4, deadline, timeout_message));
    const uint32_t len = GetU32(len_bytes);
    if (len > kMaxValueBytes) return ProtocolError(std::to_string(len) + "-byte value");
    out->resize(len);
    return RecvAll(out->data(), len, deadline, timeout_message);
  }

  const std::string host_;
  const int port_;
  const std::string auth_secret_;    // empty: no authentication
  const std::string address_;        // host:port, for messages
  const std::string local_address_;  // from the first connection
  std::mutex mu_;
  int fd_ = -1;                  // guarded by mu_; -1 after a timeout (reconnect)
  bool server_closed_ = false;   // guarded by mu_
  Status refusal_;               // guarded by mu_; why the server will not serve us, if known
};

}  // namespace

Result<std::shared_ptr<Store>> ConnectTcpStore(const TcpStoreOptions& options, Deadline deadline) {
  if (options.host.empty()) {
    return Status::InvalidArgument("rendezvous store host is empty");
  }
  if (options.port < 1 || options.port > 65535) {
    return Status::InvalidArgument("rendezvous store port " + std::to_string(options.port) +
                                   " is out of range: must be in [1, 65535]");
  }
  COHORT_ASSIGN_OR_RETURN(
      int fd, ConnectAndAuthenticate(options.host, options.port, options.auth_secret, deadline));
  auto store =
      std::make_shared<TcpStoreClient>(options.host, options.port, options.auth_secret, fd);
  COHORT_LOG(DEBUG) << "connected to rendezvous store at " << HostPort(options.host, options.port)
                    << " from " << store->LocalAddress();
  return std::shared_ptr<Store>(std::move(store));
}

}  // namespace cohort::comm
