// DeviceCommunicator over NCCL; see include/cohort/comm/nccl.h.
//
// The communicator is created non-blocking (ncclConfig_t.blocking = 0), so
// neither its set-up nor a collective can block this thread inside NCCL:
// every call is followed by a wait that polls ncclCommGetAsyncError and
// cudaStreamQuery until the operation is done, NCCL reports an error, or the
// deadline passes. On an error or a deadline the communicator is aborted
// (ncclCommAbort), which also releases the peers' kernels stuck waiting for
// this rank; the error is sticky. Compiled only with COHORT_CUDA.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "cohort/comm/nccl.h"

namespace cohort::comm {
namespace {

std::string CudaText(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

ncclDataType_t NcclType(DeviceDType dtype) {
  switch (dtype) {
    case DeviceDType::kFloat32: return ncclFloat32;
    case DeviceDType::kBFloat16: return ncclBfloat16;
    case DeviceDType::kFloat16: return ncclFloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t NcclOp(ReduceOp op) { return op == ReduceOp::kAverage ? ncclAvg : ncclSum; }

std::string Hex(const void* data, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 15]);
  }
  return out;
}

bool Unhex(const std::string& text, void* out, size_t n) {
  if (text.size() != n * 2) return false;
  auto value = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  auto* p = static_cast<unsigned char*>(out);
  for (size_t i = 0; i < n; ++i) {
    const int hi = value(text[2 * i]), lo = value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    p[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

class NcclCommunicator final : public DeviceCommunicator {
 public:
  NcclCommunicator(int rank, int world, int device, DeviceCommOptions options)
      : rank_(rank), world_(world), device_(device), options_(std::move(options)) {}

  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (comm_ != nullptr) {
      // Flush and free; a peer that has gone makes finalizing wait: bounded,
      // then aborted.
      ncclResult_t state = ncclCommFinalize(comm_);
      const Deadline d = Deadline::After(std::chrono::milliseconds(5000));
      while ((state == ncclSuccess || state == ncclInProgress) && !d.Expired()) {
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess || state != ncclInProgress) break;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (state == ncclSuccess) ncclCommDestroy(comm_);
      else ncclCommAbort(comm_);
    }
    if (scratch_ != nullptr) cudaFree(scratch_);
  }

  Status Init(Store& store) {
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess)
      return Status::FailedPrecondition("rank " + std::to_string(rank_) + ": cannot use CUDA device " +
                                        std::to_string(device_) + " (" + CudaText(e) + ")");
    const Deadline deadline = Deadline::After(options_.timeout);
    ncclUniqueId id{};
    const std::string key = options_.store_prefix + "unique_id";
    if (rank_ == 0) {
      if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
        return Status::Internal(std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(r));
      if (Status st = store.Set(key, Hex(&id, sizeof(id))); !st.ok()) return st.WithPrefix("publishing the NCCL id");
    } else {
      Result<std::string> text = store.Get(key, deadline);
      if (!text.ok()) return text.status().WithPrefix("rank 0 did not publish the NCCL id");
      if (!Unhex(*text, &id, sizeof(id))) return Status::Internal("the NCCL id in the store is malformed");
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&comm_, world_, id, rank_, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      comm_ = nullptr;
      return Status::Internal(std::string("ncclCommInitRankConfig failed: ") + ncclGetErrorString(r));
    }
    if (Status st = WaitForComm(deadline, "joining the NCCL communicator (every rank must start)"); !st.ok())
      return st;
    if (cudaError_t e = cudaMalloc(&scratch_, sizeof(float)); e != cudaSuccess)
      return Fail(Status::Internal("cudaMalloc of the barrier buffer failed: " + CudaText(e)));
    return Status::Ok();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int device() const override { return device_; }

  Status AllReduceEnqueue(void* data, size_t count, DeviceDType dtype, ReduceOp op, void* stream) override {
    std::lock_guard<std::mutex> busy(op_mu_);
    if (Status st = error(); !st.ok()) return st;
    if (count == 0) return Status::Ok();
    ncclResult_t r = ncclAllReduce(data, data, count, NcclType(dtype), NcclOp(op), comm_,
                                   static_cast<cudaStream_t>(stream));
    return Issued(r, "all-reduce");
  }

  Status AllReduce(void* data, size_t count, DeviceDType dtype, ReduceOp op, void* stream,
                   Deadline deadline) override {
    if (Status st = AllReduceEnqueue(data, count, dtype, op, stream); !st.ok()) return st;
    return Synchronize(stream, deadline);
  }

  Status Broadcast(void* data, size_t size_bytes, int root, void* stream, Deadline deadline) override {
    std::lock_guard<std::mutex> busy(op_mu_);
    if (Status st = error(); !st.ok()) return st;
    if (root < 0 || root >= world_) return Status::InvalidArgument("broadcast root " + std::to_string(root));
    if (size_bytes == 0) return Status::Ok();
    ncclResult_t r = ncclBroadcast(data, data, size_bytes, ncclUint8, root, comm_, static_cast<cudaStream_t>(stream));
    if (Status st = Issued(r, "broadcast"); !st.ok()) return st;
    return SynchronizeLocked(stream, deadline);
  }

  Status AllGather(const void* in, void* out, size_t size_bytes, void* stream, Deadline deadline) override {
    std::lock_guard<std::mutex> busy(op_mu_);
    if (Status st = error(); !st.ok()) return st;
    if (size_bytes == 0) return Status::Ok();
    ncclResult_t r = ncclAllGather(in, out, size_bytes, ncclUint8, comm_, static_cast<cudaStream_t>(stream));
    if (Status st = Issued(r, "all-gather"); !st.ok()) return st;
    return SynchronizeLocked(stream, deadline);
  }

  Status Barrier(Deadline deadline) override {
    return AllReduce(scratch_, 1, DeviceDType::kFloat32, ReduceOp::kSum, nullptr, deadline);
  }

  Status Synchronize(void* stream, Deadline deadline) override {
    std::lock_guard<std::mutex> busy(op_mu_);
    return SynchronizeLocked(stream, deadline);
  }

  Status error() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

  void Abort(const std::string& reason) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_.ok() || abort_requested_) return;
      abort_reason_ = reason;
      abort_requested_ = true;
    }
    // Idle: abort now. Busy: the waiting call sees the request within a
    // millisecond and aborts from its own thread (NCCL objects are not used
    // from two threads at once).
    std::unique_lock<std::mutex> op(op_mu_, std::try_to_lock);
    if (op.owns_lock()) CheckAbortRequest();
  }

 private:
  Status SynchronizeLocked(void* stream, Deadline deadline) {
    if (Status st = error(); !st.ok()) return st;
    // The operation may still be being enqueued (non-blocking mode).
    if (Status st = WaitForComm(deadline, "enqueuing a collective"); !st.ok()) return st;
    auto* s = static_cast<cudaStream_t>(stream);
    auto pause = std::chrono::microseconds(20);
    while (true) {
      cudaError_t e = cudaStreamQuery(s);
      if (e == cudaSuccess) return Status::Ok();
      if (e != cudaErrorNotReady) return Fail(Status::Internal("the CUDA stream failed: " + CudaText(e)));
      if (Status st = CheckAbortRequest(); !st.ok()) return st;
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress)
        return Fail(Status::Unavailable(std::string("NCCL reported an error (a peer died or the network "
                                                    "failed): ") +
                                        ncclGetErrorString(state) + LastError()));
      if (deadline.Expired())
        return Fail(Status::DeadlineExceeded(
            "rank " + std::to_string(rank_) + ": a collective did not complete within " +
            std::to_string(options_.timeout.count()) + " ms (a peer is dead, stalled or not issuing it); "
            "the NCCL communicator was aborted"));
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

  std::string LastError() const {
    const char* last = comm_ != nullptr ? ncclGetLastError(comm_) : nullptr;
    return last != nullptr && *last != '\0' ? std::string(" (") + last + ")" : "";
  }

  // After a call that enqueues: ncclInProgress is fine (non-blocking mode).
  Status Issued(ncclResult_t r, const char* what) {
    if (r == ncclSuccess) return Status::Ok();
    // Non-blocking communicator: the call may still be enqueuing, and no
    // other NCCL call may be made on it until its state leaves InProgress.
    if (r == ncclInProgress)
      return WaitForComm(Deadline::After(options_.timeout), std::string("enqueuing an NCCL ") + what);
    return Fail(Status::Internal(std::string("NCCL ") + what + " failed: " + ncclGetErrorString(r) + LastError()));
  }

  // Polls the communicator's state until it is no longer in progress.
  Status WaitForComm(Deadline deadline, const std::string& what) {
    auto pause = std::chrono::microseconds(20);
    while (true) {
      if (Status st = CheckAbortRequest(); !st.ok()) return st;
      ncclResult_t state = ncclInProgress;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess)
        return Fail(Status::Internal(std::string("ncclCommGetAsyncError failed: ") + ncclGetErrorString(r)));
      if (state == ncclSuccess) return Status::Ok();
      if (state != ncclInProgress)
        return Fail(Status::Unavailable(what + ": " + ncclGetErrorString(state) + LastError()));
      if (deadline.Expired())
        return Fail(Status::DeadlineExceeded("rank " + std::to_string(rank_) + ": " + what + " did not finish within " +
                                             std::to_string(options_.timeout.count()) + " ms"));
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

  // Fails with Cancelled when Abort was requested from another thread.
  Status CheckAbortRequest() {
    std::string reason;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!abort_requested_ || !error_.ok()) return error_;
      reason = abort_reason_;
    }
    return Fail(Status::Cancelled("aborted: " + reason));
  }

  // Records the first error and aborts the communicator.
  Status Fail(Status st) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.ok()) return error_;
    error_ = st;
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    return error_;
  }

  const int rank_, world_, device_;
  const DeviceCommOptions options_;
  ncclComm_t comm_ = nullptr;  // null once aborted
  void* scratch_ = nullptr;
  std::mutex op_mu_;  // held by each call: NCCL is driven from one thread at a time
  mutable std::mutex mu_;
  Status error_;
  bool abort_requested_ = false;
  std::string abort_reason_;
};

}  // namespace

bool DeviceCommunicator::Built() { return true; }

int DeviceCommunicator::DeviceCount() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

Result<std::unique_ptr<DeviceCommunicator>> DeviceCommunicator::Create(std::shared_ptr<Store> store, int rank,
                                                                      int world_size, DeviceCommOptions options) {
  if (store == nullptr) return Status::InvalidArgument("no store");
  if (world_size < 1 || rank < 0 || rank >= world_size)
    return Status::InvalidArgument("rank " + std::to_string(rank) + " of " + std::to_string(world_size));
  const int count = DeviceCount();
  if (count == 0)
    return Status::FailedPrecondition("no CUDA device is visible to this process (CUDA_VISIBLE_DEVICES, driver)");
  int device = options.device;
  if (device < 0) {
    const char* local = std::getenv("LOCAL_RANK");
    device = local != nullptr ? std::atoi(local) : 0;
  }
  if (device < 0 || device >= count)
    return Status::FailedPrecondition("rank " + std::to_string(rank) + " wants CUDA device " + std::to_string(device) +
                                      " but " + std::to_string(count) + " are visible; ranks sharing a GPU use "
                                      "the host-staged path");
  auto comm = std::make_unique<NcclCommunicator>(rank, world_size, device, std::move(options));
  if (Status st = comm->Init(*store); !st.ok()) return st;
  return std::unique_ptr<DeviceCommunicator>(std::move(comm));
}

}  // namespace cohort::comm
