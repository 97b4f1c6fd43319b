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
};

std::string AuthContext(int connector, int acceptor) {
  return "mesh rank " + std::to_string(connector) + " -> rank " + std::to_string(acceptor);
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
  bool verified = false;  // authenticated (or no secret); joins once `out` is sent
};

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

void TuneSocket(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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

Result<int> ConnectTo(const std::string& address, Deadline deadline, const std::string& who) {
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
                                                  const std::string& auth_secret) {
  std::unique_ptr<TcpMesh> mesh(new TcpMesh(rank, world_size));
  mesh->fds_.assign(world_size, -1);
  mesh->addresses_.assign(world_size, "");
  if (world_size == 1) return mesh;
  const bool authenticate = !auth_secret.empty();

  // Listen on every interface, ephemeral port.
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return Status::IoError(Errno("socket"));
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, world_size + 8) != 0 ||
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
    auto fd = ConnectTo(*peer_addr, deadline, mesh->PeerName(peer));
    if (!fd.ok()) {
      st = fd.status();
      break;
    }
    mesh->fds_[peer] = *fd;
    st = SetNonBlocking(*fd);
    if (!st.ok()) break;
    Hello hello{authenticate ? kHelloMagicAuth : kHelloMagic, rank};
    if (authenticate) {
      st = auth::Authenticate(
          *fd, auth_secret, AuthContext(rank, peer), mesh->PeerName(peer), deadline,
          std::string_view(reinterpret_cast<const char*>(&hello), sizeof(hello)));
    } else {
      st = WriteAll(*fd, &hello, sizeof(hello), deadline, mesh->PeerName(peer));
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
  for (int accepted = 0; st.ok() && accepted < world_size - 1 - rank;) {
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
        if (mesh->fds_[p] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(p);
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
        c.rank = hello.rank;
        if (!authenticate) c.verified = true;
      }
      if (authenticate && c.rank >= 0 && !c.verified && c.in.size() == need) {
        std::string reply;
        const bool ok = c.challenge->Verify(
            auth_secret, AuthContext(c.rank, rank),
            std::string_view(c.in).substr(sizeof(Hello), auth::kResponseBytes), &reply);
        if (ok && mesh->fds_[c.rank] >= 0) {
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
        if (mesh->fds_[c.rank] >= 0) {
          refuse(c, "it claims rank " + std::to_string(c.rank) + ", which is already connected");
          continue;
        }
        mesh->fds_[c.rank] = c.fd;
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
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);
}

std::string TcpMesh::PeerName(int peer) const {
  std::string name = "rank " + std::to_string(peer);
  if (peer >= 0 && peer < static_cast<int>(addresses_.size()) && !addresses_[peer].empty())
    name += " (" + addresses_[peer] + ")";
  return name;
}

void TcpMesh::Shutdown() {
  for (int fd : fds_)
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

Status TcpMesh::SendRecv(int send_peer, const void* send_buf, size_t send_bytes, int recv_peer,
                         void* recv_buf, size_t recv_bytes, Deadline deadline,
                         const RecvProgress& on_recv) {
  const int send_fd = send_bytes > 0 ? fds_[send_peer] : -1;
  const int recv_fd = recv_bytes > 0 ? fds_[recv_peer] : -1;
  const char* sp = static_cast<const char*>(send_buf);
  char* rp = static_cast<char*>(recv_buf);
  size_t sent = 0, received = 0;
  while (sent < send_bytes || received < recv_bytes) {
    bool progressed = false;
    if (sent < send_bytes) {
      ssize_t w = ::send(send_fd, sp + sent, send_bytes - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        sent += static_cast<size_t>(w);
        progressed = true;
      } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return Status::Unavailable("connection to " + PeerName(send_peer) +
                                   " failed while sending: " + std::strerror(errno) +
                                   " (the peer exited or aborted)");
      }
    }
    if (received < recv_bytes) {
      ssize_t r = ::recv(recv_fd, rp + received, recv_bytes - received, MSG_DONTWAIT);
      if (r > 0) {
        received += static_cast<size_t>(r);
        progressed = true;
        if (on_recv) on_recv(received);
      } else if (r == 0) {
        return Status::Unavailable(PeerName(recv_peer) +
                                   " closed the connection (the peer exited or aborted)");
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return Status::Unavailable("connection to " + PeerName(recv_peer) +
                                   " failed while receiving: " + std::strerror(errno));
      }
    }
    if (progressed) continue;
    pollfd pfds[2];
    int n = 0;
    if (send_fd >= 0 && send_fd == recv_fd) {
      pfds[n++] = {send_fd, static_cast<short>((sent < send_bytes ? POLLOUT : 0) |
                                               (received < recv_bytes ? POLLIN : 0)),
                   0};
    } else {
      if (sent < send_bytes) pfds[n++] = {send_fd, POLLOUT, 0};
      if (received < recv_bytes) pfds[n++] = {recv_fd, POLLIN, 0};
    }
    int pr = ::poll(pfds, n, deadline.RemainingMsForPoll());
    if (pr == 0) {
      int stuck = received < recv_bytes ? recv_peer : send_peer;
      return Status::DeadlineExceeded(
          PeerName(stuck) + " did not " + (received < recv_bytes ? "send" : "accept") +
          " data before the deadline (the peer is stalled, dead, or not in this collective)");
    }
    if (pr < 0 && errno != EINTR) return Status::IoError(Errno("poll"));
  }
  return Status::Ok();
}

}  // namespace cohort::comm
