// DeviceCommunicator in a build without CUDA/NCCL (COHORT_CUDA=OFF, or AUTO
// without the toolkit): nothing to run on; see include/cohort/comm/nccl.h.
#include "cohort/comm/nccl.h"
#include "cohort/comm/staged.h"

namespace cohort::comm {

bool DeviceCommunicator::Built() { return false; }

int DeviceCommunicator::DeviceCount() { return 0; }

Result<std::unique_ptr<DeviceCommunicator>> DeviceCommunicator::Create(std::shared_ptr<Store>, int, int,
                                                                      DeviceCommOptions) {
  return Status::FailedPrecondition(
      "this cohort was built without CUDA and NCCL; rebuild with -DCOHORT_CUDA=ON (the CUDA toolkit and NCCL "
      "under /usr/local/cuda or CUDAToolkit_ROOT)");
}

Result<std::unique_ptr<DeviceCopier>> NewCudaCopier(int) {
  return Status::FailedPrecondition(
      "this cohort was built without CUDA; rebuild with -DCOHORT_CUDA=ON for GPU buffers");
}

Result<std::unique_ptr<DeviceStream>> DeviceStream::Create(int) {
  return Status::FailedPrecondition(
      "this cohort was built without CUDA; rebuild with -DCOHORT_CUDA=ON for GPU streams");
}

Result<DeviceMemory> QueryDeviceMemory(int) {
  return Status::FailedPrecondition("this cohort was built without CUDA; no device memory to report");
}

}  // namespace cohort::comm
