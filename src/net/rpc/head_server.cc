// HeadRpcServer and the registration checks; see head_server.h.
//
// Per agent stream: the gRPC thread running Connect() reads; a Session's
// writer thread drains its queue with blocking Write()s (gRPC allows one
// reader and one writer at a time). The Session outlives neither: Connect()
// joins the writer and marks the Session closed before it returns, because
// the ServerReaderWriter is gone after that (later Send()s return false).
#include "cohort/rpc/head_server.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "cohort.grpc.pb.h"
#include "cohort/common/logging.h"
#include "grpc_status.h"

namespace cohort::rpc {

std::string ProtocolMismatchReason(uint32_t agent_version, uint32_t head_version) {
  return "agent protocol version " + std::to_string(agent_version) +
         " does not match the head's " + std::to_string(head_version) +
         "; run the same cohort version on all nodes";
}

namespace {

// Compares without an early exit, so timing does not leak the token.
bool TokensEqual(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ (i < b.size() ? b[i] : 0);
  return diff == 0;
}

}  // namespace

AgentCredential ClassifyAgentToken(std::string_view presented, std::string_view join_token,
                                   std::string_view admin_token) {
  if (join_token.empty()) return AgentCredential::kNone;
  // Both comparisons always run: which one matched does not show in the time.
  const bool join = TokensEqual(presented, join_token);
  const bool admin = !admin_token.empty() && TokensEqual(presented, admin_token);
  if (join) return AgentCredential::kJoinToken;
  return admin ? AgentCredential::kAdminToken : AgentCredential::kWrong;
}

std::string RegistrationRefusal(const Register& reg, std::string_view join_token,
                                std::string_view admin_token, uint32_t head_version,
                                AgentCredential* credential) {
  if (credential != nullptr) *credential = AgentCredential::kWrong;
  if (reg.protocol_version() != head_version) {
    return ProtocolMismatchReason(reg.protocol_version(), head_version);
  }
  const AgentCredential c = ClassifyAgentToken(reg.cluster_token(), join_token, admin_token);
  if (credential != nullptr) *credential = c;
  if (c != AgentCredential::kWrong) return "";
  return reg.cluster_token().empty()
             ? "the head requires a join token; pass the head's join token (<state-dir>/join_token on "
               "the head) to `cohort start` with --join-token-file or --join-token"
             : "the join token does not match the head's; pass the head's join token "
               "(<state-dir>/join_token on the head) with --join-token-file or --join-token";
}

std::string RegistrationRefusal(const Register& reg, std::string_view cluster_token,
                                uint32_t head_version) {
  return RegistrationRefusal(reg, cluster_token, "", head_version);
}

void ConfigureHeadServerBuilder(grpc::ServerBuilder* builder) {
  // Agents ping every 10 s, also between messages; accept that.
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // And ping them: a powered-off agent machine breaks its stream in ~15 s.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

namespace {

constexpr size_t kPackageChunkBytes = 1 << 20;

using AgentStream = grpc::ServerReaderWriter<HeadMessage, AgentMessage>;

class Session final : public AgentSession {
 public:
  Session(grpc::ServerContext* context, AgentStream* stream)
      : context_(context), stream_(stream), peer_(context->peer()) {}

  bool Send(const HeadMessage& msg) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || closing_) return false;
    queue_.push_back(msg);
    cv_.notify_one();
    return true;
  }

  void Close() override {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
    cv_.notify_one();
  }

  const std::string& peer() const override { return peer_; }
  const std::string& node_id() const override { return node_id_; }
  void set_node_id(std::string id) { node_id_ = std::move(id); }

  // Called by Connect() once the Registered reply is written.
  void StartWriter() { writer_ = std::thread([this] { WriterLoop(); }); }

  // Called by Connect() before it returns: no more writes to the stream.
  void Finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      cv_.notify_one();
    }
    if (writer_.joinable()) writer_.join();
  }

  void Cancel() { context_->TryCancel(); }

 private:
  void WriterLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return closed_ || closing_ || !queue_.empty(); });
      if (closed_) return;
      if (queue_.empty()) {  // closing_ and everything written
        lock.unlock();
        context_->TryCancel();
        return;
      }
      HeadMessage msg = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      bool ok = stream_->Write(msg);
      lock.lock();
      if (!ok) {
        closed_ = true;
        lock.unlock();
        context_->TryCancel();  // wakes the reader too
        return;
      }
    }
  }

  grpc::ServerContext* const context_;
  AgentStream* const stream_;
  const std::string peer_;
  std::string node_id_;  // written before StartWriter(), read-only after
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<HeadMessage> queue_;  // GUARDED_BY(mu_)
  bool closing_ = false;           // GUARDED_BY(mu_)
  bool closed_ = false;            // GUARDED_BY(mu_)
  std::thread writer_;
};

class Service final : public HeadService::Service {
 public:
  Service(const HeadRpcServer::Options& options, HeadHandler* handler)
      : options_(options), handler_(handler) {}

  grpc::Status Connect(grpc::ServerContext* context, AgentStream* stream) override {
    AgentMessage first;
    if (!stream->Read(&first)) return grpc::Status(grpc::StatusCode::CANCELLED, "no Register");
    if (!first.has_registration()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first message on Connect must be Register");
    }
    const Register& reg = first.registration();
    AgentCredential credential = AgentCredential::kWrong;
    std::string refusal = RegistrationRefusal(reg, options_.cluster_token, options_.admin_token,
                                              options_.protocol_version, &credential);
    if (!refusal.empty()) {
      COHORT_LOG(WARN) << "refusing agent " << context->peer() << " (" << reg.hostname()
                       << "): " << refusal;
      HeadMessage reply;
      reply.mutable_refused()->set_reason(refusal);
      stream->Write(reply);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, refusal);
    }
    if (credential == AgentCredential::kAdminToken) WarnAdminTokenOnce(*context, reg.hostname());

    auto session = std::make_shared<Session>(context, stream);
    if (!Track(session.get())) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the head is shutting down");
    }
    HeadMessage reply = handler_->OnRegister(reg, session);
    if (!reply.has_registered()) {
      if (!reply.has_refused()) reply.mutable_refused()->set_reason("refused by the head");
      stream->Write(reply);
      session->Finish();
      Untrack(session.get());
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, reply.refused().reason());
    }
    session->set_node_id(reply.registered().node_id());
    Status why;
    if (!stream->Write(reply)) {
      why = Status::Unavailable("the agent's stream broke before Registered was sent");
    } else {
      session->StartWriter();
      AgentMessage msg;
      while (stream->Read(&msg)) handler_->OnMessage(*session, msg);
      if (context->IsCancelled()) why = Status::Unavailable("the agent's stream broke");
    }
    session->Finish();
    Untrack(session.get());
    handler_->OnDisconnect(*session, why);
    return grpc::Status::OK;
  }

  grpc::Status GetPackage(grpc::ServerContext* context, const GetPackageRequest* request,
                          grpc::ServerWriter<PackageChunk>* writer) override {
    const AgentCredential credential =
        ClassifyAgentToken(request->cluster_token(), options_.cluster_token, options_.admin_token);
    if (credential == AgentCredential::kWrong) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the join token does not match the head's");
    }
    if (credential == AgentCredential::kAdminToken) WarnAdminTokenOnce(*context, "");
    std::string bytes;
    Status s = handler_->GetPackage(*request, &bytes);
    if (!s.ok()) return ToGrpcStatus(s);
    size_t offset = 0;
    do {
      PackageChunk chunk;
      if (offset == 0) chunk.set_total_size_bytes(bytes.size());
      size_t n = std::min(kPackageChunkBytes, bytes.size() - offset);
      chunk.set_data(bytes.data() + offset, n);
      offset += n;
      if (!writer->Write(chunk)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the agent went away");
      }
    } while (offset < bytes.size());
    return grpc::Status::OK;
  }

  // Breaks every stream; later Connects are turned away.
  void CancelAll() {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
    for (Session* s : sessions_) s->Cancel();
  }

 private:
  // Agents should hold the join token only; one that joins with the admin
  // token says where to look, once per server (not per reconnect).
  void WarnAdminTokenOnce(const grpc::ServerContext& context, const std::string& hostname) {
    if (warned_admin_token_.exchange(true)) return;
    COHORT_LOG(WARN) << "agent " << context.peer() << (hostname.empty() ? "" : " (" + hostname + ")")
                     << " authenticated with the head's API (admin) token; give agents the join token "
                        "instead (<state-dir>/join_token; `cohort start --address ... --join-token-file "
                        "PATH`): the admin token is accepted from agents for compatibility only. "
                        "This warning is logged once.";
  }

  bool Track(Session* s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) return false;
    sessions_.insert(s);
    return true;
  }
  void Untrack(Session* s) {
    std::lock_guard<std::mutex> lock(mu_);
    sessions_.erase(s);
  }

  const HeadRpcServer::Options options_;
  HeadHandler* const handler_;
  std::mutex mu_;
  std::set<Session*> sessions_;  // GUARDED_BY(mu_)
  bool shutting_down_ = false;   // GUARDED_BY(mu_)
  std::atomic<bool> warned_admin_token_{false};
};

class GrpcHeadRpcServer final : public HeadRpcServer {
 public:
  GrpcHeadRpcServer(const Options& options, HeadHandler* handler)
      : service_(options, handler) {}
  ~GrpcHeadRpcServer() override { Shutdown(Deadline::After(std::chrono::seconds(2))); }

  Status Listen(const std::string& address) {
    grpc::ServerBuilder builder;
    ConfigureHeadServerBuilder(&builder);
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      return Status::Unavailable("cannot serve the agent protocol on " + address +
                                 " (address in use or not local?)");
    }
    return Status::Ok();
  }

  int port() const override { return port_; }

  void Shutdown(Deadline deadline) override {
    std::lock_guard<std::mutex> lock(shutdown_mu_);
    if (!server_) return;
    service_.CancelAll();
    auto left = deadline.when() - Deadline::Clock::now();
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(
                          std::max(left, Deadline::Clock::duration::zero())));
    server_->Wait();
    server_.reset();
  }

 private:
  Service service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::mutex shutdown_mu_;
};

}  // namespace

Result<std::unique_ptr<HeadRpcServer>> HeadRpcServer::Start(const Options& options,
                                                            HeadHandler* handler) {
  auto server = std::make_unique<GrpcHeadRpcServer>(options, handler);
  COHORT_RETURN_IF_ERROR(server->Listen(options.listen_address));
  return std::unique_ptr<HeadRpcServer>(std::move(server));
}

}  // namespace cohort::rpc
