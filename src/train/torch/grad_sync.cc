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
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <cstring>
#include <mutex>

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
    FeedBackError(i);
    b.work = comm->AllReduceAsync(b.data, b.count, b.dtype, comm::ReduceOp::kAverage, wire);
  }

  // Error feedback: g += residual; residual = g - wire(g); g = wire(g). The
  // first hop then sends this rank's gradient exactly, and what its rounding
  // dropped goes into the next step instead of being lost.
  void FeedBackError(size_t i) {
    if (residual.empty() || buckets[i].dtype != comm::DType::kFloat32) return;
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
  }
};

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
    return comm.Broadcast(t.data_ptr(), t.numel() * t.element_size(), 0);
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
      if (!p.device().is_cpu())
        return Status::InvalidArgument("GradientSync: parameters must be on the CPU for the shm/TCP "
                                       "transports (device " + p.device().str() + ")");
      COHORT_ASSIGN_OR_RETURN(comm::DType dt, ToCommDType(p));
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
      COHORT_ASSIGN_OR_RETURN(void* storage, comm.AllocateShared(plans[bi].bytes));
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

    impl->ResetStep();
    if (options.overlap && comm.world_size() > 1) {
      for (size_t i = 0; i < impl->params.size(); ++i) {
        auto acc = torch::autograd::impl::grad_accumulator(impl->params[i]);
        acc->add_post_hook(std::make_unique<ReadyHook>(impl.get(), i));
        impl->accumulators.push_back(std::move(acc));
      }
    }
    COHORT_LOG(DEBUG) << "gradient sync: " << impl->params.size() << " parameters in "
                      << impl->buckets.size() << " bucket(s)";
    return std::unique_ptr<GradientSync>(new GradientSync(std::move(impl)));
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("GradientSync::Create: ") + e.what_without_backtrace());
  }
}

void GradientSync::ZeroGrad() {
  for (auto& b : impl_->buckets) std::memset(b.data, 0, b.count * comm::DTypeSize(b.dtype));
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
size_t GradientSync::buckets_launched() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->next_launch;
}
size_t GradientSync::bucket_bytes(size_t i) const {
  return impl_->buckets[i].count * comm::DTypeSize(impl_->buckets[i].dtype);
}

}  // namespace cohort::train
