// The s3:// backend: a BlobStore over the S3 REST API (AWS S3 and
// S3-compatible stores such as MinIO, Ceph RGW, R2 and s3rver), signed with
// SigV4 (sigv4.h) and sent with the shared HTTP client (cohort/net/http_client.h).
//
// Called through OpenStore() (store_registry.cc -> NewS3StoreFromEnv()) and
// directly by tests (NewS3Store with explicit options). The store is
// thread-safe: options are immutable after construction and each call uses
// its own curl handle; uploads run on the calling thread (parts in order).
//
// Behaviour (docs: /work/shared/spec/storage.md section 3):
// - Addressing: a custom endpoint (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)
//   is reached path-style (ENDPOINT/BUCKET/KEY); AWS itself virtual-hosted
//   (https://BUCKET.s3.REGION.amazonaws.com/KEY), path-style for buckets
//   with '.' in their name.
// - Objects below multipart_threshold go up in one PutObject (Content-MD5,
//   x-amz-checksum-crc32c, ETag == MD5 check); larger ones as a multipart
//   upload of part_size parts, each retried on its own; any failure aborts
//   the upload (an Abort that fails is logged and ignored).
// - create_only sends If-None-Match: * (412 -> FailedPrecondition).
// - Downloads go to a temp file renamed into place; size, Content-Range and
//   (when the store returns one) the stored CRC32C are checked.
// - Idempotent requests are retried per RetryPolicy on 408/429/5xx,
//   throttling/timeout error codes and transport failures.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "cohort/storage/blob_store.h"
#include "http/retry.h"
#include "s3/sigv4.h"

namespace cohort::storage {

enum class S3AddressingStyle {
  kAuto,         // path-style for custom endpoints, virtual-hosted for AWS
  kPath,         // ENDPOINT/BUCKET/KEY
  kVirtualHost,  // BUCKET.ENDPOINT/KEY
};

struct S3Options {
  // "http://127.0.0.1:4568", "https://minio.example:9000/base"; a missing
  // scheme means https. Empty: AWS (https://s3.REGION.amazonaws.com).
  std::string endpoint;
  S3AddressingStyle addressing = S3AddressingStyle::kAuto;
  std::string region = "us-east-1";
  // An empty access key: every operation fails with FailedPrecondition
  // (credentials_error says why, e.g. only one of the two variables set).
  s3::Credentials credentials;
  std::string credentials_error;
  RetryPolicy retry;
  uint64_t multipart_threshold = 16ull << 20;  // objects this big or bigger go multipart
  uint64_t part_size = 8ull << 20;             // >= 5 MiB (S3's minimum for all but the last part)
  // Send x-amz-checksum-crc32c on PutObject and x-amz-checksum-mode:
  // ENABLED on GET/HEAD (to verify a stored CRC32C when the store has one).
  bool use_checksums = true;
  // Check that a PutObject/UploadPart ETag is the hex MD5 of the bytes sent
  // (false for stores with SSE-KMS/SSE-C, whose ETags are not MD5s).
  bool verify_etag_md5 = true;
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds stall_timeout{60000};
};

// Where the requests for one bucket go.
struct S3Address {
  std::string base_url;     // "https://bucket.s3.us-east-1.amazonaws.com", "http://127.0.0.1:4568"
  std::string host;         // the Host header: "bucket.s3.us-east-1.amazonaws.com", "127.0.0.1:4568"
  std::string path_prefix;  // raw path before "/KEY": "" (virtual-hosted), "/bucket", "/base/bucket"
};
Result<S3Address> ResolveS3Address(const S3Options& options, const std::string& bucket);

// Reads AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS,
// AWS_REGION, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN. Missing credentials are not an error here (see
// S3Options::credentials_error); a malformed endpoint is.
Result<S3Options> S3OptionsFromEnv();

// InvalidArgument for a bad endpoint or part size.
Result<std::shared_ptr<BlobStore>> NewS3Store(S3Options options);

}  // namespace cohort::storage
