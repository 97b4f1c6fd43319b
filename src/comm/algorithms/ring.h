// Ring collectives over any PairTransport (today: TcpMesh).
//
// All-reduce is the classic bandwidth-optimal ring: the buffer is cut into
// world_size segments; in world_size-1 reduce-scatter steps each rank sends
// one segment to its right neighbour while receiving the next from its left
// neighbour and adding it in; afterwards rank r owns the fully reduced
// segment (r+1) mod world_size; world_size-1 all-gather steps then circulate
// the owned segments. Each rank sends 2*(world_size-1)/world_size of the
// buffer in total. Within a step the received segment is reduced chunk by
// chunk (chunk_bytes) as bytes arrive, so reduction overlaps the transfer.
//
// Thread affinity: whoever owns the transport; one collective at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cohort/comm/types.h"
#include "transport/pair_transport.h"

namespace cohort::comm {

struct RingScratch {
  std::vector<char> recv;        // one segment's worth of incoming bytes, reused
  std::vector<uint16_t> send;    // 16-bit wire: one outgoing segment
  std::vector<uint16_t> gather;  // 16-bit wire: the whole buffer, for the all-gather
};

// wire == kBFloat16 or kFloat16 with float32 data: every segment crosses the
// link as 16-bit floats (half the bytes). The reduce-scatter adds each
// received chunk into the float32 segment; the owner then rounds its reduced
// segment once (keeping the rounded value itself too) and the all-gather
// circulates those, so every rank ends with identical values. Ignored for
// bfloat16 data (already that small).
Status RingAllReduce(PairTransport& t, void* data, size_t count, DType dtype, ReduceOp op,
                     size_t chunk_bytes, Deadline deadline, RingScratch& scratch,
                     WireFormat wire = WireFormat::kNative);

// out holds world_size blocks of size_bytes; block r receives rank r's `in`.
Status RingAllGather(PairTransport& t, const void* in, void* out, size_t size_bytes,
                     Deadline deadline);

// Root sends to every other rank directly (the mesh is full), pipelined in
// chunk_bytes pieces along the ring for large buffers.
Status RingBroadcast(PairTransport& t, void* data, size_t size_bytes, int root, size_t chunk_bytes,
                     Deadline deadline);

}  // namespace cohort::comm
