// WorkerContext: who this training process is (ranks, world size, device),
// read from the torchrun environment that `cohort launch` and the agents set,
// and where its checkpoints and results go (flags win over the environment).
//
// Torch-free. Thread-compatible value.
#pragma once

#include <string>

#include "cohort/common/status.h"

namespace cohort::train {

struct WorkerContext {
  int rank = 0;              // world rank
  int local_rank = 0;        // rank among the workers of this host
  int world_size = 1;
  int local_world_size = 1;
  std::string device = "cpu";     // "cpu" or "cuda:<i>" (i = index into CUDA_VISIBLE_DEVICES)
  std::string checkpoint_dir;     // COHORT_CHECKPOINT_DIR, may be empty
  std::string results_dir;        // COHORT_RESULTS_DIR, may be empty

  // From RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE (+ MASTER_*); a single
  // process without them is rank 0 of 1. Inconsistent values are an error.
  static Result<WorkerContext> FromEnv();
  bool is_chief() const { return rank == 0; }
};

// Intra-op threads for one worker: OMP_NUM_THREADS if set, else
// max(1, cores / local_world_size), so ranks on one host don't oversubscribe.
int DefaultThreadsPerWorker(int local_world_size);

}  // namespace cohort::train
