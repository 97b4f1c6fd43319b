// NodeTable: the nodes the head knows -- their agents' sessions, resources,
// labels and liveness -- and the node records in the state store.
//
// A node is ALIVE from its registration until it misses heartbeats for the
// node timeout (Expired) or its agent says goodbye; a stream that breaks is
// not death by itself (the agent may re-register within the timeout). What a
// node's death means for jobs is the JobManager's business.
//
// Not thread-safe: the Cluster owns it under its control lock.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "clock.h"
#include "cohort/jobs/resources.h"
#include "cohort/scheduler/scheduler.h"
#include "event_log.h"
#include "cohort/rpc/head_server.h"
#include "state_writer.h"

namespace cohort::head {

// One GPU of a node, from its agent's heartbeats (checked: see Cluster).
struct NodeGpu {
  int index = 0;
  std::string name;                 // valid UTF-8, at most 128 bytes
  int64_t memory_used_bytes = -1;   // -1: unknown
  int64_t memory_total_bytes = -1;
  double utilization_percent = -1;  // 0-100; -1: unknown
};

struct Node {
  std::string node_id;
  std::string address;
  std::string hostname;
  jobs::Resources total;
  std::map<std::string, std::string> labels;
  bool alive = false;
  Clock::Steady::time_point last_seen;
  int64_t first_seen_ms = 0;
  int64_t last_seen_ms = 0;
  int64_t memory_used_bytes = 0;  // the machine's, from the last heartbeat
  std::vector<NodeGpu> gpus;      // from the last heartbeat, at most 64
  std::shared_ptr<rpc::AgentSession> session;  // null while disconnected
};

class NodeTable {
 public:
  NodeTable(const Clock* clock, StateWriter* state, EventLog* events) : clock_(clock), state_(state), events_(events) {}

  // Loads the node records of an earlier head (all DEAD until they re-register).
  Status Recover(StateStore* store);

  // A registration (or re-registration) from `session`. Returns the node
  // (its id assigned when the agent sent none).
  Node& Register(const rpc::Register& reg, const std::shared_ptr<rpc::AgentSession>& session);
  // A message on `session`: refreshes the node's last-seen time. The node,
  // or null when the session is not (or no longer) the node's current one.
  Node* Touch(const rpc::AgentSession& session);
  // The stream of `session` ended: forgets the session (true when it was the
  // node's current one).
  bool Detach(const rpc::AgentSession& session);
  // ALIVE -> DEAD (closes its session, persists, logs an event); false when
  // it was not alive. `left`: the agent stopped on purpose.
  bool MarkDead(Node& node, const std::string& why, bool left);
  // Alive nodes that have been silent longer than `timeout`.
  std::vector<std::string> Expired(std::chrono::milliseconds timeout) const;

  Node* Find(const std::string& id);
  const Node* Find(const std::string& id) const;
  // Queues `msg` on the node's stream; false when it has none.
  bool Send(const std::string& node_id, const rpc::HeadMessage& msg);
  const std::map<std::string, Node>& nodes() const { return nodes_; }
  // For the scheduler: every node with the resources `used` says are held. A
  // node that sent nothing for longer than `silent_limit` counts as not
  // alive here (no new work: its link may be cut) until it speaks again; it
  // is declared DEAD only at the node timeout (Expired).
  std::vector<scheduler::NodeSnapshot> Snapshot(const std::map<std::string, jobs::Resources>& used,
                                                const std::string& head_node_id,
                                                std::chrono::milliseconds silent_limit) const;

 private:
  void Persist(const Node& node);
  const Clock* const clock_;
  StateWriter* const state_;
  EventLog* const events_;
  std::map<std::string, Node> nodes_;
};

}  // namespace cohort::head
