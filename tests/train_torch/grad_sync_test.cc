// GradientSync against a single-process reference: ranks as threads, each
// with its own model (different initial weights, which the broadcast must
// fix) and its half of a batch; after Synchronize every rank must hold the
// gradient of the full batch. Both transports, overlap on/off, one and
// several buckets. Also: checkpoint round-trip and newest-checkpoint choice.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cohort/comm/nccl.h"
#include "testing/ranks.h"
#include "cohort/train/checkpoint_dir.h"
#include "cohort/train/torch.h"

namespace cohort::train {
namespace {

using comm::TransportKind;

torch::nn::Sequential TinyModel(uint64_t seed) {
  torch::manual_seed(seed);
  return torch::nn::Sequential(torch::nn::Linear(6, 5), torch::nn::ReLU(), torch::nn::Linear(5, 3));
}

struct Batch {
  torch::Tensor x, y;
};

Batch MakeBatch(int64_t n) {
  torch::manual_seed(123);
  return {torch::randn({n, 6}), torch::randint(0, 3, {n}, torch::kInt64)};
}

double MaxDiff(torch::nn::Module& a, torch::nn::Module& b, bool grads) {
  double worst = 0;
  auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    auto ta = grads ? pa[i].grad() : pa[i];
    auto tb = grads ? pb[i].grad() : pb[i];
    worst = std::max(worst, (ta - tb).abs().max().item<double>());
  }
  return worst;
}

struct Case {
  TransportKind transport;
  bool overlap;
  size_t bucket_bytes;
  // kHostStaged: the GPU fallback's code (device buckets copied out to host
  // staging, reduced, copied back) with host memory as the "device".
  GradientSyncOptions::DevicePath path = GradientSyncOptions::DevicePath::kAuto;
};

class GradSyncTest : public ::testing::TestWithParam<Case> {};

TEST_P(GradSyncTest, AveragedGradientsMatchFullBatchAndStepsStayInLockstep) {
  const Case c = GetParam();
  const int world = 2, per_rank = 8, steps = 3;
  Batch batch = MakeBatch(world * per_rank);

  // Reference: one model, full batch, same SGD steps.
  auto ref = TinyModel(1);
  torch::optim::SGD ref_opt(ref->parameters(), torch::optim::SGDOptions(0.1));
  std::vector<torch::nn::Sequential> ref_after_step;

  std::vector<torch::nn::Sequential> models = {TinyModel(1), TinyModel(2)};  // rank 1 starts different
  comm::Options options;
  options.transport = c.transport;
  options.read_env_overrides = false;
  options.timeout = std::chrono::milliseconds(20000);
  auto store = comm::NewMemoryStore();
  std::vector<Status> results(world);
  std::vector<std::vector<torch::Tensor>> grads_per_step(world);
  std::vector<size_t> launched_in_backward(world), num_buckets(world);
  std::vector<std::string> paths(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto comm = comm::Communicator::Create(store, r, world, options);
      if (!comm.ok()) {
        results[r] = comm.status();
        return;
      }
      GradientSyncOptions so;
      so.overlap = c.overlap;
      so.bucket_bytes = c.bucket_bytes;
      so.device_path = c.path;
      auto sync = GradientSync::Create(**comm, *models[r], so);
      if (!sync.ok()) {
        results[r] = sync.status();
        return;
      }
      paths[r] = (*sync)->path();
      torch::optim::SGD opt(models[r]->parameters(), torch::optim::SGDOptions(0.1));
      for (int s = 0; s < steps; ++s) {
        (*sync)->ZeroGrad();
        auto xb = batch.x.slice(0, r * per_rank, (r + 1) * per_rank);
        auto yb = batch.y.slice(0, r * per_rank, (r + 1) * per_rank);
        torch::nn::functional::cross_entropy(models[r]->forward(xb), yb).backward();
        // With overlap, backward itself has started every bucket's all-reduce.
        launched_in_backward[r] = (*sync)->buckets_launched();
        num_buckets[r] = (*sync)->num_buckets();
        if (Status st = (*sync)->Synchronize(); !st.ok()) {
          results[r] = st;
          return;
        }
        if (s == 0) {
          for (auto& p : models[r]->parameters()) grads_per_step[r].push_back(p.grad().clone());
        }
        opt.step();
      }
      results[r] = (*comm)->Barrier();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) ASSERT_TRUE(results[r].ok()) << results[r].ToString();
  const bool staged = c.path == GradientSyncOptions::DevicePath::kHostStaged;
  const std::string transport(comm::TransportName(c.transport));
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(num_buckets[r], c.bucket_bytes < 1024 ? 4u : 1u);
    // The last bucket completes as backward ends; Synchronize reduces it
    // inline. Host-staged buckets all go through Synchronize's pipeline.
    EXPECT_EQ(launched_in_backward[r], c.overlap && !staged ? num_buckets[r] - 1 : 0u);
    EXPECT_EQ(paths[r], staged ? "host-staged from cpu over " + transport : transport);
  }

  for (int s = 0; s < steps; ++s) {
    ref_opt.zero_grad();
    torch::nn::functional::cross_entropy(ref->forward(batch.x), batch.y).backward();
    if (s == 0) {
      auto params = ref->parameters();
      for (int r = 0; r < world; ++r)
        for (size_t i = 0; i < params.size(); ++i)
          EXPECT_LT((grads_per_step[r][i] - params[i].grad()).abs().max().item<double>(), 1e-6)
              << "rank " << r << " parameter " << i;
    }
    ref_opt.step();
  }
  EXPECT_LT(MaxDiff(*models[0], *models[1], false), 1e-7) << "ranks diverged";
  EXPECT_LT(MaxDiff(*models[0], *ref, false), 1e-5) << "differs from the full-batch reference";
}

INSTANTIATE_TEST_SUITE_P(
    All, GradSyncTest,
    ::testing::Values(Case{TransportKind::kShm, true, 25u << 20}, Case{TransportKind::kShm, true, 64},
                      Case{TransportKind::kShm, false, 64}, Case{TransportKind::kTcp, true, 64},
                      Case{TransportKind::kTcp, false, 25u << 20},
                      Case{TransportKind::kShm, true, 64, GradientSyncOptions::DevicePath::kHostStaged},
                      Case{TransportKind::kTcp, true, 25u << 20, GradientSyncOptions::DevicePath::kHostStaged}),
    [](const auto& info) {
      return std::string(comm::TransportName(info.param.transport)) +
             (info.param.path == GradientSyncOptions::DevicePath::kHostStaged ? "_staged" : "") +
             (info.param.overlap ? "_overlap" : "_after") +
             (info.param.bucket_bytes < 1024 ? "_small_buckets" : "_one_bucket");
    });

// On GPUs (skipped without one; bench/gpu.sh runs them): CUDA parameters
// through GradientSync give every rank the full batch's gradient, as on the
// CPU. `devices[r]` is rank r's GPU; every rank's path starts with `path_prefix`.
void ExpectFullBatchGradientsOnGpus(const std::vector<int>& devices, const std::string& path_prefix) {
  const int world = static_cast<int>(devices.size()), per_rank = 8;
  Batch batch = MakeBatch(world * per_rank);
  auto ref = TinyModel(1);
  torch::nn::functional::cross_entropy(ref->forward(batch.x), batch.y).backward();
  comm::Options options;
  options.transport = TransportKind::kShm;
  options.read_env_overrides = false;
  options.timeout = std::chrono::milliseconds(60000);
  std::vector<std::string> paths(world);
  std::vector<std::vector<torch::Tensor>> grads(world);
  std::vector<Status> results = testing::RunRankThreads(world, options, [&](comm::Communicator& comm) -> Status {
    const int r = comm.rank();
    const torch::Device dev(torch::kCUDA, devices[r]);
    auto model = TinyModel(1 + r);  // rank 1 starts different: the broadcast must fix it
    model->to(dev);
    COHORT_ASSIGN_OR_RETURN(auto sync, GradientSync::Create(comm, *model));
    paths[r] = sync->path();
    sync->ZeroGrad();
    auto xb = batch.x.slice(0, r * per_rank, (r + 1) * per_rank).to(dev);
    auto yb = batch.y.slice(0, r * per_rank, (r + 1) * per_rank).to(dev);
    torch::nn::functional::cross_entropy(model->forward(xb), yb).backward();
    COHORT_RETURN_IF_ERROR(sync->Synchronize());
    for (auto& p : model->parameters()) grads[r].push_back(p.grad().to(torch::kCPU));
    return Status::Ok();
  });
  auto params = ref->parameters();
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].ToString();
    EXPECT_EQ(paths[r].rfind(path_prefix, 0), 0u) << paths[r];
    ASSERT_EQ(grads[r].size(), params.size());
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_LT((grads[r][i] - params[i].grad()).abs().max().item<double>(), 1e-5) << "rank " << r << " parameter " << i;
  }
}

TEST(OnGpus, TwoRanksSharingAGpuAreHostStaged) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or this libtorch has no CUDA)";
  ExpectFullBatchGradientsOnGpus({0, 0}, "host-staged from cuda:0 over shm");
}

TEST(OnGpus, OneGpuPerRankUsesNccl) {
  if (!torch::cuda::is_available() || torch::cuda::device_count() < 2) GTEST_SKIP() << "fewer than 2 CUDA devices";
  if (!comm::DeviceCommunicator::Built()) GTEST_SKIP() << "built without NCCL (-DCOHORT_CUDA=ON)";
  ExpectFullBatchGradientsOnGpus({0, 1}, "nccl on cuda:");
}

// Ranks that ask for different gradient paths fail at Create, both of them,
// naming the disagreement (instead of running mismatched collectives).
TEST(GradSyncPathTest, RanksAskingForDifferentPathsFailClearly) {
  const int world = 2;
  comm::Options options;
  options.transport = TransportKind::kShm;
  options.read_env_overrides = false;
  options.timeout = std::chrono::milliseconds(20000);
  std::vector<Status> results = testing::RunRankThreads(world, options, [](comm::Communicator& comm) {
    auto model = TinyModel(1);
    GradientSyncOptions so;
    so.device_path =
        comm.rank() == 0 ? GradientSyncOptions::DevicePath::kAuto : GradientSyncOptions::DevicePath::kHostStaged;
    return GradientSync::Create(comm, *model, so).status();
  });
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(results[r].code(), StatusCode::kInvalidArgument) << results[r].ToString();
    EXPECT_NE(results[r].message().find("different gradient paths"), std::string::npos) << results[r].ToString();
  }
}

// A parameter whose gradient is the constant c every step: (p * c).sum().
struct ConstGrad : torch::nn::Module {
  torch::Tensor p;
  ConstGrad() { p = register_parameter("p", torch::zeros({16})); }
};

// Two ranks over TCP, `steps` steps of the constant gradient c (default
// 1 + 2^-10, not a bfloat16 value): the sum of the synchronized gradients
// per element, and what compression was in effect on rank 0.
std::pair<double, GradCompression> SumOfSyncedGrads(TransportKind transport, GradCompression mode, int steps,
                                                    float c = 1.0f + std::ldexp(1.0f, -10)) {
  const int world = 2;
  comm::Options options;
  options.tcp_small_bytes = 0;  // the ring (and its wire format) even for this 64-byte bucket
  options.transport = transport;
  options.read_env_overrides = false;
  options.timeout = std::chrono::milliseconds(20000);
  auto store = comm::NewMemoryStore();
  std::vector<double> sums(world, 0);
  std::vector<Status> results(world);
  std::vector<GradCompression> in_effect(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto comm = comm::Communicator::Create(store, r, world, options);
      if (!comm.ok()) {
        results[r] = comm.status();
        return;
      }
      ConstGrad model;
      GradientSyncOptions so;
      so.compression = mode;
      auto sync = GradientSync::Create(**comm, model, so);
      if (!sync.ok()) {
        results[r] = sync.status();
        return;
      }
      in_effect[r] = (*sync)->compression();
      for (int s = 0; s < steps; ++s) {
        (*sync)->ZeroGrad();
        (model.p * c).sum().backward();
        if (Status st = (*sync)->Synchronize(); !st.ok()) {
          results[r] = st;
          return;
        }
        sums[r] += model.p.grad()[3].item<double>();
      }
      results[r] = (*comm)->Barrier();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << results[r].ToString();
  EXPECT_EQ(sums[0], sums[1]) << "ranks got different gradients";
  return {sums[0], in_effect[0]};
}

TEST(GradSync, Bf16OnTheWireRoundsAndErrorFeedbackKeepsTheSum) {
  const int steps = 64;
  const double exact = steps * (1.0 + std::ldexp(1.0, -10));
  auto [plain, plain_mode] = SumOfSyncedGrads(TransportKind::kTcp, GradCompression::kNone, steps);
  EXPECT_EQ(plain_mode, GradCompression::kNone);
  EXPECT_NEAR(plain, exact, 1e-4);
  // bf16: every step's gradient is rounded to 1.0, the error adds up.
  auto [bf16, bf16_mode] = SumOfSyncedGrads(TransportKind::kTcp, GradCompression::kBFloat16, steps);
  EXPECT_EQ(bf16_mode, GradCompression::kBFloat16);
  EXPECT_NEAR(bf16, steps * 1.0, 1e-9);
  // bf16-ef: what rounding took off comes back later; the sum stays within one ulp.
  auto [ef, ef_mode] = SumOfSyncedGrads(TransportKind::kTcp, GradCompression::kBFloat16ErrorFeedback, steps);
  EXPECT_EQ(ef_mode, GradCompression::kBFloat16ErrorFeedback);
  EXPECT_NEAR(ef, exact, std::ldexp(1.0, -7));
  // Shared memory has no wire: compression is off.
  auto [shm, shm_mode] = SumOfSyncedGrads(TransportKind::kShm, GradCompression::kBFloat16, steps);
  EXPECT_EQ(shm_mode, GradCompression::kNone);
  EXPECT_NEAR(shm, exact, 1e-4);
}

TEST(GradSync, Fp16OnTheWireRoundsAndErrorFeedbackKeepsTheSum) {
  const int steps = 64;
  const float c = 1.0f + std::ldexp(1.0f, -12);  // a quarter of fp16's step at 1
  const double exact = steps * static_cast<double>(c);
  auto [fp16, fp16_mode] = SumOfSyncedGrads(TransportKind::kTcp, GradCompression::kFloat16, steps, c);
  EXPECT_EQ(fp16_mode, GradCompression::kFloat16);
  EXPECT_NEAR(fp16, steps * 1.0, 1e-9);
  auto [ef, ef_mode] = SumOfSyncedGrads(TransportKind::kTcp, GradCompression::kFloat16ErrorFeedback, steps, c);
  EXPECT_EQ(ef_mode, GradCompression::kFloat16ErrorFeedback);
  EXPECT_NEAR(ef, exact, std::ldexp(1.0, -9));
  // 1 + 2^-10 is a float16 value: it crosses unchanged.
  auto [exact16, mode16] = SumOfSyncedGrads(TransportKind::kTcp, GradCompression::kFloat16, steps);
  EXPECT_NEAR(exact16, steps * (1.0 + std::ldexp(1.0, -10)), 1e-9);
}

// Four 1.2 MB parameters.
struct FourBlocks : torch::nn::Module {
  FourBlocks() {
    for (int i = 0; i < 4; ++i) register_parameter("p" + std::to_string(i), torch::zeros({300000}));
  }
};

TEST(GradSync, AutomaticBucketsSplitTheModelOnlyAcrossHosts) {
  for (TransportKind transport : {TransportKind::kShm, TransportKind::kTcp}) {
    SCOPED_TRACE(std::string(comm::TransportName(transport)));
    comm::Options options;
    options.transport = transport;
    options.read_env_overrides = false;
    auto store = comm::NewMemoryStore();
    size_t buckets[2] = {0, 0};
    Status results[2];
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        auto comm = comm::Communicator::Create(store, r, 2, options);
        if (!comm.ok()) {
          results[r] = comm.status();
          return;
        }
        FourBlocks model;
        auto sync = GradientSync::Create(**comm, model, {});
        if (!sync.ok()) {
          results[r] = sync.status();
          return;
        }
        buckets[r] = (*sync)->num_buckets();
        results[r] = (*comm)->Barrier();
      });
    }
    for (auto& t : threads) t.join();
    for (const Status& st : results) ASSERT_TRUE(st.ok()) << st.ToString();
    // One host: one 4.8 MB bucket (under 25 MiB). Across hosts: an eighth of
    // 4.8 MB is 600 KB, so each 1.2 MB parameter gets a bucket of its own.
    EXPECT_EQ(buckets[0], transport == TransportKind::kShm ? 1u : 4u);
    EXPECT_EQ(buckets[1], buckets[0]);
  }
}

TEST(GradCompressionNames, ParseEveryNameAndRefuseOthers) {
  for (const char* name : {"none", "bf16", "bf16-ef", "fp16", "fp16-ef"}) {
    Result<GradCompression> c = ParseGradCompression(name);
    ASSERT_TRUE(c.ok()) << name;
    EXPECT_EQ(GradCompressionName(*c), name);
  }
  Result<GradCompression> bad = ParseGradCompression("fp8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("expected none, bf16, bf16-ef, fp16 or fp16-ef"), std::string::npos);
}

TEST(GradSync, SmallBucketsSplitTheModel) {
  auto store = comm::NewMemoryStore();
  comm::Options o;
  o.read_env_overrides = false;
  auto comm = comm::Communicator::Create(store, 0, 1, o);
  ASSERT_TRUE(comm.ok());
  auto model = TinyModel(1);
  GradientSyncOptions so;
  so.bucket_bytes = 64;
  auto sync = GradientSync::Create(**comm, *model, so);
  ASSERT_TRUE(sync.ok()) << sync.status().ToString();
  // Reverse order: bias2 (12 B, padded to 64) fills the first bucket; w2, b1
  // and w1 each overflow the 64-byte cap and start a new one.
  EXPECT_EQ((*sync)->num_buckets(), 4u);
  // Gradients are views into the buckets and survive optimizer.zero_grad().
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  (*sync)->ZeroGrad();
  torch::nn::functional::cross_entropy(model->forward(torch::randn({4, 6})), torch::tensor({0, 1, 2, 0})).backward();
  ASSERT_TRUE((*sync)->Synchronize().ok());
  double norm = 0;
  for (auto& p : model->parameters()) norm += p.grad().abs().sum().item<double>();
  EXPECT_GT(norm, 0);
  opt.zero_grad();
  (*sync)->ZeroGrad();
  for (auto& p : model->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().abs().sum().item<double>(), 0);
  }
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("cohort_ckpt_test_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::filesystem::path root_;
};

TEST_F(CheckpointTest, RoundTripRestoresModelEpochAndState) {
  auto model = TinyModel(7);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  // One step so the optimizer has momentum buffers worth saving.
  torch::nn::functional::cross_entropy(model->forward(torch::randn({4, 6})), torch::tensor({0, 1, 2, 0})).backward();
  opt.step();
  ASSERT_TRUE(SaveCheckpoint(root_.string(), {3, R"({"seed": 5})"}, *model, opt).ok());

  auto restored = TinyModel(99);
  torch::optim::SGD restored_opt(restored->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  ASSERT_GT(MaxDiff(*model, *restored, false), 0.0);
  auto loaded = LoadLatestCheckpoint(root_.string(), *restored, restored_opt);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->epoch, 3);
  EXPECT_NE((*loaded)->extra_json.find("\"seed\":5"), std::string::npos) << (*loaded)->extra_json;
  EXPECT_EQ(MaxDiff(*model, *restored, false), 0.0);
  // Momentum restored: the next step from both is identical.
  for (auto* m : {&model, &restored}) {
    torch::manual_seed(3);
    (*m)->zero_grad();
    torch::nn::functional::cross_entropy((*m)->forward(torch::randn({4, 6})), torch::tensor({0, 1, 2, 0})).backward();
  }
  opt.step();
  restored_opt.step();
  EXPECT_EQ(MaxDiff(*model, *restored, false), 0.0);
}

TEST_F(CheckpointTest, NewestCompleteCheckpointWinsAndPartialOnesAreIgnored) {
  auto model = TinyModel(7);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  ASSERT_TRUE(SaveCheckpoint(root_.string(), {1, "{}"}, *model, opt).ok());
  auto later = TinyModel(8);
  torch::optim::SGD later_opt(later->parameters(), torch::optim::SGDOptions(0.1));
  ASSERT_TRUE(SaveCheckpoint(root_.string(), {2, "{}"}, *later, later_opt).ok());
  // A crash mid-way through epoch 3's checkpoint leaves a temp dir behind.
  auto tmp = BeginCheckpoint(root_.string(), 3);
  ASSERT_TRUE(tmp.ok());
  std::ofstream(*tmp + "/model.pt") << "half written";

  auto restored = TinyModel(99);
  torch::optim::SGD restored_opt(restored->parameters(), torch::optim::SGDOptions(0.1));
  auto loaded = LoadLatestCheckpoint(root_.string(), *restored, restored_opt);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->epoch, 2);
  EXPECT_EQ(MaxDiff(*later, *restored, false), 0.0);
}

TEST_F(CheckpointTest, EmptyDirectoryMeansNoCheckpoint) {
  auto model = TinyModel(7);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  auto loaded = LoadLatestCheckpoint(root_.string(), *model, opt);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_FALSE(loaded->has_value());
}

}  // namespace
}  // namespace cohort::train
