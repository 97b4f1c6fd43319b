// Gang placement (see cohort/scheduler/scheduler.h for the strategies and
// their guarantees). Pure functions over a snapshot; deterministic.
//
// Shared vocabulary below: `candidates` are the alive nodes sorted by node_id
// (dead ones never take part), `free[c]` is the free capacity of candidate c
// while a placement is being built, and `order` is the sequence in which
// bundles are tried: largest first (GPU, then CPU, then memory, then the sum
// of the rest), original index breaking ties, so identical bundles keep their
// order and rank i stays bundle i wherever possible.
#include "cohort/scheduler/scheduler.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <tuple>

#include "cohort/jobs/job.h"

namespace cohort::scheduler {
namespace {

enum class Strategy { kPack, kSpread, kStrictPack, kStrictSpread };

std::optional<Strategy> ParseStrategy(std::string_view name) {
  if (name == jobs::kPack) return Strategy::kPack;
  if (name == jobs::kSpread) return Strategy::kSpread;
  if (name == jobs::kStrictPack) return Strategy::kStrictPack;
  if (name == jobs::kStrictSpread) return Strategy::kStrictSpread;
  return std::nullopt;
}

struct Problem {
  std::vector<const NodeSnapshot*> candidates;  // alive, by node_id
  std::vector<Resources> free;                  // per candidate
  std::vector<int> order;                       // bundle indices, largest first
  // run_end[pos]: the first position in `order` past the run of bundles
  // identical to order[pos]. A bundle that does not fit a node means the rest
  // of its run does not either, which keeps big gangs of identical workers
  // cheap: O(nodes + bundles) checks instead of O(nodes * bundles).
  std::vector<size_t> run_end;
};

bool SameBundle(const Bundle& a, const Bundle& b) {
  return a.resources == b.resources && a.label_selector == b.label_selector;
}

Problem MakeProblem(const std::vector<NodeSnapshot>& nodes, const std::vector<Bundle>& bundles) {
  Problem p;
  for (const NodeSnapshot& n : nodes) {
    if (n.alive) p.candidates.push_back(&n);
  }
  std::stable_sort(p.candidates.begin(), p.candidates.end(),
                   [](const NodeSnapshot* a, const NodeSnapshot* b) { return a->node_id < b->node_id; });
  for (const NodeSnapshot* n : p.candidates) p.free.push_back(n->Free());
  p.order.resize(bundles.size());
  std::iota(p.order.begin(), p.order.end(), 0);
  auto size_key = [&](int i) {
    const Resources& r = bundles[i].resources;
    double rest = 0;
    for (const auto& [name, amount] : r.amounts) {
      if (name != "GPU" && name != "CPU" && name != "memory") rest += amount;
    }
    return std::make_tuple(r.Get("GPU"), r.Get("CPU"), r.Get("memory"), rest);
  };
  std::stable_sort(p.order.begin(), p.order.end(), [&](int a, int b) { return size_key(a) > size_key(b); });
  p.run_end.assign(p.order.size(), p.order.size());
  for (size_t pos = p.order.size(); pos-- > 1;) {
    bool same = SameBundle(bundles[p.order[pos - 1]], bundles[p.order[pos]]);
    p.run_end[pos - 1] = same ? p.run_end[pos] : pos;
  }
  return p;
}

bool CanHost(const NodeSnapshot& node, const Resources& free, const Bundle& bundle) {
  return jobs::MatchesLabels(bundle.label_selector, node.labels) && free.Fits(bundle.resources);
}

// How many bundles (in `order`, first fit) candidate c could take on its own.
int Capacity(const Problem& p, int c, const std::vector<Bundle>& bundles) {
  Resources f = p.free[c];
  int count = 0;
  for (size_t pos = 0; pos < p.order.size();) {
    const Bundle& b = bundles[p.order[pos]];
    if (CanHost(*p.candidates[c], f, b)) {
      f.Subtract(b.resources);
      ++count;
      ++pos;
    } else {
      pos = p.run_end[pos];
    }
  }
  return count;
}

// Among candidates able to hold every bundle (capacity[c] == bundles), the one
// left with the least slack (sum over the demanded resources of leftover /
// demanded): keeps big nodes free for big jobs. -1 when none can.
int BestSingleNode(const Problem& p, const std::vector<Bundle>& bundles, const std::vector<int>& capacity) {
  Resources sum;
  for (const Bundle& b : bundles) sum.Add(b.resources);
  int best = -1;
  double best_slack = std::numeric_limits<double>::infinity();
  for (int c = 0; c < static_cast<int>(p.candidates.size()); ++c) {
    if (capacity[c] != static_cast<int>(bundles.size())) continue;
    double slack = 0;
    for (const auto& [name, amount] : sum.amounts) slack += (p.free[c].Get(name) - amount) / amount;
    if (slack < best_slack) {
      best = c;
      best_slack = slack;
    }
  }
  return best;
}

std::vector<int> Capacities(const Problem& p, const std::vector<Bundle>& bundles) {
  std::vector<int> capacity(p.candidates.size());
  for (int c = 0; c < static_cast<int>(p.candidates.size()); ++c) capacity[c] = Capacity(p, c, bundles);
  return capacity;
}

std::optional<Placement> OnNode(const Problem& p, int c, size_t count) {
  if (c < 0) return std::nullopt;
  return Placement{std::vector<std::string>(count, p.candidates[c]->node_id)};
}

std::optional<Placement> StrictPack(const Problem& p, const std::vector<Bundle>& bundles) {
  return OnNode(p, BestSingleNode(p, bundles, Capacities(p, bundles)), bundles.size());
}

std::optional<Placement> Pack(Problem p, const std::vector<Bundle>& bundles) {
  std::vector<int> capacity = Capacities(p, bundles);
  if (int c = BestSingleNode(p, bundles, capacity); c >= 0) return OnNode(p, c, bundles.size());
  std::vector<int> by_capacity(p.candidates.size());
  std::iota(by_capacity.begin(), by_capacity.end(), 0);
  std::stable_sort(by_capacity.begin(), by_capacity.end(),
                   [&](int a, int b) { return capacity[a] > capacity[b]; });
  Placement out{std::vector<std::string>(bundles.size())};
  std::vector<size_t> unplaced(p.order.size());  // positions in `order`, ascending
  std::iota(unplaced.begin(), unplaced.end(), 0);
  for (int c : by_capacity) {
    std::vector<size_t> still;
    for (size_t i = 0; i < unplaced.size();) {
      size_t pos = unplaced[i];
      const Bundle& b = bundles[p.order[pos]];
      if (CanHost(*p.candidates[c], p.free[c], b)) {
        p.free[c].Subtract(b.resources);
        out.node_of_bundle[p.order[pos]] = p.candidates[c]->node_id;
        ++i;
      } else {
        while (i < unplaced.size() && unplaced[i] < p.run_end[pos]) still.push_back(unplaced[i++]);
      }
    }
    unplaced = std::move(still);
    if (unplaced.empty()) return out;
  }
  return std::nullopt;
}

// Each bundle goes to the fitting candidate with the fewest bundles so far
// (lowest index on ties). Per run of identical bundles, `ready` holds the
// candidates that still fit, ordered by (hosted, index).
std::optional<Placement> Spread(const Problem& initial, const std::vector<Bundle>& bundles) {
  Problem p = initial;
  std::vector<int> hosted(p.candidates.size(), 0);
  Placement out{std::vector<std::string>(bundles.size())};
  for (size_t pos = 0; pos < p.order.size();) {
    const size_t end = p.run_end[pos];
    const Bundle& b = bundles[p.order[pos]];
    std::set<std::pair<int, int>> ready;
    for (int c = 0; c < static_cast<int>(p.candidates.size()); ++c) {
      if (CanHost(*p.candidates[c], p.free[c], b)) ready.emplace(hosted[c], c);
    }
    for (; pos < end; ++pos) {
      if (ready.empty()) return Pack(initial, bundles);  // best effort: a packing may still exist
      int c = ready.begin()->second;
      ready.erase(ready.begin());
      p.free[c].Subtract(b.resources);
      ++hosted[c];
      out.node_of_bundle[p.order[pos]] = p.candidates[c]->node_id;
      if (CanHost(*p.candidates[c], p.free[c], b)) ready.emplace(hosted[c], c);
    }
  }
  return out;
}

// Maximum bipartite matching bundle -> distinct candidate (Kuhn's augmenting
// paths). Bundles and candidates are tried in index order, so the result is
// deterministic.
std::optional<Placement> StrictSpread(const Problem& p, const std::vector<Bundle>& bundles) {
  const int n = static_cast<int>(bundles.size());
  const int m = static_cast<int>(p.candidates.size());
  if (n > m) return std::nullopt;
  std::vector<std::vector<int>> hosts(n);
  for (int b = 0; b < n; ++b) {
    if (b > 0 && bundles[b].resources == bundles[b - 1].resources &&
        bundles[b].label_selector == bundles[b - 1].label_selector) {
      hosts[b] = hosts[b - 1];  // identical workers: one scan of the nodes
      continue;
    }
    for (int c = 0; c < m; ++c) {
      if (CanHost(*p.candidates[c], p.free[c], bundles[b])) hosts[b].push_back(c);
    }
  }
  std::vector<int> bundle_on(m, -1);
  std::vector<char> visited;
  std::function<bool(int)> augment = [&](int b) {
    for (int c : hosts[b]) {  // a free host first: keeps bundle i on the i-th node when it can
      if (bundle_on[c] < 0) {
        bundle_on[c] = b;
        return true;
      }
    }
    for (int c : hosts[b]) {
      if (visited[c]) continue;
      visited[c] = 1;
      if (augment(bundle_on[c])) {
        bundle_on[c] = b;
        return true;
      }
    }
    return false;
  };
  for (int b = 0; b < n; ++b) {
    visited.assign(m, 0);
    if (!augment(b)) return std::nullopt;
  }
  Placement out{std::vector<std::string>(n)};
  for (int c = 0; c < m; ++c) {
    if (bundle_on[c] >= 0) out.node_of_bundle[bundle_on[c]] = p.candidates[c]->node_id;
  }
  return out;
}

// "4 x {CPU: 1}" or "2 x {CPU: 1} + 1 x {GPU: 1} with labels {zone: a}".
std::string DescribeDemand(const std::vector<Bundle>& bundles) {
  std::vector<std::pair<const Bundle*, int>> groups;
  for (const Bundle& b : bundles) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
      return g.first->resources == b.resources && g.first->label_selector == b.label_selector;
    });
    if (it == groups.end()) {
      groups.emplace_back(&b, 1);
    } else {
      ++it->second;
    }
  }
  std::string s;
  for (const auto& [b, count] : groups) {
    if (!s.empty()) s += " + ";
    s += std::to_string(count) + " x " + b->resources.ToString();
    if (!b->label_selector.empty()) {
      s += " with labels {";
      bool first = true;
      for (const auto& [k, v] : b->label_selector) {
        s += (first ? "" : ", ") + k + ": " + v;
        first = false;
      }
      s += "}";
    }
  }
  return s.empty() ? "nothing" : s;
}

// "free: node-a {CPU: 1}, node-b {CPU: 2} (labels do not match), node-c (dead)".
std::string DescribeNodes(const std::vector<NodeSnapshot>& nodes, const std::vector<Bundle>& bundles,
                          bool capacity) {
  std::vector<const NodeSnapshot*> sorted;
  for (const NodeSnapshot& n : nodes) sorted.push_back(&n);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const NodeSnapshot* a, const NodeSnapshot* b) { return a->node_id < b->node_id; });
  std::string s = capacity ? "capacity: " : "free: ";
  if (sorted.empty()) return s + "no nodes";
  bool first = true;
  for (const NodeSnapshot* n : sorted) {
    s += first ? "" : ", ";
    first = false;
    s += n->node_id;
    if (!n->alive) {
      s += " (dead)";
      continue;
    }
    s += " " + (capacity ? n->total.ClampedAtZero() : n->Free()).ToString();
    bool any_match = bundles.empty();
    for (const Bundle& b : bundles) any_match = any_match || jobs::MatchesLabels(b.label_selector, n->labels);
    if (!any_match) s += " (labels do not match)";
  }
  return s;
}

std::string DescribeFailure(const std::vector<NodeSnapshot>& nodes, const std::vector<Bundle>& bundles,
                            Strategy strategy, bool capacity) {
  std::string s;
  switch (strategy) {
    case Strategy::kStrictPack: s = "STRICT_PACK needs " + DescribeDemand(bundles) + " on one node"; break;
    case Strategy::kStrictSpread:
      s = "STRICT_SPREAD needs " + DescribeDemand(bundles) + " on " + std::to_string(bundles.size()) +
          " different nodes";
      break;
    default: s = "needs " + DescribeDemand(bundles); break;
  }
  return s + "; " + DescribeNodes(nodes, bundles, capacity);
}

std::optional<Placement> Place(const std::vector<NodeSnapshot>& nodes, const std::vector<Bundle>& bundles,
                               Strategy strategy) {
  if (bundles.empty()) return Placement{};
  Problem p = MakeProblem(nodes, bundles);
  switch (strategy) {
    case Strategy::kPack: return Pack(std::move(p), bundles);
    case Strategy::kSpread: return Spread(p, bundles);
    case Strategy::kStrictPack: return StrictPack(p, bundles);
    case Strategy::kStrictSpread: return StrictSpread(p, bundles);
  }
  return std::nullopt;
}

// max over `keys` (with total > 0) of used / total.
double Load(const NodeSnapshot& n, const Resources& demand) {
  double load = 0;
  auto consider = [&](const std::string& key) {
    double total = n.total.Get(key);
    if (total > 0) load = std::max(load, n.used.Get(key) / total);
  };
  consider("CPU");
  for (const auto& [key, amount] : demand.amounts) consider(key);
  return load;
}

}  // namespace

Resources NodeSnapshot::Free() const {
  Resources free = total;
  free.Subtract(used);
  return free.ClampedAtZero();
}

std::optional<Placement> PlaceGang(const std::vector<NodeSnapshot>& nodes, const std::vector<Bundle>& bundles,
                                   std::string_view strategy, std::string* why_not) {
  auto parsed = ParseStrategy(strategy);
  if (!parsed) {
    if (why_not) *why_not = "unknown placement strategy '" + std::string(strategy) + "'";
    return std::nullopt;
  }
  auto placement = Place(nodes, bundles, *parsed);
  if (!placement && why_not) *why_not = DescribeFailure(nodes, bundles, *parsed, /*capacity=*/false);
  return placement;
}

bool IsFeasibleEver(const std::vector<NodeSnapshot>& nodes, const std::vector<Bundle>& bundles,
                    std::string_view strategy, std::string* why_not) {
  auto parsed = ParseStrategy(strategy);
  if (!parsed) {
    if (why_not) *why_not = "unknown placement strategy '" + std::string(strategy) + "'";
    return false;
  }
  std::vector<NodeSnapshot> empty;
  for (const NodeSnapshot& n : nodes) {
    if (!n.alive) continue;
    empty.push_back(n);
    empty.back().used = Resources();
  }
  if (Place(empty, bundles, *parsed)) return true;
  if (why_not) {
    // Name the first bundle no node could hold even alone: the usual cause.
    for (const Bundle& b : bundles) {
      bool any = false;
      for (const NodeSnapshot& n : empty) any = any || CanHost(n, n.total, b);
      if (!any) {
        *why_not = "no alive node can ever hold " + DescribeDemand({b}).substr(4) + "; " +
                   DescribeNodes(empty, bundles, /*capacity=*/true);
        return false;
      }
    }
    *why_not = "the cluster can never fit this job: " + DescribeFailure(empty, bundles, *parsed, true);
  }
  return false;
}

std::optional<std::string> PlaceSingle(const std::vector<NodeSnapshot>& nodes, const Resources& demand,
                                       bool prefer_head, const LabelSelector& label_selector,
                                       std::string* why_not) {
  Bundle bundle{demand, label_selector};
  std::vector<const NodeSnapshot*> fitting;
  for (const NodeSnapshot& n : nodes) {
    if (n.alive && CanHost(n, n.Free(), bundle)) fitting.push_back(&n);
  }
  std::stable_sort(fitting.begin(), fitting.end(),
                   [](const NodeSnapshot* a, const NodeSnapshot* b) { return a->node_id < b->node_id; });
  if (prefer_head) {
    for (const NodeSnapshot* n : fitting) {
      if (n->is_head) return n->node_id;
    }
  }
  const NodeSnapshot* best = nullptr;
  double best_load = 0;
  for (const NodeSnapshot* n : fitting) {
    double load = Load(*n, demand);
    if (!best || load < best_load) {
      best = n;
      best_load = load;
    }
  }
  if (best) return best->node_id;
  if (why_not) {
    *why_not = "needs " + DescribeDemand({bundle}).substr(4) + "; " + DescribeNodes(nodes, {bundle}, false);
  }
  return std::nullopt;
}

void CommitPlacement(std::vector<NodeSnapshot>* nodes, const std::vector<Bundle>& bundles,
                     const Placement& placement) {
  for (size_t b = 0; b < bundles.size() && b < placement.node_of_bundle.size(); ++b) {
    for (NodeSnapshot& n : *nodes) {
      if (n.node_id == placement.node_of_bundle[b]) {
        n.used.Add(bundles[b].resources);
        break;
      }
    }
  }
}

std::vector<RankSlot> AssignRanks(const Placement& placement) {
  std::vector<std::string> node_order;  // by first appearance
  std::vector<std::vector<int>> bundles_of_node;
  for (int b = 0; b < static_cast<int>(placement.node_of_bundle.size()); ++b) {
    const std::string& id = placement.node_of_bundle[b];
    auto it = std::find(node_order.begin(), node_order.end(), id);
    if (it == node_order.end()) {
      node_order.push_back(id);
      bundles_of_node.emplace_back();
      it = node_order.end() - 1;
    }
    bundles_of_node[it - node_order.begin()].push_back(b);
  }
  std::vector<RankSlot> slots;
  for (int node_rank = 0; node_rank < static_cast<int>(node_order.size()); ++node_rank) {
    const std::vector<int>& local = bundles_of_node[node_rank];
    for (int local_rank = 0; local_rank < static_cast<int>(local.size()); ++local_rank) {
      RankSlot s;
      s.rank = static_cast<int>(slots.size());
      s.bundle_index = local[local_rank];
      s.node_id = node_order[node_rank];
      s.local_rank = local_rank;
      s.local_world_size = static_cast<int>(local.size());
      s.node_rank = node_rank;
      slots.push_back(std::move(s));
    }
  }
  return slots;
}

}  // namespace cohort::scheduler
