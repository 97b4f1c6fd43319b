// HeadServer: the control plane's head process -- node registry, gang
// scheduler, job manager, the Ray-compatible HTTP API (dashboard port) and
// the agents' gRPC endpoint (agent port), with its state durable in SQLite
// under the state dir.
//
// `cohort start --head` runs one in the foreground; `cohort run` embeds one
// next to a local agent. Thread-safe: Start/Stop from the owning thread; the
// HTTP loop, the gRPC threads and the head's tick thread share the cluster
// state under one mutex (see src/head/cluster.h).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "cohort/common/status.h"

namespace cohort::head {

struct HeadOptions {
  std::string state_dir;            // required: token, join_token, cohort.db, logs/, packages/, jobs/
  std::string host = "0.0.0.0";     // where both ports listen
  int agent_port = 6380;            // gRPC for node agents (0 = ephemeral)
  int dashboard_port = 8265;        // HTTP API (0 = ephemeral)
  bool auth = true;                 // false: `--auth none`, no tokens (logs a warning)
  // The two cluster secrets (with auth on):
  //  - token, the API (admin) token: the HTTP API and the dashboard. Empty:
  //    read <state_dir>/token, or create it.
  //  - join_token: what agents register and fetch packages with; never
  //    accepted by the HTTP API. Empty: read <state_dir>/join_token, or
  //    create it. Must differ from the API token. Agents that still present
  //    the API token are accepted too (a WARN, once), for deployments from
  //    before join tokens.
  std::string token;
  std::string join_token;
  std::chrono::milliseconds node_timeout{10000};      // heartbeat silence => node DEAD
  std::chrono::milliseconds stop_grace{3000};         // SIGTERM -> SIGKILL for stopped jobs
  std::chrono::milliseconds reattach_timeout{15000};  // after a restart, for RUNNING jobs' workers
  size_t max_body_bytes = size_t{100} << 20;
  // The node id of an in-process agent (cohort run): Ray pins drivers
  // without entrypoint resources to the head node.
  std::string head_node_id;
};

class HeadServer {
 public:
  static Result<std::unique_ptr<HeadServer>> Start(HeadOptions options);
  ~HeadServer();  // Stop()

  int agent_port() const;
  int dashboard_port() const;
  const std::string& token() const;       // the API (admin) token; empty with auth off
  const std::string& join_token() const;  // the agents' join token; empty with auth off
  const std::string& state_dir() const;
  // Stops serving (agents see their streams end; workers keep running on
  // their nodes, as when the head process is killed). Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit HeadServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// <state_dir>/token: created (0600, random 32 hex) when missing.
Result<std::string> LoadOrCreateToken(const std::string& state_dir);
// <state_dir>/join_token: the same, for the agents' join token.
Result<std::string> LoadOrCreateJoinToken(const std::string& state_dir);

// The token in the first line of the file at `path` (`--token-file`,
// `--join-token-file`), surrounding blanks trimmed. InvalidArgument naming
// `flag` and the path when the file cannot be read or its first line is
// empty.
Result<std::string> ReadTokenFile(const std::string& path, const std::string& flag);

}  // namespace cohort::head
