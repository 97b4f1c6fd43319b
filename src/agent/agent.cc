// Agent life cycle, state dir and worker preparation; see
// cohort/agent/agent.h and agent_impl.h (the session with the head is in
// session.cc).
#include "cohort/agent/agent.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "agent_impl.h"
#include "cohort/common/atomic_file.h"
#include "cohort/common/logging.h"
#include "node_info.h"
#include "package.h"

#ifndef COHORT_VERSION
#define COHORT_VERSION "0.1.0"
#endif

extern char** environ;

namespace cohort::agent {
namespace fs = std::filesystem;

namespace {

// Job ids name directories: keep them to a safe alphabet.
bool ValidJobId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string NewNodeId() {
  std::random_device rd;
  std::string id;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) {
    unsigned v = rd() & 0xff;
    id += hex[v >> 4];
    id += hex[v & 15];
  }
  return id;
}

}  // namespace

// ---------------------------------------------------------------------------
// Agent (the public face) forwards to Impl.

Agent::Agent(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Agent::~Agent() = default;
Status Agent::Start() { return impl_->Start(); }
void Agent::Stop(bool kill_workers) { impl_->Stop(kill_workers); }
Status Agent::Wait(Deadline deadline) { return impl_->Wait(deadline); }
std::string Agent::node_id() const { return impl_->node_id(); }
std::string Agent::advertise_address() const { return impl_->advertise_address(); }
Resources Agent::resources() const { return impl_->resources(); }
std::vector<GpuStatus> Agent::gpus() const { return impl_->gpus(); }
bool Agent::connected() const { return impl_->connected(); }
size_t Agent::num_running_workers() const { return impl_->num_running_workers(); }
size_t Agent::unacknowledged_log_bytes() const { return impl_->unacknowledged_log_bytes(); }
size_t Agent::acknowledged_log_bytes() const { return impl_->acknowledged_log_bytes(); }

Agent::Impl::Impl(Options options)
    : options_(std::move(options)), outbox_(options_.max_buffered_bytes) {
  if (options_.cohort_version.empty()) options_.cohort_version = COHORT_VERSION;
  heartbeat_interval_ms_ = static_cast<uint32_t>(std::max<int64_t>(1, options_.heartbeat_interval.count()));
}

Agent::Impl::~Impl() { Stop(/*kill_workers=*/true); }

// ---------------------------------------------------------------------------
// Start / Stop / Wait.

Status Agent::Impl::PrepareStateDir() {
  const std::string& dir = options_.state_dir;
  if (dir.empty()) return Status::InvalidArgument("the agent needs a state dir");
  std::error_code ec;
  for (const char* sub : {"", "/packages", "/jobs", "/run"}) {
    fs::create_directories(dir + sub, ec);
    if (ec) return Status::IoError("cannot create " + dir + sub + ": " + ec.message());
  }
  std::string lock_path = dir + "/agent.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) return Status::IoError("cannot open " + lock_path + ": " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK) {
      return Status::AlreadyExists("another agent is running with state dir " + dir +
                                   "; give each agent on a machine its own --state-dir");
    }
    return Status::IoError("cannot lock " + lock_path + ": " + std::strerror(err));
  }
  // Sockets of an earlier run are stale.
  for (const auto& entry : fs::directory_iterator(dir + "/run", ec)) fs::remove(entry.path(), ec);

  std::string node_id;
  std::ifstream in(dir + "/node_id");
  if (in) std::getline(in, node_id);
  while (!node_id.empty() && std::isspace(static_cast<unsigned char>(node_id.back()))) {
    node_id.pop_back();
  }
  if (node_id.empty()) {
    node_id = NewNodeId();
    COHORT_RETURN_IF_ERROR(WriteFileAtomically(dir + "/node_id", node_id + "\n"));
  }
  std::lock_guard<std::mutex> lock(state_mu_);
  node_id_ = node_id;
  return Status::Ok();
}

Status Agent::Impl::Start() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    if (started_) return Status::FailedPrecondition("Agent::Start() called twice");
    if (options_.head_address.empty()) {
      return Status::InvalidArgument("the agent needs the head's address (--address HOST:PORT)");
    }
    COHORT_RETURN_IF_ERROR(PrepareStateDir());
    Result<Resources> resources = CompleteResources(options_.resources);
    if (!resources.ok()) {
      ::close(lock_fd_);
      lock_fd_ = -1;
      return resources.status();
    }
    resources_ = *resources;
    gpu_devices_ = DetectGpuDevices();
    gpu_probe_ = NewGpuProbe(gpu_devices_);
    {
      std::lock_guard<std::mutex> lock(gpus_mu_);
      last_gpus_ = gpu_probe_->Sample();
    }
    hostname_ = Hostname();
    address_ = options_.advertise_address;
    if (address_.empty()) {
      Result<std::string> local = LocalAddressToward(options_.head_address);
      address_ = local.ok() ? *local : "127.0.0.1";
    }
    if (Result<std::string> iface = InterfaceWithAddress(address_); iface.ok()) {
      iface_ = *iface;
    } else {
      COHORT_LOG(WARN) << "agent: " << iface.status().message()
                       << "; workers get no GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME";
    }
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string_view entry(*e);
      size_t eq = entry.find('=');
      if (eq == std::string_view::npos) continue;
      base_env_.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
    }
    base_env_.erase("COHORT_REPORT_PATH");
    // Workers never inherit the cluster's credentials: not the token
    // variables, nor any variable that holds the token under another name
    // (the head gives each job its own COHORT_JOB_TOKEN instead).
    for (const char* name : {"COHORT_TOKEN", "COHORT_JOB_TOKEN", "COHORT_TOKEN_FILE", "COHORT_JOIN_TOKEN", "COHORT_JOIN_TOKEN_FILE"}) base_env_.erase(name);
    if (!options_.cluster_token.empty())
      std::erase_if(base_env_, [&](const auto& kv) { return kv.second.find(options_.cluster_token) != std::string::npos; });

    client_ = rpc::NewHeadClient(options_.head_address);
    Supervisor::Options sup;
    sup.run_dir = options_.state_dir + "/run";
    sup.flush_interval = options_.log_flush_interval;
    supervisor_ = std::make_unique<Supervisor>(sup, &outbox_);
    Status s = supervisor_->Start();
    if (!s.ok()) {
      ::close(lock_fd_);
      lock_fd_ = -1;
      return s;
    }
    prep_thread_ = std::thread([this] { PrepLoop(); });
    session_thread_ = std::thread([this] { SessionLoop(); });
    started_ = true;
  }
  COHORT_LOG(INFO) << "agent: node " << node_id() << " (" << hostname_ << ", " << address_
                   << ") connecting to the head at " << options_.head_address;

  Status result;
  {
    std::unique_lock<std::mutex> lock(state_mu_);
    state_cv_.wait_for(lock, options_.start_timeout, [&] { return registered_once_ || failed_; });
    if (registered_once_) return Status::Ok();
    if (failed_) {
      result = fatal_;
    } else {
      result = Status::Unavailable(
          "could not register with the head at " + options_.head_address + " within " +
          std::to_string(options_.start_timeout.count()) + " ms" +
          (last_connect_error_.ok() ? std::string() : ": " + last_connect_error_.message()));
      fatal_ = result;  // what Wait() reports too
      failed_ = true;
    }
  }
  Stop(/*kill_workers=*/true);
  return result;
}

void Agent::Impl::Stop(bool kill_workers) {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (stopped_) return;
    if (!started_) {
      stopped_ = true;
      state_cv_.notify_all();
      return;
    }
  }
  stopping_ = true;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    state_cv_.notify_all();  // a reconnection backoff
  }

  // 1. No more workers: pending preparations end as "never started".
  {
    std::lock_guard<std::mutex> lock(prep_mu_);
    prep_stop_ = true;
    if (prep_current_) prep_current_stop_signal_ = SIGTERM;
    prep_cv_.notify_all();
  }
  client_->Shutdown();  // a package download in flight
  prep_thread_.join();

  // 2. The workers.
  supervisor_->Shutdown(kill_workers, options_.stop_grace);

  // 3. The head: send what is queued (their exits), then say goodbye.
  if (kill_workers) {
    draining_ = true;
    std::unique_lock<std::mutex> lock(state_mu_);
    state_cv_.wait_for(lock, std::chrono::milliseconds(1500), [&] { return session_done_; });
  }
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (current_stream_ != nullptr) current_stream_->Cancel();
  }
  session_thread_.join();
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
  COHORT_LOG(INFO) << "agent: node " << node_id() << " stopped";

  std::lock_guard<std::mutex> lock(state_mu_);
  stopped_ = true;
  connected_ = false;
  state_cv_.notify_all();
}

Status Agent::Impl::Wait(Deadline deadline) {
  {
    std::unique_lock<std::mutex> lock(state_mu_);
    auto done = [&] { return stopped_ || failed_; };
    if (deadline.when() == Deadline::Clock::time_point::max()) {
      state_cv_.wait(lock, done);
    } else if (!state_cv_.wait_until(lock, deadline.when(), done)) {
      return Status::DeadlineExceeded("the agent is still running");
    }
  }
  Stop(/*kill_workers=*/true);  // no-op after Stop(); finishes a failed agent
  std::lock_guard<std::mutex> lock(state_mu_);
  return fatal_;
}

void Agent::Impl::SetFatal(Status status) {
  COHORT_LOG(ERROR) << "agent: " << status.message() << "; stopping";
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (!failed_) fatal_ = std::move(status);
    failed_ = true;
    state_cv_.notify_all();
  }
  // The workers go now, whoever calls Wait() or Stop() later.
  supervisor_->Stop(WorkerFilter{}, SIGTERM, options_.stop_grace);
}

std::string Agent::Impl::node_id() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  return node_id_;
}
// address_ and resources_ are written by Start() before it returns and never after.
std::string Agent::Impl::advertise_address() const { return address_; }
Resources Agent::Impl::resources() const { return resources_; }
std::vector<GpuStatus> Agent::Impl::gpus() const {
  std::lock_guard<std::mutex> lock(gpus_mu_);
  return last_gpus_;
}
bool Agent::Impl::connected() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  return connected_;
}
size_t Agent::Impl::num_running_workers() const {
  return supervisor_ ? supervisor_->num_running() : 0;
}

// ---------------------------------------------------------------------------
// Preparation.

void Agent::Impl::PrepLoop() {
  for (;;) {
    PrepItem item;
    {
      std::unique_lock<std::mutex> lock(prep_mu_);
      prep_cv_.wait(lock, [&] { return prep_stop_ || !prep_queue_.empty(); });
      if (prep_stop_) break;
      item = std::move(prep_queue_.front());
      prep_queue_.pop_front();
      prep_current_ = item.key;
      prep_current_stop_signal_ = 0;
    }
    Result<SpawnRequest> request = Prepare(item.start);
    std::lock_guard<std::mutex> lock(prep_mu_);
    if (prep_current_stop_signal_ != 0) {
      outbox_.Push(NeverStarted(item.key, prep_current_stop_signal_,
                                "stopped before it started"));
    } else if (!request.ok()) {
      COHORT_LOG(WARN) << "agent: cannot start worker " << item.key.ToString() << ": "
                       << request.status().message();
      outbox_.Push(NeverStarted(item.key, 0, request.status().message()));
    } else {
      supervisor_->Spawn(std::move(*request));
    }
    prep_current_.reset();
  }
  std::lock_guard<std::mutex> lock(prep_mu_);
  for (const PrepItem& item : prep_queue_) {
    outbox_.Push(NeverStarted(item.key, 0, "the agent stopped before the worker started"));
  }
  prep_queue_.clear();
}

Result<SpawnRequest> Agent::Impl::Prepare(const rpc::StartWorker& start) {
  if (!ValidJobId(start.job_id())) {
    return Status::InvalidArgument("job id '" + start.job_id() +
                                   "' cannot name a directory (use [A-Za-z0-9_.-], at most 128)");
  }
  if (start.attempt() < 0 || start.rank() < 0) {
    return Status::InvalidArgument("negative attempt or rank in StartWorker");
  }
  if (start.entrypoint().empty()) return Status::InvalidArgument("empty entrypoint");

  SpawnRequest req;
  req.key = WorkerKey{start.job_id(), start.attempt(), start.rank()};
  req.entrypoint = start.entrypoint();
  req.scratch_dir = options_.state_dir + "/jobs/" + start.job_id() + "/attempt-" +
                    std::to_string(start.attempt()) + "/rank-" + std::to_string(start.rank());
  std::error_code ec;
  fs::create_directories(req.scratch_dir, ec);
  if (ec) return Status::IoError("cannot create " + req.scratch_dir + ": " + ec.message());
  req.cwd = options_.worker_cwd.empty() ? req.scratch_dir : options_.worker_cwd;
  if (!start.working_dir_package().empty()) {
    COHORT_ASSIGN_OR_RETURN(req.cwd,
                            EnsureWorkingDir(start.job_id(), start.working_dir_package()));
  }

  req.env = base_env_;
  for (const auto& [k, v] : start.env()) req.env[k] = v;
  req.env["COHORT_SCRATCH_DIR"] = req.scratch_dir;
  AddSocketInterfaceEnv(iface_, &req.env);  // the job's or the agent's own settings win
  if (start.gpu_ids_size() > 0 && start.env().count("CUDA_VISIBLE_DEVICES") == 0) {
    std::vector<int> ids(start.gpu_ids().begin(), start.gpu_ids().end());
    req.env["CUDA_VISIBLE_DEVICES"] = CudaVisibleDevicesFor(ids, gpu_devices_);
  }
  auto ws = start.env().find("WORLD_SIZE");
  req.prefix_lines = ws != start.env().end() && std::atoi(ws->second.c_str()) > 1;
  for (const auto& [name, amount] : start.resources()) req.resources[name] = amount;
  return req;
}

Result<std::string> Agent::Impl::EnsureWorkingDir(const std::string& job_id,
                                                  const std::string& uri) {
  const std::string dir = options_.state_dir + "/jobs/" + job_id + "/working_dir";
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return dir;  // another rank of the job got it already
  Result<std::string> name = PackageFileName(uri);
  if (!name.ok()) return name.status();
  const std::string zip = options_.state_dir + "/packages/" + *name;

  if (!fs::exists(zip, ec)) {
    const std::string part = zip + ".part";
    int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Status::IoError("cannot create " + part + ": " + std::strerror(errno));
    rpc::GetPackageRequest request;
    request.set_uri(uri);
    request.set_cluster_token(options_.cluster_token);
    request.set_node_id(node_id());
    Status s = client_->GetPackage(
        request, Deadline::After(options_.package_timeout), [&](std::string_view chunk) {
          while (!chunk.empty()) {
            ssize_t n = ::write(fd, chunk.data(), chunk.size());
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return Status::IoError("cannot write " + part + ": " + std::strerror(errno));
            chunk.remove_prefix(static_cast<size_t>(n));
          }
          return Status::Ok();
        });
    if (::close(fd) != 0 && s.ok()) s = Status::IoError("cannot write " + part);
    if (!s.ok()) {
      ::unlink(part.c_str());
      return Status(s.code(), "cannot download working_dir package " + uri + ": " + s.message());
    }
    if (::rename(part.c_str(), zip.c_str()) != 0) {
      return Status::IoError("cannot rename " + part + ": " + std::strerror(errno));
    }
    COHORT_LOG(INFO) << "agent: downloaded working_dir package " << uri;
  }

  const std::string tmp = dir + ".tmp";
  fs::remove_all(tmp, ec);
  Status s = ExtractZip(zip, tmp);
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return Status(s.code(), "working_dir package " + uri + ": " + s.message());
  }
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    return Status::IoError("cannot rename " + tmp + " to " + dir + ": " + std::strerror(errno));
  }
  return dir;
}

}  // namespace cohort::agent
