// TcpMesh: a full mesh of TCP connections among world_size ranks, built
// through the rendezvous store; implements PairTransport.
//
// Set-up: every rank listens on an ephemeral port and publishes
// "tcp/addr/<rank>" = "<ip>:<port>" (ip = the address its store connection
// uses, so peers on other hosts can reach it). Rank i then connects to every
// rank j < i and accepts one connection from every rank j > i; each
// connection opens with a hello {magic, rank} so accepted sockets are matched
// to their rank. Sockets are non-blocking afterwards and polled with the
// operation's deadline.
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

class TcpMesh : public PairTransport {
 public:
  // auth_secret: empty = no authentication; every rank must pass the same.
  static Result<std::unique_ptr<TcpMesh>> Connect(Store& store, int rank, int world_size,
                                                  Deadline deadline,
                                                  const std::string& auth_secret = "");
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
  std::vector<int> fds_;                // fds_[peer]; -1 for self
  std::vector<std::string> addresses_;  // "ip:port" of each rank's listener
};

}  // namespace cohort::comm
