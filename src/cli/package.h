// Packaging a local working directory for `cohort job submit`, the way Ray's
// SDK does (ray-jobs-api.md §5.4): the directory becomes a zip named by a
// content hash, `_ray_pkg_<16 hex>.zip`, which the CLI checks for
// (GET /api/packages/gcs/<name>) and uploads (PUT) only when the head lacks it.
//
// The name depends only on the packaged content: every entry's path, kind
// (file / empty directory), executable bit and bytes, hashed in sorted path
// order with SHA-1 (OpenSSL); file times and walk order do not matter. The
// zip itself is deterministic too (entries sorted, fixed timestamps, fixed
// permissions 0644/0755), so packaging the same tree twice gives the same
// bytes. Excluded anywhere in the tree: .git, __pycache__, .venv, venv (Ray's
// default excludes). Symlinks are followed (a loop is skipped).
//
// Pure functions of the file system; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::cli {

// One zip entry: a regular file or an empty directory.
struct PackageEntry {
  std::string path;         // relative to the root, '/'-separated; directories end in '/'
  bool is_dir = false;
  bool executable = false;  // owner-executable file: stored as 0755, else 0644
  std::string content;      // file bytes ("" for directories)
};

struct PackageContents {
  std::string root;                   // the directory that was scanned
  std::vector<PackageEntry> entries;  // sorted by path (bytewise)
  uint64_t total_bytes = 0;           // sum of file sizes
  std::string name;                   // "_ray_pkg_<16 hex>.zip"
};

struct PackageOptions {
  // Refuse a tree whose files add up to more than this (the head's cap on
  // one package is of this order; the CLI holds the tree in memory).
  uint64_t max_bytes = 512ull << 20;
};

// True for a path component that is never packaged (.git, __pycache__, ...).
bool IsExcludedName(std::string_view name);

// Reads the tree under `dir` (a directory) into memory and names it.
// InvalidArgument if `dir` is not a directory or the tree is too large;
// IoError naming the file that cannot be read.
Result<PackageContents> ScanDirectory(const std::string& dir, const PackageOptions& options = {});

// "_ray_pkg_<first 16 hex digits of the SHA-1 over the sorted entries>.zip".
std::string PackageName(const std::vector<PackageEntry>& entries);

// The zip archive of `contents` (deflated files, empty-directory entries,
// fixed timestamps) as bytes. An empty tree gives a valid empty zip.
Result<std::string> ZipPackage(const PackageContents& contents);

// Lowercase hex SHA-1 of `data` (40 digits).
std::string Sha1Hex(std::string_view data);

}  // namespace cohort::cli
