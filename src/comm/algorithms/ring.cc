// Ring collectives; see ring.h for the algorithm in prose.
#include "algorithms/ring.h"

#include <algorithm>
#include <cstring>

#include "reduce.h"

namespace cohort::comm {
namespace {

// Segment i of a count-element buffer split world_size ways (balanced; any
// count works, including 0 and counts not divisible by world_size).
size_t SegStart(size_t count, int world_size, int i) {
  return count * static_cast<size_t>(i) / static_cast<size_t>(world_size);
}
size_t SegLen(size_t count, int world_size, int i) {
  return SegStart(count, world_size, i + 1) - SegStart(count, world_size, i);
}

// The kernels of a 16-bit wire format.
struct HalfWire {
  void (*narrow)(uint16_t* out, const float* in, size_t count);
  void (*widen)(float* out, const uint16_t* in, size_t count);
  void (*add_into)(float* acc, const uint16_t* in, size_t count);
};
constexpr HalfWire kBFloat16Wire{NarrowToBFloat16, WidenFromBFloat16, AddBFloat16Into};
constexpr HalfWire kFloat16Wire{NarrowToFloat16, WidenFromFloat16, AddFloat16Into};

Status RingAllReduceHalfWire(PairTransport& t, float* data, size_t count, ReduceOp op, size_t chunk_bytes,
                             Deadline deadline, RingScratch& scratch, const HalfWire& codec) {
  const int n = t.world_size();
  const int r = t.rank();
  const float scale = op == ReduceOp::kAverage ? 1.0f / static_cast<float>(n) : 1.0f;
  const int right = (r + 1) % n;
  const int left = (r - 1 + n) % n;
  size_t max_seg = 0;
  for (int i = 0; i < n; ++i) max_seg = std::max(max_seg, SegLen(count, n, i));
  if (scratch.recv.size() < max_seg * 2) scratch.recv.resize(max_seg * 2);
  if (scratch.send.size() < max_seg) scratch.send.resize(max_seg);
  if (scratch.gather.size() < count) scratch.gather.resize(count);
  auto* incoming = reinterpret_cast<uint16_t*>(scratch.recv.data());
  uint16_t* outgoing = scratch.send.data();
  uint16_t* wire = scratch.gather.data();
  const size_t chunk = std::max<size_t>(1, chunk_bytes / 2);  // elements

  // Reduce-scatter: step s sends segment (r - s) as 16-bit floats and adds
  // the received (r - s - 1) into the float32 segment, chunk by chunk.
  for (int s = 0; s < n - 1; ++s) {
    const int send_seg = ((r - s) % n + n) % n;
    const int recv_seg = ((r - s - 1) % n + n) % n;
    const size_t send_len = SegLen(count, n, send_seg);
    const size_t recv_len = SegLen(count, n, recv_seg);
    codec.narrow(outgoing, data + SegStart(count, n, send_seg), send_len);
    float* dst = data + SegStart(count, n, recv_seg);
    size_t reduced = 0;  // elements added so far
    auto reduce_ready = [&](size_t received_bytes) {
      const size_t received = received_bytes / 2;
      while (reduced < received && (received - reduced >= chunk || received == recv_len)) {
        const size_t len = std::min(chunk, received - reduced);
        codec.add_into(dst + reduced, incoming + reduced, len);
        reduced += len;
      }
    };
    COHORT_RETURN_IF_ERROR(t.SendRecv(right, outgoing, send_len * 2, left, incoming, recv_len * 2, deadline,
                                      reduce_ready));
    reduce_ready(recv_len * 2);
  }

  // Rank r owns segment (r + 1) mod n: scaled, rounded once, and that rounded
  // value is what every rank (this one included) ends with.
  const int own = (r + 1) % n;
  float* own_data = data + SegStart(count, n, own);
  if (scale != 1.0f) Scale(DType::kFloat32, own_data, SegLen(count, n, own), scale);
  codec.narrow(wire + SegStart(count, n, own), own_data, SegLen(count, n, own));

  // All-gather of the 16-bit segments.
  for (int s = 0; s < n - 1; ++s) {
    const int send_seg = ((r + 1 - s) % n + n) % n;
    const int recv_seg = ((r - s) % n + n) % n;
    COHORT_RETURN_IF_ERROR(t.SendRecv(right, wire + SegStart(count, n, send_seg), SegLen(count, n, send_seg) * 2,
                                      left, wire + SegStart(count, n, recv_seg), SegLen(count, n, recv_seg) * 2,
                                      deadline, nullptr));
  }
  codec.widen(data, wire, count);
  return Status::Ok();
}

}  // namespace

Status RingAllReduce(PairTransport& t, void* data, size_t count, DType dtype, ReduceOp op,
                     size_t chunk_bytes, Deadline deadline, RingScratch& scratch, WireFormat wire) {
  if (wire != WireFormat::kNative && dtype == DType::kFloat32 && t.world_size() > 1 && count > 0) {
    return RingAllReduceHalfWire(t, static_cast<float*>(data), count, op, chunk_bytes, deadline, scratch,
                                 wire == WireFormat::kFloat16 ? kFloat16Wire : kBFloat16Wire);
  }
  const int n = t.world_size();
  const int r = t.rank();
  const size_t elem = DTypeSize(dtype);
  char* base = static_cast<char*>(data);
  const float scale = op == ReduceOp::kAverage ? 1.0f / static_cast<float>(n) : 1.0f;
  if (n == 1 || count == 0) return Status::Ok();

  const int right = (r + 1) % n;
  const int left = (r - 1 + n) % n;
  size_t max_seg = 0;
  for (int i = 0; i < n; ++i) max_seg = std::max(max_seg, SegLen(count, n, i));
  if (scratch.recv.size() < max_seg * elem) scratch.recv.resize(max_seg * elem);
  char* tmp = scratch.recv.data();
  const size_t chunk = std::max(elem, chunk_bytes / elem * elem);

  // Reduce-scatter: step s sends segment (r - s) and receives (r - s - 1).
  for (int s = 0; s < n - 1; ++s) {
    const int send_seg = ((r - s) % n + n) % n;
    const int recv_seg = ((r - s - 1) % n + n) % n;
    const size_t recv_bytes = SegLen(count, n, recv_seg) * elem;
    char* dst = base + SegStart(count, n, recv_seg) * elem;
    size_t reduced = 0;  // bytes of the received segment already added into dst
    auto reduce_ready = [&](size_t received) {
      while (reduced < received && (received - reduced >= chunk || received == recv_bytes)) {
        size_t len = std::min(chunk, received - reduced);
        len -= len % elem;
        if (len == 0) break;
        const void* srcs[2] = {dst + reduced, tmp + reduced};
        ReduceSum(dtype, dst + reduced, srcs, 2, len / elem, 1.0f);
        reduced += len;
      }
    };
    COHORT_RETURN_IF_ERROR(t.SendRecv(right, base + SegStart(count, n, send_seg) * elem,
                                      SegLen(count, n, send_seg) * elem, left, tmp, recv_bytes,
                                      deadline, reduce_ready));
    reduce_ready(recv_bytes);
  }

  // Rank r now owns the reduced segment (r + 1) mod n.
  const int own = (r + 1) % n;
  if (scale != 1.0f)
    Scale(dtype, base + SegStart(count, n, own) * elem, SegLen(count, n, own), scale);

  // All-gather: step s sends segment (r + 1 - s) and receives (r - s).
  for (int s = 0; s < n - 1; ++s) {
    const int send_seg = ((r + 1 - s) % n + n) % n;
    const int recv_seg = ((r - s) % n + n) % n;
    COHORT_RETURN_IF_ERROR(t.SendRecv(right, base + SegStart(count, n, send_seg) * elem,
                                      SegLen(count, n, send_seg) * elem, left,
                                      base + SegStart(count, n, recv_seg) * elem,
                                      SegLen(count, n, recv_seg) * elem, deadline, nullptr));
  }
  return Status::Ok();
}

Status RingAllGather(PairTransport& t, const void* in, void* out, size_t size_bytes,
                     Deadline deadline) {
  const int n = t.world_size();
  const int r = t.rank();
  char* blocks = static_cast<char*>(out);
  if (blocks + r * size_bytes != in) std::memmove(blocks + r * size_bytes, in, size_bytes);
  if (n == 1 || size_bytes == 0) return Status::Ok();
  const int right = (r + 1) % n;
  const int left = (r - 1 + n) % n;
  for (int s = 0; s < n - 1; ++s) {
    const int send_block = ((r - s) % n + n) % n;
    const int recv_block = ((r - s - 1) % n + n) % n;
    COHORT_RETURN_IF_ERROR(t.SendRecv(right, blocks + send_block * size_bytes, size_bytes, left,
                                      blocks + recv_block * size_bytes, size_bytes, deadline,
                                      nullptr));
  }
  return Status::Ok();
}

Status RingBroadcast(PairTransport& t, void* data, size_t size_bytes, int root, size_t chunk_bytes,
                     Deadline deadline) {
  const int n = t.world_size();
  const int r = t.rank();
  if (n == 1 || size_bytes == 0) return Status::Ok();
  // Pipeline along the ring starting at root: each rank receives a chunk from
  // its left neighbour and forwards the previous chunk to its right one.
  const int pos = ((r - root) % n + n) % n;  // distance from root along the ring
  const int right = (r + 1) % n;
  const int left = (r - 1 + n) % n;
  const bool forwards = pos != n - 1;  // the last rank on the ring only receives
  char* p = static_cast<char*>(data);
  const size_t chunk = std::max<size_t>(1, chunk_bytes);
  const size_t num_chunks = (size_bytes + chunk - 1) / chunk;
  auto chunk_len = [&](size_t c) { return std::min(chunk, size_bytes - c * chunk); };
  if (pos == 0) {
    for (size_t c = 0; c < num_chunks; ++c)
      COHORT_RETURN_IF_ERROR(
          t.SendRecv(right, p + c * chunk, chunk_len(c), left, nullptr, 0, deadline, nullptr));
    return Status::Ok();
  }
  // Step c: receive chunk c while forwarding chunk c - 1.
  for (size_t c = 0; c <= num_chunks; ++c) {
    size_t send_len = (forwards && c > 0) ? chunk_len(c - 1) : 0;
    size_t recv_len = c < num_chunks ? chunk_len(c) : 0;
    COHORT_RETURN_IF_ERROR(t.SendRecv(right, c > 0 ? p + (c - 1) * chunk : p, send_len, left,
                                      p + c * chunk, recv_len, deadline, nullptr));
  }
  return Status::Ok();
}

}  // namespace cohort::comm
