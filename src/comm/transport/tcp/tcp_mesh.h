// TcpMesh: a full mesh of TCP connections among world_size ranks, built
// through the rendezvous store; implements PairTransport.
//
// Set-up: every rank listens on an ephemeral port and publishes
// "tcp/addr/<rank>" = "<ip>:<port>" (ip = the address its store connection
// uses, so peers on other hosts can reach it). Rank i then connects to every
// rank j < i and accepts the connections of every rank j > i; each
// connection opens with a hello {magic, rank, stream, streams} so accepted
// sockets are matched to their rank and stream. Sockets are non-blocking
// afterwards and polled with the operation's deadline.
//
// Streams: each pair of ranks is joined by `streams` connections (every rank
// must use the same number; a hello with another count is refused, naming
// COHORT_COMM_TCP_STREAMS). A message longer than kStripeBytes is cut into
// kStripeBytes chunks, chunk i travelling on connection i mod streams, so
// one large transfer uses several TCP flows (several congestion windows and
// socket buffers) at once; shorter messages use connection 0 only. Received
// bytes are reported to the caller as the contiguous prefix that has
// arrived, whichever connection carried it.
//
// With an auth secret (Options::auth_secret, COHORT_JOB_TOKEN) every
// connection is authenticated both ways before it joins the mesh (src/comm/
// auth.h, context "mesh rank <connector> -> rank <acceptor>", so the proof
// also binds the claimed rank): the acceptor sends its challenge on accept;
// the connector sends its hello (another magic) and its response, and checks
// the acceptor's proof. The acceptor serves all pending handshakes from one
// poll loop, so a peer that stalls or sends garbage delays nobody; it is
// refused -- closed, with one WARN line naming its address and the reason --
// and so is one that claims a rank already connected. A connector that is
// refused fails with FailedPrecondition ("... refused the job token").
// Connections still pending when every rank has joined are refused too.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cohort/comm/store.h"
#include "transport/pair_transport.h"

namespace cohort::comm {

struct TcpMeshOptions {
  // Empty = no authentication; every rank must pass the same.
  std::string auth_secret;
  // Connections per pair of ranks, 1-16; every rank must pass the same.
  int streams = 1;
  // SO_SNDBUF/SO_RCVBUF of every connection; 0 = the kernel's automatic
  // sizing (the default, and usually the best: a fixed size turns it off).
  int socket_buffer_bytes = 0;
};

class TcpMesh : public PairTransport {
 public:
  static constexpr size_t kStripeBytes = 128 * 1024;
  static constexpr int kMaxStreams = 16;

  static Result<std::unique_ptr<TcpMesh>> Connect(Store& store, int rank, int world_size,
                                                  Deadline deadline,
                                                  const TcpMeshOptions& options = {});
  ~TcpMesh() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  Status SendRecv(int send_peer, const void* send_buf, size_t send_bytes, int recv_peer,
                  void* recv_buf, size_t recv_bytes, Deadline deadline,
                  const RecvProgress& on_recv) override;
  std::string PeerName(int peer) const override;
  void Shutdown() override;

 private:
  TcpMesh(int rank, int world_size) : rank_(rank), world_size_(world_size) {}

  const int rank_;
  const int world_size_;
  int streams_ = 1;
  std::vector<std::vector<int>> fds_;   // fds_[peer][stream]; -1 for self
  std::vector<std::string> addresses_;  // "ip:port" of each rank's listener
};

}  // namespace cohort::comm
