// The head's GET /api/cluster/status reply decoded for the autoscaler, as a
// pure function of the JSON (Operator::ReadHead adds the idle times; the
// fuzz target fuzz/fuzz_k8s_json.cc calls it directly). The reply comes over
// the network from a pod: every field is type-checked.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cohort::k8s {

struct HeadStatusNode {
  std::string address;  // the agent's address without ":port" (an IPv6 address stays whole)
  bool alive = false;   // state == "ALIVE"
  bool is_head = false;  // is_head_node
  bool busy = false;    // some resources_used value > 0
};

struct HeadStatus {
  std::vector<nlohmann::json> pending_bundles;  // the objects in pending_demand[].bundles[]
  std::vector<HeadStatusNode> nodes;
};

// nullopt when `reply` is not a JSON object. Anything else of an unexpected
// type is skipped (a node or bundle that is not an object, a pending_demand
// or nodes that is not an array) or reads as the default above (an address
// or state that is not a string, is_head_node that is not a boolean, a
// resources_used value that is not a number). Never throws.
std::optional<HeadStatus> DecodeHeadStatus(const nlohmann::json& reply);

}  // namespace cohort::k8s
