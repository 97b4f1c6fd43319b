// Hierarchical all-reduce: ranks on H hosts, L on each (L > 1).
//
// Within a host the L ranks share memory; between hosts, local rank i of
// every host forms a ring of H ranks (its own TCP mesh), so the L rings run
// side by side and every rank's connections carry traffic:
//   1. shared memory: every local rank gets the host's sum (direct all-reduce);
//   2. ring i (TCP): local rank i all-reduces stripe i of the buffer (a
//      1/L share) with its peers on the other hosts;
//   3. shared memory: each local rank broadcasts its stripe to the others.
// Each rank sends 2 (H-1)/H of a 1/L stripe over the network, instead of
// 2 (HL-1)/(HL) of the whole buffer on the flat ring. Averages are scaled
// once at the end by 1 / (H L). The wire format applies to step 2 only.
//
// Thread affinity: the communicator's (one collective at a time).
#pragma once

#include <cstddef>

#include "algorithms/direct.h"
#include "algorithms/ring.h"
#include "cohort/comm/types.h"
#include "transport/pair_transport.h"

namespace cohort::comm {

Status HierarchicalAllReduce(DirectCollectives& local, int local_rank, int local_size, PairTransport& stripe_ring,
                             void* data, size_t count, DType dtype, ReduceOp op, size_t chunk_bytes,
                             size_t small_bytes, Deadline deadline, RingScratch& scratch, WireFormat wire);

}  // namespace cohort::comm
