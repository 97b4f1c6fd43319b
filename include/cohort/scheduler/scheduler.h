// Gang placement as a pure function: (cluster snapshot, demand) -> placement
// or none, plus the rank layout of a placement.
//
// The head's job manager takes a snapshot of its node table, asks for a
// placement, and on success adds the bundles to the nodes' used resources
// itself (CommitPlacement does that on a snapshot, for placing several jobs in
// one pass). Nothing here keeps state, reads a clock or does I/O; every result
// is deterministic for a given input (ties break on node_id). Thread-compatible.
//
// Strategies (Ray placement groups; training.md §1.2):
//   PACK          as few nodes as possible: if one node can hold every bundle,
//                 the smallest such node; else fill nodes in order of how many
//                 bundles they hold, largest first.
//   SPREAD        round-robin: each bundle goes to the fitting node holding the
//                 fewest bundles so far (best effort: falls back to PACK).
//   STRICT_PACK   every bundle on one node, or no placement.
//   STRICT_SPREAD every bundle on a different node, or no placement.
// All of them: all bundles or none; dead nodes are never used; a bundle only
// goes to a node whose labels match its selector; a node's free resources are
// total - used (negative amounts count as 0).
//
// Completeness: for identical bundles (what a scaling job asks for) every
// strategy finds a placement whenever one exists. Mixed bundles are placed
// first-fit largest-first for PACK/SPREAD (may miss a tight packing) and by
// bipartite matching for STRICT_SPREAD (exact).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cohort/jobs/resources.h"

namespace cohort::scheduler {

using jobs::LabelSelector;
using jobs::Resources;

struct NodeSnapshot {
  std::string node_id;
  std::string address;  // the agent's address; not used for decisions
  bool alive = true;
  Resources total;
  Resources used;
  std::map<std::string, std::string> labels;
  bool is_head = false;

  // total - used, negative amounts dropped.
  Resources Free() const;
};

struct Bundle {
  Resources resources;
  LabelSelector label_selector;  // empty = any node
};

struct Placement {
  std::vector<std::string> node_of_bundle;  // node_id of bundle i, one per bundle
  bool operator==(const Placement&) const = default;
};

// Places every bundle or none. On failure returns nullopt and, when why_not is
// given, a sentence naming the demand and what is free, e.g.
//   "needs 4 x {CPU: 1}; free: node-a {CPU: 1}, node-b {CPU: 2}"
//   "STRICT_SPREAD needs 3 x {GPU: 1} on 3 different nodes; free: ..."
// An unknown strategy is a failure with the reason "unknown placement strategy 'X'".
std::optional<Placement> PlaceGang(const std::vector<NodeSnapshot>& nodes, const std::vector<Bundle>& bundles,
                                   std::string_view strategy, std::string* why_not = nullptr);

// Whether the bundles could ever be placed on the currently alive nodes, i.e.
// with every node's `used` set to zero. False means waiting for other jobs to
// finish cannot help (only new or bigger nodes can); why_not then says why,
// e.g. "no alive node can ever hold {GPU: 3}; capacity: node-a {CPU: 8, GPU: 2}".
bool IsFeasibleEver(const std::vector<NodeSnapshot>& nodes, const std::vector<Bundle>& bundles,
                    std::string_view strategy, std::string* why_not = nullptr);

// Picks the node for a single (non-scaling) entrypoint, Ray style: with
// prefer_head (the caller sets it when the entrypoint requests no resources)
// an alive head node that matches the selector is chosen; otherwise the
// least-loaded fitting node (lowest max used/total over the demanded resources
// and CPU; ties by node_id). nullopt + why_not when nothing fits.
std::optional<std::string> PlaceSingle(const std::vector<NodeSnapshot>& nodes, const Resources& demand,
                                       bool prefer_head, const LabelSelector& label_selector = {},
                                       std::string* why_not = nullptr);

// Adds each bundle's resources to the `used` of the node it was placed on.
// REQUIRES: placement came from PlaceGang(*nodes, bundles, ...).
void CommitPlacement(std::vector<NodeSnapshot>* nodes, const std::vector<Bundle>& bundles,
                     const Placement& placement);

// The torchrun layout of a placement (training.md §1.7): ranks are grouped by
// node, nodes in order of first appearance in node_of_bundle, bundles of one
// node in index order, so ranks on a node are contiguous.
struct RankSlot {
  int rank = 0;
  int bundle_index = 0;      // which bundle (worker resources) this rank uses
  std::string node_id;
  int local_rank = 0;        // position among the ranks on its node
  int local_world_size = 0;  // ranks on its node
  int node_rank = 0;         // order of its node
  bool operator==(const RankSlot&) const = default;
};
std::vector<RankSlot> AssignRanks(const Placement& placement);  // one per bundle, by rank

}  // namespace cohort::scheduler
