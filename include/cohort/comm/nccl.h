// DeviceCommunicator: collectives on CUDA device buffers through NCCL, with
// the same contract as the host Communicator: every rank issues the same
// collectives in the same order; each call takes a Deadline; the first
// failure is sticky and names its cause; a dead or stalled peer fails every
// rank within the timeout (the communicator is aborted with ncclCommAbort,
// never left hanging). Recovery means a new communicator (a new attempt).
//
// comm never sees tensors: callers pass device pointers and a CUDA stream
// (cudaStream_t, passed as void* so this header needs no CUDA headers; null
// is the legacy default stream). A call enqueues the NCCL operation on the
// stream and returns once it has completed there, polling the stream and the
// communicator's asynchronous error (so a deadline is honoured even when a
// peer never joins the operation). The *Enqueue calls return at once and
// Synchronize(stream, deadline) waits for everything enqueued.
//
// Built only with -DCOHORT_CUDA=ON (or AUTO when the CUDA toolkit and NCCL
// are found); otherwise Create returns FailedPrecondition naming the flag.
// One communicator per process and device (NCCL refuses two ranks on one
// GPU: such jobs use the host-staged path instead, see DeviceCount()).
//
// Thread-safety: one thread at a time; Abort may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "cohort/comm/store.h"
#include "cohort/comm/types.h"
#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::comm {

// Element types NCCL reduces natively.
enum class DeviceDType : uint8_t { kFloat32, kBFloat16, kFloat16 };
inline size_t DeviceDTypeSize(DeviceDType dtype) { return dtype == DeviceDType::kFloat32 ? 4 : 2; }

struct DeviceCommOptions {
  // How long a collective (or the set-up) waits before the communicator is
  // aborted and the call fails naming the cause.
  std::chrono::milliseconds timeout{60000};
  // The CUDA device of this rank (an index among the visible devices);
  // -1: LOCAL_RANK, else 0.
  int device = -1;
  // Prefix of the store keys (one communicator per job attempt: the
  // attempt's store or its number here keeps attempts apart).
  std::string store_prefix = "nccl/";
};

class DeviceCommunicator {
 public:
  // Whether this build has NCCL (COHORT_CUDA).
  static bool Built();
  // CUDA devices visible to this process: 0 without a driver or GPU, or in
  // a build without CUDA.
  static int DeviceCount();

  // Rank 0 makes the NCCL unique id and publishes it through `store`; every
  // rank then joins within options.timeout (a missing rank fails all of them,
  // naming the timeout). Sets the calling thread's current device.
  static Result<std::unique_ptr<DeviceCommunicator>> Create(std::shared_ptr<Store> store, int rank,
                                                            int world_size, DeviceCommOptions options = {});

  virtual ~DeviceCommunicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int device() const = 0;

  // In place on the device: data[i] = op over ranks of data[i].
  virtual Status AllReduce(void* data, size_t count, DeviceDType dtype, ReduceOp op, void* stream,
                           Deadline deadline) = 0;
  virtual Status Broadcast(void* data, size_t size_bytes, int root, void* stream, Deadline deadline) = 0;
  // out (world_size * size_bytes, on the device) receives every rank's `in`.
  virtual Status AllGather(const void* in, void* out, size_t size_bytes, void* stream, Deadline deadline) = 0;
  virtual Status Barrier(Deadline deadline) = 0;

  // Enqueues without waiting (the gradient path: one bucket's all-reduce
  // overlaps the next bucket's backward); Synchronize waits for the stream.
  virtual Status AllReduceEnqueue(void* data, size_t count, DeviceDType dtype, ReduceOp op, void* stream) = 0;
  virtual Status Synchronize(void* stream, Deadline deadline) = 0;

  virtual Status error() const = 0;
  // Aborts the NCCL communicator (peers then fail within their timeout).
  virtual void Abort(const std::string& reason) = 0;
};

// A CUDA stream of this process's own for collectives, ordered against
// another stream with events, so that neither the host nor the whole device
// waits: the gradient path records "gradients ready" on the stream backward
// ran on and all-reduces on this one, overlapping the rest of backward.
// Compiled only with COHORT_CUDA; elsewhere Create says how to rebuild.
class DeviceStream {
 public:
  static Result<std::unique_ptr<DeviceStream>> Create(int device);
  virtual ~DeviceStream() = default;
  virtual int device() const = 0;
  // The cudaStream_t, for DeviceCommunicator calls.
  virtual void* handle() const = 0;
  // Work queued on this stream from now on starts after the work already
  // queued on `producer` (null: the legacy default stream, where libtorch
  // runs unless told otherwise).
  virtual Status WaitFor(void* producer) = 0;
  // Work queued on `consumer` (null: the default stream) from now on starts
  // after the work queued on this stream so far.
  virtual Status SignalTo(void* consumer) = 0;
};

// A device's memory as the driver sees it (every process on it together).
struct DeviceMemory {
  size_t used_bytes = 0;
  size_t total_bytes = 0;
};
// FailedPrecondition without CUDA or without that device.
Result<DeviceMemory> QueryDeviceMemory(int device);

}  // namespace cohort::comm
