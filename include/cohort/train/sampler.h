// DistributedSampler: which dataset indices each rank visits in an epoch, with
// exactly the semantics of PyTorch's torch.utils.data.DistributedSampler
// (padding by repetition or drop_last truncation, then a rank-strided slice).
//
// The shuffle is a Fisher-Yates permutation driven by std::mt19937_64 seeded
// with seed + epoch and an unbiased bounded draw of our own, so every rank --
// and every standard library -- computes the same permutation. The trainer
// calls SetEpoch() before each epoch and Indices() once; epoch() and seed()
// go into checkpoints. Thread-compatible (a value type).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::train {

class DistributedSampler {
 public:
  // COHORT_CHECKs num_replicas >= 1 and 0 <= rank < num_replicas (a
  // programmer error); use Create() for arguments that come from a user.
  DistributedSampler(size_t dataset_size, int num_replicas, int rank, bool shuffle = true,
                     uint64_t seed = 0, bool drop_last = false);
  // Like the constructor, but bad arguments are InvalidArgument.
  static Result<DistributedSampler> Create(size_t dataset_size, int num_replicas, int rank,
                                           bool shuffle = true, uint64_t seed = 0,
                                           bool drop_last = false);

  // The permutation of the next Indices() call is seeded with seed + epoch.
  void SetEpoch(uint64_t epoch) { epoch_ = epoch; }

  // This rank's indices for the current epoch: num_samples() of them.
  std::vector<int64_t> Indices() const;

  size_t dataset_size() const { return dataset_size_; }
  int num_replicas() const { return num_replicas_; }
  int rank() const { return rank_; }
  bool shuffle() const { return shuffle_; }
  bool drop_last() const { return drop_last_; }
  uint64_t seed() const { return seed_; }
  uint64_t epoch() const { return epoch_; }
  // Samples per rank per epoch: floor(N / W) with drop_last, else ceil(N / W).
  size_t num_samples() const { return num_samples_; }
  // num_samples() * num_replicas().
  size_t total_size() const { return num_samples_ * static_cast<size_t>(num_replicas_); }

 private:
  size_t dataset_size_;
  int num_replicas_;
  int rank_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  uint64_t epoch_ = 0;
  size_t num_samples_;
};

// A uniformly random permutation of [0, n) from std::mt19937_64(seed), the
// same on every platform. Exposed for tests and for other shufflers.
std::vector<int64_t> RandomPermutation(size_t n, uint64_t seed);

}  // namespace cohort::train
