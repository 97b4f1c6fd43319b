// GcsStore: the gs:// BlobStore over the Cloud Storage JSON API v1 (spec
// storage.md §1), on the shared HTTP client (cohort/net/http_client.h).
//
//   - Puts up to resumable_threshold bytes are one media upload
//     (uploadType=media); larger ones a resumable session sent in chunks of
//     chunk_size (a multiple of 256 KiB). A chunk that fails (transport
//     error, 408/429/5xx) is followed by a status query (PUT, Content-Range
//     bytes */TOTAL) and the upload resumes at the server's offset; it never
//     restarts from byte 0 while the session lives (a 404/410 session does
//     start over). Progress resets the backoff and the retry deadline.
//   - CRC32C is computed while streaming. Uploads send it (x-goog-hash) and
//     compare it with the crc32c of the final object resource; downloads of
//     a whole object compare it with the x-goog-hash response header. A
//     mismatch is Internal "CRC32C mismatch": an uploaded object is then
//     deleted (only that generation) and never reported as written; a
//     download leaves no local file.
//   - Retries (RetryPolicy: exponential backoff + jitter, Retry-After, total
//     deadline) cover 408/429/5xx and transport errors of idempotent steps:
//     GET, list, resumable initiation (it writes nothing), chunk PUT, status
//     query, delete, and uploads that carry a precondition (create_only
//     always sends ifGenerationMatch=0).
//     Choice, documented: plain overwrite media uploads are retried too
//     (retry_unconditional_writes, default on). cohort writes each key from
//     one writer and a retry resends the same bytes, so the only hazard --
//     a lost response followed by another writer's newer object being
//     overwritten by our retry -- cannot arise in our use. Deletes are
//     retried for the same reason (and 404 counts as done).
//     A create_only retry that meets 412 checks whether the earlier attempt
//     landed (same size and CRC32C): then it is a success.
//   - Errors name the gs:// URI; GCS's error JSON is mapped to codes: 404
//     NotFound, 412 FailedPrecondition, 400/416 InvalidArgument, 401/403
//     IoError with a hint about credentials, 408/429/5xx/transport
//     Unavailable "... after N attempts".
//
// Thread-safe: a GcsStore holds only its options; any number of threads may
// call it (each call uses its own curl handle). Called by the trainer's
// checkpoint/result writers, `cohort cp`, and tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "cohort/storage/blob_store.h"
#include "gcs/credentials.h"
#include "http/retry.h"

namespace cohort::storage::gcs {

inline constexpr uint64_t kChunkQuantum = 256 * 1024;  // resumable chunks are multiples of this

struct GcsStoreOptions {
  // Scheme + host[:port]; the JSON API paths (/storage/v1, /upload/storage/v1) are appended.
  std::string endpoint = "https://storage.googleapis.com";
  // nullptr: send no Authorization header (emulators).
  std::shared_ptr<CredentialsProvider> credentials;
  RetryPolicy retry;
  uint64_t resumable_threshold = 8ull << 20;  // larger objects use a resumable session
  uint64_t chunk_size = 8ull << 20;           // multiple of 256 KiB
  bool retry_unconditional_writes = true;     // see the header comment
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds stall_timeout{60000};
};

// Validates options (chunk size, endpoint) and builds the store.
Result<std::shared_ptr<BlobStore>> NewGcsStore(GcsStoreOptions options);

// The endpoint named by CLOUD_STORAGE_EMULATOR_HOST, else STORAGE_EMULATOR_HOST
// ("127.0.0.1:9199" or "http://127.0.0.1:9199" -> "http://127.0.0.1:9199"),
// or "" when neither is set.
std::string EmulatorEndpointFromEnv();
// "host:port" -> "http://host:port"; trailing '/' removed.
std::string NormalizeEndpoint(std::string endpoint);

}  // namespace cohort::storage::gcs
