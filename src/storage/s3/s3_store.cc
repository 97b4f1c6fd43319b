// S3Store: the s3:// BlobStore; see s3_store.h. Every public method runs on
// the calling thread; the store holds only immutable options and the signer
// (whose key cache is locked), so calls from many threads are safe.
#include "s3/s3_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "backends.h"
#include "cohort/common/logging.h"
#include "cohort/net/http_client.h"
#include "cohort/storage/crc32c.h"
#include "s3/s3_xml.h"
#include "s3/sigv4.h"

namespace cohort::storage {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kMinPartSize = 5 * kMiB;
constexpr uint64_t kMaxPartSize = 5ull << 30;
constexpr uint64_t kMaxParts = 10000;
constexpr size_t kMaxKeyBytes = 1024;

using Headers = std::vector<std::pair<std::string, std::string>>;

std::string GetEnv(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string ToLower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string Unquote(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}

// "Wed, 21 Oct 2015 07:28:00 GMT" -> "2015-10-21T07:28:00Z"; "" if unparsable.
std::string HttpDateToRfc3339(const std::string& http_date) {
  struct tm tm {};
  const char* end = strptime(http_date.c_str(), "%a, %d %b %Y %H:%M:%S", &tm);
  if (end == nullptr) return "";
  char buf[32];
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string UriOf(const std::string& bucket, const std::string& key) {
  return "s3://" + bucket + (key.empty() ? "" : "/" + key);
}

// The credential-related hint appended to permission errors.
std::string CredentialsHint(const std::string& region) {
  return "; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (temporary credentials) and "
         "AWS_REGION (signing for '" +
         region + "')";
}

// An S3 error reply: HTTP status plus <Error><Code>/<Message> (HEAD has no body).
struct S3Error {
  long http_status = 0;
  std::string code;
  std::string message;
  std::string Describe() const {
    std::string d = "HTTP " + std::to_string(http_status);
    if (!code.empty()) d += " " + code;
    if (!message.empty()) d += ": " + message;
    return d;
  }
};

S3Error ParseError(const net::HttpResponse& r) {
  S3Error e;
  e.http_status = r.status;
  auto errors = s3::XmlElements(r.body, "Error");
  if (!errors.empty()) {
    e.code = s3::XmlText(errors.front(), "Code");
    e.message = s3::XmlText(errors.front(), "Message");
  }
  return e;
}

bool IsRetryable(const S3Error& e) {
  if (IsRetryableHttpStatus(e.http_status)) return true;
  static const char* kCodes[] = {"RequestTimeout",
                                 "RequestTimeTooSkewed",
                                 "SlowDown",
                                 "InternalError",
                                 "ServiceUnavailable",
                                 "Throttling",
                                 "ThrottlingException",
                                 "BadDigest",
                                 "XAmzContentSHA256Mismatch",
                                 "ConditionalRequestConflict",
                                 "OperationAborted"};
  for (const char* c : kCodes)
    if (e.code == c) return true;
  return false;
}

// Maps a final (not retried) error reply to a Status naming the URI.
Status ToStatus(const S3Error& e, const std::string& uri, const std::string& op, const std::string& region) {
  const std::string detail = e.Describe();
  const std::string& c = e.code;
  if (c == "NoSuchKey" || c == "NoSuchBucket" || c == "NoSuchUpload" || (e.http_status == 404 && c.empty()))
    return Status::NotFound(uri + ": not found (" + op + ": " + detail + ")");
  if (c == "PreconditionFailed" || e.http_status == 412)
    return Status::FailedPrecondition(uri + ": precondition failed, the object already exists or changed (" +
                                      op + ": " + detail + ")");
  if (c == "AccessDenied" || c == "InvalidAccessKeyId" || c == "SignatureDoesNotMatch" ||
      c == "ExpiredToken" || c == "InvalidToken" || c == "TokenRefreshRequired" ||
      c == "AuthorizationHeaderMalformed" || c == "AllAccessDisabled" || c == "AccountProblem" ||
      e.http_status == 401 || e.http_status == 403)
    return Status::FailedPrecondition(uri + ": permission denied (" + op + ": " + detail + ")" +
                                      CredentialsHint(region));
  if (c == "PermanentRedirect" || c == "IllegalLocationConstraintException" || e.http_status == 301 ||
      e.http_status == 307)
    return Status::FailedPrecondition(uri + ": " + op + ": " + detail +
                                      "; the bucket is in another region than '" + region +
                                      "': set AWS_REGION (or AWS_ENDPOINT_URL_S3)");
  if (c == "InvalidRange" || e.http_status == 416)
    return Status::InvalidArgument(uri + ": requested range is outside the object (" + op + ": " + detail +
                                   ")");
  if (e.http_status == 400 || e.http_status == 405 || e.http_status == 411 || e.http_status == 413)
    return Status::InvalidArgument(uri + ": " + op + " rejected: " + detail);
  return Status::IoError(uri + ": " + op + " failed: " + detail);
}

// A key that S3 accepts and that survives the trip through a URL unchanged.
Status ValidateKey(const std::string& bucket, const std::string& key) {
  if (bucket.empty()) return Status::InvalidArgument("s3:// URI has no bucket (s3://BUCKET/KEY)");
  if (key.empty()) return Status::InvalidArgument(UriOf(bucket, key) + "/: empty object key");
  if (key.size() > kMaxKeyBytes)
    return Status::InvalidArgument(UriOf(bucket, key.substr(0, 64)) + "...: key is longer than 1024 bytes");
  // HTTP clients collapse "." and ".." path segments, which would change the key.
  size_t start = 0;
  while (start <= key.size()) {
    size_t slash = key.find('/', start);
    if (slash == std::string::npos) slash = key.size();
    std::string_view seg(key.data() + start, slash - start);
    if (seg == "." || seg == "..")
      return Status::InvalidArgument(UriOf(bucket, key) +
                                     ": keys with '.' or '..' segments are not supported");
    start = slash + 1;
  }
  return Status::Ok();
}

// Where a download goes: a file or a string; reset before each attempt.
struct Sink {
  std::function<void()> reset;
  std::function<bool(const char*, size_t)> write;
};

// Produces the bytes of [offset, offset+n) of the upload source; the view
// stays valid until the next call.
using PartReader = std::function<Result<std::string_view>(uint64_t offset, size_t n)>;

// One S3 request (re-signed on each attempt) and how to treat its reply.
struct Call {
  std::string op;  // "PutObject", ... (for messages)
  std::string method;
  std::string bucket;
  std::string key;  // raw; "" for bucket-level requests
  Headers query;    // raw
  Headers headers;  // signed and sent
  std::string_view body;
  std::function<bool(const char*, size_t)> on_body;
  std::function<void()> before_attempt;
  bool idempotent = true;
  bool error_in_200 = false;       // a 200 with an <Error> body is a failure (CompleteMultipartUpload)
  std::vector<long> pass_through;  // non-2xx statuses returned to the caller as responses
};

class S3Store : public BlobStore {
 public:
  explicit S3Store(S3Options options)
      : options_(std::move(options)), signer_(options_.credentials, options_.region) {}

  std::string scheme() const override { return "s3"; }

  Result<ObjectInfo> PutFile(const std::string& bucket, const std::string& key, const std::string& local_path,
                             const PutOptions& options) override;
  Result<ObjectInfo> PutBuffer(const std::string& bucket, const std::string& key, std::string_view data,
                               const PutOptions& options) override;
  Result<ObjectInfo> GetToFile(const std::string& bucket, const std::string& key,
                               const std::string& local_path, const GetOptions& options) override;
  Result<std::string> GetToBuffer(const std::string& bucket, const std::string& key,
                                  const GetOptions& options) override;
  Result<ObjectInfo> Stat(const std::string& bucket, const std::string& key) override;
  Result<ListResult> List(const std::string& bucket, const ListOptions& options) override;
  Status Delete(const std::string& bucket, const std::string& key) override;

 private:
  // Sends call with retries (when idempotent). Returns a 2xx response or one
  // whose status is in call.pass_through; any other reply becomes a Status.
  Result<net::HttpResponse> Execute(const Call& call, int* attempts = nullptr);
  Status CheckCredentials(const std::string& uri) const;

  Result<ObjectInfo> PutSingle(const std::string& bucket, const std::string& key, std::string_view data,
                               const PutOptions& options);
  Result<ObjectInfo> PutMultipart(const std::string& bucket, const std::string& key, uint64_t size,
                                  const PartReader& read, const PutOptions& options);
  Result<ObjectInfo> UploadPartsAndComplete(const std::string& bucket, const std::string& key,
                                            const std::string& upload_id, uint64_t size, uint64_t part_size,
                                            const PartReader& read, const PutOptions& options);
  void AbortUpload(const std::string& bucket, const std::string& key, const std::string& upload_id);
  Result<ObjectInfo> Download(const std::string& bucket, const std::string& key, const GetOptions& options,
                              const Sink& sink);

  const S3Options options_;
  const s3::SigV4Signer signer_;
};

Status S3Store::CheckCredentials(const std::string& uri) const {
  if (!options_.credentials.access_key_id.empty() && !options_.credentials.secret_access_key.empty())
    return Status::Ok();
  std::string why = options_.credentials_error.empty()
                        ? "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                          "AWS_SESSION_TOKEN for temporary credentials)"
                        : options_.credentials_error;
  return Status::FailedPrecondition(
      uri + ": " + why +
      ". (~/.aws/credentials, ~/.aws/config profiles, AWS_WEB_IDENTITY_TOKEN_FILE "
      "(IRSA) and EC2 instance metadata are not supported.)");
}

Result<net::HttpResponse> S3Store::Execute(const Call& call, int* attempts) {
  const std::string uri = UriOf(call.bucket, call.key);
  COHORT_RETURN_IF_ERROR(CheckCredentials(uri));
  COHORT_ASSIGN_OR_RETURN(S3Address address, ResolveS3Address(options_, call.bucket));

  s3::SigningInput input;
  input.method = call.method;
  input.host = address.host;
  input.path = address.path_prefix + "/" + call.key;
  if (call.key.empty() && !address.path_prefix.empty()) input.path = address.path_prefix;
  input.query = call.query;
  input.headers = call.headers;
  input.payload_hash = s3::Sha256Hex(call.body);

  RetryState retry(options_.retry);
  while (true) {
    if (attempts != nullptr) *attempts = retry.attempts();
    if (call.before_attempt) call.before_attempt();
    const s3::SignedRequest signed_request = signer_.Sign(input, std::chrono::system_clock::now());
    net::HttpRequest request;
    request.method = call.method;
    request.url = address.base_url + signed_request.canonical_uri;
    if (!signed_request.canonical_query.empty()) request.url += "?" + signed_request.canonical_query;
    request.headers = signed_request.headers;
    request.body = call.body;
    request.on_body = call.on_body;
    request.connect_timeout = options_.connect_timeout;
    request.stall_timeout = options_.stall_timeout;

    Result<net::HttpResponse> result = net::SendHttp(request);
    if (!result.ok()) {
      // The receiver stopped the download (e.g. a local write failed): not transient.
      if (result.status().code() == StatusCode::kCancelled) return result.status().WithPrefix(uri);
      if (call.idempotent && retry.WaitBeforeNext()) {
        COHORT_LOG(DEBUG) << uri << ": " << call.op << ": " << result.status().message() << "; retrying";
        continue;
      }
      return Status::Unavailable(uri + ": " + call.op + ": " + result.status().message() + retry.Summary());
    }
    net::HttpResponse response = std::move(result).value();
    bool success = response.status >= 200 && response.status < 300;
    if (success && call.error_in_200 && !s3::XmlElements(response.body, "Error").empty()) success = false;
    if (success) return response;
    if (std::find(call.pass_through.begin(), call.pass_through.end(), response.status) !=
        call.pass_through.end())
      return response;
    const S3Error error = ParseError(response);
    if (IsRetryable(error)) {
      if (call.idempotent && retry.WaitBeforeNext(response.Header("retry-after"))) {
        COHORT_LOG(DEBUG) << uri << ": " << call.op << ": " << error.Describe() << "; retrying";
        continue;
      }
      return Status::Unavailable(uri + ": " + call.op + " failed: " + error.Describe() + retry.Summary());
    }
    return ToStatus(error, uri, call.op, options_.region);
  }
}

Result<ObjectInfo> S3Store::PutBuffer(const std::string& bucket, const std::string& key,
                                      std::string_view data, const PutOptions& options) {
  COHORT_RETURN_IF_ERROR(ValidateKey(bucket, key));
  if (data.empty() || data.size() < options_.multipart_threshold)
    return PutSingle(bucket, key, data, options);
  PartReader read = [data](uint64_t offset, size_t n) -> Result<std::string_view> {
    return data.substr(offset, n);
  };
  return PutMultipart(bucket, key, data.size(), read, options);
}

Result<ObjectInfo> S3Store::PutFile(const std::string& bucket, const std::string& key,
                                    const std::string& local_path, const PutOptions& options) {
  COHORT_RETURN_IF_ERROR(ValidateKey(bucket, key));
  const std::string uri = UriOf(bucket, key);
  const int fd = ::open(local_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = uri + ": cannot open " + local_path + ": " + std::strerror(err);
    return err == ENOENT ? Status::NotFound(msg) : Status::IoError(msg);
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return Status::IoError(uri + ": cannot stat " + local_path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return Status::InvalidArgument(uri + ": " + local_path + " is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  std::string buffer;
  PartReader read = [&](uint64_t offset, size_t n) -> Result<std::string_view> {
    buffer.resize(n);
    size_t done = 0;
    while (done < n) {
      ssize_t got = ::pread(fd, buffer.data() + done, n - done, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return Status::IoError(uri + ": reading " + local_path + ": " + std::strerror(errno));
      if (got == 0)
        return Status::IoError(uri + ": " + local_path + " shrank while it was being uploaded (expected " +
                               std::to_string(size) + " bytes)");
      done += static_cast<size_t>(got);
    }
    return std::string_view(buffer);
  };
  if (size == 0 || size < options_.multipart_threshold) {
    COHORT_ASSIGN_OR_RETURN(std::string_view data, read(0, size));
    return PutSingle(bucket, key, data, options);
  }
  return PutMultipart(bucket, key, size, read, options);
}

Result<ObjectInfo> S3Store::PutSingle(const std::string& bucket, const std::string& key,
                                      std::string_view data, const PutOptions& options) {
  const std::string uri = UriOf(bucket, key);
  const uint32_t crc = Crc32c(data);
  const std::string crc_b64 = Crc32cToBase64(crc);
  const std::string md5 = s3::Md5(data);
  Call call;
  call.op = "PutObject";
  call.method = "PUT";
  call.bucket = bucket;
  call.key = key;
  call.body = data;
  call.headers = {
      {"content-type", options.content_type.empty() ? "application/octet-stream" : options.content_type},
      {"content-md5", Base64Encode(md5)}};
  if (options_.use_checksums) call.headers.emplace_back("x-amz-checksum-crc32c", crc_b64);
  if (options.create_only) call.headers.emplace_back("if-none-match", "*");
  if (options.progress) options.progress(0, data.size());
  int attempts = 1;
  Result<net::HttpResponse> result = Execute(call, &attempts);
  if (!result.ok()) {
    // A retried create-only PUT may find its own first attempt: accept it if the bytes match.
    if (options.create_only && attempts > 1 && result.status().code() == StatusCode::kFailedPrecondition) {
      Result<ObjectInfo> existing = Stat(bucket, key);
      if (existing.ok() && existing->size_bytes == data.size() && existing->etag == s3::HexEncode(md5)) {
        existing->crc32c = crc_b64;
        return existing;
      }
    }
    return result.status();
  }
  const net::HttpResponse& response = *result;
  const std::string etag = Unquote(response.Header("etag"));
  if (options_.verify_etag_md5 && !etag.empty() && ToLower(etag) != s3::HexEncode(md5))
    return Status::Internal(uri + ": PutObject: the store's ETag " + etag + " is not the MD5 of the " +
                            std::to_string(data.size()) + " bytes sent (" + s3::HexEncode(md5) +
                            "): the object may be corrupt");
  const std::string echoed = response.Header("x-amz-checksum-crc32c");
  if (!echoed.empty() && echoed != crc_b64)
    return Status::Internal(uri + ": PutObject: the store's CRC32C " + echoed + " differs from the data's " +
                            crc_b64 + ": the object may be corrupt");
  if (options.progress) options.progress(data.size(), data.size());
  ObjectInfo info;
  info.key = key;
  info.size_bytes = data.size();
  info.crc32c = crc_b64;
  info.etag = etag;
  return info;
}

Result<ObjectInfo> S3Store::PutMultipart(const std::string& bucket, const std::string& key, uint64_t size,
                                         const PartReader& read, const PutOptions& options) {
  const std::string uri = UriOf(bucket, key);
  // Grow the part size (in whole MiB) if the object would need more than 10,000 parts.
  uint64_t part_size = std::max(options_.part_size, kMinPartSize);
  if ((size + part_size - 1) / part_size > kMaxParts) {
    part_size = (size + kMaxParts - 1) / kMaxParts;
    part_size = (part_size + kMiB - 1) / kMiB * kMiB;
  }
  if (part_size > kMaxPartSize)
    return Status::InvalidArgument(uri + ": object of " + std::to_string(size) +
                                   " bytes is too large for S3");

  // A lost reply to a retried Create can leave an orphaned upload behind;
  // S3's lifecycle rule for incomplete uploads is the backstop.
  Call create;
  create.op = "CreateMultipartUpload";
  create.method = "POST";
  create.bucket = bucket;
  create.key = key;
  create.query = {{"uploads", ""}};
  create.headers = {
      {"content-type", options.content_type.empty() ? "application/octet-stream" : options.content_type}};
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse created, Execute(create));
  const std::string upload_id = s3::XmlText(created.body, "UploadId");
  if (upload_id.empty())
    return Status::Internal(uri +
                            ": CreateMultipartUpload returned no UploadId: " + created.body.substr(0, 200));

  Result<ObjectInfo> result = UploadPartsAndComplete(bucket, key, upload_id, size, part_size, read, options);
  if (!result.ok()) AbortUpload(bucket, key, upload_id);
  return result;
}

Result<ObjectInfo> S3Store::UploadPartsAndComplete(const std::string& bucket, const std::string& key,
                                                   const std::string& upload_id, uint64_t size,
                                                   uint64_t part_size, const PartReader& read,
                                                   const PutOptions& options) {
  const std::string uri = UriOf(bucket, key);
  const uint64_t parts = (size + part_size - 1) / part_size;
  std::vector<std::string> etags;
  etags.reserve(parts);
  uint32_t crc = 0;
  if (options.progress) options.progress(0, size);
  for (uint64_t n = 1; n <= parts; ++n) {
    const uint64_t offset = (n - 1) * part_size;
    const size_t len = static_cast<size_t>(std::min(part_size, size - offset));
    COHORT_ASSIGN_OR_RETURN(std::string_view data, read(offset, len));
    crc = Crc32cExtend(crc, data.data(), data.size());
    const std::string md5 = s3::Md5(data);
    Call part;
    part.op = "UploadPart " + std::to_string(n) + "/" + std::to_string(parts);
    part.method = "PUT";
    part.bucket = bucket;
    part.key = key;
    part.query = {{"partNumber", std::to_string(n)}, {"uploadId", upload_id}};
    part.headers = {{"content-md5", Base64Encode(md5)}};
    part.body = data;
    COHORT_ASSIGN_OR_RETURN(net::HttpResponse response, Execute(part));
    const std::string etag = response.Header("etag");
    if (etag.empty()) return Status::Internal(uri + ": " + part.op + ": the store returned no ETag");
    if (options_.verify_etag_md5 && ToLower(Unquote(etag)) != s3::HexEncode(md5))
      return Status::Internal(uri + ": " + part.op + ": the store's ETag " + etag +
                              " is not the MD5 of the part (" + s3::HexEncode(md5) + ")");
    etags.push_back(etag.front() == '"' ? etag : "\"" + etag + "\"");
    if (options.progress) options.progress(offset + len, size);
  }

  std::string body = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < etags.size(); ++i)
    body += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>" + s3::XmlEscape(etags[i]) +
            "</ETag></Part>";
  body += "</CompleteMultipartUpload>";
  Call complete;
  complete.op = "CompleteMultipartUpload";
  complete.method = "POST";
  complete.bucket = bucket;
  complete.key = key;
  complete.query = {{"uploadId", upload_id}};
  complete.headers = {{"content-type", "application/xml"}};
  if (options.create_only) complete.headers.emplace_back("if-none-match", "*");
  complete.body = body;
  complete.error_in_200 = true;
  int attempts = 1;
  Result<net::HttpResponse> completed = Execute(complete, &attempts);
  ObjectInfo info;
  info.key = key;
  info.size_bytes = size;
  info.crc32c = Crc32cToBase64(crc);
  if (!completed.ok()) {
    // A retry after a lost reply finds the upload already completed.
    if (attempts > 1 && completed.status().code() == StatusCode::kNotFound) {
      Result<ObjectInfo> existing = Stat(bucket, key);
      if (existing.ok() && existing->size_bytes == size) {
        info.etag = existing->etag;
        return info;
      }
    }
    return completed.status();
  }
  info.etag = Unquote(s3::XmlText(completed->body, "ETag"));
  return info;
}

void S3Store::AbortUpload(const std::string& bucket, const std::string& key, const std::string& upload_id) {
  Call abort;
  abort.op = "AbortMultipartUpload";
  abort.method = "DELETE";
  abort.bucket = bucket;
  abort.key = key;
  abort.query = {{"uploadId", upload_id}};
  Result<net::HttpResponse> result = Execute(abort);
  if (!result.ok())
    COHORT_LOG(WARN) << result.status().message() << " (ignored; upload " << upload_id
                     << " may keep its parts until a lifecycle rule removes them)";
}

Result<ObjectInfo> S3Store::Download(const std::string& bucket, const std::string& key,
                                     const GetOptions& options, const Sink& sink) {
  COHORT_RETURN_IF_ERROR(ValidateKey(bucket, key));
  const std::string uri = UriOf(bucket, key);
  if (options.length && *options.length == 0) {
    // An empty range: nothing to fetch, but the object must exist.
    COHORT_ASSIGN_OR_RETURN(ObjectInfo info, Stat(bucket, key));
    if (options.offset > info.size_bytes)
      return Status::InvalidArgument(uri + ": offset " + std::to_string(options.offset) +
                                     " is beyond the object's " + std::to_string(info.size_bytes) + " bytes");
    sink.reset();
    info.crc32c.clear();
    return info;
  }
  const bool ranged = options.offset > 0 || options.length.has_value();
  Call call;
  call.op = "GetObject";
  call.method = "GET";
  call.bucket = bucket;
  call.key = key;
  if (ranged) {
    std::string range = "bytes=" + std::to_string(options.offset) + "-";
    if (options.length) range += std::to_string(options.offset + *options.length - 1);
    call.headers.emplace_back("range", range);
  } else if (options_.use_checksums) {
    call.headers.emplace_back("x-amz-checksum-mode", "ENABLED");
  }
  call.pass_through = {416};
  uint64_t received = 0;
  uint32_t crc = 0;
  call.before_attempt = [&] {
    received = 0;
    crc = 0;
    sink.reset();
  };
  const uint64_t expected_total = options.length.value_or(0);
  call.on_body = [&](const char* data, size_t n) {
    if (!sink.write(data, n)) return false;
    crc = Crc32cExtend(crc, data, n);
    received += n;
    if (options.progress) options.progress(received, expected_total);
    return true;
  };
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse response, Execute(call));

  if (response.status == 416) {
    // A range starting exactly at the end of the object is empty, not an error.
    COHORT_ASSIGN_OR_RETURN(ObjectInfo info, Stat(bucket, key));
    if (options.offset == info.size_bytes) {
      sink.reset();
      info.crc32c.clear();
      return info;
    }
    return Status::InvalidArgument(uri + ": offset " + std::to_string(options.offset) +
                                   " is beyond the object's " + std::to_string(info.size_bytes) + " bytes");
  }
  ObjectInfo info;
  info.key = key;
  info.etag = Unquote(response.Header("etag"));
  info.updated = HttpDateToRfc3339(response.Header("last-modified"));
  const std::string content_length = response.Header("content-length");
  if (!content_length.empty() && std::strtoull(content_length.c_str(), nullptr, 10) != received)
    return Status::Internal(uri + ": GetObject: received " + std::to_string(received) +
                            " bytes but Content-Length is " + content_length);
  if (ranged) {
    // Content-Range: bytes FIRST-LAST/TOTAL
    const std::string content_range = response.Header("content-range");
    unsigned long long first = 0, last = 0, total = 0;
    if (response.status == 200 && options.offset == 0 && received <= expected_total) {
      // The store sent the whole object, which is no longer than the range asked for.
      info.size_bytes = received;
      if (options.progress) options.progress(received, received);
      return info;
    }
    if (response.status != 206 ||
        std::sscanf(content_range.c_str(), "bytes %llu-%llu/%llu", &first, &last, &total) != 3)
      return Status::Internal(uri + ": GetObject: asked for a byte range, got HTTP " +
                              std::to_string(response.status) + " with Content-Range '" + content_range +
                              "'");
    const uint64_t want =
        options.length ? std::min<uint64_t>(*options.length, total - options.offset) : total - options.offset;
    if (first != options.offset || last + 1 - first != received || received != want)
      return Status::Internal(uri + ": GetObject: asked for " + std::to_string(want) + " bytes from offset " +
                              std::to_string(options.offset) + ", got " + std::to_string(received) +
                              " bytes (Content-Range '" + content_range + "')");
    info.size_bytes = total;
  } else {
    info.size_bytes = received;
    info.crc32c = Crc32cToBase64(crc);
    const std::string stored = response.Header("x-amz-checksum-crc32c");
    if (!stored.empty() && stored.find('-') == std::string::npos && stored != info.crc32c)
      return Status::Internal(uri + ": GetObject: CRC32C of the downloaded data " + info.crc32c +
                              " differs from the stored " + stored);
  }
  if (options.progress) options.progress(received, received);
  return info;
}

Result<ObjectInfo> S3Store::GetToFile(const std::string& bucket, const std::string& key,
                                      const std::string& local_path, const GetOptions& options) {
  const std::string uri = UriOf(bucket, key);
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(local_path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  static std::atomic<uint64_t> counter{0};
  // ".<name>.tmp.<suffix>" next to the target: the shape the file:// store hides from listings.
  const std::string dir = target.has_parent_path() ? target.parent_path().string() + "/" : std::string();
  const std::string temp = dir + "." + target.filename().string() + ".tmp." + std::to_string(::getpid()) +
                           "-" + std::to_string(counter++);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(uri + ": cannot create " + temp + ": " + std::strerror(errno));
  std::string write_error;
  Sink sink;
  sink.reset = [&] {
    if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) < 0) write_error = std::strerror(errno);
  };
  sink.write = [&](const char* data, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd, data, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        write_error = std::strerror(errno);
        return false;
      }
      data += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  Result<ObjectInfo> result = Download(bucket, key, options, sink);
  if (result.ok() && write_error.empty() && ::fsync(fd) != 0) write_error = std::strerror(errno);
  const bool closed = ::close(fd) == 0;
  if (result.ok() && write_error.empty() && !closed) write_error = std::strerror(errno);
  if (!write_error.empty()) {
    ::unlink(temp.c_str());
    return Status::IoError(uri + ": writing " + local_path + ": " + write_error);
  }
  if (!result.ok()) {
    ::unlink(temp.c_str());
    return result.status();
  }
  if (::rename(temp.c_str(), local_path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(temp.c_str());
    return Status::IoError(uri + ": cannot rename " + temp + " to " + local_path + ": " + err);
  }
  return result;
}

Result<std::string> S3Store::GetToBuffer(const std::string& bucket, const std::string& key,
                                         const GetOptions& options) {
  std::string out;
  Sink sink;
  sink.reset = [&] { out.clear(); };
  sink.write = [&](const char* data, size_t n) {
    out.append(data, n);
    return true;
  };
  COHORT_RETURN_IF_ERROR(Download(bucket, key, options, sink).status());
  return out;
}

Result<ObjectInfo> S3Store::Stat(const std::string& bucket, const std::string& key) {
  COHORT_RETURN_IF_ERROR(ValidateKey(bucket, key));
  Call call;
  call.op = "HeadObject";
  call.method = "HEAD";
  call.bucket = bucket;
  call.key = key;
  if (options_.use_checksums) call.headers.emplace_back("x-amz-checksum-mode", "ENABLED");
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse response, Execute(call));
  ObjectInfo info;
  info.key = key;
  info.size_bytes = std::strtoull(response.Header("content-length").c_str(), nullptr, 10);
  info.etag = Unquote(response.Header("etag"));
  info.updated = HttpDateToRfc3339(response.Header("last-modified"));
  const std::string stored = response.Header("x-amz-checksum-crc32c");
  if (stored.find('-') == std::string::npos) info.crc32c = stored;
  return info;
}

Result<ListResult> S3Store::List(const std::string& bucket, const ListOptions& options) {
  if (bucket.empty()) return Status::InvalidArgument("s3:// URI has no bucket (s3://BUCKET/PREFIX)");
  const std::string uri = UriOf(bucket, options.prefix);
  Call call;
  call.op = "ListObjectsV2";
  call.method = "GET";
  call.bucket = bucket;
  call.query = {{"list-type", "2"},
                {"max-keys", std::to_string(std::clamp(options.max_results, 1, 1000))},
                {"encoding-type", "url"}};
  if (!options.prefix.empty()) call.query.emplace_back("prefix", options.prefix);
  if (!options.delimiter.empty()) call.query.emplace_back("delimiter", options.delimiter);
  if (!options.page_token.empty()) call.query.emplace_back("continuation-token", options.page_token);
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse response, Execute(call));
  const std::string& xml = response.body;
  if (!s3::XmlHas(xml, "ListBucketResult"))
    return Status::Internal(uri + ": ListObjectsV2: unexpected reply: " + xml.substr(0, 200));
  const bool url_encoded = s3::XmlText(xml, "EncodingType") == "url";
  auto decode = [&](std::string text, std::string* out) -> bool {
    if (!url_encoded) {
      *out = std::move(text);
      return true;
    }
    return s3::UriDecode(text, /*plus_is_space=*/true, out);
  };
  ListResult result;
  for (std::string_view contents : s3::XmlElements(xml, "Contents")) {
    ObjectInfo info;
    if (!decode(s3::XmlText(contents, "Key"), &info.key))
      return Status::Internal(uri + ": ListObjectsV2: malformed encoded key in reply");
    info.size_bytes = std::strtoull(s3::XmlText(contents, "Size").c_str(), nullptr, 10);
    info.etag = Unquote(s3::XmlText(contents, "ETag"));
    info.updated = s3::XmlText(contents, "LastModified");
    result.objects.push_back(std::move(info));
  }
  for (std::string_view common : s3::XmlElements(xml, "CommonPrefixes")) {
    std::string prefix;
    if (!decode(s3::XmlText(common, "Prefix"), &prefix))
      return Status::Internal(uri + ": ListObjectsV2: malformed encoded prefix in reply");
    result.prefixes.push_back(std::move(prefix));
  }
  std::sort(result.objects.begin(), result.objects.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  std::sort(result.prefixes.begin(), result.prefixes.end());
  if (s3::XmlText(xml, "IsTruncated") == "true") {
    result.next_page_token = s3::XmlText(xml, "NextContinuationToken");
    if (result.next_page_token.empty())
      return Status::Internal(uri + ": ListObjectsV2: truncated reply without a NextContinuationToken");
  }
  return result;
}

Status S3Store::Delete(const std::string& bucket, const std::string& key) {
  COHORT_RETURN_IF_ERROR(ValidateKey(bucket, key));
  Call call;
  call.op = "DeleteObject";
  call.method = "DELETE";
  call.bucket = bucket;
  call.key = key;
  call.pass_through = {404};
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse response, Execute(call));
  if (response.status == 404) {
    const S3Error error = ParseError(response);
    if (error.code == "NoSuchBucket") return ToStatus(error, UriOf(bucket, key), call.op, options_.region);
  }
  return Status::Ok();
}

// Splits "scheme://authority/path" of an endpoint.
struct Endpoint {
  std::string scheme, authority, path;
};
Result<Endpoint> ParseEndpoint(const std::string& text) {
  Endpoint e;
  std::string rest = text;
  const size_t sep = rest.find("://");
  if (sep == std::string::npos) {
    e.scheme = "https";
  } else {
    e.scheme = ToLower(rest.substr(0, sep));
    rest = rest.substr(sep + 3);
  }
  if (e.scheme != "http" && e.scheme != "https")
    return Status::InvalidArgument("S3 endpoint '" + text + "' must be an http:// or https:// URL");
  const size_t slash = rest.find('/');
  e.authority = rest.substr(0, slash);
  if (slash != std::string::npos) e.path = rest.substr(slash);
  while (!e.path.empty() && e.path.back() == '/') e.path.pop_back();
  if (e.authority.empty() || e.authority.find_first_of("?#@ ") != std::string::npos)
    return Status::InvalidArgument("S3 endpoint '" + text +
                                   "' has no valid host (expected http[s]://HOST[:PORT][/PATH])");
  return e;
}

}  // namespace

Result<S3Address> ResolveS3Address(const S3Options& options, const std::string& bucket) {
  S3Address a;
  Endpoint e;
  const bool custom = !options.endpoint.empty();
  if (custom) {
    COHORT_ASSIGN_OR_RETURN(e, ParseEndpoint(options.endpoint));
  } else {
    e = {"https", "s3." + options.region + ".amazonaws.com", ""};
  }
  bool path_style = custom;
  if (options.addressing == S3AddressingStyle::kPath) path_style = true;
  if (options.addressing == S3AddressingStyle::kVirtualHost) path_style = false;
  // A dotted bucket name does not match the *.s3 wildcard certificate.
  if (options.addressing == S3AddressingStyle::kAuto && e.scheme == "https" &&
      bucket.find('.') != std::string::npos)
    path_style = true;
  if (bucket.empty()) path_style = true;
  if (path_style) {
    a.host = e.authority;
    a.path_prefix = e.path + (bucket.empty() ? "" : "/" + bucket);
  } else {
    a.host = bucket + "." + e.authority;
    a.path_prefix = e.path;
  }
  a.base_url = e.scheme + "://" + a.host;
  return a;
}

Result<S3Options> S3OptionsFromEnv() {
  S3Options o;
  if (ToLower(GetEnv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")) != "true") {
    o.endpoint = GetEnv("AWS_ENDPOINT_URL_S3");
    if (o.endpoint.empty()) o.endpoint = GetEnv("AWS_ENDPOINT_URL");
  }
  if (!o.endpoint.empty()) COHORT_RETURN_IF_ERROR(ParseEndpoint(o.endpoint).status());
  o.region = GetEnv("AWS_REGION");
  if (o.region.empty()) o.region = GetEnv("AWS_DEFAULT_REGION");
  if (o.region.empty()) o.region = "us-east-1";
  o.credentials.access_key_id = GetEnv("AWS_ACCESS_KEY_ID");
  o.credentials.secret_access_key = GetEnv("AWS_SECRET_ACCESS_KEY");
  o.credentials.session_token = GetEnv("AWS_SESSION_TOKEN");
  const bool has_id = !o.credentials.access_key_id.empty();
  const bool has_secret = !o.credentials.secret_access_key.empty();
  if (has_id && !has_secret)
    o.credentials_error = "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not";
  else if (!has_id && has_secret)
    o.credentials_error = "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not";
  return o;
}

Result<std::shared_ptr<BlobStore>> NewS3Store(S3Options options) {
  if (options.part_size < kMinPartSize || options.part_size > kMaxPartSize)
    return Status::InvalidArgument("S3 part size " + std::to_string(options.part_size) +
                                   " must be between 5 MiB and 5 GiB");
  if (options.multipart_threshold == 0) options.multipart_threshold = 1;
  if (options.region.empty()) options.region = "us-east-1";
  if (!options.endpoint.empty()) COHORT_RETURN_IF_ERROR(ParseEndpoint(options.endpoint).status());
  return std::shared_ptr<BlobStore>(std::make_shared<S3Store>(std::move(options)));
}

Result<std::shared_ptr<BlobStore>> NewS3StoreFromEnv() {
  COHORT_ASSIGN_OR_RETURN(S3Options options, S3OptionsFromEnv());
  return NewS3Store(std::move(options));
}

}  // namespace cohort::storage
