// Tests for DistributedSampler: PyTorch's DistributedSampler semantics
// (padding, drop_last, rank striding) and the deterministic shuffle.
#include "cohort/train/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

namespace cohort::train {
namespace {

std::vector<std::vector<int64_t>> AllRanks(size_t n, int w, bool shuffle, uint64_t seed,
                                           bool drop_last, uint64_t epoch) {
  std::vector<std::vector<int64_t>> out;
  for (int r = 0; r < w; ++r) {
    DistributedSampler s(n, w, r, shuffle, seed, drop_last);
    s.SetEpoch(epoch);
    out.push_back(s.Indices());
  }
  return out;
}

TEST(DistributedSamplerTest, NoShufflePaddingMatchesPyTorch) {
  auto ranks = AllRanks(10, 3, /*shuffle=*/false, 0, /*drop_last=*/false, 0);
  EXPECT_EQ(ranks[0], (std::vector<int64_t>{0, 3, 6, 9}));
  EXPECT_EQ(ranks[1], (std::vector<int64_t>{1, 4, 7, 0}));
  EXPECT_EQ(ranks[2], (std::vector<int64_t>{2, 5, 8, 1}));
  DistributedSampler s(10, 3, 0, false);
  EXPECT_EQ(s.num_samples(), 4u);
  EXPECT_EQ(s.total_size(), 12u);
}

TEST(DistributedSamplerTest, NoShuffleDropLastMatchesPyTorch) {
  auto ranks = AllRanks(10, 3, false, 0, /*drop_last=*/true, 0);
  EXPECT_EQ(ranks[0], (std::vector<int64_t>{0, 3, 6}));
  EXPECT_EQ(ranks[1], (std::vector<int64_t>{1, 4, 7}));
  EXPECT_EQ(ranks[2], (std::vector<int64_t>{2, 5, 8}));
  DistributedSampler s(10, 3, 1, false, 0, true);
  EXPECT_EQ(s.num_samples(), 3u);
  EXPECT_EQ(s.total_size(), 9u);
}

TEST(DistributedSamplerTest, PaddingRepeatsWholeListWhenPadExceedsLength) {
  // N=2, W=5: PyTorch pads [0,1] to [0,1,0,1,0].
  auto ranks = AllRanks(2, 5, false, 0, false, 0);
  std::vector<int64_t> flat;
  for (auto& r : ranks) {
    ASSERT_EQ(r.size(), 1u);
    flat.push_back(r[0]);
  }
  EXPECT_EQ(flat, (std::vector<int64_t>{0, 1, 0, 1, 0}));
  // drop_last with N < W: nothing for anyone.
  for (auto& r : AllRanks(2, 5, false, 0, true, 0)) EXPECT_TRUE(r.empty());
}

TEST(DistributedSamplerTest, EmptyDataset) {
  for (bool drop : {false, true}) {
    DistributedSampler s(0, 4, 3, true, 0, drop);
    EXPECT_EQ(s.num_samples(), 0u);
    EXPECT_TRUE(s.Indices().empty());
  }
}

TEST(DistributedSamplerTest, DivisibleEverySampleExactlyOncePerEpoch) {
  for (bool shuffle : {false, true}) {
    for (int w : {1, 2, 4, 5}) {
      for (uint64_t epoch : {0, 1, 7}) {
        auto ranks = AllRanks(100, w, shuffle, 42, false, epoch);
        std::vector<int64_t> all;
        for (auto& r : ranks) {
          EXPECT_EQ(r.size(), 100u / w);
          all.insert(all.end(), r.begin(), r.end());
        }
        std::sort(all.begin(), all.end());
        std::vector<int64_t> expected(100);
        for (int i = 0; i < 100; ++i) expected[i] = i;
        EXPECT_EQ(all, expected) << "w=" << w << " shuffle=" << shuffle;
      }
    }
  }
}

TEST(DistributedSamplerTest, NotDivisiblePaddedCountsEqualAndUnionCovers) {
  const size_t n = 103;
  for (int w : {2, 3, 4, 7, 8}) {
    auto ranks = AllRanks(n, w, true, 3, false, 2);
    std::map<int64_t, int> seen;
    for (auto& r : ranks) {
      EXPECT_EQ(r.size(), (n + w - 1) / w);
      for (int64_t i : r) ++seen[i];
    }
    EXPECT_EQ(seen.size(), n);  // every index appears
    size_t extra = 0;
    for (auto& [idx, count] : seen) {
      EXPECT_GE(idx, 0);
      EXPECT_LT(idx, static_cast<int64_t>(n));
      EXPECT_LE(count, 2);
      extra += count - 1;
    }
    EXPECT_EQ(extra, ranks[0].size() * w - n);  // exactly the padding repeats
  }
}

TEST(DistributedSamplerTest, DropLastShuffledNoDuplicates) {
  auto ranks = AllRanks(10, 3, true, 5, true, 1);
  std::set<int64_t> seen;
  for (auto& r : ranks) {
    EXPECT_EQ(r.size(), 3u);
    for (int64_t i : r) EXPECT_TRUE(seen.insert(i).second) << "duplicate " << i;
  }
  EXPECT_EQ(seen.size(), 9u);
}

TEST(DistributedSamplerTest, EpochAndSeedDetermineOrder) {
  DistributedSampler a(1000, 2, 0, true, 17);
  DistributedSampler b(1000, 2, 0, true, 17);
  a.SetEpoch(3);
  b.SetEpoch(3);
  EXPECT_EQ(a.Indices(), b.Indices());
  EXPECT_EQ(a.Indices(), a.Indices());
  auto epoch3 = a.Indices();
  a.SetEpoch(4);
  EXPECT_NE(a.Indices(), epoch3);
  DistributedSampler c(1000, 2, 0, true, 18);
  c.SetEpoch(3);
  EXPECT_NE(c.Indices(), epoch3);
  // seed + epoch is what seeds the permutation, as in PyTorch.
  DistributedSampler d(1000, 2, 0, true, 16);
  d.SetEpoch(4);
  EXPECT_EQ(d.Indices(), epoch3);
  EXPECT_EQ(a.epoch(), 4u);
  EXPECT_EQ(a.seed(), 17u);
}

TEST(DistributedSamplerTest, RanksAgreeOnThePermutation) {
  // Interleaving the ranks' slices reproduces one global permutation.
  const int w = 4;
  auto ranks = AllRanks(40, w, true, 9, false, 5);
  std::vector<int64_t> perm = RandomPermutation(40, 9 + 5);
  for (int r = 0; r < w; ++r) {
    for (size_t i = 0; i < ranks[r].size(); ++i) EXPECT_EQ(ranks[r][i], perm[i * w + r]);
  }
}

TEST(DistributedSamplerTest, SingleReplicaShuffleIsPermutation) {
  DistributedSampler s(257, 1, 0, true, 123);
  auto idx = s.Indices();
  ASSERT_EQ(idx.size(), 257u);
  std::vector<int64_t> sorted = idx;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 257; ++i) EXPECT_EQ(sorted[i], i);
  std::vector<int64_t> identity(257);
  for (int64_t i = 0; i < 257; ++i) identity[i] = i;
  EXPECT_NE(idx, identity);
}

TEST(DistributedSamplerTest, PermutationIsPinnedAcrossPlatforms) {
  // mt19937_64 and our bounded draw are fully specified, so this never changes.
  std::vector<int64_t> p = RandomPermutation(10, 0);
  std::vector<int64_t> again = RandomPermutation(10, 0);
  EXPECT_EQ(p, again);
  EXPECT_EQ(p, (std::vector<int64_t>{7, 2, 0, 8, 3, 9, 6, 1, 5, 4}));
}

TEST(DistributedSamplerTest, ShuffleIsRoughlyUniform) {
  // Position 0 of a 4-permutation should take each value ~1/4 of the time.
  std::map<int64_t, int> first;
  for (uint64_t seed = 0; seed < 4000; ++seed) ++first[RandomPermutation(4, seed)[0]];
  for (auto& [v, count] : first) {
    EXPECT_GT(count, 850) << v;
    EXPECT_LT(count, 1150) << v;
  }
}

TEST(DistributedSamplerTest, CreateRejectsBadArguments) {
  EXPECT_EQ(DistributedSampler::Create(10, 0, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DistributedSampler::Create(10, 2, 2).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DistributedSampler::Create(10, 2, -1).status().code(), StatusCode::kInvalidArgument);
  auto ok = DistributedSampler::Create(10, 2, 1, false);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->Indices(), (std::vector<int64_t>{1, 3, 5, 7, 9}));
}

TEST(DistributedSamplerDeathTest, ConstructorChecksArguments) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(DistributedSampler(10, 2, 5), "rank 5");
}

}  // namespace
}  // namespace cohort::train
