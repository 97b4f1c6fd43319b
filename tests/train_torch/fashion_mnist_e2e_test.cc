// End to end, as a user runs it: build/bin/cohort launch + build/bin/fashion_mnist
// on a subset of FashionMNIST. Asserts that loss falls, that 1-rank and
// 2-rank runs with the same seed and global batch end with the same
// parameters, that an interrupted run resumed from its checkpoint ends where
// an uninterrupted one does, that bad input fails clearly, and that the
// PyTorch DDP script runs under the same launcher.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cohort/train/torch.h"

namespace cohort::train {
namespace {

namespace fs = std::filesystem;
const std::string kBin = COHORT_BIN_DIR;
const std::string kSource = COHORT_SOURCE_DIR;
const std::string kData = "/usr/share/datasets/fashion-mnist";

struct Proc {
  int exit_code;
  std::string output;
};

Proc Sh(const std::string& cmd) {
  Proc r{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

torch::nn::Sequential SeedModel() {
  return torch::nn::Sequential(torch::nn::Linear(784, 512), torch::nn::ReLU(), torch::nn::Linear(512, 512),
                               torch::nn::ReLU(), torch::nn::Linear(512, 256), torch::nn::ReLU(),
                               torch::nn::Linear(256, 10));
}

double MaxParamDiff(const std::string& model_a, const std::string& model_b) {
  auto a = SeedModel(), b = SeedModel();
  EXPECT_TRUE(LoadModel(model_a, *a).ok());
  EXPECT_TRUE(LoadModel(model_b, *b).ok());
  double worst = 0;
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>());
  return worst;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in, nullptr, false);
}

class FashionMnistE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kData + "/train-images-idx3-ubyte.gz"))
      GTEST_SKIP() << "dataset-fashion-mnist is not installed (scripts/setup installs it)";
    dir_ = fs::temp_directory_path() / ("cohort_e2e_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Short training: 2048 samples, global batch 64, lr 0.05, one thread per rank.
  Proc Train(int ranks, const std::string& name, const std::string& extra) {
    std::string args = " --train-subset 2048 --batch-size 64 --lr 0.05 --seed 3 --threads 1 --results-dir " +
                       (dir_ / name).string() + " " + extra;
    std::string env = "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 COHORT_COMM_TIMEOUT_MS=60000 ";
    if (ranks == 1) return Sh(env + kBin + "/fashion_mnist" + args);
    return Sh(env + kBin + "/cohort launch -n " + std::to_string(ranks) + " -- " + kBin + "/fashion_mnist" + args);
  }
  std::string Model(const std::string& name) { return (dir_ / name / "model.pt").string(); }

  fs::path dir_;
};

TEST_F(FashionMnistE2E, LossFallsAndOneAndTwoRanksAgree) {
  Proc one = Train(1, "one", "--epochs 2");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  Proc two = Train(2, "two", "--epochs 2");
  ASSERT_EQ(two.exit_code, 0) << two.output;

  auto metrics = ReadJson((dir_ / "two" / "metrics.json").string());
  ASSERT_TRUE(metrics.is_object()) << two.output;
  ASSERT_EQ(metrics["epochs"].size(), 2u);
  EXPECT_LT(metrics["epochs"][1]["train_loss"].get<double>(), metrics["epochs"][0]["train_loss"].get<double>());
  EXPECT_LT(metrics["epochs"][1]["val_loss"].get<double>(), metrics["epochs"][0]["val_loss"].get<double>());
  EXPECT_EQ(metrics["world_size"].get<int>(), 2);

  // The last line of rank 0 is the accuracy; the launcher prefixes it.
  EXPECT_NE(two.output.find("[rank 0] test_accuracy=0."), std::string::npos) << two.output;
  EXPECT_NE(one.output.find("test_accuracy=0."), std::string::npos) << one.output;
  EXPECT_NE(two.output.find("transport shm"), std::string::npos) << two.output;

  // Same seed, same global batch: same parameters within float tolerance.
  double diff = MaxParamDiff(Model("one"), Model("two"));
  EXPECT_LT(diff, 2e-4) << "1-rank and 2-rank runs diverged";
  std::printf("max |param(1 rank) - param(2 ranks)| = %g\n", diff);
}

TEST_F(FashionMnistE2E, TcpTransportGivesTheSameParameters) {
  Proc shm = Train(2, "shm", "--epochs 1");
  ASSERT_EQ(shm.exit_code, 0) << shm.output;
  Proc tcp = Sh("COHORT_COMM_TRANSPORT=tcp OMP_NUM_THREADS=1 " + kBin + "/cohort launch -n 2 -- " + kBin +
               "/fashion_mnist --train-subset 2048 --batch-size 64 --lr 0.05 --seed 3 --threads 1 --epochs 1 "
               "--results-dir " + (dir_ / "tcp").string());
  ASSERT_EQ(tcp.exit_code, 0) << tcp.output;
  EXPECT_NE(tcp.output.find("transport tcp"), std::string::npos) << tcp.output;
  EXPECT_LT(MaxParamDiff(Model("shm"), Model("tcp")), 1e-5);
}

// The GPU fallback's gradient path (copy out, reduce, copy back), forced on
// CPU ranks: the same training as the direct shared-memory path.
TEST_F(FashionMnistE2E, HostStagedGradientsGiveTheSameParameters) {
  Proc shm = Train(2, "shm", "--epochs 1");
  ASSERT_EQ(shm.exit_code, 0) << shm.output;
  Proc staged = Train(2, "staged", "--epochs 1 --device-path host-staged");
  ASSERT_EQ(staged.exit_code, 0) << staged.output;
  EXPECT_NE(staged.output.find("gradients host-staged from cpu over shm"), std::string::npos) << staged.output;
  EXPECT_LT(MaxParamDiff(Model("shm"), Model("staged")), 1e-5);
}

TEST_F(FashionMnistE2E, ResumeFromCheckpointMatchesAnUninterruptedRun) {
  const std::string ckpt = "--checkpoint-dir " + (dir_ / "ckpt").string();
  Proc full = Train(2, "full", "--epochs 2");
  ASSERT_EQ(full.exit_code, 0) << full.output;
  Proc first = Train(2, "first", "--epochs 1 " + ckpt);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  ASSERT_TRUE(fs::exists(dir_ / "ckpt" / "checkpoint_000001" / "state.json"));
  // Resume is the default whenever the checkpoint dir has a checkpoint.
  Proc resumed = Train(2, "resumed", "--epochs 2 " + ckpt);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming from checkpoint after epoch 1 (" + (dir_ / "ckpt").string() +
                                "/checkpoint_000001"),
            std::string::npos)
      << resumed.output;
  EXPECT_EQ(resumed.output.find("epoch=1/2"), std::string::npos) << "epoch 1 ran again:\n" << resumed.output;
  EXPECT_NE(resumed.output.find("epoch=2/2"), std::string::npos) << resumed.output;
  auto metrics = ReadJson((dir_ / "resumed" / "metrics.json").string());
  ASSERT_TRUE(metrics.is_object());
  EXPECT_EQ(metrics["epochs"].size(), 2u);  // history carried over from the checkpoint
  EXPECT_LT(MaxParamDiff(Model("full"), Model("resumed")), 1e-6);
  // --no-resume starts over, checkpoints or not.
  Proc fresh = Train(2, "fresh", "--epochs 1 --no-resume " + ckpt);
  ASSERT_EQ(fresh.exit_code, 0) << fresh.output;
  EXPECT_EQ(fresh.output.find("resuming"), std::string::npos) << fresh.output;
  EXPECT_NE(fresh.output.find("epoch=1/1"), std::string::npos) << fresh.output;
  EXPECT_NE(Train(1, "both", "--epochs 1 --resume --no-resume " + ckpt).exit_code, 0);
}

TEST_F(FashionMnistE2E, BadInputFailsWithAClearMessage) {
  Proc missing = Sh(kBin + "/fashion_mnist --epochs 1 --data-dir " + (dir_ / "nothing").string());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("dataset-fashion-mnist"), std::string::npos) << missing.output;

  fs::create_directories(dir_ / "corrupt");
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                        "t10k-labels-idx1-ubyte.gz"})
    std::ofstream(dir_ / "corrupt" / f) << "not an idx file";
  Proc corrupt = Sh(kBin + "/fashion_mnist --epochs 1 --data-dir " + (dir_ / "corrupt").string());
  EXPECT_NE(corrupt.exit_code, 0);
  EXPECT_NE(corrupt.output.find("dataset-fashion-mnist"), std::string::npos) << corrupt.output;

  Proc odd = Sh(kBin + "/cohort launch -n 3 -- " + kBin + "/fashion_mnist --batch-size 64 --epochs 1");
  EXPECT_NE(odd.exit_code, 0);
  EXPECT_NE(odd.output.find("not divisible"), std::string::npos) << odd.output;

  Proc bad_env = Sh("RANK=5 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1234 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 " +
                   kBin + "/fashion_mnist --epochs 1");
  EXPECT_NE(bad_env.exit_code, 0);
  EXPECT_NE(bad_env.output.find("RANK"), std::string::npos) << bad_env.output;

  Proc bad_device = Sh(kBin + "/fashion_mnist --epochs 1 --device tpu");
  EXPECT_EQ(bad_device.exit_code, 2);
  EXPECT_NE(bad_device.output.find("expected auto, cpu, cuda or cuda:N"), std::string::npos) << bad_device.output;
  if (!torch::cuda::is_available()) {
    // Asked for a GPU where there is none: exit 2 before any data or peer.
    Proc no_gpu = Sh("CUDA_VISIBLE_DEVICES=0 " + kBin + "/fashion_mnist --epochs 1 --device cuda");
    EXPECT_EQ(no_gpu.exit_code, 2);
    EXPECT_NE(no_gpu.output.find("no CUDA device is usable"), std::string::npos) << no_gpu.output;
    EXPECT_NE(no_gpu.output.find("CUDA_VISIBLE_DEVICES=0"), std::string::npos) << no_gpu.output;
  }
}

// --device auto on a machine without a usable GPU trains on the CPU and
// says so, with the gradient path in the start line.
TEST_F(FashionMnistE2E, DeviceAutoWithoutAGpuTrainsOnTheCpu) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this libtorch sees a GPU";
  Proc r = Sh("OMP_NUM_THREADS=1 " + kBin + "/cohort launch -n 2 -- " + kBin +
              "/fashion_mnist --device auto --epochs 1 --train-subset 512 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("device cpu, gradients shm"), std::string::npos) << r.output;
}

TEST_F(FashionMnistE2E, PyTorchDdpScriptRunsUnderTheLauncher) {
  if (!fs::exists("/usr/bin/python3") || Sh("/usr/bin/python3 -c 'import torch'").exit_code != 0)
    GTEST_SKIP() << "python3-torch is not installed";
  Proc r = Sh("OMP_NUM_THREADS=1 " + kBin + "/cohort launch -n 2 -- /usr/bin/python3 " + kSource +
             "/examples/fashion_mnist/train_ddp.py --epochs 1 --train-subset 1024 --lr 0.05");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank 0] test_accuracy=0."), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cohort::train
