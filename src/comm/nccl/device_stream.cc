// DeviceStream and QueryDeviceMemory (cohort/comm/nccl.h) on the CUDA
// runtime. Compiled only with COHORT_CUDA.
#include <cuda_runtime_api.h>

#include <string>

#include "cohort/comm/nccl.h"

namespace cohort::comm {
namespace {

std::string CudaText(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

class CudaStream final : public DeviceStream {
 public:
  explicit CudaStream(int device) : device_(device) {}
  ~CudaStream() override {
    cudaSetDevice(device_);
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Status Init() {
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess)
      return Status::FailedPrecondition("cuda:" + std::to_string(device_) + ": " + CudaText(e));
    // Non-blocking: it does not wait for the legacy default stream on its
    // own, only where WaitFor says so.
    if (cudaError_t e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); e != cudaSuccess)
      return Status::Internal("cudaStreamCreate: " + CudaText(e));
    for (cudaEvent_t* ev : {&ready_, &done_})
      if (cudaError_t e = cudaEventCreateWithFlags(ev, cudaEventDisableTiming); e != cudaSuccess)
        return Status::Internal("cudaEventCreate: " + CudaText(e));
    return Status::Ok();
  }

  int device() const override { return device_; }
  void* handle() const override { return stream_; }

  Status WaitFor(void* producer) override {
    cudaSetDevice(device_);
    if (cudaError_t e = cudaEventRecord(ready_, static_cast<cudaStream_t>(producer)); e != cudaSuccess)
      return Status::Internal("cudaEventRecord: " + CudaText(e));
    if (cudaError_t e = cudaStreamWaitEvent(stream_, ready_, 0); e != cudaSuccess)
      return Status::Internal("cudaStreamWaitEvent: " + CudaText(e));
    return Status::Ok();
  }

  Status SignalTo(void* consumer) override {
    cudaSetDevice(device_);
    if (cudaError_t e = cudaEventRecord(done_, stream_); e != cudaSuccess)
      return Status::Internal("cudaEventRecord: " + CudaText(e));
    if (cudaError_t e = cudaStreamWaitEvent(static_cast<cudaStream_t>(consumer), done_, 0); e != cudaSuccess)
      return Status::Internal("cudaStreamWaitEvent: " + CudaText(e));
    return Status::Ok();
  }

 private:
  const int device_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // re-recorded by each WaitFor: a wait captures the record before it
  cudaEvent_t done_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<DeviceStream>> DeviceStream::Create(int device) {
  auto s = std::make_unique<CudaStream>(device);
  COHORT_RETURN_IF_ERROR(s->Init());
  return std::unique_ptr<DeviceStream>(std::move(s));
}

Result<DeviceMemory> QueryDeviceMemory(int device) {
  int current = 0;
  cudaGetDevice(&current);
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess)
    return Status::FailedPrecondition("cuda:" + std::to_string(device) + ": " + CudaText(e));
  size_t free_bytes = 0, total_bytes = 0;
  cudaError_t e = cudaMemGetInfo(&free_bytes, &total_bytes);
  cudaSetDevice(current);
  if (e != cudaSuccess) return Status::Internal("cudaMemGetInfo: " + CudaText(e));
  return DeviceMemory{total_bytes - free_bytes, total_bytes};
}

}  // namespace cohort::comm
