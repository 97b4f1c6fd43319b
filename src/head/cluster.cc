// Cluster: nodes, jobs and every decision about them; see cluster.h.
#include "cluster.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "cohort/common/logging.h"
#include "cohort/scheduler/scheduler.h"
#include "cohort/storage/transfer.h"

namespace cohort::head {
namespace {

namespace fs = std::filesystem;
using jobs::JobStatus;
using json = nlohmann::json;

Cluster::Reply JsonReply(int status, const json& body) { return {status, body.dump(), true}; }
Cluster::Reply TextReply(int status, std::string text) { return {status, std::move(text), false}; }
Cluster::Reply NotFoundJob(const std::string& id) {
  return TextReply(404, "Job " + id + " does not exist");
}

jobs::Resources FromProto(const google::protobuf::Map<std::string, double>& m) {
  jobs::Resources r;
  for (const auto& [k, v] : m) r.Set(k, v);
  return r;
}

constexpr const char* kAgentStopped = "its agent stopped";

bool ValidPackageName(const std::string& name) {
  if (name.empty() || name.size() > 200 || name.find("..") != std::string::npos) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return name.size() > 4 && name.substr(name.size() - 4) == ".zip";
}

// A zip whose entries all stay inside the extraction directory: no absolute
// paths, no "..", no symlinks (zip-slip).
Status ValidateZip(const std::string& bytes) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (src == nullptr) return Status::InvalidArgument("package is not a zip archive");
  zip_t* za = zip_open_from_source(src, ZIP_RDONLY, &error);
  if (za == nullptr) {
    zip_source_free(src);
    return Status::InvalidArgument(std::string("package is not a zip archive: ") + zip_error_strerror(&error));
  }
  Status st;
  const zip_int64_t n = zip_get_num_entries(za, 0);
  for (zip_int64_t i = 0; i < n && st.ok(); ++i) {
    const char* name = zip_get_name(za, static_cast<zip_uint64_t>(i), 0);
    std::string entry = name ? name : "";
    if (entry.empty() || entry[0] == '/' || entry.find('\\') != std::string::npos) {
      st = Status::InvalidArgument("package entry '" + entry + "' has an absolute or invalid path");
      break;
    }
    std::stringstream parts(entry);
    std::string part;
    while (std::getline(parts, part, '/'))
      if (part == "..") st = Status::InvalidArgument("package entry '" + entry + "' escapes the working dir (..)");
    zip_uint8_t opsys = 0;
    zip_uint32_t attributes = 0;
    if (st.ok() && zip_file_get_external_attributes(za, static_cast<zip_uint64_t>(i), 0, &opsys, &attributes) == 0 &&
        opsys == ZIP_OPSYS_UNIX && S_ISLNK((attributes >> 16) & 0xFFFF))
      st = Status::InvalidArgument("package entry '" + entry + "' is a symbolic link, which could escape the working dir");
  }
  zip_discard(za);
  return st;
}

// The directory holding cohort.py: <prefix>/python next to bin/ in the
// build tree (build/bin/cohort -> python/), or <prefix>/share/cohort/python.
std::string PythonModuleDir() {
  static const std::string dir = [] {
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return std::string();
    for (fs::path candidate : {exe.parent_path().parent_path().parent_path() / "python",
                               exe.parent_path().parent_path() / "share" / "cohort" / "python",
                               fs::path(COHORT_PYTHON_DIR)})
      if (fs::exists(candidate / "cohort.py", ec)) return candidate.string();
    return std::string();
  }();
  return dir;
}

std::string PackageNameOf(const std::string& uri) {
  const std::string prefix = "gcs://";
  return uri.rfind(prefix, 0) == 0 ? uri.substr(prefix.size()) : "";
}

}  // namespace

Cluster::Cluster(HeadOptions options, StateStore* state, LogStore* logs)
    : options_(std::move(options)), state_(state), logs_(logs) {}

int64_t Cluster::NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------
// Recovery and persistence

Status Cluster::Recover() {
  std::lock_guard<std::mutex> lock(mu_);
  COHORT_ASSIGN_OR_RETURN(auto stored, state_->ListJobs());
  const auto now = Clock::now();
  for (const auto& [id, text] : stored) {
    auto parsed = json::parse(text, nullptr, false);
    if (parsed.is_discarded()) {
      COHORT_LOG(ERROR) << "job " << id << ": unreadable record in the state store; skipped";
      continue;
    }
    auto record = jobs::JobRecordFromJson(parsed);
    if (!record.ok()) {
      COHORT_LOG(ERROR) << "job " << id << ": " << record.status().ToString();
      continue;
    }
    Job job;
    job.record = std::move(record).value();
    job.checkpoint_dir = job.record.internal.value("checkpoint_dir", "");
    job.results_dir = job.record.internal.value("results_dir", "");
    if (job.record.status == JobStatus::kRunning) {
      // Its workers may still run on their nodes: wait for the agents to
      // re-register and report them.
      job.reattach_deadline = now + options_.reattach_timeout;
      for (const auto& w : job.record.workers) {
        Worker worker;
        worker.node_id = w.node_id;
        if (job.record.spec.scaling) worker.resources = job.record.spec.scaling->resources_per_worker;
        else worker.resources = job.record.spec.entrypoint_resources.ToDemand();
        worker.live = false;  // until re-attached
        worker.exited = w.exit_code.has_value();
        worker.exit_code = w.exit_code.value_or(0);
        job.workers.push_back(worker);
      }
      if (job.record.stop_requested) job.stop_deadline = now + options_.reattach_timeout;
      if (job.record.internal.value("finalizing", false)) {
        job.finalizing = true;
        job.reattach_deadline.reset();
        pending_listings_.push_back(id);
      }
    }
    job_order_.push_back(id);
    jobs_[id] = std::move(job);
  }
  COHORT_ASSIGN_OR_RETURN(auto nodes, state_->ListNodes());
  for (const auto& n : nodes) {
    Node node;
    node.node_id = n.node_id;
    node.address = n.address;
    node.first_seen_ms = n.first_seen_ms;
    node.last_seen_ms = n.last_seen_ms;
    node.alive = false;  // until it re-registers
    auto info = json::parse(n.info_json, nullptr, false);
    if (info.is_object()) {
      auto total = jobs::Resources::FromJson(info.value("resources", json::object()));
      if (total.ok()) node.total = *total;
      node.hostname = info.value("hostname", "");
    }
    nodes_[n.node_id] = std::move(node);
  }
  if (!jobs_.empty())
    COHORT_LOG(INFO) << "recovered " << jobs_.size() << " job(s) and " << nodes_.size()
                     << " node(s) from " << state_->path();
  return Status::Ok();
}

void Cluster::AddEvent(const std::string& kind, const std::string& id, const std::string& message) {
  events_.push_back(Event{next_event_seq_++, NowMs(), kind, id, message});
  while (events_.size() > kMaxEvents) events_.pop_front();
}

void Cluster::Persist(Job& job, const std::string& event_message) {
  if (!event_message.empty())
    AddEvent("job", job.record.spec.submission_id,
             std::string(jobs::JobStatusName(job.record.status)) +
                 (event_message == jobs::JobStatusName(job.record.status) ? "" : ": " + event_message));
  job.record.internal["checkpoint_dir"] = job.checkpoint_dir;
  job.record.internal["results_dir"] = job.results_dir;
  const auto& r = job.record;
  const std::string text = jobs::JobRecordToJson(r).dump();
  const std::string status(jobs::JobStatusName(r.status));
  Status st = event_message.empty()
                  ? state_->PutJob(r.spec.submission_id, status, r.start_time_ms, r.end_time_ms, text)
                  : state_->PutJobAndEvent(r.spec.submission_id, status, r.start_time_ms, r.end_time_ms,
                                           text, NowMs(), event_message);
  if (!st.ok()) COHORT_LOG(ERROR) << "job=" << r.spec.submission_id << " cannot persist: " << st.ToString();
}

void Cluster::PersistNode(const Node& node) {
  json info = {{"resources", node.total.ToJson()}, {"hostname", node.hostname}, {"labels", node.labels}};
  Status st = state_->PutNode(node.node_id, node.address, node.alive ? "ALIVE" : "DEAD",
                              node.first_seen_ms, node.last_seen_ms, info.dump());
  if (!st.ok()) COHORT_LOG(ERROR) << "node=" << node.node_id << " cannot persist: " << st.ToString();
}

void Cluster::AppendLog(const std::string& id, const std::string& text) {
  Status st = logs_->Append(id, text);
  if (!st.ok()) COHORT_LOG(WARN) << "job=" << id << " log append failed: " << st.ToString();
}

Cluster::Job* Cluster::FindJob(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

std::string Cluster::PackagePath(const std::string& name) const {
  return options_.state_dir + "/packages/" + name;
}

int Cluster::PickMasterPort() {
  static thread_local std::mt19937 rng{std::random_device{}()};
  // Below Linux's ephemeral range (32768-60999): a port there may already be
  // the local end of some connection on rank 0's node, and its bind fails.
  std::uniform_int_distribution<int> dist(29500, 32767);
  for (int i = 0; i < 1000; ++i) {
    int port = dist(rng);
    if (ports_in_use_.insert(port).second) return port;
  }
  return 29500;
}

// ---------------------------------------------------------------------------
// Agents

rpc::HeadMessage Cluster::OnRegister(const rpc::Register& reg,
                                     const std::shared_ptr<rpc::AgentSession>& session) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string id = reg.node_id();
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
  node.address = reg.address();
  node.hostname = reg.hostname();
  node.total = FromProto(reg.resources());
  node.labels.clear();
  for (const auto& [k, v] : reg.labels()) node.labels[k] = v;
  node.alive = true;
  node.session = session;
  node.last_seen = Clock::now();
  node.last_seen_ms = NowMs();
  if (node.first_seen_ms == 0) node.first_seen_ms = node.last_seen_ms;
  PersistNode(node);
  AddEvent("node", id, std::string(was_alive ? "re-registered" : "joined") + " from " + node.address + " with " +
                          node.total.ToString());
  COHORT_LOG(INFO) << "node " << (was_alive ? "re-registered" : "joined") << ": node=" << id
                   << " address=" << node.address << " resources=" << node.total.ToString();

  // Re-attach the workers it still runs; stop the ones nobody wants.
  for (const auto& rw : reg.running_workers()) {
    Job* job = FindJob(rw.job_id());
    bool wanted = job != nullptr && job->record.status == JobStatus::kRunning &&
                  rw.attempt() == job->record.attempt && rw.rank() >= 0 &&
                  rw.rank() < static_cast<int>(job->workers.size()) &&
                  job->workers[rw.rank()].node_id == id && !job->workers[rw.rank()].exited;
    if (wanted) {
      job->workers[rw.rank()].live = true;
      bool all = true;
      for (const auto& w : job->workers) all = all && (w.live || w.exited);
      if (all && job->reattach_deadline) {
        job->reattach_deadline.reset();
        AppendLog(rw.job_id(), "cohort: workers re-attached after a head restart\n");
        COHORT_LOG(INFO) << "job=" << rw.job_id() << " re-attached";
      }
    } else {
      rpc::HeadMessage stop;
      stop.mutable_stop_workers()->set_job_id(rw.job_id());
      stop.mutable_stop_workers()->set_attempt(rw.attempt());
      stop.mutable_stop_workers()->set_grace_ms(static_cast<uint32_t>(options_.stop_grace.count()));
      session->Send(stop);
    }
  }
  rpc::HeadMessage reply;
  reply.mutable_registered()->set_node_id(id);
  reply.mutable_registered()->set_heartbeat_interval_ms(
      static_cast<uint32_t>(std::max<int64_t>(100, options_.node_timeout.count() / 10)));
  return reply;
}

void Cluster::OnMessage(rpc::AgentSession& session, const rpc::AgentMessage& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = nodes_.find(session.node_id());
  if (it != nodes_.end() && it->second.session.get() == &session) {
    Node& node = it->second;
    node.last_seen = Clock::now();
    node.last_seen_ms = NowMs();
    if (!node.alive) {
      node.alive = true;
      PersistNode(node);
    }
  }
  switch (msg.msg_case()) {
    case rpc::AgentMessage::kWorkerStarted:
      OnWorkerStarted(msg.worker_started());
      break;
    case rpc::AgentMessage::kWorkerExited:
      OnWorkerExited(msg.worker_exited());
      break;
    case rpc::AgentMessage::kLog:
      if (FindJob(msg.log().job_id()) != nullptr) AppendLog(msg.log().job_id(), msg.log().data());
      break;
    case rpc::AgentMessage::kMetrics: {
      const auto& m = msg.metrics();
      if (FindJob(m.job_id()) == nullptr) break;
      std::vector<MetricsReport> reports;
      for (const auto& line : m.json_lines()) {
        auto j = json::parse(line, nullptr, false);
        if (!j.is_object()) continue;
        MetricsReport r;
        r.rank = j.value("rank", m.rank());
        r.time_s = j.value("time", static_cast<double>(NowMs()) / 1000.0);
        j["rank"] = r.rank;
        j["attempt"] = m.attempt();
        if (Job* job = FindJob(m.job_id())) RecordLastMetrics(*job, r.rank, j);
        r.json = j.dump();
        reports.push_back(std::move(r));
      }
      if (!reports.empty()) {
        Status st = state_->AppendMetrics(m.job_id(), reports);
        if (!st.ok()) COHORT_LOG(WARN) << "job=" << m.job_id() << " metrics: " << st.ToString();
      }
      break;
    }
    default:
      break;  // heartbeats only refresh last_seen
  }
}

void Cluster::OnDisconnect(rpc::AgentSession& session, const Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = nodes_.find(session.node_id());
  if (it == nodes_.end() || it->second.session.get() != &session) return;
  it->second.session.reset();
  // Not dead yet: the agent may reconnect within the node timeout.
  COHORT_LOG(INFO) << "node=" << it->second.node_id << " disconnected"
                   << (why.ok() ? "" : ": " + why.message());
  if (why.ok()) MarkNodeDead(it->second, kAgentStopped);
}

Status Cluster::GetPackage(const rpc::GetPackageRequest& request, std::string* zip_bytes) {
  const std::string name = PackageNameOf(request.uri());
  if (!ValidPackageName(name)) return Status::NotFound("Package " + request.uri() + " does not exist");
  std::ifstream in(PackagePath(name), std::ios::binary);
  if (!in) return Status::NotFound("Package " + request.uri() + " does not exist");
  std::ostringstream ss;
  ss << in.rdbuf();
  *zip_bytes = ss.str();
  return Status::Ok();
}

void Cluster::MarkNodeDead(Node& node, const std::string& why) {
  if (!node.alive) return;
  node.alive = false;
  if (node.session) {
    node.session->Close();
    node.session.reset();
  }
  PersistNode(node);
  AddEvent("node", node.node_id, (why == kAgentStopped ? "left: " : "lost: ") + why);
  if (why == kAgentStopped)
    COHORT_LOG(INFO) << "node=" << node.node_id << " (" << node.address << ") left: " << why;
  else
    COHORT_LOG(WARN) << "node=" << node.node_id << " (" << node.address << ") is dead: " << why;
  for (auto& id : job_order_) {
    Job& job = jobs_[id];
    if (job.record.status != JobStatus::kRunning) continue;
    for (size_t r = 0; r < job.workers.size(); ++r) {
      if (job.workers[r].node_id == node.node_id && !job.workers[r].exited) {
        if (job.record.stop_requested) {
          job.workers[r].live = false;
          job.workers[r].exited = true;
          continue;
        }
        FailAttempt(job, "node " + node.node_id + " (" + node.address + ") running rank " +
                             std::to_string(r) + " died: " + why,
                    std::nullopt);
        break;
      }
    }
    if (job.record.stop_requested) {
      bool all = true;
      for (const auto& w : job.workers) all = all && w.exited;
      if (all) FinishStopped(job);
    }
  }
}

// ---------------------------------------------------------------------------
// Workers

void Cluster::OnWorkerStarted(const rpc::WorkerStarted& m) {
  Job* job = FindJob(m.job_id());
  if (job == nullptr || m.attempt() != job->record.attempt || m.rank() < 0 ||
      m.rank() >= static_cast<int>(job->record.workers.size()))
    return;
  auto& info = job->record.workers[m.rank()];
  info.pid = static_cast<int>(m.pid());
  if (info.status == "STARTING") info.status = "RUNNING";
  if (m.rank() == 0) {
    jobs::DriverInfo driver;
    driver.id = m.job_id();
    auto node = nodes_.find(info.node_id);
    driver.node_ip_address = node != nodes_.end() ? node->second.address : "";
    driver.pid = std::to_string(m.pid());
    job->record.driver_info = driver;
  }
  Persist(*job);
}

void Cluster::OnWorkerExited(const rpc::WorkerExited& m) {
  Job* job = FindJob(m.job_id());
  if (job == nullptr || m.attempt() != job->record.attempt || m.rank() < 0 ||
      m.rank() >= static_cast<int>(job->workers.size()))
    return;
  Worker& w = job->workers[m.rank()];
  if (w.exited) return;  // repeated after a reconnect
  w.exited = true;
  w.live = false;
  w.exit_code = m.exit_code();
  w.signal = m.signal();
  const bool success = m.exit_code() == 0 && m.signal() == 0;
  auto& info = job->record.workers[m.rank()];
  info.status = success ? "SUCCEEDED" : "FAILED";
  info.exit_code = m.signal() != 0 ? 128 + m.signal() : m.exit_code();
  bool all_exited = true, all_ok = true;
  for (const auto& x : job->workers) {
    all_exited = all_exited && x.exited;
    all_ok = all_ok && x.exited && x.exit_code == 0 && x.signal == 0;
  }
  if (job->record.stop_requested || job->record.status != JobStatus::kRunning) {
    if (all_exited && job->record.status == JobStatus::kRunning) FinishStopped(*job);
    else Persist(*job);
    return;
  }
  if (!success) {
    std::string cause = "rank " + std::to_string(m.rank()) + " on node " + w.node_id +
                        (m.signal() != 0 ? " was killed by signal " + std::to_string(m.signal())
                                         : " exited with code " + std::to_string(m.exit_code()));
    if (!m.message().empty() && m.message().find("exited with code") == std::string::npos)
      cause += " (" + m.message() + ")";
    FailAttempt(*job, cause, info.exit_code);
    return;
  }
  if (all_ok) {
    job->record.driver_exit_code = 0;
    ports_in_use_.erase(job->record.internal.value("master_port", 0));
    if (!job->record.spec.results_uri.empty()) {
      // Succeeded once the results are verified in the bucket (Tick).
      job->finalizing = true;
      job->record.internal["finalizing"] = true;
      pending_listings_.push_back(m.job_id());
      Status st = jobs::Transition(job->record, JobStatus::kRunning,
                                   "Job finished; verifying its results in " + job->record.spec.results_uri, NowMs());
      if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
      Persist(*job);
      return;
    }
    Status st = jobs::Transition(job->record, JobStatus::kSucceeded, "", NowMs());
    if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
    Persist(*job, "SUCCEEDED");
    COHORT_LOG(INFO) << "job=" << m.job_id() << " succeeded";
  } else {
    Persist(*job);
  }
}

void Cluster::StopAttemptWorkers(Job& job, int attempt) {
  std::set<std::string> nodes;
  for (auto& w : job.workers)
    if (!w.exited) nodes.insert(w.node_id);
  for (const auto& node_id : nodes) {
    auto it = nodes_.find(node_id);
    if (it == nodes_.end() || !it->second.session) continue;
    rpc::HeadMessage stop;
    stop.mutable_stop_workers()->set_job_id(job.record.spec.submission_id);
    stop.mutable_stop_workers()->set_attempt(attempt);
    stop.mutable_stop_workers()->set_grace_ms(static_cast<uint32_t>(options_.stop_grace.count()));
    it->second.session->Send(stop);
  }
}

void Cluster::FailAttempt(Job& job, const std::string& cause, std::optional<int> exit_code) {
  const std::string& id = job.record.spec.submission_id;
  StopAttemptWorkers(job, job.record.attempt);
  for (auto& w : job.workers) w.live = false;  // their resources are released now
  ports_in_use_.erase(job.record.internal.value("master_port", 0));
  job.reattach_deadline.reset();
  AppendLog(id, "cohort: attempt " + std::to_string(job.record.attempt) + " failed: " + cause + "\n");
  COHORT_LOG(WARN) << "job=" << id << " attempt " << job.record.attempt << " failed: " << cause;
  if (jobs::CanRestart(job.record)) {
    const int max = job.record.spec.MaxFailures();
    std::string msg = "Restarting after a failure (restart " + std::to_string(job.record.attempt + 1) +
                      (max < 0 ? "" : " of " + std::to_string(max)) + "): " + cause;
    Status st = jobs::Transition(job.record, JobStatus::kPending, msg, NowMs());
    if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
    ++job_restarts_;
    job.pending_since_ms = NowMs();
    job.workers.clear();
    AppendLog(id, "cohort: " + msg + "\n");
    Persist(job, msg);
    return;
  }
  std::string message;
  const bool single = !job.record.spec.scaling || job.record.spec.scaling->num_workers == 1;
  if (exit_code && single) {
    auto tail = logs_->Tail(id, 10);
    message = jobs::FailedEntrypointMessage(*exit_code, tail.ok() ? *tail : "");
  } else {
    message = "Job failed: " + cause;
    if (job.record.attempt > 0)
      message += " (after " + std::to_string(job.record.attempt) + " restart" +
                 (job.record.attempt == 1 ? "" : "s") + ")";
  }
  if (exit_code) job.record.driver_exit_code = *exit_code;
  const char* type = exit_code ? jobs::kErrorEntrypointCommandError : jobs::kErrorSupervisorDied;
  Status st = jobs::Transition(job.record, JobStatus::kFailed, message, NowMs(), std::string(type));
  if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
  Persist(job, message);
}

void Cluster::FinishStopped(Job& job) {
  for (auto& w : job.workers) {
    w.live = false;
    w.exited = true;
  }
  ports_in_use_.erase(job.record.internal.value("master_port", 0));
  job.stop_deadline.reset();
  Status st = jobs::Transition(job.record, JobStatus::kStopped, "", NowMs());
  if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
  AppendLog(job.record.spec.submission_id, "cohort: job stopped\n");
  Persist(job, "STOPPED");
}

// ---------------------------------------------------------------------------
// Scheduling

std::vector<scheduler::NodeSnapshot> Cluster::Snapshot() const {
  std::vector<scheduler::NodeSnapshot> out;
  std::map<std::string, jobs::Resources> used;
  for (const auto& [id, job] : jobs_)
    for (const auto& w : job.workers)
      if (w.live) used[w.node_id].Add(w.resources);
  for (const auto& [id, node] : nodes_) {
    scheduler::NodeSnapshot s;
    s.node_id = id;
    s.address = node.address;
    s.alive = node.alive && node.session != nullptr;
    s.total = node.total;
    s.used = used[id];
    s.labels = node.labels;
    s.is_head = id == options_.head_node_id;
    out.push_back(std::move(s));
  }
  return out;
}

void Cluster::TrySchedule() {
  for (const auto& id : job_order_) {
    Job& job = jobs_[id];
    if (job.record.status != JobStatus::kPending || job.record.stop_requested) continue;
    TryPlace(job);
  }
}

bool Cluster::TryPlace(Job& job) {
  const auto& spec = job.record.spec;
  auto nodes = Snapshot();
  std::string why;
  std::vector<std::string> node_of_rank;
  if (spec.scaling) {
    std::vector<scheduler::Bundle> bundles(spec.scaling->num_workers);
    for (auto& b : bundles) {
      b.resources = spec.scaling->resources_per_worker;
      if (spec.label_selector) b.label_selector = *spec.label_selector;
    }
    auto placement = scheduler::PlaceGang(nodes, bundles, spec.scaling->placement_strategy, &why);
    if (placement) {
      // Ranks grouped by node (contiguous local ranks).
      auto slots = scheduler::AssignRanks(*placement);
      node_of_rank.resize(slots.size());
      for (const auto& s : slots) node_of_rank[s.rank] = s.node_id;
    } else if (std::string never;
               !scheduler::IsFeasibleEver(nodes, bundles, spec.scaling->placement_strategy, &never)) {
      // Not just busy: the nodes that joined so far cannot hold it even idle.
      why = "it waits for more or larger nodes: " + never;
    }
  } else {
    const auto demand = spec.entrypoint_resources.ToDemand();
    auto node = scheduler::PlaceSingle(nodes, demand, /*prefer_head=*/demand.empty(),
                                       spec.label_selector.value_or(jobs::LabelSelector{}), &why);
    if (node) node_of_rank.push_back(*node);
  }
  if (node_of_rank.empty()) {
    if (nodes.empty()) why = "no node has joined the cluster yet";
    if (job.record.pending_reason != why) {
      job.record.pending_reason = why;
      Persist(job);
    }
    return false;
  }
  StartWorkers(job, node_of_rank);
  return true;
}

void Cluster::StartWorkers(Job& job, const std::vector<std::string>& node_of_rank) {
  auto& rec = job.record;
  const auto& spec = rec.spec;
  const std::string& id = spec.submission_id;
  const int world = static_cast<int>(node_of_rank.size());
  const bool distributed = spec.scaling.has_value();
  jobs::Resources per_worker =
      distributed ? spec.scaling->resources_per_worker : spec.entrypoint_resources.ToDemand();

  // Local ranks and node ranks from the (node-grouped) rank order.
  std::map<std::string, int> local_count, node_rank;
  std::vector<int> local_rank(world);
  for (int r = 0; r < world; ++r) {
    const auto& n = node_of_rank[r];
    if (!node_rank.count(n)) node_rank[n] = static_cast<int>(node_rank.size());
    local_rank[r] = local_count[n]++;
  }
  const int port = PickMasterPort();
  rec.internal["master_port"] = port;
  const std::string master_addr = nodes_[node_of_rank[0]].address;

  // GPUs: whole devices per worker, taken from those no live worker holds on
  // its node. Every worker of the job on a node sees the sorted union of the
  // job's GPUs there (CUDA_VISIBLE_DEVICES), and local rank i uses the i-th.
  const int gpus_per_worker = static_cast<int>(std::ceil(per_worker.Get("GPU") - 1e-9));
  std::map<std::string, std::set<int>> busy_gpus, job_gpus;
  if (gpus_per_worker > 0)
    for (const auto& [other_id, other] : jobs_)
      for (const auto& w : other.workers)
        if (w.live) busy_gpus[w.node_id].insert(w.gpu_ids.begin(), w.gpu_ids.end());
  job.workers.assign(world, Worker{});
  rec.workers.clear();
  for (int r = 0; r < world; ++r) {
    job.workers[r].node_id = node_of_rank[r];
    job.workers[r].resources = per_worker;
    job.workers[r].live = true;
    const int node_gpus = static_cast<int>(nodes_[node_of_rank[r]].total.Get("GPU") + 1e-9);
    for (int g = 0, taken = 0; g < node_gpus && taken < gpus_per_worker; ++g) {
      if (busy_gpus[node_of_rank[r]].insert(g).second) {
        job.workers[r].gpu_ids.push_back(g);
        job_gpus[node_of_rank[r]].insert(g);
        ++taken;
      }
    }
    jobs::WorkerInfo info;
    info.rank = r;
    info.node_id = node_of_rank[r];
    info.status = "STARTING";
    rec.workers.push_back(info);
  }
  rec.driver_node_id = node_of_rank[0];
  rec.driver_agent_http_address = std::nullopt;
  Status st = jobs::Transition(rec, JobStatus::kRunning, "", NowMs());
  if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
  ObservePlacement(job);

  std::string where;
  for (int r = 0; r < world; ++r) where += (r ? ", " : "") + std::to_string(r) + "->" + node_of_rank[r];
  AppendLog(id, "cohort: running entrypoint for job " + id + " (attempt " + std::to_string(rec.attempt) +
                    (distributed ? ", " + std::to_string(world) + " workers: " + where : "") + "): " +
                    spec.entrypoint + "\n");
  Persist(job, "RUNNING");
  COHORT_LOG(INFO) << "job=" << id << " attempt=" << rec.attempt << " placed: " << where;

  std::map<std::string, std::string> env_vars;
  if (spec.runtime_env.is_object() && spec.runtime_env.contains("env_vars") &&
      spec.runtime_env["env_vars"].is_object())
    for (auto& [k, v] : spec.runtime_env["env_vars"].items())
      if (v.is_string()) env_vars[k] = v.get<std::string>();
  std::string package, cwd;
  if (spec.runtime_env.is_object() && spec.runtime_env.contains("working_dir") &&
      spec.runtime_env["working_dir"].is_string()) {
    const std::string wd = spec.runtime_env["working_dir"].get<std::string>();
    if (wd.rfind("gcs://", 0) == 0) package = wd;
    else cwd = wd;
  }
  for (int r = 0; r < world; ++r) {
    rpc::HeadMessage msg;
    auto* sw = msg.mutable_start_worker();
    sw->set_job_id(id);
    sw->set_attempt(rec.attempt);
    sw->set_rank(r);
    sw->set_entrypoint(cwd.empty() ? spec.entrypoint : "cd '" + cwd + "' && " + spec.entrypoint);
    sw->set_working_dir_package(package);
    for (int g : job_gpus[node_of_rank[r]]) sw->add_gpu_ids(g);
    for (const auto& [k, v] : per_worker.amounts) (*sw->mutable_resources())[k] = v;
    auto& env = *sw->mutable_env();
    for (const auto& [k, v] : env_vars) env[k] = v;
    env["COHORT_JOB_ID"] = id;
    // `import cohort` works in Python workers (python/cohort.py ships with cohort).
    if (const std::string py = PythonModuleDir(); !py.empty())
      env["PYTHONPATH"] = env_vars.count("PYTHONPATH") ? py + ":" + env_vars["PYTHONPATH"] : py;
    env["PYTHONUNBUFFERED"] = "1";
    env["COHORT_CHECKPOINT_DIR"] = job.checkpoint_dir;
    env["COHORT_RESULTS_DIR"] = job.results_dir;
    if (distributed) {
      env["MASTER_ADDR"] = master_addr;
      env["MASTER_PORT"] = std::to_string(port);
      env["RANK"] = std::to_string(r);
      env["WORLD_SIZE"] = std::to_string(world);
      env["LOCAL_RANK"] = std::to_string(local_rank[r]);
      env["LOCAL_WORLD_SIZE"] = std::to_string(local_count[node_of_rank[r]]);
      env["NODE_RANK"] = std::to_string(node_rank[node_of_rank[r]]);
      env["GROUP_RANK"] = env["NODE_RANK"];
      env["TORCHELASTIC_RESTART_COUNT"] = std::to_string(rec.attempt);
      const double cpus = per_worker.Get("CPU");
      if (!env_vars.count("OMP_NUM_THREADS"))
        env["OMP_NUM_THREADS"] = std::to_string(std::max(1, static_cast<int>(cpus)));
      if (!env_vars.count("OPENBLAS_NUM_THREADS")) env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"];
    }
    auto node = nodes_.find(node_of_rank[r]);
    if (node == nodes_.end() || !node->second.session || !node->second.session->Send(msg)) {
      FailAttempt(job, "node " + node_of_rank[r] + " is unreachable", std::nullopt);
      return;
    }
  }
}

// ---------------------------------------------------------------------------
// Tick

void Cluster::Tick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    TickLocked();
  }
  FinishResultListings();
}

// Lists each finished job's results_uri (outside mu_: it is network I/O),
// then completes the job: SUCCEEDED with the objects and their CRC32C, or
// FAILED when the results cannot be read back.
void Cluster::FinishResultListings() {
  std::vector<std::pair<std::string, std::string>> todo;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& id : pending_listings_)
      if (Job* job = FindJob(id)) todo.emplace_back(id, job->record.spec.results_uri);
    pending_listings_.clear();
  }
  for (const auto& [id, uri] : todo) {
    auto objects = storage::ListAll(uri, /*recursive=*/true);
    std::lock_guard<std::mutex> lock(mu_);
    Job* job = FindJob(id);
    if (job == nullptr || !job->finalizing || job->record.status != JobStatus::kRunning) continue;
    job->finalizing = false;
    job->record.internal.erase("finalizing");
    if (!objects.ok() || objects->empty()) {
      const std::string why = objects.ok() ? "no objects were written there" : objects.status().ToString();
      Status st = jobs::Transition(job->record, JobStatus::kFailed,
                                   "Job failed: its results could not be found in " + uri + ": " + why, NowMs(),
                                   std::string(jobs::kErrorEntrypointCommandError));
      if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
      Persist(*job, "results missing");
      continue;
    }
    json listing = json::array();
    auto base = storage::ParseUri(uri);
    for (const auto& o : *objects) {
      storage::Uri object_uri = base.ok() ? *base : storage::Uri{};
      object_uri.key = o.key;
      listing.push_back({{"uri", object_uri.ToString()}, {"size_bytes", o.size_bytes}, {"crc32c", o.crc32c}});
    }
    job->record.internal["results"] = listing;
    Status st = jobs::Transition(job->record, JobStatus::kSucceeded, "", NowMs());
    if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
    AppendLog(id, "cohort: " + std::to_string(listing.size()) + " result object(s) in " + uri + "\n");
    Persist(*job, "SUCCEEDED");
    COHORT_LOG(INFO) << "job=" << id << " succeeded; results in " << uri;
  }
}

nlohmann::json Cluster::Details(const Job& job) const {
  json d = jobs::JobDetailsJson(job.record);
  d["results"] = job.record.internal.contains("results") ? job.record.internal["results"] : json();
  d["checkpoint_dir"] = job.checkpoint_dir;
  d["results_dir"] = job.results_dir;
  return d;
}

void Cluster::TickLocked() {
  const auto now = Clock::now();
  for (auto& [id, node] : nodes_)
    if (node.alive && now - node.last_seen > options_.node_timeout)
      MarkNodeDead(node, "no heartbeat for " + std::to_string(options_.node_timeout.count() / 1000) + " s");
  for (const auto& id : job_order_) {
    Job& job = jobs_[id];
    if (job.record.status != JobStatus::kRunning) continue;
    if (job.stop_deadline && now > *job.stop_deadline) {
      FinishStopped(job);
    } else if (job.reattach_deadline && now > *job.reattach_deadline) {
      FailAttempt(job, "the head restarted and the job's workers did not re-attach within " +
                           std::to_string(options_.reattach_timeout.count() / 1000) + " s",
                  std::nullopt);
    }
  }
  TrySchedule();
}

// ---------------------------------------------------------------------------
// API

Cluster::Reply Cluster::Submit(const std::string& body) {
  auto spec = jobs::ParseSubmitRequest(body);
  if (!spec.ok()) return TextReply(400, spec.status().message());
  std::lock_guard<std::mutex> lock(mu_);
  const std::string id = spec->submission_id;
  if (jobs_.count(id))
    return TextReply(400, "Job with submission_id " + id + " already exists. Please use a different submission_id.");
  if (spec->runtime_env.is_object() && spec->runtime_env.contains("working_dir")) {
    const auto& wd = spec->runtime_env["working_dir"];
    if (!wd.is_string()) return TextReply(400, "runtime_env.working_dir must be a string");
    const std::string w = wd.get<std::string>();
    if (w.rfind("gcs://", 0) == 0) {
      const std::string name = PackageNameOf(w);
      if (!ValidPackageName(name) || !fs::exists(PackagePath(name)))
        return TextReply(400, "runtime_env.working_dir: Package " + w + " does not exist; upload it first "
                              "(PUT /api/packages/gcs/<name>)");
    } else if (w.empty() || w[0] != '/') {
      return TextReply(400, "runtime_env.working_dir must be a gcs:// package URI or an absolute path on the nodes");
    }
  }
  Job job;
  job.record = jobs::NewJobRecord(std::move(spec).value(), NowMs());
  const std::string job_dir = options_.state_dir + "/jobs/" + id;
  job.results_dir = job.record.spec.results_uri.empty() ? job_dir + "/results" : job.record.spec.results_uri;
  job.checkpoint_dir = job.record.spec.results_uri.empty() ? job_dir + "/checkpoints"
                                                           : job.record.spec.results_uri + "/checkpoints";
  if (job.record.spec.runtime_env.is_object() && job.record.spec.runtime_env.contains("env_vars")) {
    const auto& ev = job.record.spec.runtime_env["env_vars"];
    if (ev.is_object() && ev.contains("COHORT_CHECKPOINT_DIR") && ev["COHORT_CHECKPOINT_DIR"].is_string())
      job.checkpoint_dir = ev["COHORT_CHECKPOINT_DIR"].get<std::string>();
  }
  // No directory is made here: the trainer creates its checkpoint and
  // results directories when it writes them (keeps submit cheap).
  jobs_[id] = std::move(job);
  job_order_.push_back(id);
  Job& stored = jobs_[id];
  ++jobs_submitted_;
  Persist(stored, "PENDING");
  COHORT_LOG(INFO) << "job=" << id << " submitted";
  TryPlace(stored);
  return JsonReply(200, {{"job_id", id}, {"submission_id", id}});
}

Cluster::Reply Cluster::GetJob(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* job = FindJob(id);
  if (job == nullptr) return NotFoundJob(id);
  return JsonReply(200, Details(*job));
}

Cluster::Reply Cluster::ListJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  json out = json::array();
  for (const auto& id : job_order_) out.push_back(Details(jobs_[id]));
  return JsonReply(200, out);
}

Cluster::Reply Cluster::StopJob(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* job = FindJob(id);
  if (job == nullptr) return NotFoundJob(id);
  auto& rec = job->record;
  if (jobs::IsTerminal(rec.status) || rec.stop_requested) return JsonReply(200, {{"stopped", false}});
  rec.stop_requested = true;
  if (rec.status == JobStatus::kPending) {
    FinishStopped(*job);
  } else {
    StopAttemptWorkers(*job, rec.attempt);
    job->stop_deadline = Clock::now() + options_.stop_grace + std::chrono::seconds(5);
    AppendLog(id, "cohort: stop requested\n");
    Persist(*job, "stop requested");
  }
  return JsonReply(200, {{"stopped", true}});
}

Cluster::Reply Cluster::DeleteJob(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* job = FindJob(id);
  if (job == nullptr) return NotFoundJob(id);
  if (!jobs::IsTerminal(job->record.status))
    return TextReply(400, "Attempted to delete job '" + id + "', but it is in a non-terminal state " +
                              std::string(jobs::JobStatusName(job->record.status)) + ".");
  Status st = state_->DeleteJob(id);
  if (!st.ok()) return TextReply(500, st.ToString());
  jobs_.erase(id);
  job_order_.erase(std::remove(job_order_.begin(), job_order_.end(), id), job_order_.end());
  return JsonReply(200, {{"deleted", true}});
}

Cluster::Reply Cluster::JobLogs(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (FindJob(id) == nullptr) return NotFoundJob(id);
  }
  auto logs = logs_->ReadAll(id);
  return JsonReply(200, {{"logs", logs.ok() ? *logs : std::string()}});
}

Cluster::Reply Cluster::JobMetrics(const std::string& id, int64_t since) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (FindJob(id) == nullptr) return NotFoundJob(id);
  }
  auto page = state_->ListMetrics(id, since, 10000);
  if (!page.ok()) return TextReply(500, page.status().ToString());
  json rows = json::array();
  for (const auto& row : page->rows) {
    auto j = json::parse(row.json, nullptr, false);
    if (j.is_object()) rows.push_back(std::move(j));
  }
  return JsonReply(200, {{"metrics", rows}, {"next", page->next_seq}});
}

Result<bool> Cluster::JobIsTerminal(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* job = FindJob(id);
  if (job == nullptr) return Status::NotFound("Job " + id + " does not exist");
  return jobs::IsTerminal(job->record.status);
}

Cluster::Reply Cluster::ClusterStatus() {
  std::lock_guard<std::mutex> lock(mu_);
  auto snapshot = Snapshot();
  json nodes = json::array();
  for (const auto& s : snapshot) {
    const Node& n = nodes_[s.node_id];
    nodes.push_back({{"node_id", s.node_id},
                     {"address", s.address},
                     {"hostname", n.hostname},
                     {"state", n.alive ? "ALIVE" : "DEAD"},
                     {"is_head_node", s.is_head},
                     {"resources_total", s.total.ToJson()},
                     {"resources_used", s.used.ToJson()},
                     {"last_heartbeat_ms", n.last_seen_ms}});
  }
  json pending = json::array();
  for (const auto& id : job_order_) {
    const Job& job = jobs_[id];
    if (job.record.status != JobStatus::kPending) continue;
    json bundles = json::array();
    if (job.record.spec.scaling)
      for (int i = 0; i < job.record.spec.scaling->num_workers; ++i)
        bundles.push_back(job.record.spec.scaling->resources_per_worker.ToJson());
    else
      bundles.push_back(job.record.spec.entrypoint_resources.ToDemand().ToJson());
    pending.push_back({{"job_id", id}, {"bundles", bundles}, {"reason", job.record.pending_reason}});
  }
  return JsonReply(200, {{"nodes", nodes}, {"pending_demand", pending}});
}

Cluster::Reply Cluster::Events(int64_t since) {
  std::lock_guard<std::mutex> lock(mu_);
  json out = json::array();
  int64_t next = since;
  for (const auto& e : events_) {
    if (e.seq <= since) continue;
    out.push_back({{"seq", e.seq}, {"time_ms", e.time_ms}, {"kind", e.kind}, {"id", e.id}, {"message", e.message}});
    next = e.seq;
  }
  return JsonReply(200, {{"events", out}, {"next", next}});
}

Cluster::Reply Cluster::PackageExists(const std::string& name) {
  if (ValidPackageName(name) && fs::exists(PackagePath(name))) return TextReply(200, "");
  return TextReply(404, "Package gcs://" + name + " does not exist");
}

Cluster::Reply Cluster::PutPackage(const std::string& name, const std::string& body) {
  if (!ValidPackageName(name))
    return TextReply(400, "bad package name '" + name + "': expected _ray_pkg_<hash>.zip");
  Status valid = ValidateZip(body);
  if (!valid.ok()) return TextReply(400, valid.message());
  const std::string path = PackagePath(name);
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(body.data(), static_cast<std::streamsize>(body.size()));
    if (!out) return TextReply(500, "cannot write package " + path);
  }
  fs::rename(tmp, path, ec);
  if (ec) return TextReply(500, "cannot store package " + path + ": " + ec.message());
  return TextReply(200, "");
}

}  // namespace cohort::head
