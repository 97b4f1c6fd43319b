// Communicator: rendezvous, transport choice, the sticky error and the async
// worker thread; the collectives themselves are in algorithms/.
//
// Threads: the caller's thread runs synchronous collectives inline (that is
// what keeps small-message latency at a few microseconds); AllReduceAsync
// hands work to one worker thread created on first use. exec_mu_ makes sure
// only one collective runs at a time, and a synchronous call first waits
// until the queue is drained, so all ranks see the same order.
#include "cohort/comm/communicator.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>

#include "algorithms/direct.h"
#include "algorithms/doubling.h"
#include "algorithms/hierarchical.h"
#include "algorithms/ring.h"
#include "cohort/comm/rendezvous.h"
#include "cohort/common/logging.h"
#include "transport/shm/shm_group.h"
#include "transport/tcp/tcp_mesh.h"

namespace cohort::comm {
namespace {

// Ranks with equal keys share a host (and so /dev/shm).
std::string HostKey(const Options& options) {
  if (!options.host_key.empty()) return options.host_key;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  std::getline(boot, boot_id);
  return std::string(host) + "/" + boot_id;
}

Status ApplyEnvOverrides(Options& options) {
  if (const char* t = std::getenv("COHORT_COMM_TRANSPORT"); t != nullptr && *t != '\0') {
    auto kind = ParseTransport(t);
    if (!kind.ok()) return kind.status().WithPrefix("COHORT_COMM_TRANSPORT");
    options.transport = *kind;
  }
  auto int_env = [](const char* name, long long lo, long long hi, int* out) -> Status {
    const char* t = std::getenv(name);
    if (t == nullptr || *t == '\0') return Status::Ok();
    char* end = nullptr;
    long long v = std::strtoll(t, &end, 10);
    if (end == t || *end != '\0' || v < lo || v > hi)
      return Status::InvalidArgument(std::string(name) + "='" + t + "' is not a whole number in [" +
                                     std::to_string(lo) + ", " + std::to_string(hi) + "]");
    *out = static_cast<int>(v);
    return Status::Ok();
  };
  COHORT_RETURN_IF_ERROR(int_env("COHORT_COMM_TCP_STREAMS", 1, TcpMesh::kMaxStreams, &options.tcp_streams));
  COHORT_RETURN_IF_ERROR(
      int_env("COHORT_COMM_TCP_SOCKET_BUFFER", 0, 1 << 30, &options.tcp_socket_buffer_bytes));
  if (const char* t = std::getenv("COHORT_COMM_TIMEOUT_MS"); t != nullptr && *t != '\0') {
    char* end = nullptr;
    long long ms = std::strtoll(t, &end, 10);
    if (end == t || *end != '\0' || ms <= 0)
      return Status::InvalidArgument("COHORT_COMM_TIMEOUT_MS='" + std::string(t) +
                                     "' is not a positive number of milliseconds");
    options.timeout = std::chrono::milliseconds(ms);
  }
  return Status::Ok();
}

class WorkImpl : public Work {
 public:
  Status Wait() override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    return status_;
  }
  void Finish(Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(s);
    done_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Status status_;
};

class CommunicatorImpl : public Communicator {
 public:
  CommunicatorImpl(int rank, int world_size, Options options)
      : rank_(rank), world_size_(world_size), options_(options) {}
  ~CommunicatorImpl() override;

  Status Init(std::shared_ptr<Store> store);
  void AdoptStoreServer(std::unique_ptr<TcpStoreServer> server) { server_ = std::move(server); }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  TransportKind transport() const override { return transport_; }
  std::shared_ptr<Store> store() const override { return store_; }
  const std::string& host_key() const override { return host_key_; }
  const Options& options() const override { return options_; }

  using Communicator::AllReduce;
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op, Deadline deadline,
                   WireFormat wire) override;
  Status Broadcast(void* data, size_t size_bytes, int root, Deadline deadline) override;
  Status AllGather(const void* in, void* out, size_t size_bytes, Deadline deadline) override;
  Status Barrier(Deadline deadline) override;
  Result<void*> AllocateShared(size_t size_bytes) override;
  std::shared_ptr<Work> AllReduceAsync(void* data, size_t count, DType dtype, ReduceOp op,
                                       WireFormat wire) override;
  Status error() const override {
    std::lock_guard<std::mutex> lock(error_mu_);
    return error_;
  }
  void Abort(const std::string& reason) override;

 private:
  // Runs one collective under exec_mu_, recording the first failure.
  Status Execute(const std::string& what, Deadline deadline, const std::function<Status()>& body);
  Status AllReduceBody(void* data, size_t count, DType dtype, ReduceOp op, Deadline deadline, WireFormat wire);
  // keys[r]: rank r's host. Sets up the hierarchical path when it applies.
  Status SetUpHierarchy(const std::shared_ptr<Store>& store, const std::vector<std::string>& keys, Deadline deadline);
  TcpMeshOptions MeshOptions() const {
    return {options_.auth_secret, options_.tcp_streams, options_.tcp_socket_buffer_bytes};
  }
  void WaitForQueue();
  void WorkerLoop();
  void RecordError(const Status& s);
  int64_t MsUntil(Deadline d) const;

  const int rank_;
  const int world_size_;
  const Options options_;
  TransportKind transport_ = TransportKind::kTcp;
  std::shared_ptr<Store> store_;
  std::string host_key_;

  std::unique_ptr<TcpStoreServer> server_;  // rank 0 under FromEnv
  std::unique_ptr<TcpMesh> tcp_;
  std::unique_ptr<ShmGroup> shm_;
  std::unique_ptr<DirectCollectives> direct_;
  // Hierarchical all-reduce (ranks on several hosts, as many on each): this
  // host's ranks in shared memory, and the ring of this local rank's peers.
  std::unique_ptr<ShmGroup> local_shm_;
  std::unique_ptr<DirectCollectives> local_direct_;
  std::unique_ptr<TcpMesh> stripe_tcp_;
  int local_rank_ = 0;
  int local_size_ = 1;
  RingScratch ring_scratch_;
  struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
  };
  std::vector<std::unique_ptr<char, FreeDeleter>> plain_buffers_;  // AllocateShared on TCP

  std::mutex exec_mu_;  // one collective at a time

  mutable std::mutex error_mu_;
  Status error_;  // GUARDED_BY(error_mu_); sticky

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::function<void()>> queue_;  // GUARDED_BY(queue_mu_)
  size_t pending_ = 0;                       // queued or running; GUARDED_BY(queue_mu_)
  bool stopping_ = false;                    // GUARDED_BY(queue_mu_)
  std::thread worker_;
};

CommunicatorImpl::~CommunicatorImpl() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Status CommunicatorImpl::Init(std::shared_ptr<Store> store) {
  const Deadline deadline = Deadline::After(options_.timeout);
  store_ = store;
  host_key_ = HostKey(options_);
  // Which ranks share this host?
  COHORT_RETURN_IF_ERROR(store->Set("host/" + std::to_string(rank_), host_key_));
  bool all_local = true;
  std::string mine = host_key_, other_host;
  int other_rank = -1;
  std::vector<std::string> keys(world_size_);
  for (int p = 0; p < world_size_; ++p) {
    auto key = store->Get("host/" + std::to_string(p), deadline);
    if (!key.ok())
      return key.status().WithPrefix("rendezvous: rank " + std::to_string(p) +
                                     " did not join within " + std::to_string(options_.timeout.count()) + " ms");
    keys[p] = *key;
    if (*key != mine && all_local) {
      all_local = false;
      other_rank = p;
      other_host = *key;
    }
  }
  transport_ = options_.transport;
  if (transport_ == TransportKind::kAuto) transport_ = all_local ? TransportKind::kShm : TransportKind::kTcp;
  if (transport_ == TransportKind::kShm && !all_local)
    return Status::InvalidArgument("the shm transport needs every rank on one host, but rank " +
                                   std::to_string(other_rank) + " is on " + other_host +
                                   " and rank " + std::to_string(rank_) + " on " + mine);
  if (transport_ == TransportKind::kShm) {
    COHORT_ASSIGN_OR_RETURN(shm_, ShmGroup::Create(*store, rank_, world_size_,
                                                   options_.shm_scratch_bytes, deadline));
    direct_ = std::make_unique<DirectCollectives>(*shm_);
  } else {
    COHORT_ASSIGN_OR_RETURN(
        tcp_, TcpMesh::Connect(*store, rank_, world_size_, deadline, MeshOptions()));
    if (options_.hierarchical && options_.transport == TransportKind::kAuto) {
      COHORT_RETURN_IF_ERROR(SetUpHierarchy(store, keys, deadline));
    }
  }
  // Everyone is connected; after this nobody needs the store again.
  COHORT_RETURN_IF_ERROR(Barrier(deadline));
  COHORT_LOG(DEBUG) << "communicator ready: rank=" << rank_ << " world_size=" << world_size_
                    << " transport=" << TransportName(transport_);
  return Status::Ok();
}

Status CommunicatorImpl::SetUpHierarchy(const std::shared_ptr<Store>& store, const std::vector<std::string>& keys,
                                        Deadline deadline) {
  // Hosts in order of their lowest rank; ranks of a host in rank order.
  std::vector<std::string> hosts;
  std::vector<std::vector<int>> ranks_of;
  for (int p = 0; p < world_size_; ++p) {
    auto it = std::find(hosts.begin(), hosts.end(), keys[p]);
    if (it == hosts.end()) {
      hosts.push_back(keys[p]);
      ranks_of.emplace_back();
      it = hosts.end() - 1;
    }
    ranks_of[it - hosts.begin()].push_back(p);
  }
  const int num_hosts = static_cast<int>(hosts.size());
  const int per_host = static_cast<int>(ranks_of[0].size());
  for (const auto& r : ranks_of)
    if (static_cast<int>(r.size()) != per_host) return Status::Ok();  // uneven: the flat ring
  if (num_hosts < 2 || per_host < 2) return Status::Ok();
  int host = 0;
  for (int h = 0; h < num_hosts; ++h) {
    auto it = std::find(ranks_of[h].begin(), ranks_of[h].end(), rank_);
    if (it != ranks_of[h].end()) {
      host = h;
      local_rank_ = static_cast<int>(it - ranks_of[h].begin());
    }
  }
  local_size_ = per_host;
  auto local_store = NewPrefixStore("local/" + std::to_string(host), store);
  COHORT_ASSIGN_OR_RETURN(local_shm_, ShmGroup::Create(*local_store, local_rank_, local_size_,
                                                       options_.shm_scratch_bytes, deadline));
  local_direct_ = std::make_unique<DirectCollectives>(*local_shm_);
  auto stripe_store = NewPrefixStore("stripe/" + std::to_string(local_rank_), store);
  COHORT_ASSIGN_OR_RETURN(stripe_tcp_,
                          TcpMesh::Connect(*stripe_store, host, num_hosts, deadline, MeshOptions()));
  COHORT_LOG(DEBUG) << "communicator: hierarchical all-reduce, " << num_hosts << " hosts x " << per_host
                    << " ranks; rank " << rank_ << " is local rank " << local_rank_ << " of host " << host;
  return Status::Ok();
}

Status CommunicatorImpl::AllReduceBody(void* data, size_t count, DType dtype, ReduceOp op, Deadline deadline,
                                       WireFormat wire) {
  if (direct_) return direct_->AllReduce(data, count, dtype, op, deadline);
  if (local_direct_) {
    return HierarchicalAllReduce(*local_direct_, local_rank_, local_size_, *stripe_tcp_, data, count, dtype, op,
                                 options_.tcp_chunk_bytes, options_.tcp_small_bytes, deadline, ring_scratch_, wire);
  }
  return NetworkAllReduce(*tcp_, data, count, dtype, op, options_.tcp_chunk_bytes, options_.tcp_small_bytes,
                          deadline, ring_scratch_, wire);
}

int64_t CommunicatorImpl::MsUntil(Deadline d) const {
  if (d.when() == Deadline::Clock::time_point::max()) return -1;
  return std::chrono::duration_cast<std::chrono::milliseconds>(d.when() - Deadline::Clock::now())
      .count();
}

void CommunicatorImpl::RecordError(const Status& s) {
  std::lock_guard<std::mutex> lock(error_mu_);
  if (error_.ok()) error_ = s;
}

void CommunicatorImpl::Abort(const std::string& reason) {
  RecordError(Status::Cancelled("rank " + std::to_string(rank_) + " aborted: " + reason));
  if (shm_) shm_->Abort(reason);
  if (tcp_) tcp_->Shutdown();
  if (local_shm_) local_shm_->Abort(reason);
  if (stripe_tcp_) stripe_tcp_->Shutdown();
}

Status CommunicatorImpl::Execute(const std::string& what, Deadline deadline,
                                 const std::function<Status()>& body) {
  std::lock_guard<std::mutex> lock(exec_mu_);
  if (Status e = error(); !e.ok()) return e;
  if (shm_) shm_->set_timeout_ms(MsUntil(deadline));
  if (local_shm_) local_shm_->set_timeout_ms(MsUntil(deadline));
  Status s = body();
  if (!s.ok()) {
    s = s.WithPrefix(what + " on rank " + std::to_string(rank_));
    RecordError(s);
    COHORT_LOG(ERROR) << s.ToString();
    if (shm_) shm_->Abort(s.message());
    if (tcp_) tcp_->Shutdown();
    if (local_shm_) local_shm_->Abort(s.message());
    if (stripe_tcp_) stripe_tcp_->Shutdown();
  }
  return s;
}

void CommunicatorImpl::WaitForQueue() {
  std::unique_lock<std::mutex> lock(queue_mu_);
  queue_cv_.wait(lock, [&] { return pending_ == 0; });
}

Status CommunicatorImpl::AllReduce(void* data, size_t count, DType dtype, ReduceOp op,
                                   Deadline deadline, WireFormat wire) {
  if (data == nullptr && count > 0) return Status::InvalidArgument("AllReduce: null buffer");
  WaitForQueue();
  return Execute("AllReduce(" + std::to_string(count) + " x " + std::string(DTypeName(dtype)) + ")",
                 deadline, [&] { return AllReduceBody(data, count, dtype, op, deadline, wire); });
}

Status CommunicatorImpl::Broadcast(void* data, size_t size_bytes, int root, Deadline deadline) {
  if (root < 0 || root >= world_size_)
    return Status::InvalidArgument("Broadcast: root " + std::to_string(root) + " is not in [0, " +
                                   std::to_string(world_size_) + ")");
  if (data == nullptr && size_bytes > 0) return Status::InvalidArgument("Broadcast: null buffer");
  WaitForQueue();
  return Execute("Broadcast(" + std::to_string(size_bytes) + " bytes from rank " +
                     std::to_string(root) + ")",
                 deadline, [&] {
                   if (direct_) return direct_->Broadcast(data, size_bytes, root, deadline);
                   return RingBroadcast(*tcp_, data, size_bytes, root, options_.tcp_chunk_bytes,
                                        deadline);
                 });
}

Status CommunicatorImpl::AllGather(const void* in, void* out, size_t size_bytes, Deadline deadline) {
  if ((in == nullptr || out == nullptr) && size_bytes > 0)
    return Status::InvalidArgument("AllGather: null buffer");
  WaitForQueue();
  return Execute("AllGather(" + std::to_string(size_bytes) + " bytes)", deadline, [&] {
    if (direct_) return direct_->AllGather(in, out, size_bytes, deadline);
    return RingAllGather(*tcp_, in, out, size_bytes, deadline);
  });
}

Status CommunicatorImpl::Barrier(Deadline deadline) {
  WaitForQueue();
  return Execute("Barrier", deadline, [&] {
    if (shm_) return shm_->Barrier(deadline);
    char mine = 1;
    std::vector<char> all(world_size_);
    return RingAllGather(*tcp_, &mine, all.data(), 1, deadline);
  });
}

Result<void*> CommunicatorImpl::AllocateShared(size_t size_bytes) {
  WaitForQueue();
  if (!shm_) {
    // Page-aligned, zeroed; "shared" only with this process on TCP.
    const size_t rounded = (std::max<size_t>(size_bytes, 1) + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(4096, rounded);
    if (p == nullptr) return Status::Internal("out of memory allocating " + std::to_string(rounded) + " bytes");
    std::memset(p, 0, rounded);
    plain_buffers_.emplace_back(static_cast<char*>(p));
    return p;
  }
  Result<int> segment = Status::Internal("not run");
  Status st = Execute("AllocateShared(" + std::to_string(size_bytes) + " bytes)", DefaultDeadline(),
                      [&] {
                        segment = shm_->AddSegment(size_bytes, DefaultDeadline());
                        return segment.status();
                      });
  if (!st.ok()) return st;
  return static_cast<void*>(shm_->SegmentBase(*segment, rank_));
}

std::shared_ptr<Work> CommunicatorImpl::AllReduceAsync(void* data, size_t count, DType dtype,
                                                       ReduceOp op, WireFormat wire) {
  auto work = std::make_shared<WorkImpl>();
  std::lock_guard<std::mutex> lock(queue_mu_);
  if (!worker_.joinable()) worker_ = std::thread([this] { WorkerLoop(); });
  ++pending_;
  queue_.push_back([this, work, data, count, dtype, op, wire] {
    Deadline deadline = DefaultDeadline();
    work->Finish(Execute("AllReduce(" + std::to_string(count) + " x " +
                             std::string(DTypeName(dtype)) + ", async)",
                         deadline, [&] { return AllReduceBody(data, count, dtype, op, deadline, wire); }));
  });
  queue_cv_.notify_all();
  return work;
}

void CommunicatorImpl::WorkerLoop() {
  std::unique_lock<std::mutex> lock(queue_mu_);
  while (true) {
    queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping with nothing left
    auto task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    task();
    lock.lock();
    --pending_;
    queue_cv_.notify_all();
  }
}

}  // namespace

Result<std::unique_ptr<Communicator>> Communicator::Create(std::shared_ptr<Store> store, int rank,
                                                           int world_size, Options options) {
  if (options.read_env_overrides) COHORT_RETURN_IF_ERROR(ApplyEnvOverrides(options));
  if (world_size < 1 || rank < 0 || rank >= world_size)
    return Status::InvalidArgument("rank " + std::to_string(rank) + " is not in [0, world_size=" +
                                   std::to_string(world_size) + ")");
  if (store == nullptr) return Status::InvalidArgument("Communicator::Create: null store");
  auto comm = std::make_unique<CommunicatorImpl>(rank, world_size, options);
  COHORT_RETURN_IF_ERROR(comm->Init(std::move(store)));
  return std::unique_ptr<Communicator>(std::move(comm));
}

Result<std::unique_ptr<Communicator>> Communicator::FromEnv(Options options) {
  if (options.read_env_overrides) COHORT_RETURN_IF_ERROR(ApplyEnvOverrides(options));
  options.read_env_overrides = false;
  COHORT_ASSIGN_OR_RETURN(RendezvousConfig cfg, RendezvousConfigFromEnv());
  if (options.auth_secret.empty()) options.auth_secret = cfg.auth_secret;
  if (cfg.world_size == 1) return Create(NewMemoryStore(), 0, 1, options);

  const Deadline deadline = Deadline::After(options.timeout);
  std::unique_ptr<TcpStoreServer> server;
  if (cfg.rank == 0) {
    TcpStoreOptions server_options;
    server_options.host = "0.0.0.0";
    server_options.port = cfg.master_port;
    server_options.auth_secret = options.auth_secret;
    // A handshake must finish within the rendezvous timeout.
    server_options.auth_timeout = std::min(server_options.auth_timeout, options.timeout);
    auto started = TcpStoreServer::Start(server_options);
    if (!started.ok())
      return started.status().WithPrefix("rank 0 cannot host the rendezvous store on port " +
                                         std::to_string(cfg.master_port) + " (MASTER_PORT)");
    server = std::move(started).value();
  }
  TcpStoreOptions client_options;
  client_options.host = cfg.master_addr;
  client_options.port = cfg.master_port;
  client_options.auth_secret = options.auth_secret;
  auto client = ConnectTcpStore(client_options, deadline);
  if (!client.ok())
    return client.status().WithPrefix(
        "rank " + std::to_string(cfg.rank) +
        " cannot join the rendezvous store at MASTER_ADDR:MASTER_PORT=" + cfg.master_addr + ":" +
        std::to_string(cfg.master_port));
  const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
  auto store = NewPrefixStore("comm/" + std::string(restart ? restart : "0"), *client);

  auto comm = std::make_unique<CommunicatorImpl>(cfg.rank, cfg.world_size, options);
  comm->AdoptStoreServer(std::move(server));
  COHORT_RETURN_IF_ERROR(comm->Init(std::move(store)));
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace cohort::comm
