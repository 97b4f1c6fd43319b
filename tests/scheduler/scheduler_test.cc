// Tests for gang placement: all-or-nothing, the four strategies, dead nodes,
// GPUs / custom resources / labels, infeasible-ever vs busy, single-entrypoint
// placement, rank layout, and a randomized property test against a brute-force
// feasibility oracle.
#include "cohort/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace cohort::scheduler {
namespace {

NodeSnapshot Node(std::string id, Resources total, Resources used = {}, bool alive = true) {
  NodeSnapshot n;
  n.node_id = std::move(id);
  n.address = n.node_id + ":7000";
  n.alive = alive;
  n.total = std::move(total);
  n.used = std::move(used);
  return n;
}

std::vector<Bundle> Workers(int n, Resources each, LabelSelector selector = {}) {
  return std::vector<Bundle>(n, Bundle{std::move(each), std::move(selector)});
}

std::vector<std::string> Nodes(const std::optional<Placement>& p) {
  return p ? p->node_of_bundle : std::vector<std::string>{"<none>"};
}

using V = std::vector<std::string>;

// ---- all-or-nothing and the reason ----------------------------------------------

TEST(PlaceGangTest, AllOrNothingWithReason) {
  std::vector<NodeSnapshot> nodes = {Node("node-a", {{"CPU", 1}}), Node("node-b", {{"CPU", 4}}, {{"CPU", 2}})};
  std::string why;
  EXPECT_FALSE(PlaceGang(nodes, Workers(4, {{"CPU", 1}}), "PACK", &why));
  EXPECT_EQ(why, "needs 4 x {CPU: 1}; free: node-a {CPU: 1}, node-b {CPU: 2}");
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(3, {{"CPU", 1}}), "PACK")), (V{"node-b", "node-b", "node-a"}));
}

TEST(PlaceGangTest, EmptyDemandAndEmptyCluster) {
  EXPECT_EQ(Nodes(PlaceGang({}, {}, "PACK")), V{});
  std::string why;
  EXPECT_FALSE(PlaceGang({}, Workers(1, {{"CPU", 1}}), "SPREAD", &why));
  EXPECT_EQ(why, "needs 1 x {CPU: 1}; free: no nodes");
  // A bundle asking for nothing fits any alive node.
  EXPECT_EQ(Nodes(PlaceGang({Node("a", {})}, Workers(2, {}), "PACK")), (V{"a", "a"}));
}

TEST(PlaceGangTest, UnknownStrategy) {
  std::string why;
  EXPECT_FALSE(PlaceGang({Node("a", {{"CPU", 8}})}, Workers(1, {{"CPU", 1}}), "pack", &why));
  EXPECT_EQ(why, "unknown placement strategy 'pack'");
}

// ---- strategies --------------------------------------------------------------------

TEST(PlaceGangTest, PackUsesTheSmallestNodeThatHoldsEverything) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 4}}), Node("b", {{"CPU", 8}}), Node("c", {{"CPU", 2}})};
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(4, {{"CPU", 1}}), "PACK")), V(4, "a"));
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(2, {{"CPU", 1}}), "PACK")), V(2, "c"));
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(6, {{"CPU", 1}}), "PACK")), V(6, "b"));
}

TEST(PlaceGangTest, PackFillsTheBiggestNodesFirst) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 4}}), Node("b", {{"CPU", 8}}), Node("c", {{"CPU", 2}})};
  // 10 workers: b takes 8, a the other 2 -> two nodes, ranks contiguous per node.
  V want(8, "b");
  want.insert(want.end(), 2, "a");
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(10, {{"CPU", 1}}), "PACK")), want);
  EXPECT_FALSE(PlaceGang(nodes, Workers(15, {{"CPU", 1}}), "PACK"));
  EXPECT_TRUE(PlaceGang(nodes, Workers(14, {{"CPU", 1}}), "PACK"));
}

TEST(PlaceGangTest, SpreadIsRoundRobin) {
  std::vector<NodeSnapshot> nodes = {Node("c", {{"CPU", 4}}), Node("a", {{"CPU", 4}}), Node("b", {{"CPU", 4}})};
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(3, {{"CPU", 1}}), "SPREAD")), (V{"a", "b", "c"}));
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(5, {{"CPU", 1}}), "SPREAD")), (V{"a", "b", "c", "a", "b"}));
  // Best effort: when a node is full the rest go elsewhere.
  nodes[1].used = {{"CPU", 4}};  // a is busy
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(4, {{"CPU", 1}}), "SPREAD")), (V{"b", "c", "b", "c"}));
  EXPECT_EQ(Nodes(PlaceGang({Node("a", {{"CPU", 8}})}, Workers(3, {{"CPU", 1}}), "SPREAD")), V(3, "a"));
}

TEST(PlaceGangTest, StrictPackNeedsOneNode) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 2}}), Node("b", {{"CPU", 2}})};
  std::string why;
  EXPECT_FALSE(PlaceGang(nodes, Workers(3, {{"CPU", 1}}), "STRICT_PACK", &why));
  EXPECT_EQ(why, "STRICT_PACK needs 3 x {CPU: 1} on one node; free: a {CPU: 2}, b {CPU: 2}");
  EXPECT_TRUE(PlaceGang(nodes, Workers(3, {{"CPU", 1}}), "PACK"));  // PACK may use two
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(2, {{"CPU", 1}}), "STRICT_PACK")), (V{"a", "a"}));
}

TEST(PlaceGangTest, StrictSpreadNeedsDistinctNodes) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 8}}), Node("b", {{"CPU", 8}})};
  std::string why;
  EXPECT_FALSE(PlaceGang(nodes, Workers(3, {{"CPU", 1}}), "STRICT_SPREAD", &why));
  EXPECT_EQ(why, "STRICT_SPREAD needs 3 x {CPU: 1} on 3 different nodes; free: a {CPU: 8}, b {CPU: 8}");
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(2, {{"CPU", 1}}), "STRICT_SPREAD")), (V{"a", "b"}));
}

TEST(PlaceGangTest, StrictSpreadFindsAMatchingGreedyWouldMiss) {
  // Bundle 0 fits both nodes, bundle 1 only a: a greedy pass would put 0 on a.
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 1}, {"GPU", 1}}), Node("b", {{"CPU", 1}})};
  std::vector<Bundle> bundles = {Bundle{{{"CPU", 1}}, {}}, Bundle{{{"CPU", 1}, {"GPU", 1}}, {}}};
  EXPECT_EQ(Nodes(PlaceGang(nodes, bundles, "STRICT_SPREAD")), (V{"b", "a"}));
}

// ---- what counts as free -------------------------------------------------------------

TEST(PlaceGangTest, DeadNodesAreNeverUsed) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 1}}), Node("big", {{"CPU", 64}}, {}, /*alive=*/false)};
  std::string why;
  for (const char* s : {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"}) {
    auto p = PlaceGang(nodes, Workers(2, {{"CPU", 1}}), s, &why);
    EXPECT_FALSE(p) << s << " used " << Nodes(p)[0];
  }
  EXPECT_EQ(why, "STRICT_SPREAD needs 2 x {CPU: 1} on 2 different nodes; free: a {CPU: 1}, big (dead)");
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(1, {{"CPU", 1}}), "PACK")), V{"a"});
}

TEST(PlaceGangTest, UsedResourcesAreRespected) {
  // Over-committed nodes (used > total) count as having nothing free.
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 4}}, {{"CPU", 3.5}}),
                                     Node("b", {{"CPU", 2}}, {{"CPU", 3}})};
  EXPECT_EQ(nodes[1].Free(), Resources{});
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(1, {{"CPU", 0.5}}), "PACK")), V{"a"});
  EXPECT_FALSE(PlaceGang(nodes, Workers(2, {{"CPU", 0.5}}), "PACK"));
}

TEST(PlaceGangTest, FractionalAmountsWithinTolerance) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 0.3}})};
  EXPECT_TRUE(PlaceGang(nodes, Workers(3, {{"CPU", 0.1}}), "STRICT_PACK"));
  EXPECT_FALSE(PlaceGang(nodes, Workers(4, {{"CPU", 0.1}}), "PACK"));
}

TEST(PlaceGangTest, GpusMemoryAndCustomResources) {
  std::vector<NodeSnapshot> nodes = {
      Node("cpu-1", {{"CPU", 32}, {"memory", 64e9}}),
      Node("gpu-1", {{"CPU", 16}, {"GPU", 2}, {"memory", 64e9}}),
      Node("gpu-2", {{"CPU", 16}, {"GPU", 4}, {"memory", 64e9}, {"nvlink", 1}}),
  };
  // 4 one-GPU workers fit on gpu-2 alone.
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(4, {{"CPU", 1}, {"GPU", 1}}), "PACK")), V(4, "gpu-2"));
  // 6 need both GPU nodes; the CPU node is never used.
  auto p = PlaceGang(nodes, Workers(6, {{"CPU", 1}, {"GPU", 1}}), "PACK");
  ASSERT_TRUE(p);
  EXPECT_EQ(std::count(p->node_of_bundle.begin(), p->node_of_bundle.end(), "gpu-2"), 4);
  EXPECT_EQ(std::count(p->node_of_bundle.begin(), p->node_of_bundle.end(), "gpu-1"), 2);
  EXPECT_FALSE(PlaceGang(nodes, Workers(7, {{"GPU", 1}}), "PACK"));
  // Custom resources and memory.
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(1, {{"nvlink", 1}}), "SPREAD")), V{"gpu-2"});
  EXPECT_FALSE(PlaceGang(nodes, Workers(2, {{"nvlink", 1}}), "SPREAD"));
  EXPECT_EQ(Nodes(PlaceGang(nodes, Workers(3, {{"memory", 40e9}}), "SPREAD")), (V{"cpu-1", "gpu-1", "gpu-2"}));
  std::string why;
  EXPECT_FALSE(PlaceGang(nodes, Workers(4, {{"memory", 40e9}}), "PACK", &why));
  EXPECT_EQ(why,
            "needs 4 x {memory: 40000000000}; free: cpu-1 {CPU: 32, memory: 64000000000}, gpu-1 {CPU: 16, GPU: 2, "
            "memory: 64000000000}, gpu-2 {CPU: 16, GPU: 4, memory: 64000000000, nvlink: 1}");
}

TEST(PlaceGangTest, LabelSelectors) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 4}}), Node("b", {{"CPU", 4}}), Node("c", {{"CPU", 4}})};
  nodes[0].labels = {{"zone", "us-1"}, {"gpu", "a100"}};
  nodes[1].labels = {{"zone", "us-2"}};
  nodes[2].labels = {{"zone", "eu-1"}};
  auto where = [&](LabelSelector s, int n = 1) { return Nodes(PlaceGang(nodes, Workers(n, {{"CPU", 1}}, s), "SPREAD")); };
  EXPECT_EQ(where({{"zone", "us-2"}}), V{"b"});
  EXPECT_EQ(where({{"zone", "!us-2"}}, 2), (V{"a", "c"}));
  EXPECT_EQ(where({{"zone", "in(us-1,eu-1)"}}, 2), (V{"a", "c"}));
  EXPECT_EQ(where({{"zone", "!in(us-1, eu-1)"}}), V{"b"});
  EXPECT_EQ(where({{"gpu", "!a100"}}, 2), (V{"b", "c"}));  // absent label passes a negation
  EXPECT_EQ(where({{"gpu", "a100"}, {"zone", "us-1"}}), V{"a"});
  std::string why;
  EXPECT_FALSE(PlaceGang(nodes, Workers(5, {{"CPU", 1}}, {{"zone", "us-1"}}), "PACK", &why));
  EXPECT_EQ(why,
            "needs 5 x {CPU: 1} with labels {zone: us-1}; free: a {CPU: 4}, b {CPU: 4} (labels do not match), "
            "c {CPU: 4} (labels do not match)");
}

// ---- infeasible ever vs busy ---------------------------------------------------------

TEST(IsFeasibleEverTest, BusyIsNotInfeasible) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 4}, {"GPU", 2}}, {{"CPU", 4}, {"GPU", 2}})};
  EXPECT_FALSE(PlaceGang(nodes, Workers(2, {{"GPU", 1}}), "PACK"));
  EXPECT_TRUE(IsFeasibleEver(nodes, Workers(2, {{"GPU", 1}}), "PACK"));
}

TEST(IsFeasibleEverTest, TooBigForEveryNode) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 8}, {"GPU", 2}}), Node("b", {{"CPU", 8}}),
                                     Node("z", {{"CPU", 8}, {"GPU", 8}}, {}, /*alive=*/false)};
  std::string why;
  EXPECT_FALSE(IsFeasibleEver(nodes, Workers(2, {{"GPU", 3}}), "PACK", &why));
  EXPECT_EQ(why, "no alive node can ever hold {GPU: 3}; capacity: a {CPU: 8, GPU: 2}, b {CPU: 8}");
}

TEST(IsFeasibleEverTest, StrategyCanMakeItImpossible) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 8}}), Node("b", {{"CPU", 8}})};
  std::string why;
  EXPECT_TRUE(IsFeasibleEver(nodes, Workers(3, {{"CPU", 1}}), "PACK"));
  EXPECT_FALSE(IsFeasibleEver(nodes, Workers(3, {{"CPU", 1}}), "STRICT_SPREAD", &why));
  EXPECT_EQ(why,
            "the cluster can never fit this job: STRICT_SPREAD needs 3 x {CPU: 1} on 3 different nodes; "
            "capacity: a {CPU: 8}, b {CPU: 8}");
  EXPECT_FALSE(IsFeasibleEver(nodes, Workers(9, {{"CPU", 1}}), "STRICT_PACK"));
  EXPECT_FALSE(IsFeasibleEver(nodes, Workers(17, {{"CPU", 1}}), "PACK"));
  EXPECT_FALSE(IsFeasibleEver({}, Workers(1, {{"CPU", 1}}), "PACK"));
  EXPECT_FALSE(IsFeasibleEver(nodes, Workers(1, {{"CPU", 1}}), "BOGUS"));
}

// ---- single entrypoint -----------------------------------------------------------------

TEST(PlaceSingleTest, NoResourcesGoesToTheHead) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 8}}), Node("head", {{"CPU", 1}}, {{"CPU", 1}}),
                                     Node("b", {{"CPU", 8}})};
  nodes[1].is_head = true;
  EXPECT_EQ(PlaceSingle(nodes, {}, /*prefer_head=*/true), "head");  // even when its CPUs are in use
  nodes[1].alive = false;
  EXPECT_EQ(PlaceSingle(nodes, {}, true), "a");
  nodes[1].alive = true;
  nodes[1].labels = {{"role", "head"}};
  EXPECT_EQ(PlaceSingle(nodes, {}, true, {{"role", "!head"}}), "a");
}

TEST(PlaceSingleTest, WithResourcesPicksTheLeastLoadedFittingNode) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 8}}, {{"CPU", 6}}), Node("b", {{"CPU", 8}}, {{"CPU", 2}}),
                                     Node("c", {{"CPU", 4}, {"GPU", 1}}, {{"CPU", 3}}),
                                     Node("head", {{"CPU", 8}})};
  nodes[3].is_head = true;
  nodes[3].used = {{"CPU", 4}};
  EXPECT_EQ(PlaceSingle(nodes, {{"CPU", 2}}, /*prefer_head=*/false), "b");
  EXPECT_EQ(PlaceSingle(nodes, {{"GPU", 1}}, false), "c");
  std::string why;
  EXPECT_FALSE(PlaceSingle(nodes, {{"CPU", 7}}, false, {}, &why));
  EXPECT_EQ(why, "needs {CPU: 7}; free: a {CPU: 2}, b {CPU: 6}, c {CPU: 1, GPU: 1}, head {CPU: 4}");
  EXPECT_FALSE(PlaceSingle({}, {}, true, {}, &why));
  EXPECT_EQ(why, "needs {}; free: no nodes");
}

// ---- commit and ranks ------------------------------------------------------------------------

TEST(CommitPlacementTest, AddsBundlesToUsed) {
  std::vector<NodeSnapshot> nodes = {Node("a", {{"CPU", 4}}), Node("b", {{"CPU", 4}})};
  auto bundles = Workers(3, {{"CPU", 2}});
  auto p = PlaceGang(nodes, bundles, "PACK");
  ASSERT_TRUE(p);
  CommitPlacement(&nodes, bundles, *p);
  EXPECT_EQ(nodes[0].used.Get("CPU") + nodes[1].used.Get("CPU"), 6);
  EXPECT_FALSE(PlaceGang(nodes, bundles, "PACK"));
  EXPECT_TRUE(PlaceGang(nodes, Workers(1, {{"CPU", 2}}), "PACK"));
}

TEST(AssignRanksTest, GroupsByNodeInOrderOfFirstAppearance) {
  Placement p{{"b", "a", "b", "a", "c"}};
  std::vector<RankSlot> want = {
      {0, 0, "b", 0, 2, 0}, {1, 2, "b", 1, 2, 0}, {2, 1, "a", 0, 2, 1}, {3, 3, "a", 1, 2, 1}, {4, 4, "c", 0, 1, 2},
  };
  EXPECT_EQ(AssignRanks(p), want);
  EXPECT_TRUE(AssignRanks(Placement{}).empty());
  auto one_node = AssignRanks(Placement{V(4, "x")});
  ASSERT_EQ(one_node.size(), 4u);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(one_node[r].rank, r);
    EXPECT_EQ(one_node[r].local_rank, r);
    EXPECT_EQ(one_node[r].local_world_size, 4);
    EXPECT_EQ(one_node[r].node_rank, 0);
  }
}

TEST(PlaceGangTest, LargeGangsAreQuick) {
  // 512 nodes x 8 GPUs; 4096 one-GPU workers under every strategy.
  std::vector<NodeSnapshot> nodes;
  for (int i = 0; i < 512; ++i) {
    char id[16];
    std::snprintf(id, sizeof(id), "node-%03d", i);
    nodes.push_back(Node(id, {{"CPU", 64}, {"GPU", 8}}));
  }
  auto workers = Workers(4096, {{"CPU", 1}, {"GPU", 1}});
  auto pack = PlaceGang(nodes, workers, "PACK");
  ASSERT_TRUE(pack);
  EXPECT_EQ(AssignRanks(*pack).back().node_rank, 511);
  EXPECT_TRUE(PlaceGang(nodes, workers, "SPREAD"));
  EXPECT_FALSE(PlaceGang(nodes, workers, "STRICT_PACK"));
  EXPECT_FALSE(PlaceGang(nodes, workers, "STRICT_SPREAD"));
  EXPECT_TRUE(PlaceGang(nodes, Workers(512, {{"GPU", 8}}), "STRICT_SPREAD"));
  EXPECT_FALSE(IsFeasibleEver(nodes, Workers(4097, {{"GPU", 1}}), "PACK"));
}

// ---- property test ---------------------------------------------------------------------------

// How many copies of `b` fit on `n` right now.
int Slots(const NodeSnapshot& n, const Bundle& b) {
  if (!n.alive || !jobs::MatchesLabels(b.label_selector, n.labels)) return 0;
  Resources free = n.Free();
  int k = 0;
  while (k < 64 && free.Fits(b.resources.Times(k + 1))) ++k;
  return k;
}

// Brute force for identical bundles: can n copies be placed under `strategy`?
bool Feasible(const std::vector<NodeSnapshot>& nodes, const Bundle& b, int n, const std::string& strategy) {
  int total = 0, max_one = 0, hosts = 0;
  for (const NodeSnapshot& node : nodes) {
    int s = Slots(node, b);
    total += s;
    max_one = std::max(max_one, s);
    hosts += s > 0;
  }
  if (strategy == "STRICT_PACK") return max_one >= n;
  if (strategy == "STRICT_SPREAD") return hosts >= n;
  return total >= n;
}

TEST(PlaceGangPropertyTest, RandomClustersNeverOvercommitAndMatchTheOracle) {
  std::mt19937 rng(20240531);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const std::vector<std::string> strategies = {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"};
  const std::vector<std::string> zones = {"z1", "z2"};
  int placed = 0, refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<NodeSnapshot> nodes;
    int num_nodes = uniform(0, 6);
    for (int i = 0; i < num_nodes; ++i) {
      Resources total{{"CPU", static_cast<double>(uniform(0, 8))}, {"GPU", static_cast<double>(uniform(0, 4))}};
      if (uniform(0, 3) == 0) total.Set("special", uniform(1, 3));
      if (uniform(0, 2) == 0) total.Set("memory", uniform(1, 4) * 1e9);
      Resources used;
      for (const auto& [k, v] : total.amounts) used.Set(k, std::floor(v * uniform(0, 4) / 4.0 * 2) / 2);
      NodeSnapshot n = Node("n" + std::to_string(i), total, used, /*alive=*/uniform(0, 5) != 0);
      n.labels = {{"zone", zones[uniform(0, 1)]}};
      nodes.push_back(std::move(n));
    }
    std::shuffle(nodes.begin(), nodes.end(), rng);
    const std::string& strategy = strategies[uniform(0, 3)];
    bool mixed = uniform(0, 3) == 0;
    std::vector<Bundle> bundles;
    int count = uniform(1, 8);
    for (int b = 0; b < count; ++b) {
      if (b > 0 && !mixed) {
        bundles.push_back(bundles[0]);
        continue;
      }
      Bundle bundle;
      bundle.resources.Set("CPU", uniform(0, 4) * 0.5);
      if (uniform(0, 2) == 0) bundle.resources.Set("GPU", uniform(1, 2));
      if (uniform(0, 5) == 0) bundle.resources.Set("special", 1);
      if (uniform(0, 5) == 0) bundle.resources.Set("memory", 1e9);
      if (uniform(0, 4) == 0) bundle.label_selector = {{"zone", zones[uniform(0, 1)]}};
      bundles.push_back(bundle);
    }

    std::string why;
    auto p = PlaceGang(nodes, bundles, strategy, &why);
    if (!mixed) {
      EXPECT_EQ(p.has_value(), Feasible(nodes, bundles[0], count, strategy))
          << strategy << " x" << count << " " << bundles[0].resources.ToString() << " why: " << why;
    }
    // Deterministic, and independent of the order nodes are listed in.
    std::vector<NodeSnapshot> reordered = nodes;
    std::reverse(reordered.begin(), reordered.end());
    EXPECT_EQ(PlaceGang(reordered, bundles, strategy), p);
    if (!p) {
      ++refused;
      EXPECT_FALSE(why.empty());
      continue;
    }
    ++placed;
    EXPECT_TRUE(IsFeasibleEver(nodes, bundles, strategy));
    ASSERT_EQ(p->node_of_bundle.size(), bundles.size());
    // No node ever gets more than it has free; only alive, label-matching nodes.
    std::map<std::string, Resources> taken;
    for (size_t b = 0; b < bundles.size(); ++b) taken[p->node_of_bundle[b]].Add(bundles[b].resources);
    for (const auto& [id, demand] : taken) {
      auto it = std::find_if(nodes.begin(), nodes.end(), [&](const NodeSnapshot& n) { return n.node_id == id; });
      ASSERT_NE(it, nodes.end()) << id;
      EXPECT_TRUE(it->alive) << id;
      EXPECT_TRUE(it->Free().Fits(demand)) << id << " free " << it->Free().ToString() << " given " << demand.ToString();
    }
    for (size_t b = 0; b < bundles.size(); ++b) {
      auto it = std::find_if(nodes.begin(), nodes.end(),
                             [&](const NodeSnapshot& n) { return n.node_id == p->node_of_bundle[b]; });
      EXPECT_TRUE(jobs::MatchesLabels(bundles[b].label_selector, it->labels));
    }
    std::set<std::string> distinct(p->node_of_bundle.begin(), p->node_of_bundle.end());
    if (strategy == "STRICT_PACK") {
      EXPECT_EQ(distinct.size(), 1u);
    }
    if (strategy == "STRICT_SPREAD") {
      EXPECT_EQ(distinct.size(), bundles.size());
    }
    // Ranks: a permutation of the bundles, contiguous per node.
    auto ranks = AssignRanks(*p);
    ASSERT_EQ(ranks.size(), bundles.size());
    std::set<int> seen;
    for (size_t r = 0; r < ranks.size(); ++r) {
      seen.insert(ranks[r].bundle_index);
      EXPECT_EQ(ranks[r].node_id, p->node_of_bundle[ranks[r].bundle_index]);
      if (r > 0 && ranks[r].node_id != ranks[r - 1].node_id) {
        EXPECT_EQ(ranks[r].local_rank, 0);
        EXPECT_EQ(ranks[r].node_rank, ranks[r - 1].node_rank + 1);
      }
    }
    EXPECT_EQ(seen.size(), bundles.size());
  }
  // The generator exercises both outcomes.
  EXPECT_GT(placed, 300);
  EXPECT_GT(refused, 300);
}

}  // namespace
}  // namespace cohort::scheduler
