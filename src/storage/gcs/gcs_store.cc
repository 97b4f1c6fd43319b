// GcsStore (gs://) and NewGcsStoreFromEnv(); see gcs/gcs_store.h for the
// protocol choices (media vs resumable, CRC32C checks, what is retried).
// Thread-safe: every call works on its own locals and curl handle.
#include "gcs/gcs_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "backends.h"
#include "cohort/common/logging.h"
#include "cohort/net/http_client.h"
#include "cohort/storage/crc32c.h"

namespace cohort::storage {
namespace gcs {
namespace {

using json = nlohmann::json;

std::string GsUri(const std::string& bucket, const std::string& key) {
  return Uri{"gs", bucket, key, }.ToString();
}

std::string Truncate(std::string s, size_t n = 300) {
  if (s.size() > n) s = s.substr(0, n) + "...";
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

std::string Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

// SendHttp() reports transport failures as "METHOD URL: cause" (URL
// redacted). Our messages name the gs:// URI anyway: keep only the cause.
std::string TransportCause(const Status& status, const net::HttpRequest& req) {
  const std::string prefix = req.method + " " + net::RedactUrl(req.url) + ": ";
  const std::string& m = status.message();
  if (m.rfind(prefix, 0) == 0) return m.substr(prefix.size());
  return m;
}

int64_t ParseInt64(const json& j, const char* field) {
  if (!j.contains(field)) return 0;
  const json& v = j[field];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) return std::strtoll(v.get<std::string>().c_str(), nullptr, 10);
  return 0;
}

std::string JsonString(const json& j, const char* field) {
  return j.contains(field) && j[field].is_string() ? j[field].get<std::string>() : std::string();
}

ObjectInfo ObjectFromJson(const json& j) {
  ObjectInfo info;
  info.key = JsonString(j, "name");
  info.size_bytes = static_cast<uint64_t>(ParseInt64(j, "size"));
  info.crc32c = JsonString(j, "crc32c");
  info.generation = ParseInt64(j, "generation");
  info.etag = JsonString(j, "etag");
  info.updated = JsonString(j, "updated");
  return info;
}

Result<ObjectInfo> ParseObject(const std::string& body, const std::string& uri) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object())
    return Status::Internal(uri + ": GCS returned an object resource that is not JSON: " + Truncate(body));
  return ObjectFromJson(j);
}

// The crc32c value of x-goog-hash (possibly several headers, each possibly
// "crc32c=...,md5=...").
std::string CrcFromHashHeaders(const net::HttpResponse& resp) {
  for (const auto& [name, value] : resp.headers) {
    if (name != "x-goog-hash") continue;
    std::string_view rest = value;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string item = Trim(rest.substr(0, comma));
      if (item.rfind("crc32c=", 0) == 0) return item.substr(7);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return "";
}

// "Range: bytes=0-N" on a 308 -> N+1; no header -> 0 (nothing persisted).
bool PersistedFromRange(const net::HttpResponse& resp, uint64_t* persisted) {
  std::string range = resp.Header("range");
  if (range.empty()) {
    *persisted = 0;
    return true;
  }
  auto dash = range.find('-');
  if (range.rfind("bytes=", 0) != 0 || dash == std::string::npos) return false;
  char* end = nullptr;
  unsigned long long last = std::strtoull(range.c_str() + dash + 1, &end, 10);
  if (end == range.c_str() + dash + 1) return false;
  *persisted = last + 1;
  return true;
}

// "bytes A-B/T" (or "bytes */T"); fields left untouched when absent.
void ParseContentRange(const std::string& value, uint64_t* first, uint64_t* total) {
  if (value.rfind("bytes ", 0) != 0) return;
  std::string v = value.substr(6);
  auto slash = v.find('/');
  if (slash == std::string::npos) return;
  if (v[0] != '*' && first) *first = std::strtoull(v.c_str(), nullptr, 10);
  if (v.compare(slash + 1, 1, "*") != 0 && total) *total = std::strtoull(v.c_str() + slash + 1, nullptr, 10);
}

// Where resumable data comes from: random access, so that a chunk can be
// resent from any offset the server reports.
class Source {
 public:
  virtual ~Source() = default;
  // Bytes [offset, offset+n); may point into *scratch.
  virtual Result<std::string_view> Read(uint64_t offset, size_t n, std::string* scratch) = 0;
};

class BufferSource : public Source {
 public:
  explicit BufferSource(std::string_view data) : data_(data) {}
  Result<std::string_view> Read(uint64_t offset, size_t n, std::string*) override {
    return data_.substr(offset, n);
  }

 private:
  std::string_view data_;
};

class FileSource : public Source {
 public:
  FileSource(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  Result<std::string_view> Read(uint64_t offset, size_t n, std::string* scratch) override {
    scratch->resize(n);
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, scratch->data() + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return Status::IoError("reading " + path_ + ": " + std::strerror(errno));
      if (r == 0) return Status::IoError("reading " + path_ + ": the file shrank while it was uploaded");
      done += static_cast<size_t>(r);
    }
    return std::string_view(*scratch);
  }

 private:
  int fd_;
  std::string path_;
};

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

class GcsStore : public BlobStore {
 public:
  explicit GcsStore(GcsStoreOptions options) : options_(std::move(options)) {}
  std::string scheme() const override { return "gs"; }

  Result<ObjectInfo> PutFile(const std::string& bucket, const std::string& key, const std::string& local_path,
                             const PutOptions& options) override;
  Result<ObjectInfo> PutBuffer(const std::string& bucket, const std::string& key, std::string_view data,
                               const PutOptions& options) override;
  Result<ObjectInfo> GetToFile(const std::string& bucket, const std::string& key, const std::string& local_path,
                               const GetOptions& options) override;
  Result<std::string> GetToBuffer(const std::string& bucket, const std::string& key,
                                  const GetOptions& options) override;
  Result<ObjectInfo> Stat(const std::string& bucket, const std::string& key) override;
  Result<ListResult> List(const std::string& bucket, const ListOptions& options) override;
  Status Delete(const std::string& bucket, const std::string& key) override;

 private:
  using Sink = std::function<Status(const char* data, size_t n)>;

  std::string ObjectUrl(const std::string& bucket, const std::string& key) const {
    return options_.endpoint + "/storage/v1/b/" + net::UrlEncode(bucket) + "/o/" + net::UrlEncode(key);
  }
  std::string UploadUrl(const std::string& bucket) const {
    return options_.endpoint + "/upload/storage/v1/b/" + net::UrlEncode(bucket) + "/o";
  }

  // One exchange, with the bearer token; a 401 drops the cached token and
  // tries once more with a fresh one (spec §2.1).
  Result<net::HttpResponse> Send(const net::HttpRequest& request) const;
  // Send() repeated under `retry` while the failure is transient (transport,
  // 408/429/5xx) and `retryable`; any other response is returned as is.
  Result<net::HttpResponse> SendWithRetry(const net::HttpRequest& request, bool retryable, RetryState& retry,
                                       const std::string& uri, const std::string& what) const;
  Status HttpError(const net::HttpResponse& resp, const std::string& uri, const std::string& what) const;

  Result<ObjectInfo> MediaUpload(const std::string& bucket, const std::string& key, std::string_view data,
                                 const PutOptions& options);
  Result<ObjectInfo> ResumableUpload(const std::string& bucket, const std::string& key, Source& source,
                                     uint64_t total, const PutOptions& options);
  Result<std::string> StartSession(const std::string& bucket, const std::string& key, uint64_t total,
                                   const PutOptions& options);
  // Checks what the server stored against what we sent; on a mismatch the
  // new generation is deleted and Internal returned.
  Result<ObjectInfo> VerifyUploaded(const std::string& bucket, const std::string& key, ObjectInfo info,
                                    uint64_t size, uint32_t crc);
  Result<ObjectInfo> Download(const std::string& bucket, const std::string& key, const GetOptions& options,
                              const Sink& sink);

  static Status CheckNames(const std::string& bucket, const std::string& key) {
    if (bucket.empty()) return Status::InvalidArgument("gs:// URI without a bucket (key '" + key + "')");
    if (key.empty()) return Status::InvalidArgument(GsUri(bucket, key) + ": empty object name");
    if (key.size() > 1024) return Status::InvalidArgument(GsUri(bucket, key) + ": object name over 1024 bytes");
    return Status::Ok();
  }

  GcsStoreOptions options_;
};

Result<net::HttpResponse> GcsStore::Send(const net::HttpRequest& request) const {
  for (int auth_try = 0;; ++auth_try) {
    net::HttpRequest req = request;
    req.connect_timeout = options_.connect_timeout;
    req.stall_timeout = options_.stall_timeout;
    if (options_.credentials) {
      auto token = options_.credentials->Token();
      if (!token.ok()) return token.status();
      req.headers.emplace_back("Authorization", "Bearer " + *token);
    }
    auto resp = net::SendHttp(req);
    if (resp.ok() && resp->status == 401 && options_.credentials && auth_try == 0) {
      COHORT_LOG(INFO) << "gcs: HTTP 401, fetching a fresh access token from "
                       << options_.credentials->Describe();
      options_.credentials->Invalidate();
      continue;
    }
    return resp;
  }
}

Result<net::HttpResponse> GcsStore::SendWithRetry(const net::HttpRequest& request, bool retryable, RetryState& retry,
                                               const std::string& uri, const std::string& what) const {
  while (true) {
    auto resp = Send(request);
    std::string cause, retry_after;
    if (!resp.ok()) {
      if (resp.status().code() != StatusCode::kUnavailable) return resp.status().WithPrefix(uri + ": " + what);
      cause = TransportCause(resp.status(), request);
    } else if (IsRetryableHttpStatus(resp->status)) {
      cause = HttpError(*resp, uri, what).message();
      retry_after = resp->Header("retry-after");
    } else {
      return resp;
    }
    if (!retryable) return Status::Unavailable(uri + ": " + what + " failed: " + cause + retry.Summary());
    COHORT_LOG(DEBUG) << uri << ": " << what << " failed (" << cause << "), retrying";
    if (!retry.WaitBeforeNext(retry_after))
      return Status::Unavailable(uri + ": " + what + " failed: " + cause + retry.Summary());
  }
}

Status GcsStore::HttpError(const net::HttpResponse& resp, const std::string& uri, const std::string& what) const {
  // {"error":{"code":404,"message":"...","errors":[{"reason":"notFound",...}]}};
  // proxies may send HTML or nothing, so fall back to the status code.
  std::string message, reason;
  json j = json::parse(resp.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const json& e = j["error"];
    message = JsonString(e, "message");
    if (e.contains("errors") && e["errors"].is_array() && !e["errors"].empty() && e["errors"][0].is_object())
      reason = JsonString(e["errors"][0], "reason");
  }
  if (message.empty()) message = resp.body.empty() ? "(no body)" : Truncate(resp.body);
  std::string text = uri + ": " + what + ": HTTP " + std::to_string(resp.status) + " " + message;
  if (!reason.empty()) text += " (" + reason + ")";
  const long s = resp.status;
  if (s == 404) return Status::NotFound(text);
  if (s == 412) return Status::FailedPrecondition(text);
  if (s == 401 || s == 403) {
    text += "; check the credentials (" +
            (options_.credentials ? "using " + options_.credentials->Describe()
                                  : std::string("none configured: emulator mode")) +
            ") and that they may access the bucket (e.g. roles/storage.objectAdmin)";
    return Status::IoError(text);
  }
  if (s == 409) return Status::AlreadyExists(text);
  if (s == 400 || s == 411 || s == 413 || s == 416) return Status::InvalidArgument(text);
  if (IsRetryableHttpStatus(s)) return Status::Unavailable(text);
  return Status::IoError(text);
}

// ---- uploads ---------------------------------------------------------------------------

Result<ObjectInfo> GcsStore::PutBuffer(const std::string& bucket, const std::string& key, std::string_view data,
                                       const PutOptions& options) {
  COHORT_RETURN_IF_ERROR(CheckNames(bucket, key));
  if (data.size() <= options_.resumable_threshold) return MediaUpload(bucket, key, data, options);
  BufferSource source(data);
  return ResumableUpload(bucket, key, source, data.size(), options);
}

Result<ObjectInfo> GcsStore::PutFile(const std::string& bucket, const std::string& key,
                                     const std::string& local_path, const PutOptions& options) {
  COHORT_RETURN_IF_ERROR(CheckNames(bucket, key));
  ScopedFd fd(::open(local_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    std::string msg = "uploading " + local_path + " to " + GsUri(bucket, key) + ": cannot open: " + std::strerror(err);
    return err == ENOENT ? Status::NotFound(std::move(msg)) : Status::IoError(std::move(msg));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return Status::IoError("uploading " + local_path + " to " + GsUri(bucket, key) + ": not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  FileSource source(fd.get(), local_path);
  if (size <= options_.resumable_threshold) {
    std::string scratch;
    COHORT_ASSIGN_OR_RETURN(std::string_view data, source.Read(0, size, &scratch));
    return MediaUpload(bucket, key, data, options);
  }
  return ResumableUpload(bucket, key, source, size, options);
}

Result<ObjectInfo> GcsStore::MediaUpload(const std::string& bucket, const std::string& key, std::string_view data,
                                         const PutOptions& options) {
  const std::string uri = GsUri(bucket, key);
  const uint32_t crc = Crc32c(data);
  net::HttpRequest req;
  req.method = "POST";
  req.url = UploadUrl(bucket) + "?uploadType=media&name=" + net::UrlEncode(key);
  if (options.create_only) req.url += "&ifGenerationMatch=0";
  req.headers = {{"Content-Type", options.content_type.empty() ? "application/octet-stream" : options.content_type},
                 {"x-goog-hash", "crc32c=" + Crc32cToBase64(crc)}};
  req.body = data;
  const bool retryable = options.create_only || options_.retry_unconditional_writes;
  RetryState retry(options_.retry);
  bool ambiguous = false;  // an earlier attempt may have written the object
  while (true) {
    auto resp = Send(req);
    std::string cause, retry_after;
    if (!resp.ok()) {
      if (resp.status().code() != StatusCode::kUnavailable) return resp.status().WithPrefix(uri + ": upload");
      cause = TransportCause(resp.status(), req);
    } else if (IsRetryableHttpStatus(resp->status)) {
      cause = HttpError(*resp, uri, "upload").message();
      retry_after = resp->Header("retry-after");
    } else if (resp->status == 200 || resp->status == 201) {
      COHORT_ASSIGN_OR_RETURN(ObjectInfo info, ParseObject(resp->body, uri));
      COHORT_ASSIGN_OR_RETURN(info, VerifyUploaded(bucket, key, std::move(info), data.size(), crc));
      if (options.progress) options.progress(data.size(), data.size());
      return info;
    } else if (resp->status == 412 && options.create_only) {
      if (ambiguous) {
        // A lost response on an earlier attempt shows up as 412 now: if the
        // stored object is ours (same size and CRC32C), the write succeeded.
        auto existing = Stat(bucket, key);
        if (existing.ok() && existing->size_bytes == data.size() && existing->crc32c == Crc32cToBase64(crc)) {
          if (options.progress) options.progress(data.size(), data.size());
          return existing;
        }
      }
      return Status::FailedPrecondition(uri + ": already exists (create-only upload, ifGenerationMatch=0)");
    } else {
      return HttpError(*resp, uri, "upload");
    }
    ambiguous = true;
    if (!retryable) return Status::Unavailable(uri + ": upload failed: " + cause + retry.Summary());
    COHORT_LOG(DEBUG) << uri << ": upload failed (" << cause << "), retrying";
    if (!retry.WaitBeforeNext(retry_after))
      return Status::Unavailable(uri + ": upload failed: " + cause + retry.Summary());
  }
}

Result<ObjectInfo> GcsStore::VerifyUploaded(const std::string& bucket, const std::string& key, ObjectInfo info,
                                            uint64_t size, uint32_t crc) {
  const std::string uri = GsUri(bucket, key);
  const std::string local = Crc32cToBase64(crc);
  if (info.crc32c == local && info.size_bytes == size) return info;
  // Never report a corrupt object as written: remove exactly the generation
  // we created (ifGenerationMatch), so a concurrent newer write survives.
  std::string cleanup = "not deleted: GCS reported no generation";
  if (info.generation != 0) {
    net::HttpRequest del;
    del.method = "DELETE";
    del.url = ObjectUrl(bucket, key) + "?ifGenerationMatch=" + std::to_string(info.generation);
    RetryState retry(options_.retry);
    auto resp = SendWithRetry(del, /*retryable=*/true, retry, uri, "delete after a failed upload check");
    if (resp.ok() && (resp->status / 100 == 2 || resp->status == 404))
      cleanup = "generation " + std::to_string(info.generation) + " deleted";
    else
      cleanup = "deleting generation " + std::to_string(info.generation) +
                " failed: " + (resp.ok() ? HttpError(*resp, uri, "delete").message() : resp.status().message());
  }
  std::string what = info.crc32c == local ? "size mismatch after upload (sent " + std::to_string(size) +
                                                " bytes, GCS stored " + std::to_string(info.size_bytes) + ")"
                                          : "CRC32C mismatch after upload (sent " + local + ", GCS stored '" +
                                                info.crc32c + "')";
  COHORT_LOG(WARN) << uri << ": " << what << "; " << cleanup;
  return Status::Internal(uri + ": " + what + "; object not written (" + cleanup + ")");
}

Result<std::string> GcsStore::StartSession(const std::string& bucket, const std::string& key, uint64_t total,
                                           const PutOptions& options) {
  const std::string uri = GsUri(bucket, key);
  const std::string content_type = options.content_type.empty() ? "application/octet-stream" : options.content_type;
  net::HttpRequest req;
  req.method = "POST";
  req.url = UploadUrl(bucket) + "?uploadType=resumable";
  // Preconditions belong on the initiating POST (spec §1.4a).
  if (options.create_only) req.url += "&ifGenerationMatch=0";
  const std::string body = json{{"name", key}, {"contentType", content_type}}.dump();
  req.headers = {{"Content-Type", "application/json; charset=UTF-8"},
                 {"X-Upload-Content-Type", content_type},
                 {"X-Upload-Content-Length", std::to_string(total)}};
  req.body = body;
  // Starting a session writes nothing: always safe to repeat.
  RetryState retry(options_.retry);
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse resp,
                          SendWithRetry(req, /*retryable=*/true, retry, uri, "starting a resumable upload"));
  if (resp.status == 412 && options.create_only)
    return Status::FailedPrecondition(uri + ": already exists (create-only upload, ifGenerationMatch=0)");
  if (resp.status != 200 && resp.status != 201) return HttpError(resp, uri, "starting a resumable upload");
  std::string location = resp.Header("location");
  if (location.empty())
    return Status::Internal(uri + ": resumable upload start returned no Location (session URI)");
  if (location[0] == '/') location = options_.endpoint + location;
  return location;
}

Result<ObjectInfo> GcsStore::ResumableUpload(const std::string& bucket, const std::string& key, Source& source,
                                             uint64_t total, const PutOptions& options) {
  const std::string uri = GsUri(bucket, key);
  // CRC32C over the bytes in order, extended as each new byte is first read;
  // resent bytes are not hashed twice.
  uint32_t crc = 0;
  uint64_t hashed = 0;
  std::string scratch;
  constexpr int kMaxSessions = 3;
  for (int session_try = 1;; ++session_try) {
    COHORT_ASSIGN_OR_RETURN(const std::string session, StartSession(bucket, key, total, options));
    uint64_t offset = 0;  // bytes the server has persisted
    bool query_status = false;
    bool session_gone = false;
    RetryState retry(options_.retry);
    std::optional<net::HttpResponse> final_resp;
    auto progressed = [&](uint64_t new_offset) {
      if (new_offset > offset) {
        retry = RetryState(options_.retry);  // progress: backoff and deadline start over
        if (options.progress) options.progress(new_offset, total);
      }
      offset = new_offset;
    };
    while (!final_resp && !session_gone) {
      net::HttpRequest req;
      req.method = "PUT";
      req.url = session;
      std::string what;
      // All bytes persisted but no final answer yet: only a status query can finish it.
      const bool is_query = query_status || (offset == total && total > 0);
      if (is_query) {
        // Where did the server get to? Empty PUT, Content-Range bytes */TOTAL.
        what = "resumable upload status query";
        req.headers = {{"Content-Range", "bytes */" + std::to_string(total)}};
      } else {
        const uint64_t n = std::min<uint64_t>(options_.chunk_size, total - offset);
        const bool last = offset + n == total;
        COHORT_ASSIGN_OR_RETURN(std::string_view data, source.Read(offset, n, &scratch));
        if (offset + n > hashed) {
          const uint64_t skip = hashed - offset;  // offset <= hashed always
          crc = Crc32cExtend(crc, data.data() + skip, data.size() - skip);
          hashed = offset + n;
        }
        req.body = data;
        if (total > 0) {
          // Non-final chunks leave the total open ("*"); the last one states it.
          req.headers.emplace_back("Content-Range", "bytes " + std::to_string(offset) + "-" +
                                                        std::to_string(offset + n - 1) + "/" +
                                                        (last ? std::to_string(total) : std::string("*")));
        }  // an empty object is one PUT without Content-Range (spec §1.4b)
        if (last) req.headers.emplace_back("x-goog-hash", "crc32c=" + Crc32cToBase64(crc));
        what = "resumable upload chunk at byte " + std::to_string(offset) + " of " + std::to_string(total);
      }
      auto resp = Send(req);
      std::string cause, retry_after;
      if (!resp.ok()) {
        if (resp.status().code() != StatusCode::kUnavailable) return resp.status().WithPrefix(uri + ": " + what);
        cause = TransportCause(resp.status(), req);
      } else if (IsRetryableHttpStatus(resp->status)) {
        cause = HttpError(*resp, uri, what).message();
        retry_after = resp->Header("retry-after");
      } else if (resp->status == 308) {
        uint64_t persisted = 0;
        // The server cannot have persisted more than we have sent.
        if (!PersistedFromRange(*resp, &persisted) || persisted > hashed)
          return Status::Internal(uri + ": " + what + ": bad Range '" + resp->Header("range") + "' in a 308 (" +
                                  std::to_string(hashed) + " bytes sent)");
        const bool moved = persisted > offset;
        progressed(persisted);
        query_status = false;
        if (moved || (is_query && offset < total)) continue;  // send from the server's offset
        // No progress: count it as a failed attempt.
        cause = offset == total ? "the server holds all bytes but did not finish the upload"
                                : "the server persisted none of the chunk";
      } else if (resp->status == 200 || resp->status == 201) {
        final_resp = std::move(resp).value();
        break;
      } else if (resp->status == 404 || resp->status == 410) {
        session_gone = true;
        COHORT_LOG(WARN) << uri << ": the resumable upload session expired (HTTP " << resp->status
                         << "), starting a new one";
        break;
      } else if (resp->status == 412 && options.create_only) {
        return Status::FailedPrecondition(uri + ": already exists (create-only upload, ifGenerationMatch=0)");
      } else {
        return HttpError(*resp, uri, what);
      }
      // A transient failure: ask the server where it stands, then resume there.
      COHORT_LOG(DEBUG) << uri << ": " << what << " failed (" << cause << "); querying the upload status";
      query_status = true;
      if (!retry.WaitBeforeNext(retry_after))
        return Status::Unavailable(uri + ": " + what + " failed: " + cause + retry.Summary());
    }
    if (final_resp) {
      // A server that finalised early (before all bytes) fails the size check
      // here, and that object is deleted too.
      COHORT_ASSIGN_OR_RETURN(ObjectInfo info, ParseObject(final_resp->body, uri));
      COHORT_ASSIGN_OR_RETURN(info, VerifyUploaded(bucket, key, std::move(info), total, crc));
      if (options.progress) options.progress(total, total);
      return info;
    }
    if (session_try >= kMaxSessions)
      return Status::Unavailable(uri + ": resumable upload sessions kept expiring" + retry.Summary());
  }
}

// ---- downloads -----------------------------------------------------------------------

Result<ObjectInfo> GcsStore::Download(const std::string& bucket, const std::string& key, const GetOptions& options,
                                      const Sink& sink) {
  COHORT_RETURN_IF_ERROR(CheckNames(bucket, key));
  const std::string uri = GsUri(bucket, key);
  if (options.length && *options.length == 0) return Stat(bucket, key);
  const uint64_t start = options.offset;
  const bool has_last = options.length.has_value();
  const uint64_t last = has_last ? start + *options.length - 1 : 0;  // inclusive

  uint64_t received = 0;
  uint32_t crc = 0;
  int64_t generation = 0;      // pinned after the first response, so a resumed read sees the same data
  std::string expected_crc;    // x-goog-hash of the first response (always the whole object)
  uint64_t object_size = 0;
  std::string etag;
  bool whole_object = false;   // true when the bytes we get are the entire object
  uint64_t expected_total = 0; // bytes this call will deliver
  uint64_t last_progress = 0;
  bool have_head = false;      // the first 2xx response's headers were seen
  RetryState retry(options_.retry);
  while (true) {
    net::HttpRequest req;
    req.method = "GET";
    req.url = ObjectUrl(bucket, key) + "?alt=media";
    if (generation != 0) req.url += "&generation=" + std::to_string(generation);
    const uint64_t from = start + received;
    const bool ranged = from > 0 || has_last;
    if (ranged)
      req.headers.emplace_back("Range",
                               "bytes=" + std::to_string(from) + "-" + (has_last ? std::to_string(last) : std::string()));
    Status local_error;
    req.on_response_headers = [&](const net::HttpResponse& head) {
      if (head.status / 100 != 2) return true;
      uint64_t first = 0, total = 0;
      std::string length = head.Header("content-length");
      const uint64_t body_len = length.empty() ? 0 : std::strtoull(length.c_str(), nullptr, 10);
      if (head.status == 206) {
        ParseContentRange(head.Header("content-range"), &first, &total);
        if (first != from) {
          local_error = Status::Internal(uri + ": asked for bytes from " + std::to_string(from) +
                                         ", the server sent them from " + std::to_string(first));
          return false;
        }
      } else if (ranged) {
        local_error = Status::Internal(uri + ": the server ignored the Range header (HTTP " +
                                       std::to_string(head.status) + ")");
        return false;
      }
      if (!have_head) {
        // First response: what the whole object is.
        have_head = true;
        std::string g = head.Header("x-goog-generation");
        generation = g.empty() ? 0 : std::strtoll(g.c_str(), nullptr, 10);
        expected_crc = CrcFromHashHeaders(head);
        std::string stored = head.Header("x-goog-stored-content-length");
        object_size = !stored.empty() ? std::strtoull(stored.c_str(), nullptr, 10)
                      : head.status == 206 ? total
                                           : body_len;
        etag = head.Header("etag");
        whole_object = start == 0 && (head.status == 200 || body_len == object_size);
        expected_total = length.empty() ? object_size - std::min(object_size, start) : body_len;
      }
      return true;
    };
    req.on_body = [&](const char* data, size_t n) {
      crc = Crc32cExtend(crc, data, n);
      Status st = sink(data, n);
      if (!st.ok()) {
        local_error = st;
        return false;
      }
      received += n;
      if (options.progress && (received - last_progress >= (1u << 20) || received == expected_total)) {
        last_progress = received;
        options.progress(received, expected_total);
      }
      return true;
    };
    const uint64_t received_before = received;
    auto resp = Send(req);
    std::string cause, retry_after;
    if (!local_error.ok()) return local_error;
    if (!resp.ok()) {
      if (resp.status().code() != StatusCode::kUnavailable) return resp.status().WithPrefix(uri + ": download");
      cause = TransportCause(resp.status(), req);
    } else if (resp->status / 100 == 2) {
      break;
    } else if (IsRetryableHttpStatus(resp->status)) {
      cause = HttpError(*resp, uri, "download").message();
      retry_after = resp->Header("retry-after");
    } else if (resp->status == 416) {
      uint64_t total = 0;
      ParseContentRange(resp->Header("content-range"), nullptr, &total);
      if (received == 0 && !has_last && total == start && total > 0) {
        // Reading from exactly the end: nothing to read, not an error.
        return Stat(bucket, key);
      }
      return Status::InvalidArgument(uri + ": byte range from " + std::to_string(from) +
                                     " lies past the end of the object");
    } else if (resp->status == 404 && generation != 0) {
      return Status::NotFound(uri + ": the object was replaced or deleted during the download (generation " +
                              std::to_string(generation) + ")");
    } else {
      return HttpError(*resp, uri, "download");
    }
    if (received > received_before) retry = RetryState(options_.retry);  // progress
    COHORT_LOG(DEBUG) << uri << ": download failed at byte " << from + (received - received_before) << " ("
                      << cause << "), resuming";
    if (!retry.WaitBeforeNext(retry_after))
      return Status::Unavailable(uri + ": download failed: " + cause + retry.Summary());
  }
  if (whole_object) {
    if (expected_crc.empty()) {
      COHORT_LOG(WARN) << uri << ": no crc32c in x-goog-hash; the download is not verified";
    } else if (expected_crc != Crc32cToBase64(crc)) {
      return Status::Internal(uri + ": CRC32C mismatch on download (computed " + Crc32cToBase64(crc) +
                              ", GCS reported " + expected_crc + "); the data is corrupt");
    }
  }
  ObjectInfo info;
  info.key = key;
  info.size_bytes = object_size;
  info.crc32c = expected_crc;
  info.generation = generation;
  info.etag = etag;
  return info;
}

Result<std::string> GcsStore::GetToBuffer(const std::string& bucket, const std::string& key,
                                          const GetOptions& options) {
  std::string out;
  COHORT_ASSIGN_OR_RETURN(ObjectInfo info, Download(bucket, key, options, [&](const char* d, size_t n) {
                            out.append(d, n);
                            return Status::Ok();
                          }));
  (void)info;
  return out;
}

Result<ObjectInfo> GcsStore::GetToFile(const std::string& bucket, const std::string& key,
                                       const std::string& local_path, const GetOptions& options) {
  const std::string uri = GsUri(bucket, key);
  static std::atomic<uint64_t> counter{0};
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(local_path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp =
      local_path + ".cohort-tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0)
    return Status::IoError("downloading " + uri + ": cannot create " + tmp + ": " + std::strerror(errno));
  auto fail = [&](Status st) {
    ::close(fd.release());
    ::unlink(tmp.c_str());
    return st;
  };
  auto info = Download(bucket, key, options, [&](const char* d, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd.get(), d, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return Status::IoError("writing " + tmp + ": " + std::strerror(errno));
      d += w;
      n -= static_cast<size_t>(w);
    }
    return Status::Ok();
  });
  if (!info.ok()) return fail(info.status());
  if (::fsync(fd.get()) != 0) return fail(Status::IoError("fsync " + tmp + ": " + std::strerror(errno)));
  if (::close(fd.release()) != 0) {
    ::unlink(tmp.c_str());
    return Status::IoError("closing " + tmp + ": " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), local_path.c_str()) != 0) {
    Status st = Status::IoError("renaming " + tmp + " to " + local_path + ": " + std::strerror(errno));
    ::unlink(tmp.c_str());
    return st;
  }
  return info;
}

// ---- metadata, list, delete -----------------------------------------------------------

Result<ObjectInfo> GcsStore::Stat(const std::string& bucket, const std::string& key) {
  COHORT_RETURN_IF_ERROR(CheckNames(bucket, key));
  const std::string uri = GsUri(bucket, key);
  net::HttpRequest req;
  req.url = ObjectUrl(bucket, key);
  RetryState retry(options_.retry);
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse resp, SendWithRetry(req, true, retry, uri, "metadata"));
  if (resp.status != 200) return HttpError(resp, uri, "metadata");
  return ParseObject(resp.body, uri);
}

Result<ListResult> GcsStore::List(const std::string& bucket, const ListOptions& options) {
  const std::string uri = GsUri(bucket, options.prefix);
  if (bucket.empty()) return Status::InvalidArgument("gs:// list without a bucket");
  net::HttpRequest req;
  req.url = options_.endpoint + "/storage/v1/b/" + net::UrlEncode(bucket) + "/o";
  std::vector<std::string> params;
  if (!options.prefix.empty()) params.push_back("prefix=" + net::UrlEncode(options.prefix));
  if (!options.delimiter.empty()) params.push_back("delimiter=" + net::UrlEncode(options.delimiter));
  if (!options.page_token.empty()) params.push_back("pageToken=" + net::UrlEncode(options.page_token));
  if (options.max_results > 0) params.push_back("maxResults=" + std::to_string(std::min(options.max_results, 1000)));
  for (size_t i = 0; i < params.size(); ++i) req.url += (i == 0 ? "?" : "&") + params[i];
  RetryState retry(options_.retry);
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse resp, SendWithRetry(req, true, retry, uri, "list"));
  if (resp.status != 200) return HttpError(resp, uri, "list");
  json j = json::parse(resp.body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Internal(uri + ": list returned non-JSON: " + Truncate(resp.body));
  ListResult result;
  if (j.contains("items") && j["items"].is_array())
    for (const json& item : j["items"])
      if (item.is_object()) result.objects.push_back(ObjectFromJson(item));
  if (j.contains("prefixes") && j["prefixes"].is_array())
    for (const json& p : j["prefixes"])
      if (p.is_string()) result.prefixes.push_back(p.get<std::string>());
  result.next_page_token = JsonString(j, "nextPageToken");
  std::sort(result.objects.begin(), result.objects.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  std::sort(result.prefixes.begin(), result.prefixes.end());
  return result;
}

Status GcsStore::Delete(const std::string& bucket, const std::string& key) {
  COHORT_RETURN_IF_ERROR(CheckNames(bucket, key));
  const std::string uri = GsUri(bucket, key);
  net::HttpRequest req;
  req.method = "DELETE";
  req.url = ObjectUrl(bucket, key);
  // Retried: "make it gone" is idempotent for us (see gcs_store.h).
  RetryState retry(options_.retry);
  COHORT_ASSIGN_OR_RETURN(net::HttpResponse resp, SendWithRetry(req, true, retry, uri, "delete"));
  if (resp.status / 100 == 2 || resp.status == 404) return Status::Ok();
  return HttpError(resp, uri, "delete");
}

}  // namespace

std::string NormalizeEndpoint(std::string endpoint) {
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  if (!endpoint.empty() && endpoint.find("://") == std::string::npos) endpoint = "http://" + endpoint;
  return endpoint;
}

std::string EmulatorEndpointFromEnv() {
  for (const char* name : {"CLOUD_STORAGE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return NormalizeEndpoint(v);
  }
  return "";
}

Result<std::shared_ptr<BlobStore>> NewGcsStore(GcsStoreOptions options) {
  options.endpoint = NormalizeEndpoint(options.endpoint);
  if (options.endpoint.empty()) return Status::InvalidArgument("gs:// store: empty endpoint");
  if (options.chunk_size == 0 || options.chunk_size % kChunkQuantum != 0)
    return Status::InvalidArgument("gs:// store: chunk size " + std::to_string(options.chunk_size) +
                                   " is not a positive multiple of 256 KiB (262144)");
  return std::shared_ptr<BlobStore>(std::make_shared<GcsStore>(std::move(options)));
}

}  // namespace gcs

Result<std::shared_ptr<BlobStore>> NewGcsStoreFromEnv() {
  gcs::GcsStoreOptions options;
  if (std::string emulator = gcs::EmulatorEndpointFromEnv(); !emulator.empty()) {
    // Emulators take no credentials: skip discovery entirely (spec §2.4).
    options.endpoint = emulator;
    COHORT_LOG(INFO) << "gs:// uses the storage emulator at " << emulator;
  } else {
    COHORT_ASSIGN_OR_RETURN(options.credentials, gcs::DiscoverCredentials());
    COHORT_LOG(INFO) << "gs:// authenticates with " << options.credentials->Describe();
  }
  return gcs::NewGcsStore(std::move(options));
}

}  // namespace cohort::storage
