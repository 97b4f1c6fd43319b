// TcpMesh implementation; see tcp_mesh.h.
#include "transport/tcp/tcp_mesh.h"

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
#include <cstring>
#include <optional>
#include <thread>

#include "auth.h"
#include "cohort/common/logging.h"

namespace cohort::comm {
namespace {

// The first 4 bytes of every connection: a hello without authentication,
// and one followed by the handshake's response.
constexpr uint32_t kHelloMagic = 0xC0407C01;
constexpr uint32_t kHelloMagicAuth = 0xC0407C02;

struct Hello {
  uint32_t magic;
  int32_t rank;
  uint16_t stream;   // which of the pair's connections this is
  uint16_t streams;  // how many the connector opens to each peer
};
static_assert(sizeof(Hello) == 12);

std::string AuthContext(int connector, int acceptor, int stream) {
  std::string context = "mesh rank " + std::to_string(connector) + " -> rank " + std::to_string(acceptor);
  if (stream > 0) context += " stream " + std::to_string(stream);
  return context;
}

std::string PeerAddress(const sockaddr_in& addr) {
  char buf[INET_ADDRSTRLEN] = {};
  if (inet_ntop(AF_INET, &addr.sin_addr, buf, sizeof(buf)) == nullptr) return "?";
  return std::string(buf) + ":" + std::to_string(ntohs(addr.sin_port));
}

// An accepted connection not yet matched to a rank.
struct Incoming {
  int fd = -1;         // -1 once refused (closed) or promoted into the mesh
  std::string peer;    // "ip:port", for messages
  std::string in;      // hello [+ response] received so far
  std::string out;     // challenge or verdict not yet sent
  std::optional<auth::Challenge> challenge;
  int rank = -1;       // the rank its hello claims, once the hello is valid
  int stream = 0;      // and the stream
  bool verified = false;  // authenticated (or no secret); joins once `out` is sent
};

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

void TuneSocket(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Before connect/listen, so that the window scale fits the buffer.
void SizeSocketBuffers(int fd, int bytes) {
  if (bytes <= 0) return;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

Status SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return Status::IoError(Errno("fcntl"));
  return Status::Ok();
}

// Blocking-with-deadline write used only during set-up (fd is non-blocking).
Status WriteAll(int fd, const void* buf, size_t n, Deadline deadline, const std::string& who) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return Status::Unavailable("sending to " + who + ": " + std::strerror(errno));
    pollfd pfd{fd, POLLOUT, 0};
    int r = ::poll(&pfd, 1, deadline.RemainingMsForPoll());
    if (r == 0) return Status::DeadlineExceeded("timed out sending to " + who);
  }
  return Status::Ok();
}

Result<int> ConnectTo(const std::string& address, Deadline deadline, const std::string& who,
                      int socket_buffer_bytes) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) return Status::InvalidArgument("bad address '" + address + "'");
  std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return Status::Unavailable("cannot resolve " + who + ": " + gai_strerror(rc));
  std::string last_error;
  while (true) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      freeaddrinfo(res);
      return Status::IoError(Errno("socket"));
    }
    SizeSocketBuffers(fd, socket_buffer_bytes);
    if (::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
      freeaddrinfo(res);
      TuneSocket(fd);
      return fd;
    }
    last_error = std::strerror(errno);
    ::close(fd);
    if (deadline.Expired()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  freeaddrinfo(res);
  return Status::DeadlineExceeded("cannot connect to " + who + ": " + last_error);
}

// Refuses an incoming connection: one WARN line, then (after reading what
// the peer already sent, so that it gets a FIN and can read a refusal byte
// queued before) the socket is closed.
void RefuseIncoming(Incoming& c, int rank, const std::string& reason) {
  COHORT_LOG(WARN) << "rank " << rank << " refused a connection on its collective port from "
                   << c.peer << ": " << reason;
  char scratch[4096];
  for (int i = 0; i < 16; ++i) {
    ssize_t r = ::recv(c.fd, scratch, sizeof(scratch), MSG_DONTWAIT);
    if (r <= 0 && !(r < 0 && errno == EINTR)) break;
  }
  ::close(c.fd);
  c.fd = -1;
}

// Sends what is queued without blocking; false when the connection failed.
bool FlushIncoming(Incoming& c) {
  while (!c.out.empty()) {
    ssize_t w = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      c.out.erase(0, static_cast<size_t>(w));
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    return w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
  return true;
}

}  // namespace

Result<std::unique_ptr<TcpMesh>> TcpMesh::Connect(Store& store, int rank, int world_size,
                                                  Deadline deadline,
                                                  const TcpMeshOptions& options) {
  if (options.streams < 1 || options.streams > kMaxStreams)
    return Status::InvalidArgument("TCP streams per peer must be in [1, " + std::to_string(kMaxStreams) +
                                   "], got " + std::to_string(options.streams));
  const std::string& auth_secret = options.auth_secret;
  const int streams = options.streams;
  std::unique_ptr<TcpMesh> mesh(new TcpMesh(rank, world_size));
  mesh->streams_ = streams;
  mesh->fds_.assign(world_size, std::vector<int>(streams, -1));
  mesh->addresses_.assign(world_size, "");
  if (world_size == 1) return mesh;
  const bool authenticate = !auth_secret.empty();

  // Listen on every interface, ephemeral port.
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return Status::IoError(Errno("socket"));
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  SizeSocketBuffers(listener, options.socket_buffer_bytes);  // accepted sockets inherit it
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, world_size * streams + 8) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Status s = Status::IoError(Errno("listen"));
    ::close(listener);
    return s;
  }
  std::string ip = store.LocalAddress();
  if (ip.empty()) ip = "127.0.0.1";
  std::string mine = ip + ":" + std::to_string(ntohs(addr.sin_port));
  Status st = store.Set("tcp/addr/" + std::to_string(rank), mine);
  mesh->addresses_[rank] = mine;

  // Connect to lower ranks (their listeners exist before they publish).
  for (int peer = 0; st.ok() && peer < rank; ++peer) {
    auto peer_addr = store.Get("tcp/addr/" + std::to_string(peer), deadline);
    if (!peer_addr.ok()) {
      st = peer_addr.status().WithPrefix("rank " + std::to_string(peer) + " did not join");
      break;
    }
    mesh->addresses_[peer] = *peer_addr;
    for (int k = 0; st.ok() && k < streams; ++k) {
      auto fd = ConnectTo(*peer_addr, deadline, mesh->PeerName(peer), options.socket_buffer_bytes);
      if (!fd.ok()) {
        st = fd.status();
        break;
      }
      mesh->fds_[peer][k] = *fd;
      st = SetNonBlocking(*fd);
      if (!st.ok()) break;
      Hello hello{authenticate ? kHelloMagicAuth : kHelloMagic, rank, static_cast<uint16_t>(k),
                  static_cast<uint16_t>(streams)};
      if (authenticate) {
        st = auth::Authenticate(
            *fd, auth_secret, AuthContext(rank, peer, k), mesh->PeerName(peer), deadline,
            std::string_view(reinterpret_cast<const char*>(&hello), sizeof(hello)));
      } else {
        st = WriteAll(*fd, &hello, sizeof(hello), deadline, mesh->PeerName(peer));
      }
    }
  }

  // Accept one connection from each higher rank. Every pending connection is
  // served from this one poll loop, so none can hold up another.
  const size_t need = sizeof(Hello) + (authenticate ? auth::kResponseBytes : 0);
  std::vector<Incoming> incoming;
  int refused = 0;
  auto refuse = [&](Incoming& c, const std::string& reason) {
    RefuseIncoming(c, rank, reason);
    ++refused;
  };
  if (st.ok()) st = SetNonBlocking(listener);
  for (int accepted = 0; st.ok() && accepted < (world_size - 1 - rank) * streams;) {
    std::vector<pollfd> pfds;
    pfds.push_back({listener, POLLIN, 0});
    for (const Incoming& c : incoming)
      pfds.push_back({c.fd, static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
    int r = ::poll(pfds.data(), pfds.size(), deadline.RemainingMsForPoll());
    if (r < 0 && errno != EINTR) {
      st = Status::IoError(Errno("poll"));
      break;
    }
    if (r == 0 && deadline.Expired()) {
      std::string missing;
      for (int p = rank + 1; p < world_size; ++p)
        if (std::count(mesh->fds_[p].begin(), mesh->fds_[p].end(), -1) > 0)
          missing += (missing.empty() ? "" : ", ") + std::to_string(p);
      std::string note;
      if (refused > 0)
        note = " (rank " + std::to_string(rank) + " refused " + std::to_string(refused) +
               " connection(s) that failed the handshake; see its log)";
      st = Status::DeadlineExceeded("rank(s) " + missing + " did not connect to rank " +
                                    std::to_string(rank) + " before the deadline" + note);
      break;
    }
    if (r <= 0) continue;

    for (size_t i = 1; i < pfds.size(); ++i) {
      Incoming& c = incoming[i - 1];
      if (pfds[i].revents == 0 && c.out.empty()) continue;
      if (!FlushIncoming(c)) {
        refuse(c,
               "the connection failed during the handshake: " + std::string(std::strerror(errno)));
        continue;
      }
      // Read no more than the hello and the response: the rest is collective data.
      while (c.in.size() < need) {
        char buf[sizeof(Hello) + auth::kResponseBytes];
        ssize_t n = ::recv(c.fd, buf, need - c.in.size(), 0);
        if (n > 0) {
          c.in.append(buf, static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        refuse(c, n == 0 ? "it closed the connection before identifying itself"
                         : "the connection failed during the handshake: " +
                               std::string(std::strerror(errno)));
        break;
      }
      if (c.fd < 0) continue;
      if (c.rank < 0 && c.in.size() >= sizeof(Hello)) {
        Hello hello{};
        std::memcpy(&hello, c.in.data(), sizeof(hello));
        if (hello.magic == kHelloMagicAuth && !authenticate) {
          refuse(c, "it wants to authenticate, but this rank has no job token "
                    "(COHORT_JOB_TOKEN differs between ranks)");
          continue;
        }
        if (hello.magic == kHelloMagic && authenticate) {
          refuse(c, "it did not authenticate (a rank without COHORT_JOB_TOKEN?)");
          continue;
        }
        if (hello.magic != (authenticate ? kHelloMagicAuth : kHelloMagic)) {
          refuse(c, "it did not send a cohort hello");
          continue;
        }
        if (hello.rank <= rank || hello.rank >= world_size) {
          refuse(c, "it claims rank " + std::to_string(hello.rank) + ", which does not connect "
                    "to rank " + std::to_string(rank) + " in a world of " +
                    std::to_string(world_size));
          continue;
        }
        if (hello.streams != streams) {
          refuse(c, "it claims rank " + std::to_string(hello.rank) + " with " + std::to_string(hello.streams) +
                        " connection(s) per peer, but this rank uses " + std::to_string(streams) +
                        " (COHORT_COMM_TCP_STREAMS differs between ranks)");
          continue;
        }
        if (hello.stream >= streams) {
          refuse(c, "it claims stream " + std::to_string(hello.stream) + " of " + std::to_string(streams));
          continue;
        }
        c.rank = hello.rank;
        c.stream = hello.stream;
        if (!authenticate) c.verified = true;
      }
      if (authenticate && c.rank >= 0 && !c.verified && c.in.size() == need) {
        std::string reply;
        const bool ok = c.challenge->Verify(
            auth_secret, AuthContext(c.rank, rank, c.stream),
            std::string_view(c.in).substr(sizeof(Hello), auth::kResponseBytes), &reply);
        if (ok && mesh->fds_[c.rank][c.stream] >= 0) {
          c.out = std::string(1, auth::kVerdictRefused);
          FlushIncoming(c);
          refuse(c, "it claims rank " + std::to_string(c.rank) + ", which is already connected");
          continue;
        }
        c.out += reply;
        if (!ok) {
          FlushIncoming(c);
          refuse(c, "it claims rank " + std::to_string(c.rank) +
                        " but its authentication proof does not match the job token (a wrong "
                        "COHORT_JOB_TOKEN, a replayed answer, or not a cohort rank)");
          continue;
        }
        c.verified = true;
        if (!FlushIncoming(c)) {
          refuse(c, "the connection failed during the handshake: " +
                        std::string(std::strerror(errno)));
          continue;
        }
      }
      if (c.verified && c.out.empty()) {
        if (mesh->fds_[c.rank][c.stream] >= 0) {
          refuse(c, "it claims rank " + std::to_string(c.rank) + ", which is already connected");
          continue;
        }
        mesh->fds_[c.rank][c.stream] = c.fd;
        c.fd = -1;
        ++accepted;
      }
    }

    if (pfds[0].revents != 0) {
      while (true) {
        sockaddr_in from{};
        socklen_t from_len = sizeof(from);
        int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(&from), &from_len,
                           SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;
        TuneSocket(fd);
        Incoming c;
        c.fd = fd;
        c.peer = PeerAddress(from);
        if (authenticate) {
          Result<auth::Challenge> challenge = auth::Challenge::New();
          if (!challenge.ok()) {
            refuse(c, challenge.status().message());
            continue;
          }
          c.challenge = std::move(challenge).value();
          c.out = c.challenge->Wire();
          FlushIncoming(c);
        }
        incoming.push_back(std::move(c));
      }
    }
    std::erase_if(incoming, [](const Incoming& c) { return c.fd < 0; });
  }
  for (Incoming& c : incoming) {
    if (c.fd < 0) continue;
    if (st.ok()) {
      refuse(c, "it had not completed the handshake when every rank had joined");
    } else {
      ::close(c.fd);
    }
  }
  ::close(listener);
  if (!st.ok()) return st;
  for (int peer = rank + 1; peer < world_size; ++peer) {
    auto peer_addr = store.Get("tcp/addr/" + std::to_string(peer), deadline);
    if (peer_addr.ok()) mesh->addresses_[peer] = *peer_addr;
  }
  return mesh;
}

TcpMesh::~TcpMesh() {
  for (const auto& peer : fds_)
    for (int fd : peer)
      if (fd >= 0) ::close(fd);
}

std::string TcpMesh::PeerName(int peer) const {
  std::string name = "rank " + std::to_string(peer);
  if (peer >= 0 && peer < static_cast<int>(addresses_.size()) && !addresses_[peer].empty())
    name += " (" + addresses_[peer] + ")";
  return name;
}

void TcpMesh::Shutdown() {
  for (const auto& peer : fds_)
    for (int fd : peer)
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

namespace {

// Where the bytes of one message travel: chunk i (kStripeBytes each, the last
// one shorter) on stream i mod k; a message of at most one chunk on stream 0.
class Stripes {
 public:
  Stripes(size_t total, int streams)
      : total_(total),
        k_(total > TcpMesh::kStripeBytes ? streams : 1),
        chunks_((total + TcpMesh::kStripeBytes - 1) / TcpMesh::kStripeBytes) {}
  int streams() const { return k_; }
  size_t ChunkLen(size_t i) const { return std::min(kS, total_ - i * kS); }
  // Bytes stream s carries in all.
  size_t StreamTotal(int s) const {
    const size_t us = static_cast<size_t>(s);
    if (us >= chunks_) return 0;
    const size_t n = (chunks_ - us + k_ - 1) / k_;
    const size_t last = us + (n - 1) * k_;
    return (n - 1) * kS + ChunkLen(last);
  }
  // The message offset of byte `pos` of stream s, and how many bytes from
  // there on are contiguous in the message.
  void Locate(int s, size_t pos, size_t* offset, size_t* contiguous) const {
    const size_t i = (pos / kS) * k_ + static_cast<size_t>(s);
    *offset = i * kS + pos % kS;
    *contiguous = ChunkLen(i) - pos % kS;
  }
  // Advances `prefix` (bytes received in message order) over what the
  // streams have delivered: done[s] bytes of each stream s.
  size_t Prefix(size_t prefix, const size_t* done) const {
    while (prefix < total_) {
      const size_t i = prefix / kS;
      const size_t base = (i / k_) * kS;  // the chunk's start within its stream
      const size_t got = done[i % k_];
      if (got <= base) break;
      const size_t end = i * kS + std::min(got - base, ChunkLen(i));
      if (end <= prefix) break;
      prefix = end;
      if (end < i * kS + ChunkLen(i)) break;
    }
    return prefix;
  }

 private:
  static constexpr size_t kS = TcpMesh::kStripeBytes;
  size_t total_;
  size_t k_;
  size_t chunks_;
};

}  // namespace

Status TcpMesh::SendRecv(int send_peer, const void* send_buf, size_t send_bytes, int recv_peer,
                         void* recv_buf, size_t recv_bytes, Deadline deadline,
                         const RecvProgress& on_recv) {
  const Stripes out(send_bytes, streams_), in(recv_bytes, streams_);
  const char* sp = static_cast<const char*>(send_buf);
  char* rp = static_cast<char*>(recv_buf);
  struct Flow {
    int fd = -1;
    size_t done = 0, total = 0;
    bool ready = true;  // try without polling until the socket says EAGAIN
  };
  Flow sends[kMaxStreams], recvs[kMaxStreams];
  size_t recv_done[kMaxStreams] = {};
  for (int s = 0; s < out.streams(); ++s) {
    sends[s].total = out.StreamTotal(s);
    if (sends[s].total > 0) sends[s].fd = fds_[send_peer][s];
  }
  for (int s = 0; s < in.streams(); ++s) {
    recvs[s].total = in.StreamTotal(s);
    if (recvs[s].total > 0) recvs[s].fd = fds_[recv_peer][s];
  }
  size_t sent = 0, received = 0;
  while (sent < send_bytes || received < recv_bytes) {
    bool progressed = false;
    for (int s = 0; s < out.streams(); ++s) {
      Flow& f = sends[s];
      if (f.done == f.total || !f.ready) continue;
      size_t offset = 0, len = 0;
      out.Locate(s, f.done, &offset, &len);
      ssize_t w = ::send(f.fd, sp + offset, len, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        f.done += static_cast<size_t>(w);
        sent += static_cast<size_t>(w);
        progressed = true;
      } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        f.ready = false;
      } else if (w < 0 && errno != EINTR) {
        return Status::Unavailable("connection to " + PeerName(send_peer) +
                                   " failed while sending: " + std::strerror(errno) +
                                   " (the peer exited or aborted)");
      }
    }
    bool arrived = false;
    for (int s = 0; s < in.streams(); ++s) {
      Flow& f = recvs[s];
      if (f.done == f.total || !f.ready) continue;
      size_t offset = 0, len = 0;
      in.Locate(s, f.done, &offset, &len);
      ssize_t r = ::recv(f.fd, rp + offset, len, MSG_DONTWAIT);
      if (r > 0) {
        f.done += static_cast<size_t>(r);
        recv_done[s] = f.done;
        arrived = progressed = true;
      } else if (r == 0) {
        return Status::Unavailable(PeerName(recv_peer) +
                                   " closed the connection (the peer exited or aborted)");
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        f.ready = false;
      } else if (errno != EINTR) {
        return Status::Unavailable("connection to " + PeerName(recv_peer) +
                                   " failed while receiving: " + std::strerror(errno));
      }
    }
    if (arrived) {
      const size_t prefix = in.Prefix(received, recv_done);
      if (prefix > received) {
        received = prefix;
        if (on_recv) on_recv(received);
      }
    }
    if (progressed) continue;
    // Nothing moved: wait until a socket with work left is ready.
    pollfd pfds[2 * kMaxStreams];
    Flow* owners[2 * kMaxStreams][2] = {};
    int n = 0;
    auto add = [&](Flow& f, short events, int slot) {
      for (int i = 0; i < n; ++i) {
        if (pfds[i].fd == f.fd) {
          pfds[i].events |= events;
          owners[i][slot] = &f;
          return;
        }
      }
      pfds[n] = {f.fd, events, 0};
      owners[n][slot] = &f;
      ++n;
    };
    for (int s = 0; s < out.streams(); ++s)
      if (sends[s].done < sends[s].total) add(sends[s], POLLOUT, 0);
    for (int s = 0; s < in.streams(); ++s)
      if (recvs[s].done < recvs[s].total) add(recvs[s], POLLIN, 1);
    int pr = ::poll(pfds, n, deadline.RemainingMsForPoll());
    if (pr == 0) {
      int stuck = received < recv_bytes ? recv_peer : send_peer;
      return Status::DeadlineExceeded(
          PeerName(stuck) + " did not " + (received < recv_bytes ? "send" : "accept") +
          " data before the deadline (the peer is stalled, dead, or not in this collective)");
    }
    if (pr < 0 && errno != EINTR) return Status::IoError(Errno("poll"));
    for (int i = 0; pr > 0 && i < n; ++i) {
      if (pfds[i].revents == 0) continue;
      // An error or hang-up wakes both directions, so the call reports it.
      const bool err = (pfds[i].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
      if (owners[i][0] && (err || (pfds[i].revents & POLLOUT))) owners[i][0]->ready = true;
      if (owners[i][1] && (err || (pfds[i].revents & (POLLIN | POLLRDHUP)))) owners[i][1]->ready = true;
    }
  }
  return Status::Ok();
}

}  // namespace cohort::comm
