// BlobStore: one interface over object stores -- file:// (a local directory,
// the embedded default), gs:// (Google Cloud Storage JSON API) and s3://
// (S3 and S3-compatible stores), plus mem:// for tests.
//
// Keys are object names inside a bucket ("runs/r1/model.pt"). Every call
// returns a Status naming the URI and the cause: NotFound, FailedPrecondition
// (a create-only put found an object), InvalidArgument (bad key or URI),
// Unavailable ("... after N attempts": retries exhausted), IoError,
// Internal (e.g. a CRC32C mismatch: the object is then not reported as
// written). Implementations are thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::storage {

// "file:///abs/dir/key" -> {scheme "file", bucket "", key "abs/dir/key"}
// "gs://bucket/a/b"     -> {scheme "gs",   bucket "bucket", key "a/b"}
// "s3://bucket/a/b"     -> {scheme "s3",   bucket "bucket", key "a/b"}
// "mem://bucket/a"      -> in-process store (tests)
// A plain path ("/tmp/x", "rel/x") is a file URI (relative paths are made absolute).
struct Uri {
  std::string scheme;
  std::string bucket;
  std::string key;  // no leading '/'; may be empty (the bucket's root) or end with '/'
  std::string ToString() const;
  // The URI of key + "/" + child (handles a trailing '/').
  Uri Child(std::string_view child) const;
};
Result<Uri> ParseUri(std::string_view text);
// True for "gs://", "s3://", "file://", "mem://" prefixes (not plain paths).
bool IsRemoteUri(std::string_view text);

struct ObjectInfo {
  std::string key;
  uint64_t size_bytes = 0;
  std::string crc32c;        // base64 of the big-endian CRC32C, as GCS reports it; may be empty
  int64_t generation = 0;    // GCS generation; file: mtime in ns; s3: 0
  std::string etag;
  std::string updated;       // RFC 3339 when known
};

using ProgressFn = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;

struct PutOptions {
  // Fail with FailedPrecondition if the object exists (GCS ifGenerationMatch=0,
  // S3 If-None-Match: *, file: link/RENAME_NOREPLACE).
  bool create_only = false;
  std::string content_type = "application/octet-stream";
  ProgressFn progress;
};

struct GetOptions {
  uint64_t offset = 0;                 // byte range start
  std::optional<uint64_t> length;      // bytes from offset; nullopt = to the end
  ProgressFn progress;
};

struct ListOptions {
  std::string prefix;
  std::string delimiter;       // "/" groups keys into prefixes ("directories")
  int max_results = 1000;      // page size
  std::string page_token;      // from a previous ListResult
};

struct ListResult {
  std::vector<ObjectInfo> objects;     // sorted by key (byte order)
  std::vector<std::string> prefixes;   // with delimiter: common prefixes, sorted
  std::string next_page_token;         // empty: last page
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  virtual std::string scheme() const = 0;

  // Streams a local file into the object (large files in chunks/parts).
  virtual Result<ObjectInfo> PutFile(const std::string& bucket, const std::string& key,
                                     const std::string& local_path, const PutOptions& options) = 0;
  virtual Result<ObjectInfo> PutBuffer(const std::string& bucket, const std::string& key,
                                       std::string_view data, const PutOptions& options) = 0;
  // Writes the object (or a byte range of it) to local_path atomically
  // (temp file + rename): a failed download leaves no partial file.
  virtual Result<ObjectInfo> GetToFile(const std::string& bucket, const std::string& key,
                                       const std::string& local_path, const GetOptions& options) = 0;
  virtual Result<std::string> GetToBuffer(const std::string& bucket, const std::string& key,
                                          const GetOptions& options) = 0;
  virtual Result<ObjectInfo> Stat(const std::string& bucket, const std::string& key) = 0;
  virtual Result<ListResult> List(const std::string& bucket, const ListOptions& options) = 0;
  // Deleting a missing object is OK (idempotent).
  virtual Status Delete(const std::string& bucket, const std::string& key) = 0;
};

// The store for a URI's scheme, configured from the environment
// (STORAGE_EMULATOR_HOST, GCE_METADATA_HOST, GOOGLE_APPLICATION_CREDENTIALS,
// AWS_*). Stores are cached per scheme; the result is shared.
Result<std::shared_ptr<BlobStore>> OpenStore(const Uri& uri);

// Registers the store used for a scheme (tests; e.g. a GCS store pointed at
// a fake server). nullptr restores the default.
void SetStoreForScheme(const std::string& scheme, std::shared_ptr<BlobStore> store);

}  // namespace cohort::storage
