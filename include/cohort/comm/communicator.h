// Communicator: collectives among world_size ranks (all-reduce, broadcast,
// all-gather, barrier) over shared memory (all ranks on one host) or TCP.
//
// Every rank must issue the same collectives in the same order. Each blocking
// call takes a Deadline (the overloads without one use Options::timeout). The
// first failure -- a dead or stalled peer, a closed socket -- is sticky: it
// names the peer and every later call returns it; recovery means building a
// new Communicator through rendezvous.
//
// Thread-safety: the synchronous calls are made from one thread at a time.
// The *Async calls may be made from another thread (the autograd thread);
// they run in submission order on the communicator's own worker thread, and a
// synchronous call first waits for all async work submitted before it.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "cohort/comm/store.h"
#include "cohort/comm/types.h"
#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::comm {

enum class TransportKind { kAuto, kShm, kTcp };
std::string_view TransportName(TransportKind kind);
// "auto" | "shm" | "tcp"; anything else is InvalidArgument.
Result<TransportKind> ParseTransport(std::string_view name);

struct Options {
  // How long a collective waits for a peer before failing with its name.
  std::chrono::milliseconds timeout{60000};
  // kAuto: shared memory when every rank is on this host, else TCP.
  // Env override: COHORT_COMM_TRANSPORT=auto|shm|tcp.
  TransportKind transport = TransportKind::kAuto;
  // TCP ring: a step's segment is received and reduced in chunks of this
  // size, so reduction overlaps with the transfer of the next chunk.
  size_t tcp_chunk_bytes = 256 * 1024;
  // TCP connections between each pair of ranks, 1-16: a transfer longer than
  // 128 KiB is striped over them, so it uses several TCP flows at once (on
  // links where one flow cannot fill the pipe: long round trips, per-flow
  // limits). Every rank must use the same number.
  // Env override: COHORT_COMM_TCP_STREAMS.
  int tcp_streams = 2;
  // TCP all-reduce of at most this many bytes: recursive doubling (log2 n
  // message latencies, for latency-bound buffers) instead of the ring (2 (n-1)
  // latencies, bandwidth-optimal); 0 = always the ring.
  size_t tcp_small_bytes = 64 * 1024;
  // SO_SNDBUF/SO_RCVBUF of the TCP connections in bytes; 0 = the kernel
  // sizes them automatically (net.ipv4.tcp_wmem/tcp_rmem), which is usually
  // best. Env override: COHORT_COMM_TCP_SOCKET_BUFFER.
  int tcp_socket_buffer_bytes = 0;
  // Shared memory: per-rank staging area for buffers that were not allocated
  // with AllocateShared (they are copied through it in pieces of this size).
  size_t shm_scratch_bytes = 8 * 1024 * 1024;
  // Options::timeout may be overridden by COHORT_COMM_TIMEOUT_MS.
  bool read_env_overrides = true;
  // The job's secret. Non-empty: every TCP mesh connection is authenticated
  // both ways (HMAC-SHA256 challenge-response keyed by it, binding the ranks;
  // see src/comm/auth.h) and a peer that cannot prove it holds the secret is
  // refused, so a process that can reach a rank's port cannot join the
  // collective or inject data. Every rank must pass the same value; empty
  // means no authentication. The shm transport has no network endpoint and
  // is not affected. FromEnv uses COHORT_JOB_TOKEN when this is empty, for
  // the rendezvous store as well.
  std::string auth_secret;
  // Which host this rank is on, for the topology: ranks with equal keys share
  // memory. "" = this machine's host name and boot id (the normal case);
  // tests set it to make several "hosts" out of one process.
  std::string host_key;
  // Ranks on several hosts, the same number on each (> 1): all-reduce goes
  // through shared memory within a host and a ring per stripe between hosts
  // (see algorithms/hierarchical.h). false: one flat TCP ring.
  bool hierarchical = true;
};

// A pending asynchronous collective.
class Work {
 public:
  virtual ~Work() = default;
  virtual Status Wait() = 0;  // blocks until done; returns its status
};

class Communicator {
 public:
  // Ranks exchange addresses through `store`. Blocks until all world_size
  // ranks joined or the timeout passes (naming the missing ranks).
  static Result<std::unique_ptr<Communicator>> Create(std::shared_ptr<Store> store, int rank,
                                                      int world_size, Options options = {});
  // Rendezvous from the torchrun environment (see rendezvous.h): rank 0 hosts
  // the TcpStore on MASTER_ADDR:MASTER_PORT. With a job token
  // (Options::auth_secret, else COHORT_JOB_TOKEN) the store and the mesh
  // authenticate every connection; a rank whose token differs from rank 0's
  // fails with FailedPrecondition ("... refused the job token").
  static Result<std::unique_ptr<Communicator>> FromEnv(Options options = {});

  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual TransportKind transport() const = 0;
  // The rendezvous store the ranks met through, kept open: a device
  // communicator (nccl.h) exchanges its unique id over it.
  virtual std::shared_ptr<Store> store() const = 0;
  // This rank's host: ranks with equal keys share memory (and GPUs).
  virtual const std::string& host_key() const = 0;
  virtual const Options& options() const = 0;
  Deadline DefaultDeadline() const { return Deadline::After(options().timeout); }

  // In place: data[i] = op over ranks of data[i]. count is in elements and may
  // be 0 or not divisible by world_size. `wire`: how float32 data crosses the
  // network (types.h); shared memory ignores it.
  virtual Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op, Deadline deadline,
                           WireFormat wire) = 0;
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op, Deadline deadline) {
    return AllReduce(data, count, dtype, op, deadline, WireFormat::kNative);
  }
  Status AllReduce(void* data, size_t count, DType dtype, ReduceOp op) {
    return AllReduce(data, count, dtype, op, DefaultDeadline(), WireFormat::kNative);
  }
  // Copies `size_bytes` from root's data into every other rank's data.
  virtual Status Broadcast(void* data, size_t size_bytes, int root, Deadline deadline) = 0;
  Status Broadcast(void* data, size_t size_bytes, int root) {
    return Broadcast(data, size_bytes, root, DefaultDeadline());
  }
  // out (world_size * size_bytes) receives every rank's `in` in rank order.
  virtual Status AllGather(const void* in, void* out, size_t size_bytes, Deadline deadline) = 0;
  Status AllGather(const void* in, void* out, size_t size_bytes) {
    return AllGather(in, out, size_bytes, DefaultDeadline());
  }
  virtual Status Barrier(Deadline deadline) = 0;
  Status Barrier() { return Barrier(DefaultDeadline()); }

  // Memory that the other ranks on this host read directly (shared memory on
  // the shm transport, plain memory on TCP). All-reduce on a buffer inside
  // it skips the copy through the staging area: gradient buckets live here.
  // Collective: all ranks call it with the same size in the same order.
  // The memory stays valid for the communicator's lifetime; zero-filled.
  virtual Result<void*> AllocateShared(size_t size_bytes) = 0;

  // Queues an all-reduce on the worker thread. `data` must stay valid until
  // Wait() returns. The deadline starts when the operation starts running.
  virtual std::shared_ptr<Work> AllReduceAsync(void* data, size_t count, DType dtype, ReduceOp op,
                                               WireFormat wire = WireFormat::kNative) = 0;

  // The sticky error, if any (OK otherwise).
  virtual Status error() const = 0;
  // Marks the communicator failed (e.g. the caller saw a local error) so the
  // peers fail fast instead of waiting for their timeout. Idempotent.
  virtual void Abort(const std::string& reason) = 0;
};

}  // namespace cohort::comm
