// Checkpoints and results in object storage (gs://, s3://, file://, mem://).
//
// Layout under a root URI, mirroring the local one:
//   <root>/checkpoint_000012/model.pt, optimizer.pt, state.json, ...
//   <root>/checkpoint_000012/MANIFEST.json   written LAST
// MANIFEST.json = {"epoch": 12, "files": [{"name", "size_bytes", "crc32c"}]}.
// An object store has no directory rename, so the manifest is the commit
// point: FindLatestRemoteCheckpoint only accepts a checkpoint whose manifest
// exists and whose listed objects all exist with the listed sizes, so a
// half-uploaded checkpoint (a crash mid-upload) is never chosen.
//
// Torch-free. Called by rank 0's trainer (uploads) and by every rank at
// start-up (download of the newest checkpoint into a local cache directory).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cohort/common/status.h"
#include "cohort/train/checkpoint_dir.h"

namespace cohort::train {

inline constexpr const char* kManifestFile = "MANIFEST.json";

// True for "gs://", "s3://", "mem://" and "file://" roots (plain paths are local).
bool IsStorageUri(const std::string& root);

// Uploads every regular file of local_checkpoint_dir to
// <root_uri>/checkpoint_<epoch>/, then the manifest.
Status UploadCheckpoint(const std::string& local_checkpoint_dir, const std::string& root_uri,
                        int64_t epoch);

// Finds the newest complete checkpoint under root_uri and downloads it into
// <local_cache_dir>/checkpoint_<epoch>/ (verifying sizes and CRC32C).
// CheckpointInfo::path is that local directory. nullopt when there is none.
Result<std::optional<CheckpointInfo>> FindLatestRemoteCheckpoint(const std::string& root_uri,
                                                                 const std::string& local_cache_dir);

// Uploads the regular files of local_dir (recursively) under uri; the file
// named `last` (e.g. "metrics.json"), if present, is uploaded after the others.
Status UploadDirectory(const std::string& local_dir, const std::string& uri,
                       const std::string& last = "");

}  // namespace cohort::train
