// PairTransport: the point-to-point seam between collective algorithms and a
// network. The ring algorithms (algorithms/ring.h) are written against this
// interface only; transport/tcp implements it, and a future NCCL or RDMA
// transport would implement it (or replace the algorithm) without touching
// the algorithms' callers.
//
// Thread affinity: one collective at a time (the communicator serialises).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::comm {

class PairTransport {
 public:
  virtual ~PairTransport() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Called with the number of bytes received so far, after each arrival.
  using RecvProgress = std::function<void(size_t received_bytes)>;

  // Sends send_bytes to send_peer while receiving recv_bytes from recv_peer,
  // both progressing together (so a ring never deadlocks on full socket
  // buffers). Either size may be 0. Fails with the peer's name when a peer
  // closes its connection or nothing moves before the deadline.
  virtual Status SendRecv(int send_peer, const void* send_buf, size_t send_bytes, int recv_peer,
                          void* recv_buf, size_t recv_bytes, Deadline deadline,
                          const RecvProgress& on_recv) = 0;

  // Human-readable peer name for messages: "rank 2 (10.0.0.3:41234)".
  virtual std::string PeerName(int peer) const = 0;

  // Makes every pending and future operation fail promptly, and lets the
  // peers see a closed connection instead of waiting for their timeout.
  virtual void Shutdown() = 0;
};

}  // namespace cohort::comm
