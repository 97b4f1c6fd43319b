// JobManager: the job lifecycle; see job_manager.h.
#include "job_manager.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <tuple>

#include "cohort/common/json.h"
#include "cohort/common/logging.h"
#include "cohort/scheduler/scheduler.h"

namespace cohort::head {
namespace {

namespace fs = std::filesystem;
using jobs::JobStatus;
using json = nlohmann::json;

Status NotFoundJob(const std::string& id) { return Status::NotFound("Job " + SanitizeUtf8(id) + " does not exist"); }

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

std::map<std::string, std::string> EnvVarsOf(const jobs::JobSpec& spec) {
  std::map<std::string, std::string> env_vars;
  if (spec.runtime_env.is_object())
    if (auto ev = spec.runtime_env.find("env_vars"); ev != spec.runtime_env.end() && ev->is_object())
      for (auto& [k, v] : ev->items())
        if (v.is_string()) env_vars[k] = v.get<std::string>();
  return env_vars;
}

// Variables a job may not set: the head sets them per worker, and a job
// could otherwise impersonate another job or read the cluster's token.
bool ReservedEnvVar(const std::string& name) {
  return name == "COHORT_TOKEN" || name == "COHORT_JOB_TOKEN" || name == "COHORT_JOB_ID" ||
         name == "COHORT_REPORT_PATH";
}

}  // namespace

// ---------------------------------------------------------------------------
// Recovery and persistence

Status JobManager::Recover(StateStore* store) {
  COHORT_ASSIGN_OR_RETURN(auto stored, store->ListJobs());
  const auto now = d_.clock->Now();
  for (const auto& [id, text] : stored) {
    auto parsed = ParseJson(text);
    if (!parsed.ok()) {
      COHORT_LOG(ERROR) << "job " << SanitizeUtf8(id) << ": unreadable record in the state store ("
                        << parsed.status().message() << "); skipped";
      continue;
    }
    auto record = jobs::JobRecordFromJson(*parsed);
    if (!record.ok()) {
      COHORT_LOG(ERROR) << "job " << SanitizeUtf8(id) << ": " << record.status().ToString() << "; skipped";
      continue;
    }
    Job job;
    job.record = std::move(record).value();
    const auto& internal = job.record.internal;
    if (auto it = internal.find("checkpoint_dir"); it != internal.end() && it->is_string())
      job.checkpoint_dir = it->get<std::string>();
    if (auto it = internal.find("results_dir"); it != internal.end() && it->is_string())
      job.results_dir = it->get<std::string>();
    for (const auto& w : job.record.workers) job.worker_nodes.insert(w.node_id);
    if (job.record.status == JobStatus::kRunning) {
      // Its workers may still run on their nodes: wait for the agents to
      // re-register and report them. Their rendezvous port stays taken.
      job.reattach_deadline = now + d_.options.reattach_timeout;
      if (auto it = internal.find("master_port"); it != internal.end() && it->is_number_integer())
        ports_in_use_.insert(it->get<int>());
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
      if (job.record.stop_requested) job.stop_deadline = now + d_.options.reattach_timeout;
      if (auto it = internal.find("finalizing"); it != internal.end() && it->is_boolean() && it->get<bool>()) {
        job.finalizing = true;
        job.reattach_deadline.reset();
        d_.finalizer->Start(id, job.record.spec.results_uri);
      }
    }
    job_order_.push_back(id);
    job.seq = next_seq_++;
    if (job.record.status == JobStatus::kRunning) placed_.insert(id);
    if (job.record.status == JobStatus::kPending) MarkPending(job);
    jobs_[id] = std::move(job);
  }
  if (!jobs_.empty()) COHORT_LOG(INFO) << "recovered " << jobs_.size() << " job(s) from " << store->path();
  return Status::Ok();
}

void JobManager::Persist(Job& job, const std::string& event_message) {
  const int64_t now = d_.clock->WallMs();
  if (!event_message.empty())
    d_.events->Add(now, "job", job.record.spec.submission_id,
                   std::string(jobs::JobStatusName(job.record.status)) +
                       (event_message == jobs::JobStatusName(job.record.status) ? "" : ": " + event_message));
  job.record.internal["checkpoint_dir"] = job.checkpoint_dir;
  job.record.internal["results_dir"] = job.results_dir;
  const auto& r = job.record;
  const std::string text = DumpJson(jobs::JobRecordToJson(r));
  const std::string status(jobs::JobStatusName(r.status));
  Status st = event_message.empty()
                  ? d_.state->PutJob(r.spec.submission_id, status, r.start_time_ms, r.end_time_ms, text)
                  : d_.state->PutJobAndEvent(r.spec.submission_id, status, r.start_time_ms, r.end_time_ms, text,
                                             now, SanitizeUtf8(event_message));
  if (!st.ok()) COHORT_LOG(ERROR) << "job=" << r.spec.submission_id << " cannot persist: " << st.message();
}

void JobManager::AppendLog(const std::string& id, const std::string& text) { d_.log_writer->Append(id, text); }

JobManager::Job* JobManager::Find(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const JobManager::Job* JobManager::Find(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

int JobManager::PickMasterPort() {
  static thread_local std::mt19937 rng{std::random_device{}()};
  // Below Linux's ephemeral range (32768-60999): a port there may already be
  // the local end of some connection on rank 0's node, and its bind fails.
  std::uniform_int_distribution<int> dist(29500, 32767);
  for (int i = 0; i < 1000; ++i) {
    int port = dist(rng);
    if (ports_in_use_.insert(port).second) return port;
  }
  for (int port = 29500; port <= 32767; ++port)
    if (ports_in_use_.insert(port).second) return port;
  return 29500;  // 3,268 jobs running at once: the bind reports the clash
}

void JobManager::ReleasePort(Job& job) {
  if (auto it = job.record.internal.find("master_port"); it != job.record.internal.end() && it->is_number_integer())
    ports_in_use_.erase(it->get<int>());
}

// ---------------------------------------------------------------------------
// Agents

void JobManager::OnRegistered(const Node& node, const rpc::Register& reg) {
  // Exits the head may have missed (sent on a stream that broke, or to a
  // head that was killed): applied like any WorkerExited, idempotently.
  for (const auto& exit : reg.recent_exits()) OnWorkerExited(node.node_id, exit);
  std::set<std::tuple<std::string, int, int>> listed;
  for (const auto& rw : reg.running_workers()) listed.emplace(rw.job_id(), rw.attempt(), rw.rank());
  for (const auto& rw : reg.running_workers()) {
    Job* job = Find(rw.job_id());
    const bool wanted = job != nullptr && job->record.status == JobStatus::kRunning &&
                        rw.attempt() == job->record.attempt && rw.rank() >= 0 &&
                        rw.rank() < static_cast<int>(job->workers.size()) &&
                        job->workers[rw.rank()].node_id == node.node_id && !job->workers[rw.rank()].exited;
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
      stop.mutable_stop_workers()->set_grace_ms(static_cast<uint32_t>(d_.options.stop_grace.count()));
      d_.nodes->Send(node.node_id, stop);
    }
  }
  // A worker placed here that the agent neither runs, nor prepares, nor saw
  // exit is gone: the agent restarted without it, or never received its
  // start. Without this its job would stay RUNNING forever (the node itself
  // is alive, so no timeout fires).
  for (Job* running : RunningJobs()) {
    Job& job = *running;
    const std::string& id = job.record.spec.submission_id;
    if (job.record.status != JobStatus::kRunning || job.finalizing) continue;
    for (size_t r = 0; r < job.workers.size(); ++r) {
      Worker& w = job.workers[r];
      if (w.node_id != node.node_id || w.exited ||
          listed.count({id, job.record.attempt, static_cast<int>(r)}))
        continue;
      if (job.record.stop_requested) {
        w.live = false;
        w.exited = true;
        bool all = true;
        for (const auto& x : job.workers) all = all && x.exited;
        if (all) FinishStopped(job);
        continue;
      }
      FailAttempt(job,
                  "rank " + std::to_string(r) + " on node " + node.node_id +
                      " is gone: its agent re-registered without it (the agent restarted, or never "
                      "received the start)",
                  std::nullopt);
      break;
    }
  }
}

void JobManager::OnWorkerStarted(const std::string& node_id, const rpc::WorkerStarted& m) {
  Job* job = Find(m.job_id());
  if (job == nullptr || m.attempt() != job->record.attempt || m.rank() < 0 ||
      m.rank() >= static_cast<int>(job->record.workers.size()) || m.rank() >= static_cast<int>(job->workers.size()))
    return;
  if (job->workers[m.rank()].node_id != node_id) {
    COHORT_LOG(WARN) << "node=" << node_id << " reported a start of job=" << m.job_id() << " rank " << m.rank()
                     << ", which runs on node " << job->workers[m.rank()].node_id << "; ignored";
    return;
  }
  auto& info = job->record.workers[m.rank()];
  info.pid = static_cast<int>(std::clamp<int64_t>(m.pid(), 0, 1 << 30));
  if (info.status == "STARTING") info.status = "RUNNING";
  if (m.rank() == 0) {
    jobs::DriverInfo driver;
    driver.id = m.job_id();
    const Node* node = d_.nodes->Find(info.node_id);
    driver.node_ip_address = node != nullptr ? node->address : "";
    driver.pid = std::to_string(m.pid());
    job->record.driver_info = driver;
  }
  Persist(*job);
}

void JobManager::OnHeartbeat(const std::string& node_id, const rpc::Heartbeat& hb) {
  for (const rpc::RunningWorker& w : hb.running_workers()) {
    Job* job = Find(w.job_id());
    if (job == nullptr || w.attempt() != job->record.attempt || w.rank() < 0 ||
        w.rank() >= static_cast<int>(job->workers.size()))
      continue;
    Worker& worker = job->workers[w.rank()];
    if (worker.node_id == node_id) worker.rss_bytes = std::max<int64_t>(0, w.rss_bytes());
  }
}

void JobManager::OnWorkerExited(const std::string& node_id, const rpc::WorkerExited& m) {
  Job* job = Find(m.job_id());
  if (job == nullptr || m.attempt() != job->record.attempt || m.rank() < 0 ||
      m.rank() >= static_cast<int>(job->workers.size()) || m.rank() >= static_cast<int>(job->record.workers.size()))
    return;
  Worker& w = job->workers[m.rank()];
  if (w.node_id != node_id) {
    COHORT_LOG(WARN) << "node=" << node_id << " reported an exit of job=" << m.job_id() << " rank " << m.rank()
                     << ", which runs on node " << w.node_id << "; ignored";
    return;
  }
  if (w.exited) return;  // repeated after a reconnect
  if (m.has_results() && job->record.spec.results_uri.empty()) RecordLocalResults(*job, node_id, m.results());
  const int signal = std::clamp(m.signal(), 0, 127);
  w.exited = true;
  w.live = false;
  w.exit_code = m.exit_code();
  w.signal = signal;
  const bool success = m.exit_code() == 0 && signal == 0;
  auto& info = job->record.workers[m.rank()];
  info.status = success ? "SUCCEEDED" : "FAILED";
  info.exit_code = signal != 0 ? 128 + signal : m.exit_code();
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
                        (signal != 0 ? " was killed by signal " + std::to_string(signal)
                                     : " exited with code " + std::to_string(m.exit_code()));
    const std::string message = SanitizeUtf8(std::string_view(m.message()).substr(0, 2000));
    if (!message.empty() && message.find("exited with code") == std::string::npos) cause += " (" + message + ")";
    if (signal == 0 && m.exit_code() == 127) {
      // The shell's "command not found".
      cause += ": the entrypoint's command was not found. A relative path is looked up in the worker's "
               "directory: the job's working_dir, else the directory `cohort run` was started in, else (a job "
               "submitted to a cluster) a scratch directory on the node. Use an absolute path that exists on "
               "the nodes, or ship the files with --working-dir";
    }
    FailAttempt(*job, cause, info.exit_code);
    return;
  }
  if (!all_ok) {
    Persist(*job);
    return;
  }
  job->record.driver_exit_code = 0;
  ReleasePort(*job);
  if (!job->record.spec.results_uri.empty()) {
    // Succeeded once the results are verified in the bucket (Tick).
    job->finalizing = true;
    job->record.internal["finalizing"] = true;
    d_.finalizer->Start(m.job_id(), job->record.spec.results_uri);
    Status st = jobs::Transition(job->record, JobStatus::kRunning,
                                 "Job finished; verifying its results in " + job->record.spec.results_uri,
                                 d_.clock->WallMs());
    if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
    Persist(*job);
    return;
  }
  Status st = jobs::Transition(job->record, JobStatus::kSucceeded, "", d_.clock->WallMs());
  if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
  Persist(*job, "SUCCEEDED");
  COHORT_LOG(INFO) << "job=" << m.job_id() << " succeeded";
}

void JobManager::RecordLocalResults(Job& job, const std::string& node_id, const rpc::LocalResults& results) {
  // From an agent: bounded and made valid UTF-8 before it is stored.
  constexpr int kMaxFiles = 64;
  constexpr size_t kMaxText = 1024;
  auto text = [](const std::string& s) { return SanitizeUtf8(std::string_view(s).substr(0, kMaxText)); };
  json files = json::array();
  for (int i = 0; i < results.files_size() && i < kMaxFiles; ++i)
    files.push_back({{"path", text(results.files(i).path())}, {"size_bytes", results.files(i).size_bytes()}});
  const Node* node = d_.nodes->Find(node_id);
  json entry = {{"node_id", node_id},
                {"node_address", node != nullptr ? node->address : ""},
                {"dir", text(results.dir())},
                {"files", std::move(files)},
                {"file_count", results.file_count()},
                {"total_bytes", results.total_bytes()},
                {"truncated", results.truncated()},
                {"attempt", job.record.attempt},
                {"listed_at_ms", d_.clock->WallMs()}};
  json& all = job.record.internal["node_results"];
  if (!all.is_object()) all = json::object();
  all[node_id] = std::move(entry);
}

std::vector<scheduler::NodeSnapshot> JobManager::Schedulable() {
  // Silent for 3 heartbeat intervals (a tenth of the node timeout each): no
  // new work there, so a group restarted after losing a peer on that node
  // does not land on it again before the node is declared dead.
  return d_.nodes->Snapshot(Used(), d_.options.head_node_id, d_.options.node_timeout * 3 / 10);
}

std::vector<JobManager::Job*> JobManager::RunningJobs() {
  std::vector<Job*> out;
  for (const auto& id : placed_)  // every RUNNING job is there
    if (Job* job = Find(id); job != nullptr && job->record.status == JobStatus::kRunning) out.push_back(job);
  return out;
}

JobManager::Job* JobManager::FindForNode(const std::string& node_id, const std::string& job_id, const char* what) {
  Job* job = Find(job_id);
  if (job == nullptr || job->worker_nodes.count(node_id)) return job;
  COHORT_LOG(WARN) << "node=" << node_id << " sent " << what << " for job=" << job_id
                   << ", which never ran there; dropped";
  return nullptr;
}

void JobManager::OnLog(const std::string& node_id, const rpc::LogChunk& m) {
  if (FindForNode(node_id, m.job_id(), "log bytes") == nullptr) return;
  if (m.has_offset()) {
    d_.log_writer->AppendChunk(node_id, m.job_id(), m.attempt(), m.rank(), m.offset(), std::string(m.data()));
  } else {
    AppendLog(m.job_id(), std::string(m.data()));
  }
}

void JobManager::OnMetrics(const std::string& node_id, const rpc::MetricReport& m) {
  Job* job = FindForNode(node_id, m.job_id(), "reports");
  if (job == nullptr) return;
  const int world = job->record.spec.scaling ? job->record.spec.scaling->num_workers : 1;
  const double now_s = static_cast<double>(d_.clock->WallMs()) / 1000.0;
  std::vector<MetricsReport> reports;
  size_t dropped = 0;
  std::string why;
  for (const auto& line : m.json_lines()) {
    auto parsed = ParseReportLine(line, m.rank(), world, m.attempt(), now_s);
    if (!parsed.ok()) {
      if (dropped++ == 0) why = parsed.status().message();
      continue;
    }
    d_.metrics->Record(m.job_id(), parsed->rank, parsed->json,
                       [this](const std::string& id, bool* known) { return IsTerminalForMetrics(id, known); });
    reports.push_back(MetricsReport{parsed->rank, parsed->time_s, DumpJson(parsed->json)});
  }
  if (dropped)
    COHORT_LOG(WARN) << "job=" << m.job_id() << " rank " << m.rank() << ": dropped " << dropped
                     << " report line(s): " << why;
  if (!reports.empty()) {
    Status st = d_.state->AppendMetrics(m.job_id(), reports);
    if (!st.ok()) COHORT_LOG(WARN) << "job=" << m.job_id() << " metrics: " << st.message();
  }
}

bool JobManager::IsTerminalForMetrics(const std::string& id, bool* known) const {
  const Job* job = Find(id);
  *known = job != nullptr;
  return job != nullptr && jobs::IsTerminal(job->record.status);
}

void JobManager::OnNodeDead(const std::string& node_id, const std::string& why) {
  const Node* node = d_.nodes->Find(node_id);
  const std::string address = node ? node->address : "";
  for (Job* running : RunningJobs()) {
    Job& job = *running;
    if (job.record.status != JobStatus::kRunning) continue;
    for (size_t r = 0; r < job.workers.size(); ++r) {
      if (job.workers[r].node_id == node_id && !job.workers[r].exited) {
        if (job.record.stop_requested) {
          job.workers[r].live = false;
          job.workers[r].exited = true;
          continue;
        }
        FailAttempt(job,
                    "node " + node_id + " (" + address + ") running rank " + std::to_string(r) + " died: " + why,
                    std::nullopt);
        break;
      }
    }
    if (job.record.stop_requested && job.record.status == JobStatus::kRunning) {
      bool all = true;
      for (const auto& w : job.workers) all = all && w.exited;
      if (all) FinishStopped(job);
    }
  }
}

// ---------------------------------------------------------------------------
// Workers

void JobManager::StopAttemptWorkers(Job& job, int attempt) {
  std::set<std::string> nodes;
  for (auto& w : job.workers)
    if (!w.exited) nodes.insert(w.node_id);
  for (const auto& node_id : nodes) {
    rpc::HeadMessage stop;
    stop.mutable_stop_workers()->set_job_id(job.record.spec.submission_id);
    stop.mutable_stop_workers()->set_attempt(attempt);
    stop.mutable_stop_workers()->set_grace_ms(static_cast<uint32_t>(d_.options.stop_grace.count()));
    d_.nodes->Send(node_id, stop);
  }
}

void JobManager::FailAttempt(Job& job, const std::string& cause, std::optional<int> exit_code, bool retryable) {
  const std::string& id = job.record.spec.submission_id;
  StopAttemptWorkers(job, job.record.attempt);
  for (auto& w : job.workers) w.live = false;  // their resources are released now
  ReleasePort(job);
  job.reattach_deadline.reset();
  AppendLog(id, "cohort: attempt " + std::to_string(job.record.attempt) + " failed: " + cause + "\n");
  COHORT_LOG(WARN) << "job=" << id << " attempt " << job.record.attempt << " failed: " << cause;
  const int64_t now = d_.clock->WallMs();
  if (retryable && jobs::CanRestart(job.record)) {
    const int max = job.record.spec.MaxFailures();
    std::string msg = "Restarting after a failure (restart " + std::to_string(job.record.attempt + 1) +
                      (max < 0 ? "" : " of " + std::to_string(max)) + "): " + cause;
    Status st = jobs::Transition(job.record, JobStatus::kPending, msg, now);
    if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
    ++job_restarts_;
    job.pending_since_ms = now;
    job.workers.clear();
    MarkPending(job);
    AppendLog(id, "cohort: " + msg + "\n");
    Persist(job, msg);
    return;
  }
  std::string message;
  const bool single = !job.record.spec.scaling || job.record.spec.scaling->num_workers == 1;
  if (exit_code && single) {
    d_.log_writer->Flush();  // the lines queued so far belong in the message
    auto tail = d_.logs->Tail(id, 10);
    message = jobs::FailedEntrypointMessage(*exit_code, tail.ok() ? *tail : "");
  } else {
    message = "Job failed: " + cause;
    if (job.record.attempt > 0)
      message += " (after " + std::to_string(job.record.attempt) + " restart" + (job.record.attempt == 1 ? "" : "s") +
                 ")";
  }
  if (exit_code) job.record.driver_exit_code = *exit_code;
  const char* type = exit_code ? jobs::kErrorEntrypointCommandError : jobs::kErrorSupervisorDied;
  Status st = jobs::Transition(job.record, JobStatus::kFailed, message, now, std::string(type));
  if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
  Persist(job, message);
}

void JobManager::FinishStopped(Job& job) {
  for (auto& w : job.workers) {
    w.live = false;
    w.exited = true;
  }
  ReleasePort(job);
  job.stop_deadline.reset();
  Status st = jobs::Transition(job.record, JobStatus::kStopped, "", d_.clock->WallMs());
  if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
  AppendLog(job.record.spec.submission_id, "cohort: job stopped\n");
  Persist(job, "STOPPED");
}

void JobManager::FinishListing(const ResultsFinalizer::Outcome& outcome) {
  Job* job = Find(outcome.job_id);
  if (job == nullptr || !job->finalizing || job->record.status != JobStatus::kRunning) return;
  job->finalizing = false;
  job->record.internal.erase("finalizing");
  const int64_t now = d_.clock->WallMs();
  if (!outcome.listing.ok()) {
    Status st = jobs::Transition(job->record, JobStatus::kFailed,
                                 "Job failed: its results could not be found in " + outcome.uri + ": " +
                                     outcome.listing.status().message(),
                                 now, std::string(jobs::kErrorEntrypointCommandError));
    if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
    Persist(*job, "results missing");
    return;
  }
  job->record.internal["results"] = *outcome.listing;
  Status st = jobs::Transition(job->record, JobStatus::kSucceeded, "", now);
  if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
  AppendLog(outcome.job_id,
            "cohort: " + std::to_string(outcome.listing->size()) + " result object(s) in " + outcome.uri + "\n");
  Persist(*job, "SUCCEEDED");
  COHORT_LOG(INFO) << "job=" << outcome.job_id << " succeeded; results in " << outcome.uri;
}

// ---------------------------------------------------------------------------
// Scheduling

std::map<std::string, jobs::Resources> JobManager::Used() {
  std::map<std::string, jobs::Resources> used;
  for (auto it = placed_.begin(); it != placed_.end();) {
    const Job* job = Find(*it);
    bool any = false;
    if (job != nullptr)
      for (const auto& w : job->workers)
        if (w.live) {
          used[w.node_id].Add(w.resources);
          any = true;
        }
    // Recovered RUNNING jobs wait for their workers to re-attach: keep them.
    if (!any && (job == nullptr || job->record.status != JobStatus::kRunning)) it = placed_.erase(it);
    else ++it;
  }
  return used;
}

void JobManager::TrySchedule() {
  // One snapshot for the pass, taken again only after a placement.
  std::optional<std::vector<scheduler::NodeSnapshot>> nodes;
  for (auto it = pending_.begin(); it != pending_.end();) {
    Job* job = Find(it->second);
    if (job == nullptr || job->seq != it->first || job->record.status != JobStatus::kPending ||
        job->record.stop_requested) {
      it = pending_.erase(it);
      continue;
    }
    if (!nodes) nodes = Schedulable();
    if (TryPlace(*job, *nodes)) {
      nodes.reset();
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

bool JobManager::TryPlace(Job& job, const std::vector<scheduler::NodeSnapshot>& nodes) {
  const auto& spec = job.record.spec;
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

rpc::HeadMessage JobManager::StartMessage(const Job& job, int r, const std::vector<std::string>& node_of_rank,
                                          const std::map<std::string, std::set<int>>& job_gpus, int port) const {
  const auto& rec = job.record;
  const auto& spec = rec.spec;
  const std::string& id = spec.submission_id;
  const int world = static_cast<int>(node_of_rank.size());
  const bool distributed = spec.scaling.has_value();
  const jobs::Resources per_worker =
      distributed ? spec.scaling->resources_per_worker : spec.entrypoint_resources.ToDemand();
  std::map<std::string, int> local_count, node_rank;
  std::vector<int> local_rank(world);
  for (int i = 0; i < world; ++i) {
    const auto& n = node_of_rank[i];
    if (!node_rank.count(n)) node_rank[n] = static_cast<int>(node_rank.size());
    local_rank[i] = local_count[n]++;
  }
  const Node* master = d_.nodes->Find(node_of_rank[0]);
  const std::string master_addr = master ? master->address : "127.0.0.1";

  auto env_vars = EnvVarsOf(spec);
  std::string package, cwd;
  if (spec.runtime_env.is_object())
    if (auto wd = spec.runtime_env.find("working_dir"); wd != spec.runtime_env.end() && wd->is_string()) {
      const std::string w = wd->get<std::string>();
      if (w.rfind("gcs://", 0) == 0) package = w;
      else cwd = w;
    }
  rpc::HeadMessage msg;
  auto* sw = msg.mutable_start_worker();
  sw->set_job_id(id);
  sw->set_attempt(rec.attempt);
  sw->set_rank(r);
  sw->set_entrypoint(cwd.empty() ? spec.entrypoint : "cd '" + cwd + "' && " + spec.entrypoint);
  sw->set_working_dir_package(package);
  if (auto g = job_gpus.find(node_of_rank[r]); g != job_gpus.end())
    for (int gpu : g->second) sw->add_gpu_ids(gpu);
  for (const auto& [k, v] : per_worker.amounts) (*sw->mutable_resources())[k] = v;
  auto& env = *sw->mutable_env();
  for (const auto& [k, v] : env_vars)
    if (!ReservedEnvVar(k)) env[k] = v;
  env["COHORT_JOB_ID"] = id;
  // The job's own credential: reads its record, logs and metrics, and keys
  // the rendezvous handshake. Never the cluster's token.
  if (d_.tokens != nullptr) env["COHORT_JOB_TOKEN"] = d_.tokens->TokenFor(id);
  // `import cohort` works in Python workers (python/cohort.py ships with cohort).
  if (const std::string py = PythonModuleDir(); !py.empty())
    env["PYTHONPATH"] = env_vars.count("PYTHONPATH") ? py + ":" + env_vars["PYTHONPATH"] : py;
  env["PYTHONUNBUFFERED"] = "1";
  // file:// URIs reach the workers as plain paths, which every program can
  // open (gs:// and s3:// stay URIs: the trainer's storage layer takes them).
  auto local = [](const std::string& dir) { return dir.rfind("file://", 0) == 0 ? dir.substr(7) : dir; };
  env["COHORT_CHECKPOINT_DIR"] = local(job.checkpoint_dir);
  env["COHORT_RESULTS_DIR"] = local(job.results_dir);
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
      env["OMP_NUM_THREADS"] = std::to_string(std::max(1, static_cast<int>(std::min(cpus, 1024.0))));
    if (!env_vars.count("OPENBLAS_NUM_THREADS")) env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"];
  }
  return msg;
}

void JobManager::StartWorkers(Job& job, const std::vector<std::string>& node_of_rank) {
  auto& rec = job.record;
  const auto& spec = rec.spec;
  const std::string& id = spec.submission_id;
  const int world = static_cast<int>(node_of_rank.size());
  const bool distributed = spec.scaling.has_value();
  const jobs::Resources per_worker =
      distributed ? spec.scaling->resources_per_worker : spec.entrypoint_resources.ToDemand();
  const int port = PickMasterPort();
  rec.internal["master_port"] = port;

  // GPUs: whole devices per worker, taken from those no live worker holds on
  // its node. Every worker of the job on a node sees the sorted union of the
  // job's GPUs there (CUDA_VISIBLE_DEVICES), and local rank i uses the i-th.
  const int gpus_per_worker = static_cast<int>(std::ceil(std::min(per_worker.Get("GPU"), 1e6) - 1e-9));
  std::map<std::string, std::set<int>> busy_gpus, job_gpus;
  if (gpus_per_worker > 0)
    for (const auto& [other_id, other] : jobs_)
      for (const auto& w : other.workers)
        if (w.live) busy_gpus[w.node_id].insert(w.gpu_ids.begin(), w.gpu_ids.end());
  job.workers.assign(world, Worker{});
  placed_.insert(id);
  rec.workers.clear();
  for (int r = 0; r < world; ++r) {
    job.workers[r].node_id = node_of_rank[r];
    job.workers[r].resources = per_worker;
    job.workers[r].live = true;
    job.worker_nodes.insert(node_of_rank[r]);
    const Node* node = d_.nodes->Find(node_of_rank[r]);
    const int node_gpus = node ? static_cast<int>(std::min(node->total.Get("GPU"), 1e6) + 1e-9) : 0;
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
  Status st = jobs::Transition(rec, JobStatus::kRunning, "", d_.clock->WallMs());
  if (!st.ok()) COHORT_LOG(ERROR) << st.ToString();
  ObservePlacement(job);

  std::string where;
  for (int r = 0; r < world; ++r) where += (r ? ", " : "") + std::to_string(r) + "->" + node_of_rank[r];
  AppendLog(id, "cohort: running entrypoint for job " + id + " (attempt " + std::to_string(rec.attempt) +
                    (distributed ? ", " + std::to_string(world) + " workers: " + where : "") + "): " +
                    spec.entrypoint + "\n");
  Persist(job, "RUNNING");
  COHORT_LOG(INFO) << "job=" << id << " attempt=" << rec.attempt << " placed: " << where;

  for (int r = 0; r < world; ++r) {
    rpc::HeadMessage msg = StartMessage(job, r, node_of_rank, job_gpus, port);
    if (const size_t bytes = msg.ByteSizeLong(); bytes > kMaxStartWorkerBytes) {
      // Deterministic: a restart would fail the same way.
      FailAttempt(job,
                  "the start message of rank " + std::to_string(r) + " is " + std::to_string(bytes) +
                      " bytes, over the agents' limit of " + std::to_string(kMaxStartWorkerBytes) +
                      " bytes: shorten the entrypoint or env_vars, or ship files with working_dir",
                  std::nullopt, /*retryable=*/false);
      return;
    }
    if (!d_.nodes->Send(node_of_rank[r], msg)) {
      FailAttempt(job, "node " + node_of_rank[r] + " is unreachable", std::nullopt);
      return;
    }
  }
}

void JobManager::ObservePlacement(const Job& job) {
  const auto& rec = job.record;
  const int64_t now = d_.clock->WallMs();
  if (rec.attempt == 0) submit_to_running_.Observe(static_cast<double>(now - rec.start_time_ms) / 1000.0);
  // A restart's wait counts from the failure; a first attempt's from the
  // submission. (A restarted job recovered from the state store: unknown.)
  const int64_t since = job.pending_since_ms != 0 ? job.pending_since_ms : rec.attempt == 0 ? rec.start_time_ms : 0;
  if (since != 0) placement_wait_.Observe(static_cast<double>(std::max<int64_t>(0, now - since)) / 1000.0);
}

// ---------------------------------------------------------------------------
// Tick

void JobManager::Tick() {
  const auto now = d_.clock->Now();
  for (const auto& outcome : d_.finalizer->Take()) FinishListing(outcome);
  for (Job* running : RunningJobs()) {
    Job& job = *running;
    if (job.record.status != JobStatus::kRunning) continue;
    if (job.stop_deadline && now > *job.stop_deadline) {
      FinishStopped(job);
    } else if (job.reattach_deadline && now > *job.reattach_deadline) {
      FailAttempt(job,
                  "the head restarted and the job's workers did not re-attach within " +
                      std::to_string(d_.options.reattach_timeout.count() / 1000) + " s",
                  std::nullopt);
    }
  }
  TrySchedule();
}

// ---------------------------------------------------------------------------
// API

Result<std::string> JobManager::Submit(std::string_view body) {
  auto parsed = jobs::ParseSubmitRequest(body);
  if (!parsed.ok()) return parsed.status();
  jobs::JobSpec spec = std::move(parsed).value();
  const std::string id = spec.submission_id;
  if (Status st = LogStore::ValidateJobId(id); !st.ok()) return st;
  if (jobs_.count(id))
    return Status::AlreadyExists("Job with submission_id " + id +
                                 " already exists. Please use a different submission_id.");
  if (spec.runtime_env.is_object())
    if (auto ev = spec.runtime_env.find("env_vars"); ev != spec.runtime_env.end() && !ev->is_null()) {
      if (!ev->is_object()) return Status::InvalidArgument("runtime_env.env_vars must be a dict of strings");
      for (const auto& [k, v] : ev->items())
        if (!v.is_string())
          return Status::InvalidArgument("runtime_env.env_vars." + SanitizeUtf8(k) + " must be a string, got " +
                                         std::string(v.type_name()));
    }
  size_t start_bytes = spec.entrypoint.size();
  for (const auto& [k, v] : EnvVarsOf(spec)) {
    if (ReservedEnvVar(k))
      return Status::InvalidArgument("runtime_env.env_vars." + SanitizeUtf8(k) +
                                     " is set by the cluster for each worker and cannot be given");
    start_bytes += k.size() + v.size() + 4;
  }
  if (start_bytes > kMaxStartWorkerBytes - (size_t{16} << 10))
    return Status::InvalidArgument("the entrypoint and env_vars take " + std::to_string(start_bytes) +
                                   " bytes, over the limit of " + std::to_string(kMaxStartWorkerBytes) +
                                   " bytes a worker's start message may carry; ship files with working_dir");
  if (spec.runtime_env.is_object())
    if (auto wd = spec.runtime_env.find("working_dir"); wd != spec.runtime_env.end()) {
      if (!wd->is_string()) return Status::InvalidArgument("runtime_env.working_dir must be a string");
      const std::string w = wd->get<std::string>();
      if (w.rfind("gcs://", 0) == 0) {
        if (!d_.packages->Exists(PackageNameOf(w)))
          return Status::InvalidArgument("runtime_env.working_dir: Package " + SanitizeUtf8(w) +
                                         " does not exist; upload it first (PUT /api/packages/gcs/<name>)");
      } else if (w.empty() || w[0] != '/' || w.find('\'') != std::string::npos) {
        return Status::InvalidArgument(
            "runtime_env.working_dir must be a gcs:// package URI or an absolute path on the nodes (without ')");
      }
    }
  Job job;
  job.record = jobs::NewJobRecord(std::move(spec), d_.clock->WallMs());
  const std::string job_dir = d_.options.state_dir + "/jobs/" + id;
  job.results_dir = job.record.spec.results_uri.empty() ? job_dir + "/results" : job.record.spec.results_uri;
  job.checkpoint_dir =
      job.record.spec.results_uri.empty() ? job_dir + "/checkpoints" : job.record.spec.results_uri + "/checkpoints";
  auto env_vars = EnvVarsOf(job.record.spec);
  if (auto it = env_vars.find("COHORT_CHECKPOINT_DIR"); it != env_vars.end()) job.checkpoint_dir = it->second;
  // Its own results directory (as `cohort run` sets it): not listed or
  // required at the end, unlike a results_uri.
  if (auto it = env_vars.find("COHORT_RESULTS_DIR"); it != env_vars.end() && job.record.spec.results_uri.empty())
    job.results_dir = it->second;
  // No directory is made here: the trainer creates its checkpoint and
  // results directories when it writes them (keeps submit cheap).
  job.seq = next_seq_++;
  Job& stored = jobs_[id] = std::move(job);
  job_order_.push_back(id);
  ++jobs_submitted_;
  Persist(stored, "PENDING");
  if (!d_.state->healthy()) {
    // Not known to be on disk: do not run it.
    jobs_.erase(id);
    job_order_.pop_back();
    return d_.state->failure();
  }
  COHORT_LOG(INFO) << "job=" << id << " submitted";
  if (!TryPlace(stored, Schedulable())) MarkPending(stored);
  return id;
}

JobManager::json JobManager::DetailsOf(const Job& job, bool admin) const {
  json d = jobs::JobDetailsJson(job.record);
  auto results = job.record.internal.find("results");
  d["results"] = results != job.record.internal.end() ? *results : json();
  d["checkpoint_dir"] = job.checkpoint_dir;
  d["results_dir"] = job.results_dir;
  // Results left on the nodes (no results_uri): what each node listed after its last worker exit.
  json node_results = json::array();
  if (auto it = job.record.internal.find("node_results"); it != job.record.internal.end() && it->is_object())
    for (const auto& [node, entry] : it->items()) node_results.push_back(entry);
  d["node_results"] = std::move(node_results);
  // Resident memory of the running workers (from the agents' heartbeats).
  int64_t rss = 0;
  for (const Worker& w : job.workers)
    if (w.live) rss += w.rss_bytes;
  d["memory_rss_bytes"] = rss;
  if (!admin)
    if (auto re = d.find("runtime_env"); re != d.end() && re->is_object())
      if (auto ev = re->find("env_vars"); ev != re->end() && ev->is_object())
        for (auto& [k, v] : ev->items()) v = "<hidden: needs the cluster token>";
  return d;
}

Result<JobManager::json> JobManager::Details(const std::string& id, bool admin) const {
  const Job* job = Find(id);
  if (job == nullptr) return NotFoundJob(id);
  return DetailsOf(*job, admin);
}

JobManager::json JobManager::List(bool admin) const {
  json out = json::array();
  for (const auto& id : job_order_) out.push_back(DetailsOf(jobs_.at(id), admin));
  return out;
}

Result<bool> JobManager::Stop(const std::string& id) {
  Job* job = Find(id);
  if (job == nullptr) return NotFoundJob(id);
  auto& rec = job->record;
  if (jobs::IsTerminal(rec.status) || rec.stop_requested) return false;
  COHORT_RETURN_IF_ERROR(d_.state->failure());
  rec.stop_requested = true;
  if (rec.status == JobStatus::kPending) {
    FinishStopped(*job);
  } else {
    StopAttemptWorkers(*job, rec.attempt);
    job->stop_deadline = d_.clock->Now() + d_.options.stop_grace + std::chrono::seconds(5);
    AppendLog(id, "cohort: stop requested\n");
    Persist(*job, "stop requested");
  }
  return true;
}

Status JobManager::Delete(const std::string& id) {
  Job* job = Find(id);
  if (job == nullptr) return NotFoundJob(id);
  if (!jobs::IsTerminal(job->record.status))
    return Status::FailedPrecondition("Attempted to delete job '" + id + "', but it is in a non-terminal state " +
                                      std::string(jobs::JobStatusName(job->record.status)) + ".");
  COHORT_RETURN_IF_ERROR(d_.state->DeleteJob(id));
  jobs_.erase(id);
  d_.metrics->Forget(id);
  job_order_.erase(std::remove(job_order_.begin(), job_order_.end(), id), job_order_.end());
  return Status::Ok();
}

Result<bool> JobManager::IsTerminal(const std::string& id) const {
  const Job* job = Find(id);
  if (job == nullptr) return NotFoundJob(id);
  return jobs::IsTerminal(job->record.status);
}

namespace {

// A node's GPUs for the cluster status; unknown values are null.
nlohmann::json GpusJson(const std::vector<NodeGpu>& gpus) {
  nlohmann::json out = nlohmann::json::array();
  auto known = [](auto v) { return v >= 0 ? nlohmann::json(v) : nlohmann::json(nullptr); };
  for (const NodeGpu& g : gpus)
    out.push_back({{"index", g.index},
                   {"name", g.name},
                   {"memory_used_bytes", known(g.memory_used_bytes)},
                   {"memory_total_bytes", known(g.memory_total_bytes)},
                   {"utilization_percent", known(g.utilization_percent)}});
  return out;
}

}  // namespace

JobManager::json JobManager::ClusterStatus() {
  auto snapshot = Schedulable();
  json nodes = json::array();
  for (const auto& s : snapshot) {
    const Node* n = d_.nodes->Find(s.node_id);
    nodes.push_back({{"node_id", s.node_id},
                     {"address", s.address},
                     {"hostname", n ? n->hostname : ""},
                     {"state", n && n->alive ? "ALIVE" : "DEAD"},
                     // false while ALIVE but silent (no new work goes there)
                     {"schedulable", s.alive},
                     {"is_head_node", s.is_head},
                     {"resources_total", s.total.ToJson()},
                     {"resources_used", s.used.ToJson()},
                     // the machine's memory in use, as its agent last reported it
                     {"memory_used_bytes", n ? n->memory_used_bytes : 0},
                     {"gpus", n ? GpusJson(n->gpus) : json::array()},
                     {"last_heartbeat_ms", n ? n->last_seen_ms : 0}});
  }
  json pending = json::array();
  for (const auto& [seq, id] : pending_) {
    const Job* found = Find(id);
    if (found == nullptr || found->seq != seq) continue;
    const Job& job = *found;
    if (job.record.status != JobStatus::kPending) continue;
    json bundles = json::array();
    if (job.record.spec.scaling)
      for (int i = 0; i < job.record.spec.scaling->num_workers; ++i)
        bundles.push_back(job.record.spec.scaling->resources_per_worker.ToJson());
    else
      bundles.push_back(job.record.spec.entrypoint_resources.ToDemand().ToJson());
    pending.push_back({{"job_id", id}, {"bundles", bundles}, {"reason", job.record.pending_reason}});
  }
  return {{"nodes", nodes}, {"pending_demand", pending}};
}

}  // namespace cohort::head
