// See node_table.h.
#include "node_table.h"

#include <random>

#include "cohort/common/json.h"
#include "cohort/common/logging.h"

namespace cohort::head {

using json = nlohmann::json;

namespace {
jobs::Resources FromProto(const google::protobuf::Map<std::string, double>& m) {
  jobs::Resources r;
  for (const auto& [k, v] : m)
    if (std::isfinite(v) && v >= 0 && v < 1e18) r.Set(SanitizeUtf8(k), v);
  return r;
}
}  // namespace

Status NodeTable::Recover(StateStore* store) {
  COHORT_ASSIGN_OR_RETURN(auto nodes, store->ListNodes());
  for (const auto& n : nodes) {
    Node node;
    node.node_id = n.node_id;
    node.address = n.address;
    node.first_seen_ms = n.first_seen_ms;
    node.last_seen_ms = n.last_seen_ms;
    node.alive = false;  // until it re-registers
    auto info = ParseJson(n.info_json);
    if (info.ok() && info->is_object()) {
      auto total = jobs::Resources::FromJson(info->value("resources", json::object()));
      if (total.ok()) node.total = *total;
      if (auto h = info->find("hostname"); h != info->end() && h->is_string()) node.hostname = h->get<std::string>();
    }
    nodes_[n.node_id] = std::move(node);
  }
  return Status::Ok();
}

void NodeTable::Persist(const Node& node) {
  json info = {{"resources", node.total.ToJson()}, {"hostname", node.hostname}, {"labels", node.labels}};
  Status st = state_->PutNode(node.node_id, node.address, node.alive ? "ALIVE" : "DEAD", node.first_seen_ms,
                              node.last_seen_ms, DumpJson(info));
  if (!st.ok()) COHORT_LOG(ERROR) << "node=" << node.node_id << " cannot persist: " << st.ToString();
}

Node& NodeTable::Register(const rpc::Register& reg, const std::shared_ptr<rpc::AgentSession>& session) {
  std::string id = SanitizeUtf8(reg.node_id());
  if (id.empty()) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    char buf[32];
    std::snprintf(buf, sizeof(buf), "node-%llx", static_cast<unsigned long long>(rng()));
    id = buf;
  }
  Node& node = nodes_[id];
  if (node.session && node.session.get() != session.get()) node.session->Close();
  const bool was_alive = node.alive;
  node.node_id = id;
  node.address = SanitizeUtf8(reg.address());
  node.hostname = SanitizeUtf8(reg.hostname());
  node.total = FromProto(reg.resources());
  node.labels.clear();
  for (const auto& [k, v] : reg.labels()) node.labels[SanitizeUtf8(k)] = SanitizeUtf8(v);
  node.alive = true;
  node.session = session;
  node.last_seen = clock_->Now();
  node.last_seen_ms = clock_->WallMs();
  if (node.first_seen_ms == 0) node.first_seen_ms = node.last_seen_ms;
  Persist(node);
  events_->Add(clock_->WallMs(), "node", id,
               std::string(was_alive ? "re-registered" : "joined") + " from " + node.address + " with " +
                   node.total.ToString());
  COHORT_LOG(INFO) << "node " << (was_alive ? "re-registered" : "joined") << ": node=" << id
                   << " address=" << node.address << " resources=" << node.total.ToString();
  return node;
}

Node* NodeTable::Touch(const rpc::AgentSession& session) {
  auto it = nodes_.find(session.node_id());
  if (it == nodes_.end() || it->second.session.get() != &session) return nullptr;
  Node& node = it->second;
  node.last_seen = clock_->Now();
  node.last_seen_ms = clock_->WallMs();
  if (!node.alive) {
    node.alive = true;
    Persist(node);
  }
  return &node;
}

bool NodeTable::Detach(const rpc::AgentSession& session) {
  auto it = nodes_.find(session.node_id());
  if (it == nodes_.end() || it->second.session.get() != &session) return false;
  it->second.session.reset();
  return true;
}

bool NodeTable::MarkDead(Node& node, const std::string& why, bool left) {
  if (!node.alive) return false;
  node.alive = false;
  if (node.session) {
    node.session->Close();
    node.session.reset();
  }
  Persist(node);
  events_->Add(clock_->WallMs(), "node", node.node_id, (left ? "left: " : "lost: ") + why);
  if (left)
    COHORT_LOG(INFO) << "node=" << node.node_id << " (" << node.address << ") left: " << why;
  else
    COHORT_LOG(WARN) << "node=" << node.node_id << " (" << node.address << ") is dead: " << why;
  return true;
}

std::vector<std::string> NodeTable::Expired(std::chrono::milliseconds timeout) const {
  std::vector<std::string> out;
  const auto now = clock_->Now();
  for (const auto& [id, node] : nodes_)
    if (node.alive && now - node.last_seen > timeout) out.push_back(id);
  return out;
}

Node* NodeTable::Find(const std::string& id) {
  auto it = nodes_.find(id);
  return it == nodes_.end() ? nullptr : &it->second;
}

const Node* NodeTable::Find(const std::string& id) const {
  auto it = nodes_.find(id);
  return it == nodes_.end() ? nullptr : &it->second;
}

bool NodeTable::Send(const std::string& node_id, const rpc::HeadMessage& msg) {
  Node* node = Find(node_id);
  return node != nullptr && node->session && node->session->Send(msg);
}

std::vector<scheduler::NodeSnapshot> NodeTable::Snapshot(const std::map<std::string, jobs::Resources>& used,
                                                         const std::string& head_node_id,
                                                         std::chrono::milliseconds silent_limit) const {
  std::vector<scheduler::NodeSnapshot> out;
  const auto now = clock_->Now();
  for (const auto& [id, node] : nodes_) {
    scheduler::NodeSnapshot s;
    s.node_id = id;
    s.address = node.address;
    s.alive = node.alive && node.session != nullptr && now - node.last_seen <= silent_limit;
    s.total = node.total;
    if (auto it = used.find(id); it != used.end()) s.used = it->second;
    s.labels = node.labels;
    s.is_head = id == head_node_id;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace cohort::head
