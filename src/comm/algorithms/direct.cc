// Direct shared-memory collectives; see direct.h for the algorithm.
#include "algorithms/direct.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "reduce.h"

namespace cohort::comm {
namespace {

size_t SliceStart(size_t count, int n, int i) {
  return count * static_cast<size_t>(i) / static_cast<size_t>(n);
}

}  // namespace

Status DirectCollectives::AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                                    Deadline deadline) {
  const int n = g_.world_size();
  const int r = g_.rank();
  if (n == 1 || count == 0) return Status::Ok();
  const size_t elem = DTypeSize(dtype);
  const float scale = op == ReduceOp::kAverage ? 1.0f / static_cast<float>(n) : 1.0f;
  char* out = static_cast<char*>(data);
  std::vector<const void*> srcs(n);

  if (auto where = g_.Locate(data, count * elem)) {
    // In place: every rank's buffer sits at the same offset of segment k.
    const auto [segment, offset] = *where;
    auto view = [&](int p) { return g_.SegmentBase(segment, p) + offset; };
    COHORT_RETURN_IF_ERROR(g_.Barrier(deadline));  // all inputs written
    const size_t s0 = SliceStart(count, n, r), s1 = SliceStart(count, n, r + 1);
    for (int p = 0; p < n; ++p) srcs[p] = view(p) + s0 * elem;
    ReduceSum(dtype, out + s0 * elem, srcs.data(), n, s1 - s0, scale);
    COHORT_RETURN_IF_ERROR(g_.Barrier(deadline));  // all slices reduced
    for (int p = 0; p < n; ++p) {
      if (p == r) continue;
      const size_t p0 = SliceStart(count, n, p), p1 = SliceStart(count, n, p + 1);
      std::memcpy(out + p0 * elem, view(p) + p0 * elem, (p1 - p0) * elem);
    }
    return g_.Barrier(deadline);  // nobody overwrites a buffer a peer still reads
  }

  // Staged through the scratch halves, one piece at a time.
  const size_t piece = half_bytes() / elem;
  for (size_t base = 0; base < count; base += piece) {
    const size_t m = std::min(piece, count - base);
    const int h = NextHalf();
    char* mine = Half(r, h);
    std::memcpy(mine, out + base * elem, m * elem);
    COHORT_RETURN_IF_ERROR(g_.Barrier(deadline));
    const size_t s0 = SliceStart(m, n, r), s1 = SliceStart(m, n, r + 1);
    for (int p = 0; p < n; ++p) srcs[p] = Half(p, h) + s0 * elem;
    ReduceSum(dtype, mine + s0 * elem, srcs.data(), n, s1 - s0, scale);
    COHORT_RETURN_IF_ERROR(g_.Barrier(deadline));
    for (int p = 0; p < n; ++p) {
      const size_t p0 = SliceStart(m, n, p), p1 = SliceStart(m, n, p + 1);
      std::memcpy(out + (base + p0) * elem, Half(p, h) + p0 * elem, (p1 - p0) * elem);
    }
  }
  return Status::Ok();
}

Status DirectCollectives::Broadcast(void* data, size_t size_bytes, int root, Deadline deadline) {
  if (g_.world_size() == 1 || size_bytes == 0) return Status::Ok();
  char* p = static_cast<char*>(data);
  const size_t piece = half_bytes();
  for (size_t off = 0; off < size_bytes; off += piece) {
    const size_t m = std::min(piece, size_bytes - off);
    const int h = NextHalf();
    if (g_.rank() == root) std::memcpy(Half(root, h), p + off, m);
    COHORT_RETURN_IF_ERROR(g_.Barrier(deadline));
    if (g_.rank() != root) std::memcpy(p + off, Half(root, h), m);
  }
  return Status::Ok();
}

Status DirectCollectives::AllGather(const void* in, void* out, size_t size_bytes,
                                    Deadline deadline) {
  const int n = g_.world_size();
  const int r = g_.rank();
  const char* src = static_cast<const char*>(in);
  char* dst = static_cast<char*>(out);
  if (n == 1 || size_bytes == 0) {
    if (dst + r * size_bytes != src) std::memmove(dst + r * size_bytes, src, size_bytes);
    return Status::Ok();
  }
  const size_t piece = half_bytes();
  for (size_t off = 0; off < size_bytes; off += piece) {
    const size_t m = std::min(piece, size_bytes - off);
    const int h = NextHalf();
    std::memcpy(Half(r, h), src + off, m);
    COHORT_RETURN_IF_ERROR(g_.Barrier(deadline));
    for (int p = 0; p < n; ++p) std::memcpy(dst + p * size_bytes + off, Half(p, h), m);
  }
  return Status::Ok();
}

}  // namespace cohort::comm
