// ShmGroup: shared memory among the ranks of one host.
//
// What lives in shared memory:
//   - one control segment (created by rank 0): a header with an abort flag
//     and, per rank, a cache-line slot {pid, arrive counter}. Barrier() is
//     "bump my counter, wait until every peer's counter reaches mine";
//   - per rank, a list of data segments (segment 0 is the staging scratch;
//     AllocateShared adds more). Segment k of every rank has the same size,
//     and every rank maps every peer's segment k, so a rank can read a peer's
//     buffer directly: the direct algorithms (algorithms/direct.h) reduce
//     straight out of the peers' memory, with no copy over a socket.
//
// Names are "/cohort-<session>-..." with a random session chosen by rank 0
// and shared through the store; each name is unlinked as soon as every rank
// mapped it, so a crash leaves nothing behind in /dev/shm once set-up is over.
//
// Waiting spins briefly, then yields, then sleeps in 100 us steps; every
// ~20 ms it checks that the awaited peer's process still exists, so a dead
// peer is reported at once and a stalled one at the deadline, by rank.
//
// Thread affinity: one collective at a time (the communicator serialises).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cohort/comm/store.h"
#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::comm {

class ShmGroup {
 public:
  static Result<std::unique_ptr<ShmGroup>> Create(Store& store, int rank, int world_size,
                                                  size_t scratch_bytes, Deadline deadline);
  ~ShmGroup();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  Status Barrier(Deadline deadline);

  // Collective: every rank adds a segment of size_bytes (zero-filled) and maps
  // the peers' ones. Returns the new segment's index.
  Result<int> AddSegment(size_t size_bytes, Deadline deadline);
  char* SegmentBase(int segment, int rank) const { return segments_[segment].bases[rank]; }
  size_t SegmentSize(int segment) const { return segments_[segment].size_bytes; }

  // Which of this rank's segments holds [p, p + size_bytes): (segment, offset).
  std::optional<std::pair<int, size_t>> Locate(const void* p, size_t size_bytes) const;

  // Records the first failure in shared memory so peers fail fast naming us.
  void Abort(const std::string& reason);
  // The timeout to quote in messages (the deadline itself is absolute).
  void set_timeout_ms(int64_t ms) { timeout_ms_ = ms; }

 private:
  struct Segment {
    size_t size_bytes = 0;
    std::vector<char*> bases;  // bases[rank], mapped in this process
  };
  struct Control;

  ShmGroup(int rank, int world_size) : rank_(rank), world_size_(world_size) {}
  Status WaitArrive(int peer, uint64_t generation, Deadline deadline);
  Status CheckAborted() const;

  const int rank_;
  const int world_size_;
  std::string session_;
  Control* control_ = nullptr;
  size_t control_bytes_ = 0;
  uint64_t generation_ = 0;  // barriers this rank has entered
  std::vector<Segment> segments_;
  int64_t timeout_ms_ = 0;
};

}  // namespace cohort::comm
