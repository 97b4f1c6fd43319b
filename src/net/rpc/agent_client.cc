// gRPC implementation of HeadClient; see agent_client.h.
//
// One grpc::Channel for the client's lifetime. gRPC reconnects a channel on
// its own; the reconnect backoff is capped at 1 s (instead of gRPC's 120 s)
// so that an agent notices a restarted head quickly. Connect() first waits
// for the channel to be READY in 100 ms slices, so a Stop() of the agent
// interrupts it promptly, then opens the stream without wait_for_ready (a
// channel that fails later fails the stream at once).
#include "cohort/rpc/agent_client.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <set>

#include <grpcpp/grpcpp.h>

#include "cohort.grpc.pb.h"
#include "grpc_status.h"

namespace cohort::rpc {
namespace {

constexpr auto kConnectSlice = std::chrono::milliseconds(100);

class GrpcHeadStream final : public HeadStream {
 public:
  GrpcHeadStream(std::unique_ptr<grpc::ClientContext> context,
                 std::unique_ptr<grpc::ClientReaderWriter<AgentMessage, HeadMessage>> stream)
      : context_(std::move(context)), stream_(std::move(stream)) {}

  ~GrpcHeadStream() override {
    if (!finished_) {
      context_->TryCancel();
      // Finish() releases the call; after the cancel it returns at once.
      stream_->Finish();
    }
  }

  bool Write(const AgentMessage& msg) override { return stream_->Write(msg); }
  bool Read(HeadMessage* msg) override { return stream_->Read(msg); }
  bool WritesDone() override { return stream_->WritesDone(); }
  void Cancel() override { context_->TryCancel(); }

  Status Finish() override {
    if (finished_) return Status::FailedPrecondition("Finish() called twice");
    finished_ = true;
    return FromGrpcStatus(stream_->Finish(), "head stream");
  }

 private:
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<AgentMessage, HeadMessage>> stream_;
  bool finished_ = false;
};

class GrpcHeadClient final : public HeadClient {
 public:
  explicit GrpcHeadClient(std::string address) : address_(std::move(address)) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
    stub_ = HeadService::NewStub(channel_);
  }

  Result<std::unique_ptr<HeadStream>> Connect(Deadline deadline,
                                              const std::function<bool()>& cancelled) override {
    for (;;) {
      grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
      if (state == GRPC_CHANNEL_READY) break;
      if (cancelled && cancelled()) return Status::Cancelled("connecting to the head cancelled");
      if (deadline.Expired()) {
        return Status::Unavailable("cannot connect to the head at " + address_ +
                                   " (is `cohort head` running there, and the port open?)");
      }
      auto slice_end = std::min(deadline.when(), Deadline::Clock::now() + kConnectSlice);
      auto system_end = std::chrono::system_clock::now() + (slice_end - Deadline::Clock::now());
      channel_->WaitForStateChange(state, system_end);
    }
    auto context = std::make_unique<grpc::ClientContext>();
    std::unique_ptr<grpc::ClientReaderWriter<AgentMessage, HeadMessage>> stream =
        stub_->Connect(context.get());
    if (!stream) return Status::Internal("gRPC returned no stream for Connect");
    return std::unique_ptr<HeadStream>(
        std::make_unique<GrpcHeadStream>(std::move(context), std::move(stream)));
  }

  Status GetPackage(const GetPackageRequest& request, Deadline deadline,
                    const std::function<Status(std::string_view)>& sink) override {
    grpc::ClientContext context;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shut_down_) return Status::Cancelled("GetPackage " + request.uri() + ": the agent is stopping");
      calls_.insert(&context);
    }
    struct Untrack {
      GrpcHeadClient* self;
      grpc::ClientContext* context;
      ~Untrack() {
        std::lock_guard<std::mutex> lock(self->mu_);
        self->calls_.erase(context);
      }
    } untrack{this, &context};
    if (deadline.when() != Deadline::Clock::time_point::max()) {
      context.set_deadline(std::chrono::system_clock::now() +
                           (deadline.when() - Deadline::Clock::now()));
    }
    // The head may just have restarted: wait for the channel rather than fail.
    context.set_wait_for_ready(true);
    std::unique_ptr<grpc::ClientReader<PackageChunk>> reader =
        stub_->GetPackage(&context, request);
    PackageChunk chunk;
    Status sink_status;
    while (reader->Read(&chunk)) {
      sink_status = sink(chunk.data());
      if (!sink_status.ok()) {
        context.TryCancel();
        while (reader->Read(&chunk)) {
        }
        break;
      }
    }
    grpc::Status finish = reader->Finish();
    if (!sink_status.ok()) return sink_status;
    if (finish.error_code() == grpc::StatusCode::CANCELLED) {
      return Status::Cancelled("GetPackage " + request.uri() + ": the agent is stopping");
    }
    return FromGrpcStatus(finish, "GetPackage " + request.uri() + " from " + address_);
  }

  void Shutdown() override {
    std::lock_guard<std::mutex> lock(mu_);
    shut_down_ = true;
    for (grpc::ClientContext* c : calls_) c->TryCancel();
  }

  const std::string& address() const override { return address_; }

 private:
  const std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<HeadService::Stub> stub_;
  std::mutex mu_;
  std::set<grpc::ClientContext*> calls_;  // GUARDED_BY(mu_): GetPackage in flight
  bool shut_down_ = false;                // GUARDED_BY(mu_)
};

}  // namespace

std::unique_ptr<HeadClient> NewHeadClient(const std::string& head_address) {
  return std::make_unique<GrpcHeadClient>(head_address);
}

}  // namespace cohort::rpc
