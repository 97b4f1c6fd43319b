// The file:// BlobStore: a local directory used as a bucket (spec/storage.md
// §4). OpenStore() makes one rooted at "/" for file:// URIs (backends.h);
// tests make their own with NewFileStore(dir).
//
// Layout: object `key` of bucket `b` is the file root/b/key (root/key when
// the bucket is empty, as for file:// URIs). Puts write
// "<dir>/.<name>.tmp.<random>", fsync it, rename it over the target and
// fsync the directory, so readers see the old object or the new one, never
// a part; create-only puts use renameat2(RENAME_NOREPLACE) (or link()).
// Each object's CRC32C is cached in the xattr kCrcXattr, valid while the
// file's size and mtime match; reads of a whole object check it (Internal on
// a mismatch) and Stat recomputes it when it is missing or stale.
// generation = mtime in ns (puts set it from CLOCK_REALTIME).
//
// Stateless apart from the root: thread-safe, and safe across processes.
#pragma once

#include <memory>
#include <string>

#include "cohort/storage/blob_store.h"

namespace cohort::storage {

// "<size>:<mtime ns>:<crc32c as 8 hex digits>".
inline constexpr char kCrcXattr[] = "user.cohort.crc32c";

}  // namespace cohort::storage
