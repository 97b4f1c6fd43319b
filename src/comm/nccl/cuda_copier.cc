// The CUDA DeviceCopier of the host-staged path (cohort/comm/staged.h):
// copies run with cudaMemcpyAsync on a copy stream of their own, so they
// overlap the compute stream; a copy to the host first waits (on the device,
// cudaStreamWaitEvent) for the work queued on the stream that produced the
// gradients; each copy records an event, its ticket. Host memory is pinned
// with cudaHostRegister so the copies are real DMA. Compiled only with
// COHORT_CUDA.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cohort/comm/staged.h"

namespace cohort::comm {
namespace {

std::string CudaText(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

class CudaCopier final : public DeviceCopier {
 public:
  explicit CudaCopier(int device) : device_(device), name_("cuda:" + std::to_string(device)) {}

  ~CudaCopier() override {
    cudaSetDevice(device_);
    for (auto& [t, e] : events_) cudaEventDestroy(e);
    for (void* p : registered_) cudaHostUnregister(p);
    if (produced_ != nullptr) cudaEventDestroy(produced_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Status Init() {
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) return Status::FailedPrecondition(name_ + ": " + CudaText(e));
    if (cudaError_t e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); e != cudaSuccess)
      return Status::Internal("cudaStreamCreate: " + CudaText(e));
    if (cudaError_t e = cudaEventCreateWithFlags(&produced_, cudaEventDisableTiming); e != cudaSuccess)
      return Status::Internal("cudaEventCreate: " + CudaText(e));
    return Status::Ok();
  }

  Status RegisterHost(void* host, size_t bytes) override {
    cudaSetDevice(device_);
    if (cudaError_t e = cudaHostRegister(host, bytes, cudaHostRegisterDefault); e != cudaSuccess)
      return Status::Internal("cudaHostRegister of " + std::to_string(bytes) + " bytes: " + CudaText(e));
    registered_.push_back(host);
    return Status::Ok();
  }

  Result<Ticket> ToHost(void* host, const void* device, size_t bytes, void* after) override {
    cudaSetDevice(device_);
    if (cudaError_t e = cudaEventRecord(produced_, static_cast<cudaStream_t>(after)); e != cudaSuccess)
      return Status::Internal("cudaEventRecord: " + CudaText(e));
    if (cudaError_t e = cudaStreamWaitEvent(stream_, produced_, 0); e != cudaSuccess)
      return Status::Internal("cudaStreamWaitEvent: " + CudaText(e));
    if (cudaError_t e = cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_); e != cudaSuccess)
      return Status::Internal("cudaMemcpyAsync to the host: " + CudaText(e));
    return Record();
  }

  Result<Ticket> ToDevice(void* device, const void* host, size_t bytes) override {
    cudaSetDevice(device_);
    if (cudaError_t e = cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_); e != cudaSuccess)
      return Status::Internal("cudaMemcpyAsync to the device: " + CudaText(e));
    return Record();
  }

  Status Wait(Ticket ticket, Deadline deadline) override {
    auto it = events_.find(ticket);
    if (it == events_.end()) return Status::InvalidArgument("unknown copy ticket");
    auto pause = std::chrono::microseconds(10);
    while (true) {
      cudaError_t e = cudaEventQuery(it->second);
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady) return Status::Internal(name_ + ": a copy failed: " + CudaText(e));
      if (deadline.Expired()) return Status::DeadlineExceeded(name_ + ": a copy did not finish in time");
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(500));
    }
    cudaEventDestroy(it->second);
    events_.erase(it);
    return Status::Ok();
  }

  const char* name() const override { return name_.c_str(); }

 private:
  Result<Ticket> Record() {
    cudaEvent_t ev;
    if (cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming); e != cudaSuccess)
      return Status::Internal("cudaEventCreate: " + CudaText(e));
    if (cudaError_t e = cudaEventRecord(ev, stream_); e != cudaSuccess) {
      cudaEventDestroy(ev);
      return Status::Internal("cudaEventRecord: " + CudaText(e));
    }
    const Ticket t = ++next_;
    events_[t] = ev;
    return t;
  }

  const int device_;
  const std::string name_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t produced_ = nullptr;
  std::map<Ticket, cudaEvent_t> events_;
  std::vector<void*> registered_;
  Ticket next_ = 0;
};

}  // namespace

Result<std::unique_ptr<DeviceCopier>> NewCudaCopier(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
    return Status::FailedPrecondition("no CUDA device is visible to this process");
  if (device < 0 || device >= count)
    return Status::InvalidArgument("CUDA device " + std::to_string(device) + " of " + std::to_string(count));
  auto copier = std::make_unique<CudaCopier>(device);
  if (Status st = copier->Init(); !st.ok()) return st;
  return std::unique_ptr<DeviceCopier>(std::move(copier));
}

}  // namespace cohort::comm
