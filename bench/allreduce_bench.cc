// All-reduce benchmark driver for bench/allreduce.sh. Run under
// `cohort launch -n N`; rank 0 prints one line per (size, buffer):
//   cohort size=<bytes> buffer=<plain|shared> transport=<t> iters=<n> lat_us=<x> algbw_gbs=<y>
// "plain" is an ordinary heap buffer (copied through the staging area on
// shm); "shared" lives in AllocateShared memory, as the trainer's gradient
// buckets do. algbw = bytes / time per all-reduce (float32, sum).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cohort/comm/communicator.h"

using cohort::comm::Communicator;
using cohort::comm::DType;
using cohort::comm::ReduceOp;

namespace {

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Fail(const cohort::Status& s) {
  std::fprintf(stderr, "allreduce_bench: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes = {4096, 262144, 2700000, 64u << 20};
  double seconds_per_size = 1.0;
  cohort::comm::WireFormat wire = cohort::comm::WireFormat::kNative;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) seconds_per_size = std::atof(argv[++i]);
    if (std::strcmp(argv[i], "--wire") == 0 && i + 1 < argc) {
      const std::string w = argv[++i];
      if (w != "native" && w != "bf16" && w != "fp16")
        return Fail(cohort::Status::InvalidArgument("--wire native|bf16|fp16, got " + w));
      wire = w == "bf16"   ? cohort::comm::WireFormat::kBFloat16
             : w == "fp16" ? cohort::comm::WireFormat::kFloat16
                           : cohort::comm::WireFormat::kNative;
    }
  }
  auto comm_or = Communicator::FromEnv();
  if (!comm_or.ok()) return Fail(comm_or.status());
  Communicator& comm = **comm_or;
  size_t max_bytes = 0;
  for (size_t s : sizes) max_bytes = std::max(max_bytes, s);
  std::vector<float> plain(max_bytes / 4, 1.0f);
  auto shared_or = comm.AllocateShared(max_bytes);
  if (!shared_or.ok()) return Fail(shared_or.status());
  float* shared = static_cast<float*>(*shared_or);
  std::fill(shared, shared + max_bytes / 4, 1.0f);

  for (const char* mode : {"plain", "shared"}) {
    float* buf = std::strcmp(mode, "plain") == 0 ? plain.data() : shared;
    for (size_t bytes : sizes) {
      const size_t count = bytes / 4;
      // Warm up (the same number of calls on every rank), then rank 0 picks
      // an iteration count that fills the time budget.
      const int warm = bytes >= (8u << 20) ? 3 : 50;
      double t0 = Seconds();
      for (int i = 0; i < warm; ++i)
        if (auto s = comm.AllReduce(buf, count, DType::kFloat32, ReduceOp::kSum, comm.DefaultDeadline(), wire);
            !s.ok())
          return Fail(s);
      double per_op = (Seconds() - t0) / warm;
      int iters = static_cast<int>(seconds_per_size / per_op);
      iters = std::max(5, std::min(iters, 200000));
      comm.Broadcast(&iters, sizeof(iters), 0);
      if (auto s = comm.Barrier(); !s.ok()) return Fail(s);
      t0 = Seconds();
      for (int i = 0; i < iters; ++i)
        if (auto s = comm.AllReduce(buf, count, DType::kFloat32, ReduceOp::kSum, comm.DefaultDeadline(), wire);
            !s.ok())
          return Fail(s);
      double elapsed = Seconds() - t0;
      if (comm.rank() == 0) {
        double lat = elapsed / iters;
        std::printf("cohort size=%zu buffer=%s transport=%s wire=%s iters=%d lat_us=%.2f algbw_gbs=%.3f\n",
                    bytes, mode, std::string(cohort::comm::TransportName(comm.transport())).c_str(),
                    std::string(cohort::comm::WireFormatName(wire)).c_str(), iters, lat * 1e6, bytes / lat / 1e9);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
