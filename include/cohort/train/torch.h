// The libtorch side of the trainer: gradient synchronisation for any
// torch::nn::Module, parameter broadcast, checkpoints and results.
//
// This is the one public header that includes <torch/...>; training programs
// include it, the rest of cohort never does. The implementation lives in
// src/train/torch/ (the only translation units that compile against torch);
// libtorch's c10::Error is caught there and returned as a Status.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>

#include "cohort/comm/communicator.h"
#include "cohort/train/compression.h"
#include "cohort/common/status.h"

namespace cohort::train {

struct GradientSyncOptions {
  // Gradients are packed into buckets of about this many bytes (reverse
  // parameter order, as they become ready in backward). One all-reduce each.
  // 0 = automatic: 25 MiB (PyTorch DDP's default) when every rank is on one
  // host; across hosts (TCP), an eighth of the model's gradients, between
  // 256 KiB and 25 MiB, so that even a small model's all-reduce starts
  // during backward instead of after it.
  size_t bucket_bytes = 0;
  // Start each bucket's all-reduce as soon as all of its gradients are
  // accumulated during backward (on the communicator's worker thread).
  // false: all buckets are reduced in Synchronize(), after backward.
  bool overlap = true;
  // Gradients on the wire between hosts (compression.h). Unset: from
  // COHORT_GRAD_COMPRESSION, else none. Without a network (every rank on
  // one host: the shm transport) it has no effect.
  std::optional<GradCompression> compression;
  // Parameters on a GPU: how their gradients are all-reduced.
  //   kAuto        NCCL when this build has it and no two ranks share a GPU
  //                (NCCL refuses that), else host-staged.
  //   kNccl        NCCL on a stream of its own, each bucket started during
  //                backward once the default stream has produced it (CUDA
  //                events: neither the host nor the device is synchronized).
  //   kHostStaged  copied to pinned host memory, all-reduced over shm/TCP and
  //                copied back, pipelined over the buckets (comm/staged.h).
  // kAuto reads COHORT_DEVICE_PATH (auto, nccl, host-staged) when it is set.
  // Every rank takes the same path (agreed at Create). CPU parameters go
  // straight to shm/TCP, unless kHostStaged is asked for: then they are
  // staged through a separate buffer by the same code a GPU runs (the tests
  // exercise it that way).
  enum class DevicePath { kAuto, kNccl, kHostStaged };
  DevicePath device_path = DevicePath::kAuto;
};

// "auto", "nccl", "host-staged" (InvalidArgument naming them otherwise).
Result<GradientSyncOptions::DevicePath> ParseDevicePath(const std::string& text);

// Averages the gradients of a module's parameters across ranks, like
// PyTorch's DistributedDataParallel with gradient_as_bucket_view=True:
// each parameter's .grad is a view into a bucket that lives in the
// communicator's shared memory, so the all-reduce reads peers' gradients in
// place and no gradient is copied into or out of a bucket.
//
// Use per step:  sync->ZeroGrad(); loss.backward(); sync->Synchronize(); opt.step();
// (ZeroGrad replaces optimizer.zero_grad(): it keeps the bucket views.)
// Thread affinity: the training thread; hooks fire on the autograd thread.
class GradientSync {
 public:
  // Broadcasts rank 0's parameters and buffers to every rank, then builds the
  // buckets. Collective: all ranks call it with the same module structure.
  static Result<std::unique_ptr<GradientSync>> Create(comm::Communicator& comm,
                                                      torch::nn::Module& module,
                                                      GradientSyncOptions options = {});
  ~GradientSync();

  void ZeroGrad();
  // Launches the buckets not yet started, waits for all, and leaves every
  // .grad averaged across ranks. Errors name the failing peer.
  Status Synchronize();

  size_t num_buckets() const;
  // Buckets whose all-reduce has been started since the last ZeroGrad or
  // Synchronize: with overlap, backward launches them as gradients complete.
  size_t buckets_launched() const;
  size_t bucket_bytes(size_t i) const;
  // What is in effect (none on shared memory).
  GradCompression compression() const;
  // How gradients travel: "shm", "tcp", "nccl", "host-staged over shm", ...
  std::string path() const;

  struct Impl;

 private:
  explicit GradientSync(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Copies rank 0's parameters and buffers into every rank's module.
Status BroadcastParameters(comm::Communicator& comm, torch::nn::Module& module);

// --- checkpoints -------------------------------------------------------------
// A checkpoint directory holds model.pt, optimizer.pt and state.json; it is
// built under a temporary name and renamed into place, so a crash never leaves
// a partial checkpoint that resume would pick.
struct CheckpointState {
  int64_t epoch = 0;           // epochs completed
  std::string extra_json;      // caller's JSON object (sampler seed, metrics...)
};

Status SaveCheckpoint(const std::string& root, const CheckpointState& state,
                      torch::nn::Module& module, torch::optim::Optimizer& optimizer);
// Loads the newest complete checkpoint under root into module and optimizer.
// nullopt when there is none.
Result<std::optional<CheckpointState>> LoadLatestCheckpoint(const std::string& root,
                                                            torch::nn::Module& module,
                                                            torch::optim::Optimizer& optimizer);

// --- results -----------------------------------------------------------------
// Writes <dir>/model.pt and <dir>/metrics.json (atomically, each).
Status SaveResults(const std::string& dir, torch::nn::Module& module,
                   const std::string& metrics_json);

// Loads the parameters saved in a model.pt into module.
Status LoadModel(const std::string& path, torch::nn::Module& module);

}  // namespace cohort::train
