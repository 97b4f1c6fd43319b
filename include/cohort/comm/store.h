// Rendezvous key-value store: how ranks find each other.
//
// Rank 0 hosts a TcpStore server on MASTER_ADDR:MASTER_PORT; every rank
// (rank 0 included) talks to it as a client. A MemoryStore serves ranks that
// are threads of one process (tests). Both are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::comm {

class Store {
 public:
  virtual ~Store() = default;
  // Sets key to value (overwrites).
  virtual Status Set(const std::string& key, const std::string& value) = 0;
  // Waits until key exists, then returns its value. DeadlineExceeded names the key.
  virtual Result<std::string> Get(const std::string& key, Deadline deadline) = 0;
  // Atomically adds delta to the integer at key (missing = 0); returns the new value.
  virtual Result<int64_t> Add(const std::string& key, int64_t delta) = 0;
  // The local IP of a network client's connection to the store: the address
  // peers can use to reach this host. Empty for in-process stores.
  virtual std::string LocalAddress() const { return ""; }
};

std::shared_ptr<Store> NewMemoryStore();

// Decorator that prefixes every key: lets several communicators share one store.
std::shared_ptr<Store> NewPrefixStore(std::string prefix, std::shared_ptr<Store> base);

struct TcpStoreOptions {
  std::string host = "127.0.0.1";  // where the server is (client) / which address to bind (server)
  int port = 0;                    // 0 (server only): pick a free port
  // The job's secret (COHORT_JOB_TOKEN). Non-empty: every connection opens
  // with a challenge-response handshake (HMAC-SHA256 keyed by it, both ways;
  // see src/comm/auth.h) and the server refuses, closes and logs a peer that
  // cannot prove it holds the same secret; the client fails with
  // FailedPrecondition ("... refused the job token") when the server refuses
  // it, or when the server cannot prove the secret back. Client and server
  // must agree: empty on both sides means no authentication.
  std::string auth_secret;
  // Server with a secret: how long an accepted connection may take to
  // complete the handshake before it is dropped. The server keeps serving
  // other clients meanwhile.
  std::chrono::milliseconds auth_timeout{10000};
};

// The server half (rank 0): owns the listening socket and one serving thread
// (poll loop over all clients) until destroyed.
class TcpStoreServer {
 public:
  static Result<std::unique_ptr<TcpStoreServer>> Start(const TcpStoreOptions& options);
  ~TcpStoreServer();
  int port() const;

  struct Impl;
 private:
  explicit TcpStoreServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Connects to a server, retrying until the deadline (the server may start
// later), and authenticates with options.auth_secret when it is set (the
// handshake is bounded by the same deadline; a refusal is not retried).
Result<std::shared_ptr<Store>> ConnectTcpStore(const TcpStoreOptions& options, Deadline deadline);

}  // namespace cohort::comm
