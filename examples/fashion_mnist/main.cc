// The seed model: a 784-512-512-256-10 ReLU MLP trained data-parallel on
// FashionMNIST with cohort's trainer library. Run it under `cohort launch -n N`
// (or any launcher that sets the torchrun environment); alone it is rank 0 of 1.
//
// Each rank trains on its DistributedSampler shard with batch = global / N;
// GradientSync averages gradients across ranks (bucketed, overlapped with
// backward) so every rank takes the same SGD step. After each epoch the 10k
// test set is evaluated (sharded across ranks, sums all-reduced), metrics are
// printed by rank 0 and reported by every rank, and rank 0 writes a
// checkpoint. The final model and metrics.json go to --results-dir. The last
// line rank 0 prints is `test_accuracy=0.xxxx`.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>

#include "cohort/comm/communicator.h"
#include "cohort/comm/nccl.h"
#include "cohort/train/checkpoint_dir.h"
#include "cohort/train/context.h"
#include "cohort/train/idx.h"
#include "cohort/train/report.h"
#include "cohort/train/sampler.h"
#include "cohort/train/torch.h"

namespace {

using cohort::Status;
namespace train = cohort::train;

struct Flags {
  int epochs = 10;
  double lr = 1e-3;
  int batch_size = 64;  // global
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string checkpoint_dir;
  std::string results_dir;
  uint64_t seed = 0;
  bool resume = false;     // --resume: insist (needs a checkpoint dir)
  bool no_resume = false;  // --no-resume: start from epoch 1 whatever the checkpoint dir holds
  int64_t train_subset = 0;  // 0 = all 60k
  double bucket_mb = 0;
  std::string grad_compression;  // "" = from the environment
  bool no_overlap = false;
  int threads = 0;  // 0 = cores / local ranks
  bool profile = false;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::string device_path;        // "" = COHORT_DEVICE_PATH, else auto
};

// [N, 784] float in [0, 1] and [N] int64 labels.
struct Tensors {
  torch::Tensor x, y;
};

Tensors ToTensors(const train::MnistSplit& split, int64_t limit) {
  int64_t n = split.count;
  if (limit > 0 && limit < n) n = limit;
  const int64_t pixels = static_cast<int64_t>(split.rows) * split.cols;
  auto images = torch::from_blob(const_cast<uint8_t*>(split.images.data()), {n, pixels}, torch::kUInt8);
  auto labels = torch::from_blob(const_cast<uint8_t*>(split.labels.data()), {n}, torch::kUInt8);
  return {images.to(torch::kFloat32).div_(255.0), labels.to(torch::kInt64)};
}

torch::nn::Sequential MakeModel() {
  return torch::nn::Sequential(torch::nn::Linear(784, 512), torch::nn::ReLU(),
                               torch::nn::Linear(512, 512), torch::nn::ReLU(),
                               torch::nn::Linear(512, 256), torch::nn::ReLU(),
                               torch::nn::Linear(256, 10));
}

[[noreturn]] void Die(const std::string& what, int code = 1) {
  std::cerr << "fashion_mnist: " << what << std::endl;
  std::exit(code);
}

void Check(const Status& s, cohort::comm::Communicator* comm = nullptr) {
  if (s.ok()) return;
  if (comm != nullptr) comm->Abort(s.message());
  Die(s.ToString());
}

// Sum of loss, number correct and count over this rank's shard of `data`.
std::array<float, 3> Evaluate(torch::nn::Sequential& model, const Tensors& data, int rank, int world) {
  torch::NoGradGuard no_grad;
  const int64_t n = data.x.size(0);
  const int64_t begin = n * rank / world, end = n * (rank + 1) / world;
  float loss_sum = 0, correct = 0;
  for (int64_t b = begin; b < end; b += 1000) {
    const int64_t e = std::min(end, b + 1000);
    auto out = model->forward(data.x.slice(0, b, e));
    auto y = data.y.slice(0, b, e);
    loss_sum += torch::nn::functional::cross_entropy(
                    out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<float>();
    correct += out.argmax(1).eq(y).sum().item<float>();
  }
  return {loss_sum, correct, static_cast<float>(end - begin)};
}

// --device: "cpu"; "cuda" = cuda:LOCAL_RANK among the visible GPUs (ranks
// beyond the GPU count share them round-robin, and their gradients are then
// host-staged: NCCL refuses two ranks on one GPU); "cuda:N"; "auto" = cuda
// when this libtorch sees a GPU, else cpu.
torch::Device ResolveDevice(const std::string& want, int local_rank) {
  const bool cuda_ok = torch::cuda::is_available();
  const int count = cuda_ok ? static_cast<int>(torch::cuda::device_count()) : 0;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  auto no_cuda = [&]() {
    Die("--device " + want + ": no CUDA device is usable (" +
            (cuda_ok ? std::string("none visible") : std::string("this libtorch was built without CUDA or finds no driver")) +
            "; CUDA_VISIBLE_DEVICES=" + (visible ? visible : "(unset)") +
            "); train with --device cpu, or build against a CUDA libtorch (docs/training.md)",
        2);
  };
  if (want == "cpu") return torch::kCPU;
  if (want == "auto") return count > 0 ? torch::Device(torch::kCUDA, local_rank % count) : torch::Device(torch::kCPU);
  if (want == "cuda") {
    if (count == 0) no_cuda();
    return torch::Device(torch::kCUDA, local_rank % count);
  }
  if (want.rfind("cuda:", 0) == 0) {
    const std::string n = want.substr(5);
    if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos)
      Die("--device " + want + ": expected cuda:N with N a device index", 2);
    if (count == 0) no_cuda();
    const int index = std::stoi(n);
    if (index >= count)
      Die("--device " + want + ": only " + std::to_string(count) + " CUDA device(s) are visible", 2);
    return torch::Device(torch::kCUDA, index);
  }
  Die("--device " + want + ": expected auto, cpu, cuda or cuda:N", 2);
  return torch::kCPU;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{"Train the seed MLP on FashionMNIST, data-parallel across the launched ranks."};
  app.add_option("--epochs", f.epochs, "Epochs to train")->check(CLI::PositiveNumber);
  app.add_option("--lr", f.lr, "SGD learning rate")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", f.batch_size, "Global batch size (split across ranks)")->check(CLI::PositiveNumber);
  app.add_option("--data-dir", f.data_dir, "Directory with the FashionMNIST IDX .gz files");
  app.add_option("--checkpoint-dir", f.checkpoint_dir, "Write a checkpoint here after every epoch (env COHORT_CHECKPOINT_DIR)");
  app.add_option("--results-dir", f.results_dir, "Write model.pt and metrics.json here (env COHORT_RESULTS_DIR)");
  app.add_option("--seed", f.seed, "Seed for initialisation and shuffling");
  auto* resume_flag = app.add_flag(
      "--resume", f.resume,
      "Resume from the newest checkpoint in the checkpoint dir, if any (the default whenever there is a "
      "checkpoint dir); fails without one");
  app.add_flag("--no-resume", f.no_resume, "Start from epoch 1 even when the checkpoint dir has checkpoints")
      ->excludes(resume_flag);
  app.add_option("--train-subset", f.train_subset, "Use only the first N training samples (0 = all)")->check(CLI::NonNegativeNumber);
  app.add_option("--bucket-mb", f.bucket_mb,
                 "Gradient bucket size in MB (default 0: automatic; 25 on one host, smaller across hosts)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--no-overlap", f.no_overlap, "All-reduce gradients after backward instead of during it");
  app.add_option("--grad-compression", f.grad_compression,
                 "Gradients on the wire between hosts: none, bf16, bf16-ef, fp16 or fp16-ef (default: env COHORT_GRAD_COMPRESSION, "
                 "else none)")
      ->check(CLI::IsMember({"none", "bf16", "bf16-ef", "fp16", "fp16-ef"}));
  app.add_option("--threads", f.threads, "Intra-op threads per rank (0 = cores / local ranks)")->check(CLI::NonNegativeNumber);
  app.add_flag("--profile", f.profile, "Print where each step's time goes (rank 0)");
  app.add_option("--device", f.device,
                 "auto (a GPU when libtorch sees one), cpu, cuda (cuda:LOCAL_RANK) or cuda:N");
  app.add_option("--device-path", f.device_path,
                 "How GPU gradients are all-reduced: auto (NCCL when each rank has its own GPU), nccl or "
                 "host-staged (env COHORT_DEVICE_PATH)");
  CLI11_PARSE(app, argc, argv);

  auto ctx_or = train::WorkerContext::FromEnv();
  if (!ctx_or.ok()) Die(ctx_or.status().ToString(), 2);
  train::WorkerContext ctx = *ctx_or;
  if (f.checkpoint_dir.empty()) f.checkpoint_dir = ctx.checkpoint_dir;
  if (f.results_dir.empty()) f.results_dir = ctx.results_dir;
  if (f.batch_size % ctx.world_size != 0)
    Die("--batch-size " + std::to_string(f.batch_size) + " is not divisible by the " +
            std::to_string(ctx.world_size) + " ranks",
        2);
  if (f.resume && f.checkpoint_dir.empty()) Die("--resume needs --checkpoint-dir (or COHORT_CHECKPOINT_DIR)", 2);
  // Resume is the default: a restarted job (attempt >= 1), or a run pointed
  // at a checkpoint dir that has checkpoints, continues from the newest one.
  const bool resume = !f.no_resume && !f.checkpoint_dir.empty();
  const bool chief = ctx.is_chief();
  torch::set_num_threads(f.threads > 0 ? f.threads : train::DefaultThreadsPerWorker(ctx.local_world_size));

  // Data first: a missing data set fails before any rank waits on a peer.
  auto train_split = train::LoadMnistSplit(f.data_dir, /*train=*/true);
  if (!train_split.ok()) Die(train_split.status().message());
  auto test_split = train::LoadMnistSplit(f.data_dir, /*train=*/false);
  if (!test_split.ok()) Die(test_split.status().message());
  const torch::Device device = ResolveDevice(f.device, ctx.local_rank);
  std::optional<train::GradientSyncOptions::DevicePath> device_path;
  if (!f.device_path.empty()) {
    auto path = train::ParseDevicePath(f.device_path);
    if (!path.ok()) Die("--device-path: " + path.status().message(), 2);
    device_path = *path;
  }
  // The whole data set lives on the device (FashionMNIST: 220 MB as float32).
  Tensors train_data = ToTensors(*train_split, f.train_subset);
  Tensors test_data = ToTensors(*test_split, 0);
  if (!device.is_cpu()) {
    train_data = {train_data.x.to(device), train_data.y.to(device)};
    test_data = {test_data.x.to(device), test_data.y.to(device)};
  }

  auto comm_or = cohort::comm::Communicator::FromEnv();
  if (!comm_or.ok()) Die(comm_or.status().ToString());
  auto& comm = **comm_or;

  torch::manual_seed(f.seed);
  auto model = MakeModel();
  model->to(device);  // before the optimizer takes its parameters
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(f.lr));

  int64_t start_epoch = 0;
  nlohmann::json history = nlohmann::json::array();
  if (resume) {
    auto loaded = train::LoadLatestCheckpoint(f.checkpoint_dir, *model, optimizer);
    Check(loaded.status(), &comm);
    if (loaded->has_value()) {
      start_epoch = (*loaded)->epoch;
      auto extra = nlohmann::json::parse((*loaded)->extra_json, nullptr, false);
      if (extra.is_object() && extra.contains("history")) history = extra["history"];
    }
    // Rank 0's view wins (other hosts may not see the same directory).
    Check(comm.Broadcast(&start_epoch, sizeof(start_epoch), 0), &comm);
    if (chief && start_epoch > 0)
      std::printf("resuming from checkpoint after epoch %lld (%s/%s; --no-resume starts over)\n",
                  static_cast<long long>(start_epoch), f.checkpoint_dir.c_str(),
                  train::CheckpointDirName(start_epoch).c_str());
  }

  train::GradientSyncOptions sync_options;
  sync_options.bucket_bytes = static_cast<size_t>(f.bucket_mb * 1024 * 1024);
  if (!f.grad_compression.empty()) sync_options.compression = *train::ParseGradCompression(f.grad_compression);
  sync_options.overlap = !f.no_overlap;
  if (device_path) sync_options.device_path = *device_path;
  auto sync_or = train::GradientSync::Create(comm, *model, sync_options);  // broadcasts rank 0's weights
  Check(sync_or.status(), &comm);
  auto& sync = **sync_or;

  train::DistributedSampler sampler(train_data.x.size(0), ctx.world_size, ctx.rank, /*shuffle=*/true, f.seed);
  train::Reporter reporter = train::Reporter::FromEnv(ctx.rank);
  const int64_t per_rank_batch = f.batch_size / ctx.world_size;
  if (chief)
    std::printf("training: %d rank(s), transport %s, device %s, gradients %s, global batch %d (%lld per rank), lr %g, %d epoch(s), "
                "%lld training samples, %zu gradient bucket(s), gradient compression %s\n",
                ctx.world_size, std::string(cohort::comm::TransportName(comm.transport())).c_str(),
                device.str().c_str(), sync.path().c_str(),
                f.batch_size, static_cast<long long>(per_rank_batch), f.lr, f.epochs,
                static_cast<long long>(train_data.x.size(0)), sync.num_buckets(),
                std::string(train::GradCompressionName(sync.compression())).c_str());
  std::fflush(stdout);

  float val_accuracy = 0;
  for (int64_t epoch = start_epoch; epoch < f.epochs; ++epoch) {
    // --- train one epoch ----------------------------------------------------
    sampler.SetEpoch(static_cast<uint64_t>(epoch));
    auto indices_vec = sampler.Indices();
    auto indices = torch::from_blob(indices_vec.data(), {static_cast<int64_t>(indices_vec.size())}, torch::kInt64)
                       .to(device);
    model->train();
    // Summed on the device and read once per epoch: no host round trip per step.
    auto loss_acc = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    int64_t batches = 0;
    // Seconds per phase, summed over the epoch (--profile).
    double t_data = 0, t_forward = 0, t_backward = 0, t_sync = 0, t_step = 0;
    using Clock = std::chrono::steady_clock;
    auto lap = [&](Clock::time_point& since, double& into) {
      if (!f.profile) return;
      auto now = Clock::now();
      into += std::chrono::duration<double>(now - since).count();
      since = now;
    };
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < indices.size(0); b += per_rank_batch) {
      auto since = Clock::now();
      auto idx = indices.slice(0, b, std::min<int64_t>(b + per_rank_batch, indices.size(0)));
      auto xb = train_data.x.index_select(0, idx);
      auto yb = train_data.y.index_select(0, idx);
      sync.ZeroGrad();
      lap(since, t_data);
      auto loss = torch::nn::functional::cross_entropy(model->forward(xb), yb);
      lap(since, t_forward);
      loss.backward();
      lap(since, t_backward);
      Check(sync.Synchronize(), &comm);
      lap(since, t_sync);
      optimizer.step();
      loss_acc += loss.detach().to(torch::kFloat64);
      lap(since, t_step);
      ++batches;
    }
    const double loss_sum = loss_acc.item<double>();  // waits for the epoch's last step
    const double train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (f.profile && chief && batches > 0)
      std::printf("profile: per step (ms) data+zero=%.3f forward=%.3f backward=%.3f sync_wait=%.3f "
                  "optimizer=%.3f total=%.3f\n",
                  1e3 * t_data / batches, 1e3 * t_forward / batches, 1e3 * t_backward / batches,
                  1e3 * t_sync / batches, 1e3 * t_step / batches, 1e3 * train_seconds / batches);

    // --- evaluate on the test set, sharded; sums all-reduced ------------------
    model->eval();
    auto eval = Evaluate(model, test_data, ctx.rank, ctx.world_size);
    std::array<float, 5> sums = {eval[0], eval[1], eval[2], static_cast<float>(loss_sum),
                                 static_cast<float>(batches)};
    Check(comm.AllReduce(sums.data(), sums.size(), cohort::comm::DType::kFloat32,
                         cohort::comm::ReduceOp::kSum), &comm);
    const float val_loss = sums[0] / sums[2];
    val_accuracy = sums[1] / sums[2];
    const float train_loss = sums[3] / sums[4];
    const double samples_per_sec = static_cast<double>(sampler.total_size()) / train_seconds;

    nlohmann::json metrics = {{"epoch", epoch + 1},        {"epochs", f.epochs},
                              {"train_loss", train_loss},   {"val_loss", val_loss},
                              {"val_accuracy", val_accuracy}, {"samples_per_sec", samples_per_sec},
                              {"epoch_time_s", train_seconds}};
    if (device.is_cuda()) {
      // The GPU's memory in use (every process on it), after the epoch.
      if (auto mem = cohort::comm::QueryDeviceMemory(device.index()); mem.ok())
        metrics["device_memory_bytes"] = mem->used_bytes;
    }
    history.push_back(metrics);
    Check(reporter.ReportJson(metrics.dump()));
    if (chief) {
      std::printf("epoch=%lld/%d train_loss=%.4f val_loss=%.4f val_accuracy=%.4f samples_per_sec=%.0f time_s=%.2f\n",
                  static_cast<long long>(epoch + 1), f.epochs, train_loss, val_loss, val_accuracy,
                  samples_per_sec, train_seconds);
      std::fflush(stdout);
    }

    // --- checkpoint (rank 0 writes; everyone waits so resume sees it) ---------
    if (!f.checkpoint_dir.empty()) {
      if (chief) {
        nlohmann::json extra = {{"seed", f.seed}, {"world_size", ctx.world_size}, {"history", history}};
        Check(train::SaveCheckpoint(f.checkpoint_dir, {epoch + 1, extra.dump()}, *model, optimizer), &comm);
      }
      Check(comm.Barrier(), &comm);
    }
  }

  if (chief) {
    if (start_epoch >= f.epochs && !history.empty())
      val_accuracy = history.back().value("val_accuracy", 0.0f);
    if (!f.results_dir.empty()) {
      nlohmann::json out = {{"model", "mlp-784-512-512-256-10"},
                            {"world_size", ctx.world_size},
                            {"device", device.is_cpu() ? std::string("cpu") : std::string("cuda")},
                            {"global_batch_size", f.batch_size},
                            {"lr", f.lr},
                            {"seed", f.seed},
                            {"epochs", history},
                            {"test_accuracy", val_accuracy}};
      Check(train::SaveResults(f.results_dir, *model, out.dump(2)), &comm);
      std::printf("results written to %s\n", f.results_dir.c_str());
    }
    std::printf("test_accuracy=%.4f\n", val_accuracy);
    std::fflush(stdout);
  }
  Check(comm.Barrier(), &comm);
  return 0;
}
