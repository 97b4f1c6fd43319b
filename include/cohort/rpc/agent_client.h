// HeadClient: the agent's end of the head <-> agent protocol
// (src/proto/cohort.proto), with gRPC kept behind a gRPC-free interface.
//
// The agent (src/agent/) holds one HeadClient for its lifetime. It opens a
// HeadStream per session (Connect) and fetches working_dir packages with
// GetPackage. This header includes only the generated protobuf messages
// (cohort.pb.h), never gRPC; the gRPC implementation is agent_client.cc.
//
// Threading: HeadClient is thread-safe. On one HeadStream, one thread may be
// in Read() while another is in Write(); Write() must not be called from two
// threads at once; Cancel() may be called from any thread at any time;
// Finish() only once no Read() or Write() is in progress.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cohort.pb.h"
#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::rpc {

// One Connect call: AgentMessage out, HeadMessage in.
class HeadStream {
 public:
  virtual ~HeadStream() = default;
  // Blocks until the message is handed to the transport; false once the
  // stream is broken or cancelled (the message may not have been delivered).
  virtual bool Write(const AgentMessage& msg) = 0;
  // Blocks for the next message; false when the stream ended.
  virtual bool Read(HeadMessage* msg) = 0;
  // Half-closes the agent's side (a graceful goodbye); false if broken.
  virtual bool WritesDone() = 0;
  // Breaks the stream: a blocked Read() or Write() returns false soon.
  virtual void Cancel() = 0;
  // Why the stream ended. REQUIRES: Read() returned false, no Write() running.
  virtual Status Finish() = 0;
};

class HeadClient {
 public:
  virtual ~HeadClient() = default;

  // Waits until the head at the client's address accepts a connection, then
  // opens Connect. Unavailable when the head is not reachable by `deadline`;
  // Cancelled as soon as `cancelled()` returns true (polled every ~100 ms).
  virtual Result<std::unique_ptr<HeadStream>> Connect(Deadline deadline,
                                                      const std::function<bool()>& cancelled) = 0;

  // Streams the package `request.uri()` into `sink`, chunk by chunk; a
  // non-OK Status from `sink` aborts the download and is returned. NotFound
  // when the head has no such package.
  virtual Status GetPackage(const GetPackageRequest& request, Deadline deadline,
                            const std::function<Status(std::string_view chunk)>& sink) = 0;

  // Cancels GetPackage calls in flight (they return Cancelled) and makes
  // later ones fail the same way. Streams are cancelled through HeadStream.
  virtual void Shutdown() = 0;

  // "host:port" as given.
  virtual const std::string& address() const = 0;
};

// A gRPC (HTTP/2, plaintext) client of the head at `head_address`
// ("host:port", "[v6addr]:port"). Connection problems surface from
// Connect(), not here. The channel sends keepalive pings every 10 s (a head
// that vanished without closing its sockets is noticed within ~15 s), so
// the head's server must allow them (ConfigureHeadServerBuilder in
// head_server.h does).
std::unique_ptr<HeadClient> NewHeadClient(const std::string& head_address);

}  // namespace cohort::rpc
