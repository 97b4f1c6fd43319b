// The agent's session with the head: connect, register, heartbeat, dispatch,
// reconnect. See agent_impl.h for the threads and src/proto/cohort.proto for
// the conversation.
//
// One session = one Connect stream:
//   session thread                      writer thread
//   Connect()                           Write(Register)
//   Read() -> Registered | Refused      wait for Registered (connect_timeout)
//   Read() ... Dispatch()               heartbeat when due, else Outbox.Take()
//   stream ended -> Cancel, join        -> Write(); a failed Write puts the
//                                          message back and cancels the stream
// A Refused answer is fatal: the agent stops (SetFatal). Any other end of the
// stream leaves the workers running and starts the next session after a
// backoff (reset by a successful registration), listing them in Register.
#include <signal.h>

#include <algorithm>
#include <chrono>

#include "agent_impl.h"
#include "cohort/common/atomic_file.h"
#include "cohort/common/logging.h"
#include "cohort/common/prometheus.h"
#include "node_info.h"

namespace cohort::agent {
namespace {

constexpr auto kWriterSlice = std::chrono::milliseconds(100);
// Connection failures are logged at most this often.
constexpr auto kConnectLogEvery = std::chrono::seconds(30);

int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void Agent::Impl::SessionLoop() {
  auto backoff = options_.reconnect_backoff_min;
  auto last_log = Deadline::Clock::now() - kConnectLogEvery;
  auto failed = [&] {
    std::lock_guard<std::mutex> lock(state_mu_);
    return failed_;
  };
  while (!stopping_ && !failed()) {
    Result<std::unique_ptr<rpc::HeadStream>> stream = client_->Connect(
        Deadline::After(options_.connect_timeout), [this] { return stopping_.load(); });
    bool registered = false;
    if (stream.ok()) {
      registered = RunSession(**stream);
    } else if (!stopping_) {
      {
        std::lock_guard<std::mutex> lock(state_mu_);
        last_connect_error_ = stream.status();
      }
      if (Deadline::Clock::now() - last_log >= kConnectLogEvery) {
        COHORT_LOG(WARN) << "agent: " << stream.status().message() << "; retrying";
        last_log = Deadline::Clock::now();
      }
    }
    if (stopping_ || failed()) break;
    if (registered) {
      backoff = options_.reconnect_backoff_min;
    } else {
      backoff = std::min(backoff * 2, options_.reconnect_backoff_max);
    }
    SleepUnlessStopping(registered ? options_.reconnect_backoff_min : backoff);
  }
  std::lock_guard<std::mutex> lock(state_mu_);
  session_done_ = true;
  state_cv_.notify_all();
}

void Agent::Impl::SleepUnlessStopping(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(state_mu_);
  state_cv_.wait_for(lock, d, [&] { return stopping_.load() || failed_; });
}

bool Agent::Impl::RunSession(rpc::HeadStream& stream) {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    current_stream_ = &stream;
  }
  if (stopping_) stream.Cancel();  // Stop() may have looked before we set it
  SessionSync sync;
  rpc::AgentMessage registration = BuildRegister();
  size_t listed = registration.registration().running_workers_size();
  std::thread writer([&] { WriterLoop(stream, registration, sync); });

  bool registered = false;
  rpc::HeadMessage msg;
  if (stream.Read(&msg)) {
    if (msg.has_refused()) {
      SetFatal(Status::FailedPrecondition("the head at " + options_.head_address +
                                          " refused this agent: " + msg.refused().reason()));
    } else if (msg.has_registered()) {
      AdoptRegistration(msg.registered());
      registered = true;
      {
        std::lock_guard<std::mutex> lock(sync.mu);
        sync.registered = true;
        sync.cv.notify_all();
      }
      {
        std::lock_guard<std::mutex> lock(state_mu_);
        registered_once_ = true;
        connected_ = true;
        state_cv_.notify_all();
      }
      COHORT_LOG(INFO) << "agent: registered with the head at " << options_.head_address
                       << " as node " << node_id() << " (" << listed << " running worker(s))";
      while (stream.Read(&msg)) {
        if (!Dispatch(msg)) break;
      }
    } else {
      COHORT_LOG(WARN) << "agent: the head answered Register with something else; reconnecting";
    }
  }

  sync.ended = true;
  {
    std::lock_guard<std::mutex> lock(sync.mu);
    sync.cv.notify_all();
  }
  stream.Cancel();
  outbox_.Interrupt();
  writer.join();
  Status why = stream.Finish();
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    current_stream_ = nullptr;
    connected_ = false;
  }
  if (registered && !stopping_) {
    COHORT_LOG(WARN) << "agent: lost the stream to the head (" << why.ToString()
                     << "); workers keep running, reconnecting";
  }
  return registered;
}

void Agent::Impl::WriterLoop(rpc::HeadStream& stream, const rpc::AgentMessage& registration,
                             SessionSync& sync) {
  if (!stream.Write(registration)) {
    stream.Cancel();
    return;
  }
  {
    std::unique_lock<std::mutex> lock(sync.mu);
    bool ok = sync.cv.wait_for(lock, options_.connect_timeout,
                               [&] { return sync.registered || sync.ended.load(); });
    if (!ok || !sync.registered) {
      if (!ok) COHORT_LOG(WARN) << "agent: no answer to Register from the head; reconnecting";
      lock.unlock();
      stream.Cancel();
      return;
    }
  }
  // What the last stream carried but the head never acknowledged goes first.
  outbox_.Requeue();
  Deadline next_heartbeat = Deadline::After(std::chrono::milliseconds(0));
  while (!sync.ended) {
    if (draining_ && outbox_.size() == 0) {
      stream.WritesDone();  // goodbye: the head ends the stream, the reader sees it
      return;
    }
    if (next_heartbeat.Expired()) {
      if (!stream.Write(BuildHeartbeat())) break;
      next_heartbeat = Deadline::After(std::chrono::milliseconds(heartbeat_interval_ms_.load()));
    }
    Deadline until(std::min(next_heartbeat.when(), Deadline::Clock::now() + kWriterSlice));
    std::optional<rpc::AgentMessage> msg = outbox_.Take(until);
    if (!msg) continue;
    if (!stream.Write(*msg)) {
      outbox_.PushFront(std::move(*msg));  // sent again after the next registration
      break;
    }
    outbox_.Sent(std::move(*msg));  // a log chunk is kept until the head acknowledges it
  }
  stream.Cancel();
}

bool Agent::Impl::Dispatch(const rpc::HeadMessage& msg) {
  switch (msg.msg_case()) {
    case rpc::HeadMessage::kStartWorker:
      EnqueueStart(msg.start_worker());
      return true;
    case rpc::HeadMessage::kStopWorkers:
      HandleStop(msg.stop_workers());
      return true;
    case rpc::HeadMessage::kRefused:
      SetFatal(Status::FailedPrecondition("the head at " + options_.head_address +
                                          " refused this agent: " + msg.refused().reason()));
      return false;
    case rpc::HeadMessage::kRegistered:
      AdoptRegistration(msg.registered());
      return true;
    case rpc::HeadMessage::kLogAck:
      outbox_.Ack(msg.log_ack());
      return true;
    default:
      COHORT_LOG(WARN) << "agent: ignoring an unknown message from the head (a newer head?)";
      return true;
  }
}

void Agent::Impl::EnqueueStart(const rpc::StartWorker& start) {
  std::lock_guard<std::mutex> lock(prep_mu_);
  WorkerKey key{start.job_id(), start.attempt(), start.rank()};
  if (prep_stop_) {
    outbox_.Push(NeverStarted(key, 0, "the agent is stopping; the worker was not started"));
    return;
  }
  prep_queue_.push_back(PrepItem{std::move(key), start});
  prep_cv_.notify_all();
}

void Agent::Impl::HandleStop(const rpc::StopWorkers& stop) {
  WorkerFilter filter{stop.job_id(), stop.attempt()};
  int signo = stop.signal() > 0 ? stop.signal() : SIGTERM;
  auto grace = std::chrono::milliseconds(stop.grace_ms() > 0 ? stop.grace_ms() : 3000);
  std::lock_guard<std::mutex> lock(prep_mu_);
  for (auto it = prep_queue_.begin(); it != prep_queue_.end();) {
    if (filter.Matches(it->key)) {
      outbox_.Push(NeverStarted(it->key, signo, "stopped before it started"));
      it = prep_queue_.erase(it);
    } else {
      ++it;
    }
  }
  if (prep_current_ && filter.Matches(*prep_current_)) prep_current_stop_signal_ = signo;
  supervisor_->Stop(filter, signo, grace);
}

rpc::AgentMessage Agent::Impl::BuildRegister() const {
  rpc::AgentMessage msg;
  rpc::Register* reg = msg.mutable_registration();
  reg->set_protocol_version(rpc::PROTOCOL_VERSION_CURRENT);
  reg->set_cohort_version(options_.cohort_version);
  reg->set_cluster_token(options_.cluster_token);
  reg->set_node_id(node_id());
  reg->set_hostname(hostname_);
  reg->set_address(address_);
  for (const auto& [name, amount] : resources_) (*reg->mutable_resources())[name] = amount;
  for (const auto& [k, v] : options_.labels) (*reg->mutable_labels())[k] = v;
  {
    // Under prep_mu_ (a prepared worker moves to the supervisor under it), so
    // a worker is either running or still accepted-and-preparing here, never
    // neither.
    std::lock_guard<std::mutex> lock(prep_mu_);
    for (rpc::RunningWorker& w : supervisor_->Snapshot().workers) *reg->add_running_workers() = std::move(w);
    auto add = [&](const WorkerKey& key) {
      rpc::RunningWorker* w = reg->add_running_workers();
      w->set_job_id(key.job_id);
      w->set_attempt(key.attempt);
      w->set_rank(key.rank);
    };
    if (prep_current_) add(*prep_current_);
    for (const PrepItem& item : prep_queue_) add(item.key);
  }
  for (rpc::WorkerExited& e : outbox_.RecentExits()) *reg->add_recent_exits() = std::move(e);
  return msg;
}

rpc::AgentMessage Agent::Impl::BuildHeartbeat() const {
  rpc::AgentMessage msg;
  rpc::Heartbeat* hb = msg.mutable_heartbeat();
  hb->set_time_ms(UnixMillis());
  SupervisorSnapshot snapshot = supervisor_->Snapshot();
  for (const auto& [name, amount] : snapshot.used) (*hb->mutable_resources_used())[name] = amount;
  // What the workers really use: each leads its own process group.
  std::set<int64_t> groups;
  for (const rpc::RunningWorker& w : snapshot.workers)
    if (w.pid() > 0) groups.insert(w.pid());
  const std::map<int64_t, int64_t> rss = ProcessGroupRss(groups);
  for (rpc::RunningWorker& w : snapshot.workers) {
    if (auto it = rss.find(w.pid()); it != rss.end()) w.set_rss_bytes(it->second);
    *hb->add_running_workers() = std::move(w);
  }
  const prom::HostMemory mem = prom::ReadHostMemory();
  if (mem.total_bytes > mem.available_bytes)
    hb->set_memory_used_bytes(static_cast<int64_t>(mem.total_bytes - mem.available_bytes));
  if (gpu_probe_) {
    std::vector<GpuStatus> gpus = gpu_probe_->Sample();
    for (const GpuStatus& g : gpus) {
      rpc::GpuStatus* out = hb->add_gpus();
      out->set_index(g.index);
      out->set_name(g.name);
      out->set_memory_used_bytes(g.memory_used_bytes);
      out->set_memory_total_bytes(g.memory_total_bytes);
      out->set_utilization_percent(g.utilization_percent);
    }
    std::lock_guard<std::mutex> lock(gpus_mu_);
    last_gpus_ = std::move(gpus);
  }
  return msg;
}

void Agent::Impl::AdoptRegistration(const rpc::Registered& registered) {
  if (registered.heartbeat_interval_ms() > 0) {
    heartbeat_interval_ms_ = registered.heartbeat_interval_ms();
  }
  const std::string& id = registered.node_id();
  if (id.empty() || id == node_id()) return;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    node_id_ = id;
  }
  // The head's choice is kept for the next start.
  if (Status s = WriteFileAtomically(options_.state_dir + "/node_id", id + "\n"); !s.ok()) {
    COHORT_LOG(WARN) << "agent: cannot save the node id: " << s.message();
  }
}

}  // namespace cohort::agent
