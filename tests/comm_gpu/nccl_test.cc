// DeviceCommunicator (NCCL). Everywhere: the build says whether it has NCCL
// and a communicator without a device fails with a clear message. On a
// machine with CUDA devices (skipped otherwise, saying why): collectives on
// device buffers against host references, one rank per GPU as threads, and
// the timeout/abort contract (a peer that never issues the collective fails
// the others within the timeout; Abort from another thread ends a wait).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "cohort/comm/nccl.h"
#include "cohort/comm/staged.h"
#include "testing/ranks.h"
#include "cohort/comm/store.h"

#ifdef COHORT_CUDA_ENABLED
#include <cuda_runtime_api.h>
#endif

namespace cohort::comm {
namespace {

using namespace std::chrono_literals;

bool Has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

TEST(DeviceCommunicatorTest, TheBuildSaysWhetherItHasNccl) {
#ifdef COHORT_CUDA_ENABLED
  EXPECT_TRUE(DeviceCommunicator::Built());
#else
  EXPECT_FALSE(DeviceCommunicator::Built());
  EXPECT_EQ(DeviceCommunicator::DeviceCount(), 0);
#endif
}

TEST(DeviceCommunicatorTest, WithoutADeviceCreateFailsSayingWhy) {
  if (DeviceCommunicator::DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  auto comm = DeviceCommunicator::Create(NewMemoryStore(), 0, 1);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), StatusCode::kFailedPrecondition);
  const std::string why = comm.status().message();
  EXPECT_TRUE(Has(why, "COHORT_CUDA=ON") || Has(why, "no CUDA device")) << why;
}

TEST(CudaCopierTest, WithoutADeviceItSaysWhy) {
  if (DeviceCommunicator::DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  auto copier = NewCudaCopier(0);
  ASSERT_FALSE(copier.ok());
  EXPECT_EQ(copier.status().code(), StatusCode::kFailedPrecondition) << copier.status().ToString();
}

#ifdef COHORT_CUDA_ENABLED

// Runs fn(rank) for world ranks, one thread each (rank r on device r).
std::vector<Status> OnRanks(int world, const std::function<Status(DeviceCommunicator&)>& fn,
                            std::chrono::milliseconds timeout = 20s) {
  auto store = NewMemoryStore();
  std::vector<Status> out(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      DeviceCommOptions o;
      o.device = r;
      o.timeout = timeout;
      auto comm = DeviceCommunicator::Create(store, r, world, o);
      out[r] = comm.ok() ? fn(**comm) : comm.status();
    });
  for (auto& t : threads) t.join();
  return out;
}

uint16_t ToHalf(float f, DeviceDType t) { return t == DeviceDType::kBFloat16 ? FloatToBFloat16(f) : FloatToFloat16(f); }
float FromHalf(uint16_t v, DeviceDType t) { return t == DeviceDType::kBFloat16 ? BFloat16ToFloat(v) : Float16ToFloat(v); }

// All-reduce of count values (rank r's element i = r + i % 7) in `dtype`,
// checked against the host sum (or average).
Status CheckAllReduce(DeviceCommunicator& c, size_t count, DeviceDType dtype, ReduceOp op) {
  const size_t esize = DeviceDTypeSize(dtype);
  std::vector<unsigned char> host(count * esize);
  for (size_t i = 0; i < count; ++i) {
    const float v = static_cast<float>(c.rank() + static_cast<int>(i % 7));
    if (dtype == DeviceDType::kFloat32) std::memcpy(&host[i * 4], &v, 4);
    else {
      const uint16_t h = ToHalf(v, dtype);
      std::memcpy(&host[i * 2], &h, 2);
    }
  }
  void* dev = nullptr;
  if (cudaMalloc(&dev, host.size() + 1) != cudaSuccess) return Status::Internal("cudaMalloc");
  cudaMemcpy(dev, host.data(), host.size(), cudaMemcpyHostToDevice);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  Status st = c.AllReduce(dev, count, dtype, op, stream, Deadline::After(20s));
  if (st.ok()) cudaMemcpy(host.data(), dev, host.size(), cudaMemcpyDeviceToHost);
  cudaStreamDestroy(stream);
  cudaFree(dev);
  if (!st.ok()) return st;
  const int n = c.world_size();
  for (size_t i = 0; i < count; ++i) {
    float want = 0;
    for (int r = 0; r < n; ++r) want += static_cast<float>(r + static_cast<int>(i % 7));
    if (op == ReduceOp::kAverage) want /= static_cast<float>(n);
    float got;
    if (dtype == DeviceDType::kFloat32) std::memcpy(&got, &host[i * 4], 4);
    else {
      uint16_t h;
      std::memcpy(&h, &host[i * 2], 2);
      got = FromHalf(h, dtype);
    }
    const float tol = dtype == DeviceDType::kFloat32 ? 1e-5f : 0.05f * std::max(1.0f, want);
    if (std::abs(got - want) > tol)
      return Status::Internal("element " + std::to_string(i) + ": " + std::to_string(got) + " != " + std::to_string(want));
  }
  return Status::Ok();
}

class OnGpus : public ::testing::Test {
 protected:
  void SetUp() override {
    gpus_ = DeviceCommunicator::DeviceCount();
    if (gpus_ == 0) GTEST_SKIP() << "no CUDA device here: the NCCL tests run on a machine with GPUs (bench/gpu.sh)";
  }
  int gpus_ = 0;
};

TEST_F(OnGpus, AllReduceBroadcastAllGatherBarrierOnEveryGpu) {
  const int world = std::min(gpus_, 4);
  auto results = OnRanks(world, [](DeviceCommunicator& c) -> Status {
    for (DeviceDType t : {DeviceDType::kFloat32, DeviceDType::kBFloat16, DeviceDType::kFloat16})
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage})
        for (size_t count : {size_t{0}, size_t{1}, size_t{1000}, size_t{1} << 20})
          if (Status st = CheckAllReduce(c, count, t, op); !st.ok()) return st;
    // Broadcast from the last rank and all-gather of one int per rank.
    int* dev = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&dev), sizeof(int) * (c.world_size() + 1));
    int mine = 100 + c.rank();
    cudaMemcpy(dev, &mine, sizeof(int), cudaMemcpyHostToDevice);
    Status st = c.Broadcast(dev, sizeof(int), c.world_size() - 1, nullptr, Deadline::After(20s));
    int got = 0;
    cudaMemcpy(&got, dev, sizeof(int), cudaMemcpyDeviceToHost);
    if (st.ok() && got != 100 + c.world_size() - 1) st = Status::Internal("broadcast gave " + std::to_string(got));
    if (st.ok()) {
      cudaMemcpy(dev, &mine, sizeof(int), cudaMemcpyHostToDevice);
      st = c.AllGather(dev, dev + 1, sizeof(int), nullptr, Deadline::After(20s));
      std::vector<int> all(c.world_size());
      cudaMemcpy(all.data(), dev + 1, sizeof(int) * all.size(), cudaMemcpyDeviceToHost);
      for (int r = 0; st.ok() && r < c.world_size(); ++r)
        if (all[r] != 100 + r) st = Status::Internal("all-gather slot " + std::to_string(r));
    }
    cudaFree(dev);
    if (st.ok()) st = c.Barrier(Deadline::After(20s));
    return st;
  });
  for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].ToString();
}

TEST_F(OnGpus, APeerThatNeverIssuesTheCollectiveFailsTheOthersInTime) {
  if (gpus_ < 2) GTEST_SKIP() << "needs 2 GPUs (" << gpus_ << " here)";
  const auto start = std::chrono::steady_clock::now();
  auto results = OnRanks(
      2,
      [](DeviceCommunicator& c) -> Status {
        if (c.rank() == 1) return Status::Ok();  // joins, then does nothing
        return CheckAllReduce(c, 1 << 16, DeviceDType::kFloat32, ReduceOp::kSum);
      },
      3s);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(results[0].code(), StatusCode::kDeadlineExceeded) << results[0].ToString();
  EXPECT_TRUE(Has(results[0].message(), "did not complete within 3000 ms")) << results[0].ToString();
  EXPECT_LT(took, 20s);
}

TEST_F(OnGpus, AbortFromAnotherThreadEndsAWait) {
  if (gpus_ < 2) GTEST_SKIP() << "needs 2 GPUs (" << gpus_ << " here)";
  auto results = OnRanks(
      2,
      [](DeviceCommunicator& c) -> Status {
        if (c.rank() == 1) return Status::Ok();
        std::thread aborter([&] {
          std::this_thread::sleep_for(300ms);
          c.Abort("the trainer saw a NaN");
        });
        Status st = CheckAllReduce(c, 1 << 16, DeviceDType::kFloat32, ReduceOp::kSum);
        aborter.join();
        return st;
      },
      60s);
  EXPECT_EQ(results[0].code(), StatusCode::kCancelled) << results[0].ToString();
  EXPECT_TRUE(Has(results[0].message(), "the trainer saw a NaN")) << results[0].ToString();
}

TEST_F(OnGpus, AMissingRankFailsTheSetUpNamingTheTimeout) {
  if (gpus_ < 1) GTEST_SKIP();
  DeviceCommOptions o;
  o.device = 0;
  o.timeout = 2s;
  auto comm = DeviceCommunicator::Create(NewMemoryStore(), 0, 2, o);  // rank 1 never comes
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), StatusCode::kDeadlineExceeded) << comm.status().ToString();
}

TEST_F(OnGpus, TwoRanksOnOneGpuReduceThroughTheHost) {
  Options o;
  o.transport = TransportKind::kShm;
  o.read_env_overrides = false;
  auto results = testing::RunRankThreads(2, o, [](Communicator& c) -> Status {
    auto copier = NewCudaCopier(0);
    if (!copier.ok()) return copier.status();
    HostStagedAllReduce staged(&c, copier->get());
    const std::vector<size_t> counts = {1 << 20, 1000, 3};
    std::vector<float*> dev(counts.size());
    std::vector<StagedBuffer> buffers;
    for (size_t b = 0; b < counts.size(); ++b) {
      cudaMalloc(reinterpret_cast<void**>(&dev[b]), counts[b] * sizeof(float));
      std::vector<float> h(counts[b], static_cast<float>(c.rank() + 1 + b));
      cudaMemcpy(dev[b], h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
      buffers.push_back({dev[b], counts[b]});
    }
    cudaStream_t stream;
    cudaStreamCreate(&stream);
    Status st = staged.Run(buffers, ReduceOp::kSum, WireFormat::kNative, stream, Deadline::After(20s));
    for (size_t b = 0; st.ok() && b < counts.size(); ++b) {
      std::vector<float> h(counts[b]);
      cudaMemcpy(h.data(), dev[b], h.size() * sizeof(float), cudaMemcpyDeviceToHost);
      const float want = static_cast<float>(1 + b + 2 + b);
      for (size_t i = 0; i < h.size(); ++i)
        if (h[i] != want) {
          st = Status::Internal("buffer " + std::to_string(b) + "[" + std::to_string(i) + "] = " + std::to_string(h[i]));
          break;
        }
    }
    for (float* p : dev) cudaFree(p);
    cudaStreamDestroy(stream);
    return st;
  });
  for (const Status& st : results) EXPECT_TRUE(st.ok()) << st.ToString();
}

#endif  // COHORT_CUDA_ENABLED

}  // namespace
}  // namespace cohort::comm
