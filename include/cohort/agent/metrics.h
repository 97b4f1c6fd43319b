// NodeMetrics: the Prometheus text a node agent serves on GET /metrics
// (`cohort start --address ... --metrics-port N`): this machine's CPU and
// memory use, its GPUs, the agent's state and running workers, and the
// agent process's own process_* families. See docs/cluster.md "Metrics".
//
// Thread-safe. The agent must outlive it; scrape only after Agent::Start()
// succeeded (the agent's address and resources are set there).
#pragma once

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cohort/agent/agent.h"

namespace cohort::agent {

class NodeMetrics {
 public:
  explicit NodeMetrics(const Agent& agent);

  // The exposition text. cohort_node_cpu_usage_ratio is the busy share of
  // all CPUs since the previous call (since construction for the first; the
  // previous value when no clock tick passed in between).
  std::string Text();

 private:
  const Agent& agent_;
  std::mutex mu_;
  std::vector<std::pair<std::string, double>> last_cpu_;  // GUARDED_BY(mu_)
  double last_busy_;                                       // GUARDED_BY(mu_)
};

}  // namespace cohort::agent
