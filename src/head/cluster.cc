// Cluster: the control lock and the entry points; see cluster.h. The
// decisions live in the parts (job_manager.cc, node_table.cc, ...).
#include "cluster.h"

#include <algorithm>
#include <cmath>

#include "cohort/common/json.h"
#include "cohort/common/logging.h"
#include "cohort/storage/transfer.h"
#include "http_status.h"

namespace cohort::head {

namespace {
constexpr const char* kAgentStopped = "its agent stopped";

ResultsFinalizer::Lister DefaultLister() {
  return [](const std::string& uri) { return storage::ListAll(uri, /*recursive=*/true); };
}
}  // namespace

Cluster::Cluster(HeadOptions options, StateStore* state, LogStore* logs, Deps deps)
    : options_(std::move(options)),
      deps_(std::move(deps)),
      logs_(logs),
      store_(state),
      writer_(state),
      packages_(options_.state_dir + "/packages"),
      tokens_(JobTokens::Random()),
      pool_(std::make_unique<WorkPool>(deps_.pool_threads, deps_.pool_queue)),
      finalizer_(std::make_unique<ResultsFinalizer>(pool_.get(), deps_.clock,
                                                    deps_.lister ? deps_.lister : DefaultLister(),
                                                    deps_.listing_deadline)),
      log_writer_(std::make_unique<LogWriter>(logs)),
      nodes_(deps_.clock, &writer_, &events_),
      jobs_(JobManagerDeps{options_, deps_.clock, &writer_, logs, log_writer_.get(), &nodes_, &events_, &metrics_, finalizer_.get(),
                           &tokens_, &packages_}) {}

Cluster::~Cluster() { pool_->Stop(); }

Cluster::Reply Cluster::JsonReply(int status, const json_t& body) { return {status, DumpJson(body), true}; }

Cluster::Reply Cluster::FromStatus(const Status& st) {
  return {HttpStatusOf(st), SanitizeUtf8(st.message()), false};
}

Status Cluster::Recover() {
  auto tokens = JobTokens::Load(options_.state_dir);
  if (!tokens.ok()) return tokens.status();
  tokens_ = std::move(tokens).value();
  MutexLock lock(&mu_);
  COHORT_RETURN_IF_ERROR(jobs_.Recover(store_));
  return nodes_.Recover(store_);
}

// ---------------------------------------------------------------------------
// Agents

rpc::HeadMessage Cluster::OnRegister(const rpc::Register& reg, const std::shared_ptr<rpc::AgentSession>& session) {
  MutexLock lock(&mu_);
  Node& node = nodes_.Register(reg, session);
  jobs_.OnRegistered(node, reg);
  rpc::HeadMessage reply;
  reply.mutable_registered()->set_node_id(node.node_id);
  reply.mutable_registered()->set_heartbeat_interval_ms(
      static_cast<uint32_t>(std::max<int64_t>(100, options_.node_timeout.count() / 10)));
  return reply;
}

namespace {

// A heartbeat's GPUs, as far as they can be believed: at most 64, names
// valid UTF-8 of at most 128 bytes, sizes >= 0 or -1, utilization 0-100 or -1.
std::vector<NodeGpu> CheckedGpus(const rpc::Heartbeat& hb) {
  constexpr int kMaxGpus = 64;
  constexpr size_t kMaxName = 128;
  std::vector<NodeGpu> out;
  for (const rpc::GpuStatus& g : hb.gpus()) {
    if (static_cast<int>(out.size()) >= kMaxGpus) break;
    NodeGpu n;
    n.index = std::clamp(g.index(), 0, 1 << 16);
    n.name = SanitizeUtf8(std::string_view(g.name()).substr(0, kMaxName));
    if (n.name.size() > kMaxName) n.name.resize(kMaxName);  // replacement characters can lengthen it
    n.name = SanitizeUtf8(n.name);
    n.memory_used_bytes = g.memory_used_bytes() >= 0 ? g.memory_used_bytes() : -1;
    n.memory_total_bytes = g.memory_total_bytes() >= 0 ? g.memory_total_bytes() : -1;
    const double u = g.utilization_percent();
    n.utilization_percent = std::isfinite(u) && u >= 0 ? std::min(u, 100.0) : -1;
    out.push_back(std::move(n));
  }
  return out;
}

}  // namespace

void Cluster::OnMessage(rpc::AgentSession& session, const rpc::AgentMessage& msg) {
  MutexLock lock(&mu_);
  Node* node = nodes_.Touch(session);
  if (node == nullptr) return;  // not (or no longer) this node's session: its word does not count
  const std::string node_id = node->node_id;
  switch (msg.msg_case()) {
    case rpc::AgentMessage::kWorkerStarted: jobs_.OnWorkerStarted(node_id, msg.worker_started()); break;
    case rpc::AgentMessage::kWorkerExited: jobs_.OnWorkerExited(node_id, msg.worker_exited()); break;
    case rpc::AgentMessage::kLog: jobs_.OnLog(node_id, msg.log()); break;
    case rpc::AgentMessage::kMetrics: jobs_.OnMetrics(node_id, msg.metrics()); break;
    case rpc::AgentMessage::kHeartbeat:
      node->memory_used_bytes = std::max<int64_t>(0, msg.heartbeat().memory_used_bytes());
      node->gpus = CheckedGpus(msg.heartbeat());
      jobs_.OnHeartbeat(node_id, msg.heartbeat());
      break;
    default: break;
  }
}

void Cluster::OnDisconnect(rpc::AgentSession& session, const Status& why) {
  MutexLock lock(&mu_);
  Node* node = nodes_.Find(session.node_id());
  if (!nodes_.Detach(session)) return;
  // Not dead yet: the agent may reconnect within the node timeout.
  COHORT_LOG(INFO) << "node=" << node->node_id << " disconnected" << (why.ok() ? "" : ": " + why.message());
  if (why.ok() && nodes_.MarkDead(*node, kAgentStopped, /*left=*/true)) jobs_.OnNodeDead(node->node_id, kAgentStopped);
}

Status Cluster::GetPackage(const rpc::GetPackageRequest& request, std::string* zip_bytes) {
  const std::string name = PackageNameOf(request.uri());
  if (!ValidPackageName(name))
    return Status::NotFound("Package " + SanitizeUtf8(request.uri()) + " does not exist");
  return packages_.Read(name, zip_bytes);
}

// ---------------------------------------------------------------------------
// Tick

void Cluster::Tick() {
  MutexLock lock(&mu_);
  for (const auto& id : nodes_.Expired(options_.node_timeout)) {
    const std::string why = "no heartbeat for " + std::to_string(options_.node_timeout.count() / 1000) + " s";
    if (Node* node = nodes_.Find(id); node && nodes_.MarkDead(*node, why, /*left=*/false)) jobs_.OnNodeDead(id, why);
  }
  jobs_.Tick();
  SendLogAcks();
}

void Cluster::SendLogAcks() {
  std::map<std::string, rpc::HeadMessage> by_node;
  for (LogWriter::Ack& a : log_writer_->TakeAcks()) {
    rpc::LogMark* m = by_node[a.node_id].mutable_log_ack()->add_marks();
    m->set_job_id(std::move(a.job_id));
    m->set_attempt(a.attempt);
    m->set_rank(a.rank);
    m->set_offset(a.offset);
  }
  for (const auto& [node_id, msg] : by_node) nodes_.Send(node_id, msg);  // a node gone: it resends
}

std::set<int> Cluster::TEST_PortsInUse() {
  MutexLock lock(&mu_);
  return jobs_.ports_in_use();
}

// ---------------------------------------------------------------------------
// API

Cluster::Reply Cluster::Submit(const std::string& body) {
  if (Status st = writer_.failure(); !st.ok()) return FromStatus(st);
  MutexLock lock(&mu_);
  auto id = jobs_.Submit(body);
  if (!id.ok()) return FromStatus(id.status());
  return JsonReply(200, {{"job_id", *id}, {"submission_id", *id}});
}

Cluster::Reply Cluster::GetJob(const std::string& id, bool admin) {
  MutexLock lock(&mu_);
  auto details = jobs_.Details(id, admin);
  if (!details.ok()) return FromStatus(details.status());
  return JsonReply(200, *details);
}

Cluster::Reply Cluster::ListJobs(bool admin) {
  MutexLock lock(&mu_);
  return JsonReply(200, jobs_.List(admin));
}

Cluster::Reply Cluster::StopJob(const std::string& id) {
  MutexLock lock(&mu_);
  auto stopped = jobs_.Stop(id);
  if (!stopped.ok()) return FromStatus(stopped.status());
  return JsonReply(200, {{"stopped", *stopped}});
}

Cluster::Reply Cluster::DeleteJob(const std::string& id) {
  Status st;
  {
    MutexLock lock(&mu_);
    st = jobs_.Delete(id);
  }
  if (!st.ok()) return FromStatus(st);
  return JsonReply(200, {{"deleted", true}});
}

Cluster::Reply Cluster::JobLogs(const std::string& id) {
  auto terminal = JobIsTerminal(id);  // flushes the queued lines of a finished job
  if (!terminal.ok()) return FromStatus(terminal.status());
  if (!*terminal) log_writer_->Flush();  // what was appended before this request
  auto logs = logs_->ReadAll(id);  // without the control lock
  return JsonReply(200, {{"logs", logs.ok() ? *logs : std::string()}});
}

Cluster::Reply Cluster::JobMetrics(const std::string& id, int64_t since) {
  {
    MutexLock lock(&mu_);
    if (auto t = jobs_.IsTerminal(id); !t.ok()) return FromStatus(t.status());
  }
  auto page = store_->ListMetrics(id, since, 10000);
  if (!page.ok()) return FromStatus(page.status());
  json_t rows = json_t::array();
  for (const auto& row : page->rows) {
    auto j = ParseJson(row.json);
    if (j.ok() && j->is_object()) rows.push_back(std::move(j).value());
  }
  return JsonReply(200, {{"metrics", rows}, {"next", page->next_seq}});
}

Result<bool> Cluster::JobIsTerminal(const std::string& id) {
  Result<bool> terminal = false;
  {
    MutexLock lock(&mu_);
    terminal = jobs_.IsTerminal(id);
  }
  // A finished job's last lines may still be queued: a reader told "terminal"
  // stops reading, so they must be in the store first.
  if (terminal.ok() && *terminal) log_writer_->Flush();
  return terminal;
}

Cluster::Reply Cluster::ClusterStatus() {
  MutexLock lock(&mu_);
  return JsonReply(200, jobs_.ClusterStatus());
}

Cluster::Reply Cluster::Events(int64_t since) {
  MutexLock lock(&mu_);
  return JsonReply(200, events_.Since(since));
}

Cluster::Reply Cluster::Health() const {
  Status st = writer_.failure();
  if (st.ok()) return {200, R"({"ok":true})", true};
  return JsonReply(503, {{"ok", false}, {"reason", st.message()}});
}

Cluster::Reply Cluster::PackageExists(const std::string& name) {
  if (packages_.Exists(name)) return {200, "", false};
  return {404, "Package gcs://" + SanitizeUtf8(name) + " does not exist", false};
}

Cluster::Reply Cluster::PutPackage(const std::string& name, const std::string& body) {
  if (Status st = writer_.failure(); !st.ok()) return FromStatus(st);
  Status st = packages_.Put(name, body);
  if (!st.ok()) return FromStatus(st);
  return {200, "", false};
}

}  // namespace cohort::head
