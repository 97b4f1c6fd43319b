// HostStagedAllReduce and the host-memory copier; see cohort/comm/staged.h.
#include "cohort/comm/staged.h"

#include <cstring>
#include <string>

namespace cohort::comm {
namespace {

class HostMemoryCopier final : public DeviceCopier {
 public:
  Status RegisterHost(void*, size_t) override { return Status::Ok(); }
  Result<Ticket> ToHost(void* host, const void* device, size_t bytes, void*) override {
    if (bytes > 0) std::memcpy(host, device, bytes);
    return ++next_;
  }
  Result<Ticket> ToDevice(void* device, const void* host, size_t bytes) override {
    if (bytes > 0) std::memcpy(device, host, bytes);
    return ++next_;
  }
  Status Wait(Ticket ticket, Deadline) override {
    return ticket >= 1 && ticket <= next_ ? Status::Ok() : Status::InvalidArgument("unknown copy ticket");
  }
  const char* name() const override { return "host memory"; }

 private:
  Ticket next_ = 0;
};

}  // namespace

std::unique_ptr<DeviceCopier> NewHostMemoryCopier() { return std::make_unique<HostMemoryCopier>(); }

Status HostStagedAllReduce::Run(const std::vector<StagedBuffer>& buffers, ReduceOp op, WireFormat wire, void* after,
                                Deadline deadline) {
  size_t total = 0;
  for (const StagedBuffer& b : buffers) total += b.count;
  if (total == 0) return Status::Ok();
  const size_t bytes = total * sizeof(float);
  if (bytes > staging_bytes_) {
    // Collective (every rank has the same buffers), so every rank grows it here.
    Result<void*> area = comm_->AllocateShared(bytes);
    if (!area.ok()) return area.status().WithPrefix("allocating the host staging area");
    if (Status st = copier_->RegisterHost(*area, bytes); !st.ok())
      return st.WithPrefix(std::string("registering the host staging area with ") + copier_->name());
    staging_ = static_cast<float*>(*area);
    staging_bytes_ = bytes;
  }
  // 1. Every buffer starts copying out (the copies run in order).
  std::vector<float*> host(buffers.size());
  std::vector<DeviceCopier::Ticket> out(buffers.size());
  size_t offset = 0;
  for (size_t i = 0; i < buffers.size(); ++i) {
    host[i] = staging_ + offset;
    offset += buffers[i].count;
    if (buffers[i].count == 0) continue;
    Result<DeviceCopier::Ticket> t = copier_->ToHost(host[i], buffers[i].device, buffers[i].count * sizeof(float), after);
    if (!t.ok()) return t.status().WithPrefix("copying gradients to the host");
    out[i] = *t;
  }
  // 2. Each is reduced as soon as it is on the host, while later ones still copy.
  std::vector<std::shared_ptr<Work>> work(buffers.size());
  Status failed;
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (buffers[i].count == 0) continue;
    if (Status st = copier_->Wait(out[i], deadline); !st.ok()) {
      failed = st.WithPrefix("copying gradients to the host");
      break;
    }
    work[i] = comm_->AllReduceAsync(host[i], buffers[i].count, DType::kFloat32, op, wire);
  }
  // 3. Each goes back as soon as it is reduced, while later ones still reduce.
  std::vector<DeviceCopier::Ticket> in(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (!work[i]) continue;
    Status st = work[i]->Wait();  // every started reduction is waited for, even after a failure
    if (!failed.ok()) continue;
    if (!st.ok()) {
      failed = st;
      continue;
    }
    Result<DeviceCopier::Ticket> t = copier_->ToDevice(buffers[i].device, host[i], buffers[i].count * sizeof(float));
    if (!t.ok()) {
      failed = t.status().WithPrefix("copying reduced gradients back to the device");
      continue;
    }
    in[i] = *t;
  }
  if (!failed.ok()) {
    // A rank that stops here leaves its peers waiting: make them fail fast.
    comm_->Abort("host-staged all-reduce failed: " + failed.message());
    return failed;
  }
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (!work[i]) continue;
    if (Status st = copier_->Wait(in[i], deadline); !st.ok())
      return st.WithPrefix("copying reduced gradients back to the device");
  }
  return Status::Ok();
}

}  // namespace cohort::comm
