// Recursive doubling; see doubling.h for the algorithm in prose.
#include "algorithms/doubling.h"

#include "reduce.h"

namespace cohort::comm {

Status DoublingAllReduce(PairTransport& t, void* data, size_t count, DType dtype, ReduceOp op, Deadline deadline,
                         RingScratch& scratch) {
  const int n = t.world_size();
  const int r = t.rank();
  if (n == 1 || count == 0) return Status::Ok();
  const size_t bytes = count * DTypeSize(dtype);
  if (scratch.recv.size() < bytes) scratch.recv.resize(bytes);
  char* tmp = scratch.recv.data();
  int p = 1;
  while (p * 2 <= n) p *= 2;
  auto add_in = [&] {
    const void* srcs[2] = {data, tmp};
    ReduceSum(dtype, data, srcs, 2, count, 1.0f);
  };

  if (r >= p) {  // fold into rank r - p, then take the result from it
    COHORT_RETURN_IF_ERROR(t.SendRecv(r - p, data, bytes, r - p, nullptr, 0, deadline, nullptr));
    return t.SendRecv(r - p, nullptr, 0, r - p, data, bytes, deadline, nullptr);
  }
  if (r + p < n) {
    COHORT_RETURN_IF_ERROR(t.SendRecv(r + p, nullptr, 0, r + p, tmp, bytes, deadline, nullptr));
    add_in();
  }
  for (int mask = 1; mask < p; mask <<= 1) {
    const int partner = r ^ mask;
    COHORT_RETURN_IF_ERROR(t.SendRecv(partner, data, bytes, partner, tmp, bytes, deadline, nullptr));
    add_in();
  }
  if (op == ReduceOp::kAverage) Scale(dtype, data, count, 1.0f / static_cast<float>(n));
  if (r + p < n) COHORT_RETURN_IF_ERROR(t.SendRecv(r + p, data, bytes, r + p, nullptr, 0, deadline, nullptr));
  return Status::Ok();
}

Status NetworkAllReduce(PairTransport& t, void* data, size_t count, DType dtype, ReduceOp op,
                        size_t chunk_bytes, size_t small_bytes, Deadline deadline, RingScratch& scratch,
                        WireFormat wire) {
  if (count * DTypeSize(dtype) <= small_bytes) return DoublingAllReduce(t, data, count, dtype, op, deadline, scratch);
  return RingAllReduce(t, data, count, dtype, op, chunk_bytes, deadline, scratch, wire);
}

}  // namespace cohort::comm
