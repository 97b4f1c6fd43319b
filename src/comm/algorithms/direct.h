// Direct (one-hop) collectives over a ShmGroup: every rank reads its peers'
// memory itself, so no byte is sent anywhere.
//
// All-reduce is still reduce-scatter + all-gather, but without the ring's
// world_size-1 hops: the buffer is cut into world_size slices; after a
// barrier, rank r sums slice r out of every rank's buffer (one pass, float
// accumulation) into its own buffer; after a second barrier it copies every
// other slice out of the peer that reduced it. A buffer that already lives
// in a shared segment (AllocateShared: the trainer's gradient buckets) is
// reduced in place and needs a third barrier before anyone may overwrite it;
// any other buffer is staged through the scratch segment in pieces, and the
// two halves of the scratch alternate between consecutive operations, so a
// staged operation needs only two barriers: a rank can write half h again
// only after every peer entered the operation that followed, i.e. finished
// reading half h.
//
// Thread affinity: one collective at a time (the communicator serialises).
#pragma once

#include <cstddef>

#include "cohort/comm/types.h"
#include "transport/shm/shm_group.h"

namespace cohort::comm {

class DirectCollectives {
 public:
  explicit DirectCollectives(ShmGroup& group) : g_(group) {}

  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op, Deadline deadline);
  Status Broadcast(void* data, size_t size_bytes, int root, Deadline deadline);
  Status AllGather(const void* in, void* out, size_t size_bytes, Deadline deadline);

 private:
  size_t half_bytes() const { return g_.SegmentSize(0) / 2 / 64 * 64; }
  char* Half(int rank, int half) const { return g_.SegmentBase(0, rank) + half * half_bytes(); }
  int NextHalf() { return static_cast<int>(phase_++ & 1); }

  ShmGroup& g_;
  uint64_t phase_ = 0;  // staged operations run so far; picks the scratch half
};

}  // namespace cohort::comm
