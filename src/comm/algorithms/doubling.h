// Recursive doubling all-reduce for small, latency-bound buffers, and the
// choice between it and the ring.
//
// Recursive doubling: with p = the largest power of two <= world_size, ranks
// p.. first hand their buffer to rank (r - p), which adds it in; then in
// log2(p) steps rank r exchanges its whole partial sum with rank r XOR 2^k
// and adds; finally ranks p.. receive the result back. That is log2(p) + 2
// message latencies instead of the ring's 2 (world_size - 1), for log2(p)
// times the buffer on the wire instead of the ring's 2 (n - 1) / n: the
// better trade for buffers up to tens of KiB. Both partners of a step add the
// same two values (a + b == b + a in IEEE arithmetic), so every rank ends
// with identical bits.
//
// Thread affinity: whoever owns the transport; one collective at a time.
#pragma once

#include <cstddef>

#include "algorithms/ring.h"
#include "cohort/comm/types.h"
#include "transport/pair_transport.h"

namespace cohort::comm {

// The buffer always crosses the wire in its own dtype (a 16-bit wire saves
// nothing worth a rounding on a latency-bound buffer).
Status DoublingAllReduce(PairTransport& t, void* data, size_t count, DType dtype, ReduceOp op, Deadline deadline,
                         RingScratch& scratch);

// All-reduce over a network transport: recursive doubling for buffers of at
// most small_bytes, the ring (with `wire`) above.
Status NetworkAllReduce(PairTransport& t, void* data, size_t count, DType dtype, ReduceOp op,
                        size_t chunk_bytes, size_t small_bytes, Deadline deadline, RingScratch& scratch,
                        WireFormat wire);

}  // namespace cohort::comm
