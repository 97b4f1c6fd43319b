// DistributedSampler implementation; see include/cohort/train/sampler.h.
#include "cohort/train/sampler.h"

#include <random>
#include <string>
#include <utility>

#include "cohort/common/logging.h"

namespace cohort::train {
namespace {

// Uniform in [0, bound) without modulo bias: reject the low 2^64 mod bound
// values so the rest split evenly into bound classes.
uint64_t UniformBelow(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // == 2^64 mod bound
  while (true) {
    uint64_t r = gen();
    if (r >= threshold) return r % bound;
  }
}

size_t NumSamples(size_t n, int w, bool drop_last) {
  const size_t world = static_cast<size_t>(w);
  // PyTorch: drop_last and N % W != 0 -> ceil((N - W) / W), which is
  // floor(N / W) (0 when N < W); otherwise ceil(N / W).
  if (drop_last) return n / world;
  return (n + world - 1) / world;
}

Status ValidateArgs(int num_replicas, int rank) {
  if (num_replicas < 1) {
    return Status::InvalidArgument("DistributedSampler: num_replicas must be >= 1, got " +
                                   std::to_string(num_replicas));
  }
  if (rank < 0 || rank >= num_replicas) {
    return Status::InvalidArgument("DistributedSampler: rank " + std::to_string(rank) +
                                   " is out of range [0, " + std::to_string(num_replicas) + ")");
  }
  return Status::Ok();
}

}  // namespace

std::vector<int64_t> RandomPermutation(size_t n, uint64_t seed) {
  std::vector<int64_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<int64_t>(i);
  std::mt19937_64 gen(seed);
  for (size_t i = n; i > 1; --i) {
    size_t j = static_cast<size_t>(UniformBelow(gen, i));
    std::swap(out[i - 1], out[j]);
  }
  return out;
}

DistributedSampler::DistributedSampler(size_t dataset_size, int num_replicas, int rank,
                                       bool shuffle, uint64_t seed, bool drop_last)
    : dataset_size_(dataset_size),
      num_replicas_(num_replicas),
      rank_(rank),
      shuffle_(shuffle),
      seed_(seed),
      drop_last_(drop_last) {
  Status s = ValidateArgs(num_replicas, rank);
  COHORT_CHECK(s.ok()) << s.message();
  num_samples_ = NumSamples(dataset_size, num_replicas, drop_last);
}

Result<DistributedSampler> DistributedSampler::Create(size_t dataset_size, int num_replicas,
                                                      int rank, bool shuffle, uint64_t seed,
                                                      bool drop_last) {
  COHORT_RETURN_IF_ERROR(ValidateArgs(num_replicas, rank));
  return DistributedSampler(dataset_size, num_replicas, rank, shuffle, seed, drop_last);
}

std::vector<int64_t> DistributedSampler::Indices() const {
  std::vector<int64_t> all;
  if (shuffle_) {
    all = RandomPermutation(dataset_size_, seed_ + epoch_);
  } else {
    all.resize(dataset_size_);
    for (size_t i = 0; i < dataset_size_; ++i) all[i] = static_cast<int64_t>(i);
  }
  const size_t total = total_size();
  if (!drop_last_) {
    // indices += (indices * ceil(pad / len))[:pad]: cycle from the start.
    const size_t len = all.size();
    if (len > 0) {
      all.reserve(total);
      for (size_t i = len; i < total; ++i) all.push_back(all[(i - len) % len]);
    }
  } else {
    all.resize(total);  // total <= dataset_size_ here
  }
  std::vector<int64_t> mine;
  mine.reserve(num_samples_);
  const size_t stride = static_cast<size_t>(num_replicas_);
  for (size_t i = static_cast<size_t>(rank_); i < total && i < all.size(); i += stride) {
    mine.push_back(all[i]);
  }
  return mine;
}

}  // namespace cohort::train
