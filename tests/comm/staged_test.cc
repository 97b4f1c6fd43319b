// The host-staged all-reduce (cohort/comm/staged.h) with the host-memory
// copier: the same pipeline GPU ranks use without NCCL, checked on the CPU
// against a serial reference over both host transports, plus its failure
// paths (a copy that fails aborts the communicator so the peers fail fast).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "cohort/comm/staged.h"
#include "testing/ranks.h"

namespace cohort::comm {
namespace {

using namespace std::chrono_literals;
using testing::RunRankThreads;

Options Opts(TransportKind t) {
  Options o;
  o.transport = t;
  o.timeout = 10s;
  o.read_env_overrides = false;
  return o;
}

// Buffer b of rank r holds r * 1000 + b * 10 + i % 13 at i.
float Value(int rank, size_t b, size_t i) { return static_cast<float>(rank * 1000 + static_cast<int>(b) * 10 + static_cast<int>(i % 13)); }

Status CheckStaged(Communicator& c, const std::vector<size_t>& counts, ReduceOp op, int rounds) {
  auto copier = NewHostMemoryCopier();
  HostStagedAllReduce staged(&c, copier.get());
  std::vector<std::vector<float>> device(counts.size());
  for (int round = 0; round < rounds; ++round) {
    std::vector<StagedBuffer> buffers;
    for (size_t b = 0; b < counts.size(); ++b) {
      device[b].assign(counts[b], 0);
      for (size_t i = 0; i < counts[b]; ++i) device[b][i] = Value(c.rank(), b, i) + static_cast<float>(round);
      buffers.push_back({device[b].data(), counts[b]});
    }
    if (Status st = staged.Run(buffers, op, WireFormat::kNative, nullptr, Deadline::After(10s)); !st.ok()) return st;
    const int n = c.world_size();
    for (size_t b = 0; b < counts.size(); ++b)
      for (size_t i = 0; i < counts[b]; ++i) {
        float want = 0;
        for (int r = 0; r < n; ++r) want += Value(r, b, i) + static_cast<float>(round);
        if (op == ReduceOp::kAverage) want /= static_cast<float>(n);
        if (std::fabs(device[b][i] - want) > 1e-3f * std::max(1.0f, std::fabs(want)))
          return Status::Internal("round " + std::to_string(round) + " buffer " + std::to_string(b) + "[" +
                                  std::to_string(i) + "] = " + std::to_string(device[b][i]) + ", want " +
                                  std::to_string(want));
      }
  }
  // The staging area is allocated once for a fixed layout.
  size_t total = 0;
  for (size_t n : counts) total += n;
  if (total > 0 && staged.staging_bytes() != total * sizeof(float))
    return Status::Internal("staging area of " + std::to_string(staged.staging_bytes()) + " bytes");
  return Status::Ok();
}

class StagedTest : public ::testing::TestWithParam<std::tuple<TransportKind, int>> {};

TEST_P(StagedTest, MatchesTheSerialReference) {
  const auto [transport, world] = GetParam();
  const std::vector<size_t> counts = {1000, 0, 1, 300000, 77, 65536};
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    auto results = RunRankThreads(world, Opts(transport),
                                  [&](Communicator& c) { return CheckStaged(c, counts, op, 3); });
    for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].ToString();
  }
}

INSTANTIATE_TEST_SUITE_P(All, StagedTest,
                         ::testing::Combine(::testing::Values(TransportKind::kShm, TransportKind::kTcp),
                                            ::testing::Values(1, 2, 3)),
                         [](const auto& info) {
                           return std::string(TransportName(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "ranks";
                         });

TEST(StagedTest, NothingToReduceIsANoOp) {
  auto results = RunRankThreads(2, Opts(TransportKind::kShm), [](Communicator& c) -> Status {
    auto copier = NewHostMemoryCopier();
    HostStagedAllReduce staged(&c, copier.get());
    Status st = staged.Run({}, ReduceOp::kSum, WireFormat::kNative, nullptr, Deadline::After(5s));
    if (st.ok() && staged.staging_bytes() != 0) return Status::Internal("allocated for nothing");
    return st;
  });
  for (const Status& st : results) EXPECT_TRUE(st.ok()) << st.ToString();
}

// A copier whose copies back to the device fail on one rank.
class FailingCopier final : public DeviceCopier {
 public:
  explicit FailingCopier(bool fail) : inner_(NewHostMemoryCopier()), fail_(fail) {}
  Status RegisterHost(void* h, size_t n) override { return inner_->RegisterHost(h, n); }
  Result<Ticket> ToHost(void* h, const void* d, size_t n, void* a) override { return inner_->ToHost(h, d, n, a); }
  Result<Ticket> ToDevice(void* d, const void* h, size_t n) override {
    if (fail_) return Status::Internal("the device is gone");
    return inner_->ToDevice(d, h, n);
  }
  Status Wait(Ticket t, Deadline d) override { return inner_->Wait(t, d); }
  const char* name() const override { return "failing"; }

 private:
  std::unique_ptr<DeviceCopier> inner_;
  bool fail_;
};

TEST(StagedTest, ACopyThatFailsOnOneRankFailsEveryRankPromptly) {
  const auto start = std::chrono::steady_clock::now();
  auto results = RunRankThreads(2, Opts(TransportKind::kTcp), [](Communicator& c) -> Status {
    FailingCopier copier(c.rank() == 1);
    HostStagedAllReduce staged(&c, &copier);
    std::vector<float> a(1000, 1), b(1000, 2);
    Status st = staged.Run({{a.data(), a.size()}, {b.data(), b.size()}}, ReduceOp::kSum, WireFormat::kNative,
                           nullptr, Deadline::After(10s));
    if (!st.ok()) return st;
    // The next round needs the peer, which has aborted.
    return staged.Run({{a.data(), a.size()}, {b.data(), b.size()}}, ReduceOp::kSum, WireFormat::kNative, nullptr,
                      Deadline::After(10s));
  });
  EXPECT_FALSE(results[1].ok());
  EXPECT_NE(results[1].message().find("the device is gone"), std::string::npos) << results[1].ToString();
  EXPECT_FALSE(results[0].ok()) << "rank 0 must fail too, not wait";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 8s) << "the peer should fail fast, not at its timeout";
}

}  // namespace
}  // namespace cohort::comm
