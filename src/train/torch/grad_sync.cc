// GradientSync and BroadcastParameters; see include/cohort/train/torch.h.
//
// Buckets: parameters are taken in reverse registration order (the order in
// which backward produces their gradients) and packed into buckets of about
// bucket_bytes, one dtype per bucket. Each bucket's storage comes from
// Communicator::AllocateShared, and each parameter's .grad is replaced by a
// tensor over its slice of that storage (from_blob, not an autograd view, so
// optimizers may detach_/zero_ it). Autograd accumulates in place into an
// existing .grad, so after backward the bucket already holds the gradients.
//
// Overlap: a post-hook on each parameter's AccumulateGrad node counts the
// bucket's outstanding gradients; when a bucket is complete, it and every
// complete bucket after it in index order are handed to AllReduceAsync. The
// launch order is the bucket index on every rank, so ranks always issue the
// same sequence of collectives even if their hooks fire in different orders.
// A parameter unused in this step never fires; Synchronize() launches what
// is left, in order.
//
// Parameters on a GPU (GradientSyncOptions::device_path): the buckets are
// device tensors. With NCCL a launch makes the collective stream wait for
// the default stream (an event) and enqueues the all-reduce there;
// Synchronize() waits for that stream only. Host-staged, Synchronize() runs
// the pipelined copy-out / reduce / copy-back over all buckets.
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>

#include "cohort/comm/nccl.h"
#include "cohort/comm/staged.h"
#include "cohort/common/logging.h"
#include "cohort/train/torch.h"

namespace cohort::train {
namespace {

Result<comm::DType> ToCommDType(const torch::Tensor& t) {
  if (t.scalar_type() == torch::kFloat32) return comm::DType::kFloat32;
  if (t.scalar_type() == torch::kBFloat16) return comm::DType::kBFloat16;
  return Status::InvalidArgument(std::string("gradient synchronisation supports float32 and bfloat16 "
                                             "parameters, not ") +
                                 std::string(c10::toString(t.scalar_type())));
}

}  // namespace

struct GradientSync::Impl {
  // kHost: buckets in Communicator::AllocateShared memory, reduced by the
  // shm/TCP communicator. kNccl / kStaged: buckets are tensors on the
  // parameters' device (see the file comment).
  enum class Mode { kHost, kNccl, kStaged };
  Mode mode = Mode::kHost;
  torch::Device device = torch::kCPU;
  std::vector<torch::Tensor> bucket_tensors;  // kNccl / kStaged: each bucket's storage
  std::unique_ptr<comm::DeviceCommunicator> device_comm;
  std::unique_ptr<comm::DeviceStream> device_stream;
  std::unique_ptr<comm::DeviceCopier> copier;
  std::unique_ptr<comm::HostStagedAllReduce> staged;
  Status launch_error;  // GUARDED_BY(mu): the first enqueue that failed in a hook

  struct Bucket {
    comm::DType dtype = comm::DType::kFloat32;
    void* data = nullptr;
    size_t count = 0;          // elements
    size_t num_params = 0;
    size_t pending = 0;        // gradients not yet accumulated this step
    std::shared_ptr<comm::Work> work;
  };

  comm::Communicator* comm = nullptr;
  GradientSyncOptions options;
  GradCompression compression = GradCompression::kNone;
  comm::WireFormat wire = comm::WireFormat::kNative;
  // bf16-ef/fp16-ef: per float32 bucket, what rounding took off its last contribution.
  std::vector<std::vector<float>> residual;
  std::vector<Bucket> buckets;
  std::vector<torch::Tensor> params;
  std::vector<size_t> bucket_of;  // bucket index of params[i]
  std::vector<torch::Tensor> grad_views;  // params[i]'s slice of its bucket
  // Holding the accumulators keeps them (and our hooks) alive across steps;
  // a variable only holds its accumulator weakly.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;

  std::mutex mu;            // hooks may run on another thread than Synchronize
  size_t next_launch = 0;   // GUARDED_BY(mu): buckets [0, next_launch) are launched

  void MarkReady(size_t param_index) {
    std::lock_guard<std::mutex> lock(mu);
    Bucket& b = buckets[bucket_of[param_index]];
    if (b.pending > 0) --b.pending;
    // The last bucket completes when backward ends: there is nothing left to
    // overlap it with, so Synchronize() reduces it inline on the training
    // thread, sparing two thread hand-offs per step.
    while (next_launch + 1 < buckets.size() && buckets[next_launch].pending == 0) Launch(next_launch++);
  }

  void Launch(size_t i) {  // REQUIRES: mu held
    Bucket& b = buckets[i];
    if (mode == Mode::kNccl) {
      // After what the default stream (backward) has queued so far.
      Status st = device_stream->WaitFor(nullptr);
      if (st.ok())
        st = device_comm->AllReduceEnqueue(b.data, b.count,
                                           b.dtype == comm::DType::kBFloat16 ? comm::DeviceDType::kBFloat16
                                                                             : comm::DeviceDType::kFloat32,
                                           comm::ReduceOp::kAverage, device_stream->handle());
      if (!st.ok() && launch_error.ok()) launch_error = st;
      return;
    }
    FeedBackError(i);
    b.work = comm->AllReduceAsync(b.data, b.count, b.dtype, comm::ReduceOp::kAverage, wire);
  }

  // Error feedback: g += residual; residual = g - wire(g); g = wire(g). The
  // first hop then sends this rank's gradient exactly, and what its rounding
  // dropped goes into the next step instead of being lost.
  void FeedBackError(size_t i) {
    if (mode != Mode::kHost || residual.empty() || buckets[i].dtype != comm::DType::kFloat32) return;
    comm::QuantizeWithErrorFeedback(wire, static_cast<float*>(buckets[i].data), residual[i].data(),
                                    buckets[i].count);
  }

  void ResetStep() {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& b : buckets) {
      b.pending = b.num_params;
      b.work.reset();
    }
    next_launch = 0;
    launch_error = Status::Ok();
  }

  Status SynchronizeDevice(size_t first_inline);

  std::string path_name() const {
    if (comm->world_size() == 1) return "local (one rank)";
    const std::string transport(comm::TransportName(comm->transport()));
    switch (mode) {
      case Mode::kHost: return transport;
      case Mode::kNccl: return "nccl on " + device.str();
      case Mode::kStaged: return "host-staged from " + device.str() + " over " + transport;
    }
    return transport;
  }
};

Status GradientSync::Impl::SynchronizeDevice(size_t first_inline) {
  const Deadline deadline = comm->DefaultDeadline();
  if (mode == Mode::kStaged) {
    std::vector<comm::StagedBuffer> staged_buffers;
    staged_buffers.reserve(buckets.size());
    for (const auto& b : buckets) staged_buffers.push_back({b.data, b.count});
    // After what the default stream (backward) queued: the copier waits for it.
    return staged->Run(staged_buffers, comm::ReduceOp::kAverage, wire, nullptr, deadline);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = first_inline; i < buckets.size(); ++i) Launch(i);
    if (!launch_error.ok()) return launch_error;
  }
  // The collective stream only: the default stream may still run other work.
  return device_comm->Synchronize(device_stream->handle(), deadline);
}

namespace {

class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(GradientSync::Impl* impl, size_t index) : impl_(impl), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    impl_->MarkReady(index_);
    return outputs;
  }

 private:
  GradientSync::Impl* impl_;  // outlives the hook: ~GradientSync removes hooks first
  size_t index_;
};

// What each rank brings to the choice of a path (all-gathered, fixed size).
struct PathVote {
  uint64_t host_hash = 0;
  int32_t device_type = 0;  // 0 CPU, 1 CUDA
  int32_t device_index = 0;
  int32_t nccl_built = 0;
  int32_t want = 0;  // GradientSyncOptions::DevicePath
};

std::string DeviceText(const PathVote& v) {
  return v.device_type == 0 ? std::string("cpu") : "cuda:" + std::to_string(v.device_index);
}

}  // namespace

Result<GradientSyncOptions::DevicePath> ParseDevicePath(const std::string& text) {
  using Path = GradientSyncOptions::DevicePath;
  if (text == "auto") return Path::kAuto;
  if (text == "nccl") return Path::kNccl;
  if (text == "host-staged") return Path::kHostStaged;
  return Status::InvalidArgument("gradient device path '" + text.substr(0, 64) +
                                 "': expected auto, nccl or host-staged");
}

namespace {

// Sets impl.device and impl.mode, the same on every rank. Collective when
// world_size > 1 (one all-gather), whatever the devices.
Status ChooseMode(comm::Communicator& comm, GradientSync::Impl& impl, GradientSyncOptions options) {
  using Mode = GradientSync::Impl::Mode;
  using Path = GradientSyncOptions::DevicePath;
  if (const char* env = std::getenv("COHORT_DEVICE_PATH"); options.device_path == Path::kAuto && env && *env) {
    Result<Path> parsed = ParseDevicePath(env);
    if (!parsed.ok()) return parsed.status().WithPrefix("COHORT_DEVICE_PATH");
    options.device_path = *parsed;
  }
  for (size_t i = 0; i < impl.params.size(); ++i) {
    const torch::Device d = impl.params[i].device();
    if (i == 0) impl.device = d;
    if (d != impl.device)
      return Status::InvalidArgument("GradientSync needs every parameter on one device, not on " +
                                     impl.device.str() + " and " + d.str());
  }
  if (!impl.device.is_cpu() && !impl.device.is_cuda())
    return Status::InvalidArgument("GradientSync supports parameters on the CPU or a CUDA device, not " +
                                   impl.device.str());
  PathVote mine;
  mine.host_hash = std::hash<std::string>{}(comm.host_key());
  mine.device_type = impl.device.is_cuda() ? 1 : 0;
  mine.device_index = impl.device.has_index() ? impl.device.index() : 0;
  mine.nccl_built = comm::DeviceCommunicator::Built() ? 1 : 0;
  mine.want = static_cast<int32_t>(options.device_path);
  const int world = comm.world_size();
  std::vector<PathVote> all(static_cast<size_t>(world));
  if (world > 1) {
    COHORT_RETURN_IF_ERROR(comm.AllGather(&mine, all.data(), sizeof(PathVote)));
  } else {
    all[0] = mine;
  }
  for (int r = 1; r < world; ++r) {
    if (all[r].device_type != all[0].device_type)
      return Status::InvalidArgument("rank 0 has its parameters on " + DeviceText(all[0]) + ", rank " +
                                     std::to_string(r) + " on " + DeviceText(all[r]) +
                                     ": every rank must train on the same kind of device");
    if (all[r].want != all[0].want)
      return Status::InvalidArgument("ranks 0 and " + std::to_string(r) + " ask for different gradient paths "
                                     "(GradientSyncOptions::device_path)");
  }
  const Path want = options.device_path;
  if (all[0].device_type == 0) {
    impl.mode = want == Path::kHostStaged ? Mode::kStaged : Mode::kHost;
    return Status::Ok();
  }
  if (want == Path::kHostStaged || world == 1) {
    impl.mode = Mode::kStaged;
    return Status::Ok();
  }
  std::string why;
  for (int r = 0; r < world && why.empty(); ++r)
    if (all[r].nccl_built == 0)
      why = "rank " + std::to_string(r) + " runs a cohort built without NCCL (-DCOHORT_CUDA=ON builds it)";
  for (int r = 0; r < world && why.empty(); ++r)
    for (int q = r + 1; q < world && why.empty(); ++q)
      if (all[r].host_hash == all[q].host_hash && all[r].device_index == all[q].device_index)
        why = "ranks " + std::to_string(r) + " and " + std::to_string(q) + " share " + DeviceText(all[r]) +
              " on one host, which NCCL refuses";
  if (why.empty()) {
    impl.mode = Mode::kNccl;
  } else if (want == Path::kNccl) {
    return Status::FailedPrecondition("NCCL was asked for, but " + why);
  } else {
    impl.mode = Mode::kStaged;
    if (comm.rank() == 0) COHORT_LOG(INFO) << "gradients are host-staged: " << why;
  }
  return Status::Ok();
}

std::atomic<int> g_device_comms{0};  // keeps each GradientSync's NCCL store keys apart

}  // namespace

GradientSync::GradientSync(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GradientSync::~GradientSync() {
  if (!impl_) return;
  // Drop our hooks so a later backward cannot call into a dead Impl.
  for (auto& acc : impl_->accumulators) {
    auto& hooks = acc->post_hooks();
    hooks.erase(std::remove_if(hooks.begin(), hooks.end(),
                               [](const auto& h) { return dynamic_cast<ReadyHook*>(h.get()) != nullptr; }),
                hooks.end());
  }
  for (auto& b : impl_->buckets)
    if (b.work) b.work->Wait();
}

Status BroadcastParameters(comm::Communicator& comm, torch::nn::Module& module) {
  if (comm.world_size() == 1) return Status::Ok();
  torch::NoGradGuard no_grad;
  auto sync = [&](torch::Tensor t, const std::string& name) -> Status {
    if (!t.is_contiguous())
      return Status::InvalidArgument("parameter " + name + " is not contiguous");
    if (t.device().is_cpu()) return comm.Broadcast(t.data_ptr(), t.numel() * t.element_size(), 0);
    // On a device: through host memory (once, at the start of training).
    torch::Tensor host = t.to(torch::kCPU).contiguous();
    COHORT_RETURN_IF_ERROR(comm.Broadcast(host.data_ptr(), host.numel() * host.element_size(), 0));
    t.copy_(host);
    return Status::Ok();
  };
  for (auto& p : module.named_parameters()) COHORT_RETURN_IF_ERROR(sync(p.value(), p.key()));
  for (auto& b : module.named_buffers()) COHORT_RETURN_IF_ERROR(sync(b.value(), b.key()));
  return Status::Ok();
}

Result<std::unique_ptr<GradientSync>> GradientSync::Create(comm::Communicator& comm,
                                                           torch::nn::Module& module,
                                                           GradientSyncOptions options) {
  try {
    COHORT_RETURN_IF_ERROR(BroadcastParameters(comm, module));
    auto impl = std::make_unique<Impl>();
    impl->comm = &comm;
    impl->options = options;
    if (options.compression) {
      impl->compression = *options.compression;
    } else {
      COHORT_ASSIGN_OR_RETURN(impl->compression, GradCompressionFromEnv());
    }
    if (impl->compression != GradCompression::kNone &&
        (comm.world_size() == 1 || comm.transport() != comm::TransportKind::kTcp)) {
      COHORT_LOG(INFO) << "gradient compression " << GradCompressionName(impl->compression)
                       << " has no effect without a network between ranks; off";
      impl->compression = GradCompression::kNone;
    }
    switch (impl->compression) {
      case GradCompression::kNone: impl->wire = comm::WireFormat::kNative; break;
      case GradCompression::kBFloat16:
      case GradCompression::kBFloat16ErrorFeedback: impl->wire = comm::WireFormat::kBFloat16; break;
      case GradCompression::kFloat16:
      case GradCompression::kFloat16ErrorFeedback: impl->wire = comm::WireFormat::kFloat16; break;
    }
    for (auto& p : module.parameters())
      if (p.requires_grad()) impl->params.push_back(p);
    std::reverse(impl->params.begin(), impl->params.end());
    COHORT_RETURN_IF_ERROR(ChooseMode(comm, *impl, options));
    using Mode = Impl::Mode;
    if (impl->mode == Mode::kNccl && impl->compression != GradCompression::kNone) {
      if (comm.rank() == 0)
        COHORT_LOG(INFO) << "gradient compression " << GradCompressionName(impl->compression)
                         << " is not applied by NCCL; off";
      impl->compression = GradCompression::kNone;
      impl->wire = comm::WireFormat::kNative;
    }
    if (impl->mode == Mode::kStaged) {  // the wire format applies; error feedback does not
      if (impl->compression == GradCompression::kBFloat16ErrorFeedback) impl->compression = GradCompression::kBFloat16;
      if (impl->compression == GradCompression::kFloat16ErrorFeedback) impl->compression = GradCompression::kFloat16;
    }

    // Plan the buckets.
    if (options.bucket_bytes == 0) {
      constexpr size_t kMax = 25u << 20, kMin = 256u << 10;
      size_t total = 0;
      for (const auto& p : impl->params) total += p.numel() * p.element_size();
      options.bucket_bytes = kMax;
      if (comm.world_size() > 1 && comm.transport() == comm::TransportKind::kTcp)
        options.bucket_bytes = std::clamp(total / 8, kMin, kMax);
    }
    impl->options.bucket_bytes = options.bucket_bytes;
    struct Plan { comm::DType dtype; size_t bytes = 0; std::vector<size_t> members; };
    std::vector<Plan> plans;
    for (size_t i = 0; i < impl->params.size(); ++i) {
      const auto& p = impl->params[i];
      COHORT_ASSIGN_OR_RETURN(comm::DType dt, ToCommDType(p));
      if (impl->mode == Mode::kStaged && dt != comm::DType::kFloat32)
        return Status::InvalidArgument("host-staged gradients must be float32, not " +
                                       std::string(c10::toString(p.scalar_type())));
      const size_t bytes = p.numel() * p.element_size();
      if (plans.empty() || plans.back().dtype != dt ||
          (plans.back().bytes > 0 && plans.back().bytes + bytes > options.bucket_bytes))
        plans.push_back(Plan{dt, 0, {}});
      plans.back().bytes += (bytes + 63) / 64 * 64;  // keep every slice 64-byte aligned
      plans.back().members.push_back(i);
    }

    // Allocate (collective: same plan on every rank) and point .grad at the slices.
    impl->bucket_of.assign(impl->params.size(), 0);
    for (size_t bi = 0; bi < plans.size(); ++bi) {
      void* storage = nullptr;
      if (impl->mode == Mode::kHost) {
        COHORT_ASSIGN_OR_RETURN(storage, comm.AllocateShared(plans[bi].bytes));
      } else {
        const auto dtype = plans[bi].dtype == comm::DType::kBFloat16 ? torch::kBFloat16 : torch::kFloat32;
        impl->bucket_tensors.push_back(
            torch::zeros({static_cast<int64_t>(plans[bi].bytes / comm::DTypeSize(plans[bi].dtype))},
                         torch::TensorOptions().dtype(dtype).device(impl->device)));
        storage = impl->bucket_tensors.back().data_ptr();
      }
      Impl::Bucket b;
      b.dtype = plans[bi].dtype;
      b.data = storage;
      const size_t elem = comm::DTypeSize(b.dtype);
      b.count = plans[bi].bytes / elem;
      b.num_params = plans[bi].members.size();
      size_t offset_bytes = 0;
      for (size_t i : plans[bi].members) {
        auto& p = impl->params[i];
        auto grad = torch::from_blob(static_cast<char*>(storage) + offset_bytes, p.sizes(),
                                     p.options().requires_grad(false));
        if (p.grad().defined()) grad.copy_(p.grad());
        p.mutable_grad() = grad;
        impl->bucket_of[i] = bi;
        impl->grad_views.resize(impl->params.size());
        impl->grad_views[i] = grad;
        offset_bytes += (p.numel() * p.element_size() + 63) / 64 * 64;
      }
      impl->buckets.push_back(b);
    }
    if (impl->compression == GradCompression::kBFloat16ErrorFeedback ||
        impl->compression == GradCompression::kFloat16ErrorFeedback) {
      for (const auto& b : impl->buckets)
        impl->residual.emplace_back(b.dtype == comm::DType::kFloat32 ? b.count : 0, 0.0f);
    }

    if (comm.world_size() > 1 && impl->mode == Mode::kNccl) {
      comm::DeviceCommOptions dopts;
      dopts.timeout = comm.options().timeout;
      dopts.device = impl->device.index();
      dopts.store_prefix = "nccl/" + std::to_string(g_device_comms.fetch_add(1)) + "/";
      COHORT_ASSIGN_OR_RETURN(impl->device_comm, comm::DeviceCommunicator::Create(comm.store(), comm.rank(),
                                                                                  comm.world_size(), dopts));
      COHORT_ASSIGN_OR_RETURN(impl->device_stream, comm::DeviceStream::Create(impl->device.index()));
    }
    if (comm.world_size() > 1 && impl->mode == Mode::kStaged) {
      if (impl->device.is_cuda()) {
        COHORT_ASSIGN_OR_RETURN(impl->copier, comm::NewCudaCopier(impl->device.index()));
      } else {
        impl->copier = comm::NewHostMemoryCopier();
      }
      impl->staged = std::make_unique<comm::HostStagedAllReduce>(&comm, impl->copier.get());
    }

    impl->ResetStep();
    // Host-staged buckets are all reduced in Synchronize (pipelined there).
    if (options.overlap && comm.world_size() > 1 && impl->mode != Mode::kStaged) {
      for (size_t i = 0; i < impl->params.size(); ++i) {
        auto acc = torch::autograd::impl::grad_accumulator(impl->params[i]);
        acc->add_post_hook(std::make_unique<ReadyHook>(impl.get(), i));
        impl->accumulators.push_back(std::move(acc));
      }
    }
    COHORT_LOG(DEBUG) << "gradient sync: " << impl->params.size() << " parameters in "
                      << impl->buckets.size() << " bucket(s), " << impl->path_name();
    return std::unique_ptr<GradientSync>(new GradientSync(std::move(impl)));
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("GradientSync::Create: ") + e.what_without_backtrace());
  }
}

void GradientSync::ZeroGrad() {
  if (impl_->mode == Impl::Mode::kHost) {
    for (auto& b : impl_->buckets) std::memset(b.data, 0, b.count * comm::DTypeSize(b.dtype));
  } else {
    for (auto& t : impl_->bucket_tensors) t.zero_();
  }
  // A parameter whose .grad was replaced (an optimizer's zero_grad may set it
  // to undefined) is pointed back at its bucket slice.
  for (size_t i = 0; i < impl_->params.size(); ++i) {
    auto& p = impl_->params[i];
    if (!p.grad().defined() || p.grad().data_ptr() != impl_->grad_views[i].data_ptr())
      p.mutable_grad() = impl_->grad_views[i];
  }
  impl_->ResetStep();
}

Status GradientSync::Synchronize() {
  Status result;
  if (impl_->comm->world_size() > 1) {
    // Buckets the hooks did not start (the last one, or unused parameters)
    // are reduced here, synchronously and in index order; a synchronous
    // collective first drains the async queue, so the order is the same on
    // every rank.
    size_t first_inline;
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      first_inline = impl_->next_launch;
      impl_->next_launch = impl_->buckets.size();
    }
    if (impl_->mode != Impl::Mode::kHost) {
      result = impl_->SynchronizeDevice(first_inline);
      impl_->ResetStep();
      return result;
    }
    for (size_t i = 0; i < impl_->buckets.size(); ++i) {
      auto& b = impl_->buckets[i];
      if (i >= first_inline) impl_->FeedBackError(i);
      Status s = i < first_inline
                     ? (b.work ? b.work->Wait() : Status::Ok())
                     : impl_->comm->AllReduce(b.data, b.count, b.dtype, comm::ReduceOp::kAverage,
                                              impl_->comm->DefaultDeadline(), impl_->wire);
      if (result.ok() && !s.ok()) result = s;
    }
  }
  impl_->ResetStep();
  return result;
}

size_t GradientSync::num_buckets() const { return impl_->buckets.size(); }
GradCompression GradientSync::compression() const { return impl_->compression; }
std::string GradientSync::path() const { return impl_->path_name(); }
size_t GradientSync::buckets_launched() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->next_launch;
}
size_t GradientSync::bucket_bytes(size_t i) const {
  return impl_->buckets[i].count * comm::DTypeSize(impl_->buckets[i].dtype);
}

}  // namespace cohort::train
