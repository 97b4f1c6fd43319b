// WorkerContext; see include/cohort/train/context.h.
#include "cohort/train/context.h"

#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "cohort/comm/rendezvous.h"

namespace cohort::train {

Result<WorkerContext> WorkerContext::FromEnv() {
  COHORT_ASSIGN_OR_RETURN(comm::RendezvousConfig cfg, comm::RendezvousConfigFromEnv());
  WorkerContext ctx;
  ctx.rank = cfg.rank;
  ctx.local_rank = cfg.local_rank;
  ctx.world_size = cfg.world_size;
  ctx.local_world_size = cfg.local_world_size;
  // GPUs: the agent sets CUDA_VISIBLE_DEVICES to the host's assigned devices;
  // this worker uses the one at its local rank (CPU when there are none).
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr && *visible != '\0') {
    int n = 1;
    for (const char* p = visible; *p; ++p) n += (*p == ',');
    ctx.device = "cuda:" + std::to_string(ctx.local_rank % n);
  }
  if (const char* d = std::getenv("COHORT_CHECKPOINT_DIR")) ctx.checkpoint_dir = d;
  if (const char* d = std::getenv("COHORT_RESULTS_DIR")) ctx.results_dir = d;
  return ctx;
}

int DefaultThreadsPerWorker(int local_world_size) {
  if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp != nullptr) {
    int n = std::atoi(omp);
    if (n > 0) return n;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (cores < 1) cores = 1;
  long per = cores / (local_world_size > 0 ? local_world_size : 1);
  return per < 1 ? 1 : static_cast<int>(per);
}

}  // namespace cohort::train
