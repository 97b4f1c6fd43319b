// NCCL all-reduce bandwidth through cohort's DeviceCommunicator, one process
// per GPU, launched like any worker (cohort launch --nproc-per-node N). The
// unique id goes through the rendezvous store of the host communicator.
// Rank 0 prints, per size, the same line as bench/gpu_reference.py
// allreduce (torch.distributed over NCCL), so bench/gpu.sh can divide them:
//   nccl_allreduce bytes=B time_ms=T algbw_GBps=A busbw_GBps=U
//   allreduce_nccl_bench [BYTES...]   (default 2.7 MB, 64 MB, 1 GB)
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cohort/comm/communicator.h"
#include "cohort/comm/nccl.h"

namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "allreduce_nccl_bench: %s\n", what.c_str());
  std::exit(1);
}

void CheckCuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Die(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::strtoull(argv[i], nullptr, 10));
  if (sizes.empty()) sizes = {2'700'000, 64u << 20, 1u << 30};

  auto host = cohort::comm::Communicator::FromEnv();
  if (!host.ok()) Die(host.status().ToString());
  const int rank = (*host)->rank(), world = (*host)->world_size();
  const int devices = cohort::comm::DeviceCommunicator::DeviceCount();
  if (devices == 0) Die("no CUDA device is visible");
  const char* local = std::getenv("LOCAL_RANK");
  cohort::comm::DeviceCommOptions options;
  options.device = (local ? std::atoi(local) : rank) % devices;
  options.timeout = std::chrono::milliseconds(120000);
  auto dc = cohort::comm::DeviceCommunicator::Create((*host)->store(), rank, world, options);
  if (!dc.ok()) Die(dc.status().ToString());
  cudaStream_t stream = nullptr;
  CheckCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");

  for (size_t bytes : sizes) {
    const size_t count = bytes / 4;
    void* data = nullptr;
    CheckCuda(cudaMalloc(&data, count * 4), "cudaMalloc");
    CheckCuda(cudaMemset(data, 0, count * 4), "cudaMemset");
    const int iters = bytes <= (64u << 20) ? 20 : 5;
    auto deadline = [] { return cohort::Deadline::After(std::chrono::seconds(120)); };
    for (int w = 0; w < 3; ++w)
      if (auto st = (*dc)->AllReduce(data, count, cohort::comm::DeviceDType::kFloat32, cohort::comm::ReduceOp::kSum,
                                     stream, deadline());
          !st.ok())
        Die(st.ToString());
    if (auto st = (*dc)->Barrier(deadline()); !st.ok()) Die(st.ToString());
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i)
      if (auto st = (*dc)->AllReduceEnqueue(data, count, cohort::comm::DeviceDType::kFloat32,
                                            cohort::comm::ReduceOp::kSum, stream);
          !st.ok())
        Die(st.ToString());
    if (auto st = (*dc)->Synchronize(stream, deadline()); !st.ok()) Die(st.ToString());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    const double algbw = static_cast<double>(count * 4) / s / 1e9;
    if (rank == 0)
      std::printf("nccl_allreduce bytes=%zu time_ms=%.3f algbw_GBps=%.2f busbw_GBps=%.2f\n", count * 4, s * 1e3,
                  algbw, algbw * 2.0 * (world - 1) / world);
    std::fflush(stdout);
    cudaFree(data);
  }
  cudaStreamDestroy(stream);
  return 0;
}
