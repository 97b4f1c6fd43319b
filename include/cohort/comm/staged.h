// Host-staged all-reduce of device buffers: the path for GPU ranks that
// cannot use NCCL (a build without it, or several ranks sharing one GPU,
// which NCCL refuses). Each buffer is copied from the device into host
// memory, all-reduced there through the host Communicator (shared memory or
// TCP), and copied back -- pipelined over the buffers: while buffer k is
// reduced, buffer k+1 is still being copied out and buffer k-1 back in.
//
// The device side is a DeviceCopier, so the same pipeline runs on the CPU
// (NewHostMemoryCopier: "device" memory is host memory) in the tests and on
// CUDA (NewCudaCopier: cudaMemcpyAsync on a copy stream of its own, host
// memory pinned with cudaHostRegister). The host staging area comes from
// Communicator::AllocateShared, so on shared memory the reduction reads it
// in place.
//
// Thread-safety: one Run at a time per HostStagedAllReduce.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cohort/comm/communicator.h"
#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::comm {

class DeviceCopier {
 public:
  using Ticket = uint64_t;
  virtual ~DeviceCopier() = default;
  // Makes host memory fast to copy to and from (pins it); once per region.
  virtual Status RegisterHost(void* host, size_t bytes) = 0;
  // Starts copying once the work already queued on `after` (a device stream,
  // or null: none) is done; the ticket's Wait returns when the copy is done.
  virtual Result<Ticket> ToHost(void* host, const void* device, size_t bytes, void* after) = 0;
  virtual Result<Ticket> ToDevice(void* device, const void* host, size_t bytes) = 0;
  virtual Status Wait(Ticket ticket, Deadline deadline) = 0;
  // "host memory", "cuda:0": for messages.
  virtual const char* name() const = 0;
};

// "Device" memory is host memory: synchronous memcpy. For tests and CPU ranks.
std::unique_ptr<DeviceCopier> NewHostMemoryCopier();
// CUDA device `device` (cohort_comm_nccl in a CUDA build; elsewhere
// FailedPrecondition saying how to rebuild).
Result<std::unique_ptr<DeviceCopier>> NewCudaCopier(int device);

struct StagedBuffer {
  void* device = nullptr;  // float32 values on the device
  size_t count = 0;
};

class HostStagedAllReduce {
 public:
  HostStagedAllReduce(Communicator* comm, DeviceCopier* copier) : comm_(comm), copier_(copier) {}

  // All-reduces every buffer in place. `after`: the device stream that
  // produced them (their copies wait for it). Collective: every rank passes
  // buffers of the same counts in the same order. The staging area is
  // allocated at the first call (and again if a later call needs more).
  Status Run(const std::vector<StagedBuffer>& buffers, ReduceOp op, WireFormat wire, void* after,
             Deadline deadline);

  size_t staging_bytes() const { return staging_bytes_; }

 private:
  Communicator* const comm_;
  DeviceCopier* const copier_;
  float* staging_ = nullptr;
  size_t staging_bytes_ = 0;
};

}  // namespace cohort::comm
