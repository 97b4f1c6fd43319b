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
#include <thread>

#include "cohort/common/logging.h"

namespace cohort::comm {
namespace {

constexpr uint32_t kHelloMagic = 0xC0407C01;  // first 4 bytes of every connection

struct Hello {
  uint32_t magic;
  int32_t rank;
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

// Blocking-with-deadline helpers used only during set-up (fd is non-blocking).
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

Status ReadAll(int fd, void* buf, size_t n, Deadline deadline, const std::string& who) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r == 0) return Status::Unavailable(who + " closed the connection");
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return Status::Unavailable("receiving from " + who + ": " + std::strerror(errno));
    pollfd pfd{fd, POLLIN, 0};
    int pr = ::poll(&pfd, 1, deadline.RemainingMsForPoll());
    if (pr == 0) return Status::DeadlineExceeded("timed out receiving from " + who);
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

}  // namespace

Result<std::unique_ptr<TcpMesh>> TcpMesh::Connect(Store& store, int rank, int world_size,
                                                  Deadline deadline) {
  std::unique_ptr<TcpMesh> mesh(new TcpMesh(rank, world_size));
  mesh->fds_.assign(world_size, -1);
  mesh->addresses_.assign(world_size, "");
  if (world_size == 1) return mesh;

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
    Hello hello{kHelloMagic, rank};
    if (st.ok()) st = WriteAll(*fd, &hello, sizeof(hello), deadline, mesh->PeerName(peer));
  }

  // Accept one connection from each higher rank.
  if (st.ok()) st = SetNonBlocking(listener);
  for (int accepted = 0; st.ok() && accepted < world_size - 1 - rank;) {
    pollfd pfd{listener, POLLIN, 0};
    int r = ::poll(&pfd, 1, deadline.RemainingMsForPoll());
    if (r == 0) {
      std::string missing;
      for (int p = rank + 1; p < world_size; ++p)
        if (mesh->fds_[p] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(p);
      st = Status::DeadlineExceeded("rank(s) " + missing + " did not connect to rank " +
                                    std::to_string(rank) + " before the deadline");
      break;
    }
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    TuneSocket(fd);
    Hello hello{};
    Status hs = ReadAll(fd, &hello, sizeof(hello), deadline, "an incoming connection");
    if (!hs.ok() || hello.magic != kHelloMagic || hello.rank <= rank || hello.rank >= world_size ||
        mesh->fds_[hello.rank] >= 0) {
      COHORT_LOG(WARN) << "rejecting a stray connection on the collective port";
      ::close(fd);
      continue;
    }
    mesh->fds_[hello.rank] = fd;
    ++accepted;
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
