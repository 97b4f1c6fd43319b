// Hierarchical all-reduce; see hierarchical.h.
#include "algorithms/hierarchical.h"

#include <string>

#include "algorithms/doubling.h"
#include "reduce.h"

namespace cohort::comm {

Status HierarchicalAllReduce(DirectCollectives& local, int local_rank, int local_size, PairTransport& stripe_ring,
                             void* data, size_t count, DType dtype, ReduceOp op, size_t chunk_bytes,
                             size_t small_bytes, Deadline deadline, RingScratch& scratch, WireFormat wire) {
  if (count == 0) return Status::Ok();
  const size_t elem = DTypeSize(dtype);
  char* base = static_cast<char*>(data);
  auto start = [&](int i) { return count * static_cast<size_t>(i) / static_cast<size_t>(local_size); };
  // 1. The host's sum, on every local rank.
  COHORT_RETURN_IF_ERROR(local.AllReduce(data, count, dtype, ReduceOp::kSum, deadline));
  // 2. This rank's stripe across hosts.
  const size_t my_start = start(local_rank);
  const size_t my_len = start(local_rank + 1) - my_start;
  Status ring = NetworkAllReduce(stripe_ring, base + my_start * elem, my_len, dtype, ReduceOp::kSum, chunk_bytes,
                                 small_bytes, deadline, scratch, wire);
  if (!ring.ok()) {
    // The ring's ranks are hosts: say so, so "rank 1" is not read as world rank 1.
    return ring.WithPrefix("between hosts (the ring of local rank " + std::to_string(local_rank) +
                           " on every host, whose rank k is host k)");
  }
  if (op == ReduceOp::kAverage) {
    const float scale = 1.0f / static_cast<float>(local_size * stripe_ring.world_size());
    Scale(dtype, base + my_start * elem, my_len, scale);
  }
  // 3. Every stripe from the local rank that reduced it.
  for (int i = 0; i < local_size; ++i) {
    const size_t len = start(i + 1) - start(i);
    COHORT_RETURN_IF_ERROR(local.Broadcast(base + start(i) * elem, len * elem, i, deadline));
  }
  return Status::Ok();
}

}  // namespace cohort::comm
