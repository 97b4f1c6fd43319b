// The head's end of the head <-> agent protocol (src/proto/cohort.proto).
//
// What a head must do (whether it uses HeadRpcServer or implements the
// generated cohort::rpc::HeadService::Service itself):
//  1. Serve HeadService on its agent port, configured with
//     ConfigureHeadServerBuilder (agents ping every 10 s; without it gRPC
//     answers their pings with GOAWAY "too_many_pings" and drops the stream).
//  2. On Connect: read the first AgentMessage; it must be `registration`.
//     Refuse with HeadMessage.refused{reason = RegistrationRefusal(...)} when
//     that is non-empty (wrong protocol version, a token that is neither the
//     join token nor, for compatibility, the admin token) and end the
//     stream. Otherwise answer `registered{node_id, heartbeat_interval_ms}`
//     (echo the agent's node_id, or assign one when it is empty), mark the
//     node ALIVE with Register.resources, and re-attach
//     Register.running_workers to their jobs (StopWorkers for unknown ones).
//  3. Read AgentMessages until the stream ends: every message (heartbeats
//     included) refreshes the node's last-seen time; WorkerStarted,
//     WorkerExited, LogChunk, MetricReport feed the job manager and are
//     idempotent per (job_id, attempt, rank) (they can repeat after a
//     reconnect). A node whose last-seen time is older than the node timeout
//     (default 10 s) is DEAD; a stream that ends is not by itself death, the
//     agent may re-register within the timeout.
//  4. Send StartWorker / StopWorkers on the node's stream (one writer at a
//     time per stream).
//  5. Serve GetPackage: check the token (as for registration), stream the zip in chunks of at most
//     1 MiB, NOT_FOUND "Package gcs://<name> does not exist" when unknown.
//
// HeadRpcServer below does 1, 2 (the version and token checks), 3 (the
// reading loop) and 5 (chunking) and hands the head plain protobuf messages
// through HeadHandler, so the head's own code needs no gRPC headers.
//
// Threading: HeadRpcServer runs a gRPC synchronous server. Each agent stream
// is served by one gRPC thread (which calls that stream's handler methods, in
// order) plus one writer thread (which sends what AgentSession::Send queued).
// HeadHandler methods for different agents run concurrently; they must not
// block for long (the head's state lives on its own loop: post to it).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "cohort.pb.h"
#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace grpc {
class ServerBuilder;
}

namespace cohort::rpc {

inline constexpr uint32_t kProtocolVersion = PROTOCOL_VERSION_CURRENT;

// "agent protocol version N does not match the head's M; run the same cohort
// version on all nodes"
std::string ProtocolMismatchReason(uint32_t agent_version, uint32_t head_version);

// Empty when `reg` may register with a head speaking `head_version` and
// holding `cluster_token` (empty: no token required); otherwise why not.
std::string RegistrationRefusal(const Register& reg, std::string_view cluster_token,
                                uint32_t head_version = kProtocolVersion);

// Which of the head's secrets an agent presented.
enum class AgentCredential {
  kNone,        // the head requires none (auth off)
  kJoinToken,   // the agents' join token: the normal case
  kAdminToken,  // the API (admin) token: accepted for agents set up before join tokens
  kWrong,       // neither: refused
};

// Classifies `presented` against the head's `join_token` (empty: no token
// required) and `admin_token` (empty: not accepted from agents). Constant
// time in the tokens' contents.
AgentCredential ClassifyAgentToken(std::string_view presented, std::string_view join_token,
                                   std::string_view admin_token);

// As above, for a head that accepts `join_token` and, for compatibility,
// `admin_token` (see HeadRpcServer::Options); `*credential` (when not null)
// says which one `reg` presented. The refusal for a wrong token names the
// join token and the flags that pass it.
std::string RegistrationRefusal(const Register& reg, std::string_view join_token,
                                std::string_view admin_token, uint32_t head_version,
                                AgentCredential* credential = nullptr);

// Keepalive settings that match the agents' (agent_client.cc): permit their
// pings, and ping them every 10 s so the head notices a vanished machine.
void ConfigureHeadServerBuilder(grpc::ServerBuilder* builder);

// One agent's Connect stream, as the head sees it.
class AgentSession {
 public:
  virtual ~AgentSession() = default;
  // Queues `msg` for the agent; false once the stream is gone. Thread-safe,
  // never blocks on the network.
  virtual bool Send(const HeadMessage& msg) = 0;
  // Ends the stream (the agent sees it break and reconnects) after the
  // messages already queued are written. Thread-safe.
  virtual void Close() = 0;
  // The agent's transport address, e.g. "ipv4:10.0.0.5:43210".
  virtual const std::string& peer() const = 0;
  // Register.node_id as answered in Registered (set once OnRegister returned).
  virtual const std::string& node_id() const = 0;
};

class HeadHandler {
 public:
  virtual ~HeadHandler() = default;
  // The first message of a stream, already checked by RegistrationRefusal.
  // Return `registered` to accept (its node_id names the session) or
  // `refused` to turn the agent away; the reply is written before any
  // message that `session->Send` queues.
  virtual HeadMessage OnRegister(const Register& reg,
                                 const std::shared_ptr<AgentSession>& session) = 0;
  // Every later message of an accepted stream, in order.
  virtual void OnMessage(AgentSession& session, const AgentMessage& msg) = 0;
  // The accepted stream ended: OK when the agent said goodbye (WritesDone),
  // else why. No more OnMessage for this session afterwards.
  virtual void OnDisconnect(AgentSession& session, const Status& why) = 0;
  // The whole package, or NotFound("Package gcs://<name> does not exist").
  // The token has been checked already.
  virtual Status GetPackage(const GetPackageRequest& request, std::string* zip_bytes) = 0;
};

class HeadRpcServer {
 public:
  struct Options {
    std::string listen_address = "0.0.0.0:0";  // "host:port"; port 0 picks one
    // The join token agents register and fetch packages with; empty: agents
    // need none (and admin_token is ignored).
    std::string cluster_token;
    // The head's API (admin) token, still accepted from agents so that
    // deployments from before join tokens keep working; the first agent that
    // presents it gets a WARN in the head's log (once per server). Empty:
    // only cluster_token is accepted. Never the same as cluster_token.
    std::string admin_token;
    uint32_t protocol_version = kProtocolVersion;  // tests pretend to be another version
  };

  // Listens and serves until Shutdown() or destruction. `handler` must
  // outlive the server.
  static Result<std::unique_ptr<HeadRpcServer>> Start(const Options& options,
                                                      HeadHandler* handler);
  virtual ~HeadRpcServer() = default;
  // The bound port.
  virtual int port() const = 0;
  // Breaks every agent stream and stops serving; calls in flight get until
  // `deadline`. Idempotent.
  virtual void Shutdown(Deadline deadline) = 0;
};

}  // namespace cohort::rpc
