// Checkpoint directory management, the torch-free half of checkpointing.
//
// Layout under a root directory:
//   <root>/checkpoint_000012/      one complete checkpoint per epoch: any files
//                                  the trainer wrote, plus state.json (last)
//   <root>/.tmp_checkpoint_12_<pid>/   being written; never read
// A checkpoint becomes visible only by an atomic rename of a finished,
// fsynced temp directory, so a crash at any point leaves either the old set
// of checkpoints or the new one. Readers take the highest epoch whose
// state.json parses. Called by rank 0's trainer (writes) and by every rank at
// start-up (FindLatestCheckpoint). Thread-compatible: one writer per root.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cohort/common/status.h"

namespace cohort::train {

inline constexpr const char* kCheckpointStateFile = "state.json";

struct CheckpointInfo {
  std::string path;        // the checkpoint directory
  int64_t epoch = 0;
  std::string state_json;  // contents of its state.json
};

// "checkpoint_000012" for epoch 12 (more digits past 999999).
std::string CheckpointDirName(int64_t epoch);

// Creates <root> (and parents) if needed and a fresh, empty
// "<root>/.tmp_checkpoint_<epoch>_<pid>" (removing a stale one); returns it.
Result<std::string> BeginCheckpoint(const std::string& root, int64_t epoch);

// Writes <temp_dir>/state.json atomically (state_json must be valid JSON),
// fsyncs everything in temp_dir and temp_dir itself, then atomically renames
// temp_dir to <root>/checkpoint_<epoch>. An existing checkpoint of that epoch
// is replaced by an atomic exchange (or, where the file system lacks that, is
// renamed aside first and still found by FindLatestCheckpoint until the new
// one is in place), then removed. Finally fsyncs root.
Status CommitCheckpoint(const std::string& root, const std::string& temp_dir, int64_t epoch,
                        const std::string& state_json);

// The complete checkpoint with the highest epoch, or nullopt when there is
// none (including when root does not exist). Temp directories and checkpoint
// directories without a parseable state.json are skipped.
Result<std::optional<CheckpointInfo>> FindLatestCheckpoint(const std::string& root);

// Keeps the newest `keep` (>= 1) complete checkpoints and deletes older ones
// (and incomplete checkpoint directories older than those kept). Each is
// first renamed to a hidden name so a crash mid-delete never leaves a
// half-deleted checkpoint that looks complete. Temp directories are untouched.
Status RemoveOldCheckpoints(const std::string& root, int keep);

// Writes `contents` to "<path>.tmp.<pid>.<n>", fsyncs it, renames it over
// `path` and fsyncs the parent directory.
Status WriteFileAtomic(const std::string& path, const std::string& contents);

// The whole file; NotFound when it does not exist.
Result<std::string> ReadFile(const std::string& path);

}  // namespace cohort::train
