// FakeGcsServer: a small, strict FAKE of the Cloud Storage JSON API v1 for
// tests -- not Google's service, not an emulator of all of it. It runs
// cpp-httplib on 127.0.0.1 (an ephemeral port) in its own thread and keeps
// objects in memory.
//
// What it serves (spec storage.md §1): media upload (uploadType=media),
// resumable upload (init POST -> Location; chunk PUTs that must be
// multiples of 256 KiB except the last and must start exactly at the
// persisted offset; 308 + Range; status query "bytes */T" or "bytes */*";
// finalisation; single-PUT uploads without Content-Range), download with
// alt=media + Range (206 / 416) + x-goog-hash, metadata GET, list with
// prefix / delimiter / pageToken / maxResults, delete, ifGenerationMatch
// (0 and G; 412 "conditionNotMet") and the GCS error JSON shape. Object
// names must arrive as ONE percent-encoded path segment (a raw '/' in the
// name segment is a 400). x-goog-hash on uploads is checked (400 on a
// mismatch), as GCS does.
//
// Fault injection (each applies to the next N requests of a kind):
// FailNext (status + optional Retry-After), DropNextChunks (persist part of
// a chunk, then close the connection without a complete response),
// PersistOnlyNextChunk, CorruptNextDownloadHash, CorruptNextUploadCrc,
// CutNextDownloadAfter (send part of the body, then close).
//
// Header-only because only tests/storage/*_test.cc are built. Thread-safe:
// handlers run on httplib's worker threads under one mutex; tests call the
// accessors from the test thread.
#pragma once

#include <httplib.h>
#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cohort/storage/crc32c.h"

namespace cohort::storage::fake {

class FakeGcsServer {
 public:
  enum class Op { kMediaUpload, kResumableInit, kChunk, kStatusQuery, kDownload, kMetadata, kList, kDelete, kOther };

  struct Logged {
    std::string method;
    std::string target;  // raw path + query, as sent
    Op op = Op::kOther;
    std::string content_range;  // request header
    std::string range;          // request header
    std::string authorization;  // request header
    std::string goog_hash;      // request header x-goog-hash
    size_t body_size = 0;
    int status = 0;             // what the fake answered (0: connection dropped)
  };

  struct Object {
    std::string data;
    int64_t generation = 0;
    std::string content_type;
  };

  FakeGcsServer() {
    server_.Get(".*", [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
    server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
    server_.Put(".*", [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
    server_.Delete(".*", [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 500 && !server_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ~FakeGcsServer() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  FakeGcsServer(const FakeGcsServer&) = delete;
  FakeGcsServer& operator=(const FakeGcsServer&) = delete;

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string host_port() const { return "127.0.0.1:" + std::to_string(port_); }

  // ---- fault injection -------------------------------------------------------
  void FailNext(Op op, int count, int status, std::string retry_after = "") {
    std::lock_guard<std::mutex> lock(mu_);
    for (int i = 0; i < count; ++i) failures_[op].push_back({status, retry_after});
  }
  // The next `count` data chunks: keep their first `persist_bytes`, then close
  // the connection without a complete response.
  void DropNextChunks(int count, uint64_t persist_bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    drop_chunks_ = count;
    drop_persist_ = persist_bytes;
  }
  // The next data chunk: keep only `bytes` of it and answer 308 accordingly.
  void PersistOnlyNextChunk(uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    partial_persist_ = bytes;
  }
  void CorruptNextDownloadHash(int count = 1) {
    std::lock_guard<std::mutex> lock(mu_);
    corrupt_download_hash_ = count;
  }
  // The next finished upload answers with a wrong crc32c (the data is stored).
  void CorruptNextUploadCrc(int count = 1) {
    std::lock_guard<std::mutex> lock(mu_);
    corrupt_upload_crc_ = count;
  }
  // The next download sends `bytes` of its body, then closes the connection.
  void CutNextDownloadAfter(uint64_t bytes, int count = 1) {
    std::lock_guard<std::mutex> lock(mu_);
    cut_download_after_ = bytes;
    cut_downloads_ = count;
  }
  // The next media uploads are stored, but the response is lost (the
  // connection closes): what a client sees when a reply goes missing.
  void LoseNextUploadResponses(int count) {
    std::lock_guard<std::mutex> lock(mu_);
    lose_upload_responses_ = count;
  }
  // Every request must carry "Authorization: Bearer <token>" (else 401).
  void RequireBearer(std::string token) {
    std::lock_guard<std::mutex> lock(mu_);
    required_token_ = std::move(token);
  }

  // ---- state -------------------------------------------------------------------
  void PutObject(const std::string& bucket, const std::string& name, const std::string& data) {
    std::lock_guard<std::mutex> lock(mu_);
    objects_[{bucket, name}] = Object{data, next_generation_++, "application/octet-stream"};
  }
  std::optional<Object> GetObject(const std::string& bucket, const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = objects_.find({bucket, name});
    if (it == objects_.end()) return std::nullopt;
    return it->second;
  }
  std::vector<Logged> log() const {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }
  int Count(Op op) const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(std::count_if(log_.begin(), log_.end(), [&](const Logged& l) { return l.op == op; }));
  }
  void ClearLog() {
    std::lock_guard<std::mutex> lock(mu_);
    log_.clear();
  }

  static std::string PercentDecode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '%' && i + 2 < s.size() && isxdigit(static_cast<unsigned char>(s[i + 1])) &&
          isxdigit(static_cast<unsigned char>(s[i + 2]))) {
        out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  }

 private:
  using json = nlohmann::json;
  static constexpr uint64_t kQuantum = 256 * 1024;

  struct Failure {
    int status;
    std::string retry_after;
  };
  struct Session {
    std::string bucket, name, content_type;
    std::optional<int64_t> if_generation_match;
    std::string data;  // persisted bytes
    std::optional<uint64_t> total;
    bool finalized = false;
  };

  static std::string Crc(const std::string& data) { return Crc32cToBase64(Crc32c(data)); }
  static std::string Md5(const std::string& data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
    return Base64Encode(std::string_view(reinterpret_cast<char*>(md), len));
  }

  json Resource(const std::string& bucket, const std::string& name, const Object& o, bool corrupt_crc = false) const {
    return {{"kind", "storage#object"},
            {"name", name},
            {"bucket", bucket},
            {"generation", std::to_string(o.generation)},
            {"metageneration", "1"},
            {"size", std::to_string(o.data.size())},
            {"crc32c", corrupt_crc ? Crc(o.data + "corrupt") : Crc(o.data)},
            {"md5Hash", Md5(o.data)},
            {"contentType", o.content_type},
            {"etag", "etag-" + std::to_string(o.generation)},
            {"updated", "2026-01-01T00:00:00.000Z"}};
  }

  static void Error(httplib::Response& res, int code, const std::string& reason, const std::string& message) {
    json body = {{"error",
                  {{"code", code},
                   {"message", message},
                   {"errors", json::array({{{"domain", "global"}, {"reason", reason}, {"message", message}}})}}}};
    res.status = code;
    res.set_content(body.dump(), "application/json; charset=UTF-8");
  }

  // ifGenerationMatch: 0 = must not exist, G = live generation must be G.
  bool PreconditionOk(const std::optional<int64_t>& want, const std::string& bucket, const std::string& name) const {
    if (!want) return true;
    auto it = objects_.find({bucket, name});
    if (*want == 0) return it == objects_.end();
    return it != objects_.end() && it->second.generation == *want;
  }
  static std::optional<int64_t> ParamInt(const httplib::Request& req, const char* name) {
    if (!req.has_param(name)) return std::nullopt;
    return std::stoll(req.get_param_value(name));
  }

  void Handle(const httplib::Request& req, httplib::Response& res) {
    // httplib would apply the Range header to our (already ranged) body
    // again; the fake handles Range itself. req is a non-const object inside
    // httplib, so clearing its parsed ranges is well-defined.
    const_cast<httplib::Request&>(req).ranges.clear();
    std::lock_guard<std::mutex> lock(mu_);
    Logged entry;
    entry.method = req.method;
    entry.target = req.target;
    entry.content_range = req.get_header_value("Content-Range");
    entry.range = req.get_header_value("Range");
    entry.authorization = req.get_header_value("Authorization");
    entry.goog_hash = req.get_header_value("x-goog-hash");
    entry.body_size = req.body.size();
    Route(req, res, entry);
    entry.status = res.status;
    if (dropped_) {
      entry.status = 0;
      dropped_ = false;
    }
    log_.push_back(std::move(entry));
  }

  // Answers with headers and a Content-Length, sends `body` (maybe empty),
  // then closes the connection early: the client sees a cut-short response.
  void Drop(httplib::Response& res, std::string partial_body, uint64_t claimed_length) {
    dropped_ = true;
    res.status = 200;
    res.body.clear();
    auto body = std::make_shared<std::string>(std::move(partial_body));
    res.set_content_provider(claimed_length, "application/octet-stream",
                             [body](size_t offset, size_t, httplib::DataSink& sink) {
                               if (offset < body->size()) {
                                 sink.write(body->data() + offset, body->size() - offset);
                                 return true;
                               }
                               return false;  // abort: the connection closes mid-response
                             });
  }

  void Route(const httplib::Request& req, httplib::Response& res, Logged& entry) {
    const std::string path = req.target.substr(0, req.target.find('?'));
    static const std::string kUpload = "/upload/storage/v1/b/";
    static const std::string kApi = "/storage/v1/b/";
    std::string rest, bucket;
    bool upload = false;
    if (path.rfind(kUpload, 0) == 0) {
      rest = path.substr(kUpload.size());
      upload = true;
    } else if (path.rfind(kApi, 0) == 0) {
      rest = path.substr(kApi.size());
    } else {
      return Error(res, 404, "notFound", "Not Found: " + path);
    }
    auto slash = rest.find('/');
    if (slash == std::string::npos) return Error(res, 404, "notFound", "Not Found");
    bucket = PercentDecode(rest.substr(0, slash));
    rest = rest.substr(slash);
    std::optional<std::string> name;  // for /o/NAME
    if (rest == "/o") {
    } else if (rest.rfind("/o/", 0) == 0) {
      const std::string raw = rest.substr(3);
      if (raw.find('/') != std::string::npos)
        return Error(res, 400, "invalid", "object name must be one percent-encoded path segment: " + raw);
      name = PercentDecode(raw);
    } else {
      return Error(res, 404, "notFound", "Not Found");
    }

    // Classify, then apply injected failures and auth.
    Op op = Op::kOther;
    if (upload && req.method == "POST") {
      op = req.get_param_value("uploadType") == "resumable" ? Op::kResumableInit : Op::kMediaUpload;
    } else if (upload && req.method == "PUT") {
      op = req.body.empty() && req.get_header_value("Content-Range").rfind("bytes */", 0) == 0 ? Op::kStatusQuery
                                                                                              : Op::kChunk;
    } else if (!upload && req.method == "GET") {
      op = !name ? Op::kList : req.get_param_value("alt") == "media" ? Op::kDownload : Op::kMetadata;
    } else if (!upload && req.method == "DELETE" && name) {
      op = Op::kDelete;
    }
    entry.op = op;
    if (!required_token_.empty() && req.get_header_value("Authorization") != "Bearer " + required_token_)
      return Error(res, 401, "authError", "Invalid Credentials");
    if (auto it = failures_.find(op); it != failures_.end() && !it->second.empty()) {
      Failure f = it->second.front();
      it->second.erase(it->second.begin());
      if (!f.retry_after.empty()) res.set_header("Retry-After", f.retry_after);
      return Error(res, f.status, f.status == 429 ? "rateLimitExceeded" : "backendError",
                   "injected failure " + std::to_string(f.status));
    }

    switch (op) {
      case Op::kMediaUpload: return MediaUpload(req, res, bucket);
      case Op::kResumableInit: return ResumableInit(req, res, bucket);
      case Op::kChunk:
      case Op::kStatusQuery: return SessionPut(req, res, op);
      case Op::kDownload: return Download(req, res, bucket, *name);
      case Op::kMetadata: {
        auto it = objects_.find({bucket, *name});
        if (it == objects_.end()) return Error(res, 404, "notFound", "No such object: " + bucket + "/" + *name);
        res.set_content(Resource(bucket, *name, it->second).dump(), "application/json");
        return;
      }
      case Op::kList: return List(req, res, bucket);
      case Op::kDelete: {
        auto it = objects_.find({bucket, *name});
        if (it == objects_.end()) return Error(res, 404, "notFound", "No such object: " + bucket + "/" + *name);
        if (!PreconditionOk(ParamInt(req, "ifGenerationMatch"), bucket, *name))
          return Error(res, 412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.");
        objects_.erase(it);
        res.status = 204;
        return;
      }
      default: return Error(res, 400, "invalid", "unsupported request " + req.method + " " + path);
    }
  }

  // Stores a finished object and answers with its resource.
  void Finish(httplib::Response& res, const std::string& bucket, const std::string& name, std::string data,
              const std::string& content_type, const std::optional<int64_t>& if_generation_match,
              const std::string& client_hash) {
    if (!client_hash.empty()) {
      // x-goog-hash: crc32c=<b64>[,md5=<b64>]
      auto pos = client_hash.find("crc32c=");
      if (pos != std::string::npos) {
        std::string sent = client_hash.substr(pos + 7, client_hash.find(',', pos) - pos - 7);
        if (sent != Crc(data))
          return Error(res, 400, "invalid",
                       "Provided CRC32C \"" + sent + "\" doesn't match calculated CRC32C \"" + Crc(data) + "\".");
      }
    }
    if (!PreconditionOk(if_generation_match, bucket, name))
      return Error(res, 412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.");
    Object& o = objects_[{bucket, name}];
    o = Object{std::move(data), next_generation_++, content_type.empty() ? "application/octet-stream" : content_type};
    const bool corrupt = corrupt_upload_crc_ > 0;
    if (corrupt) --corrupt_upload_crc_;
    res.status = 200;
    res.set_content(Resource(bucket, name, o, corrupt).dump(), "application/json");
  }

  void MediaUpload(const httplib::Request& req, httplib::Response& res, const std::string& bucket) {
    if (!req.has_param("name") || req.get_param_value("name").empty())
      return Error(res, 400, "required", "Required parameter: name");
    Finish(res, bucket, req.get_param_value("name"), req.body, req.get_header_value("Content-Type"),
           ParamInt(req, "ifGenerationMatch"), req.get_header_value("x-goog-hash"));
    if (res.status == 200 && lose_upload_responses_ > 0) {
      --lose_upload_responses_;
      Drop(res, "", 1000);
    }
  }

  void ResumableInit(const httplib::Request& req, httplib::Response& res, const std::string& bucket) {
    Session s;
    s.bucket = bucket;
    if (!req.body.empty()) {
      if (req.get_header_value("Content-Type").rfind("application/json", 0) != 0)
        return Error(res, 400, "invalid", "resumable init body must be application/json");
      json j = json::parse(req.body, nullptr, false);
      if (!j.is_object()) return Error(res, 400, "parseError", "bad JSON");
      s.name = j.value("name", std::string());
      s.content_type = j.value("contentType", std::string());
    }
    if (s.name.empty() && req.has_param("name")) s.name = req.get_param_value("name");
    if (s.name.empty()) return Error(res, 400, "required", "Required: object name");
    if (s.content_type.empty()) s.content_type = req.get_header_value("X-Upload-Content-Type");
    s.if_generation_match = ParamInt(req, "ifGenerationMatch");
    // GCS checks the precondition when the session starts, and again at the end.
    if (!PreconditionOk(s.if_generation_match, bucket, s.name))
      return Error(res, 412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.");
    const std::string id = "upload-" + std::to_string(next_session_++);
    sessions_[id] = s;
    res.set_header("Location", endpoint() + "/upload/storage/v1/b/" + Encode(bucket) +
                                   "/o?uploadType=resumable&name=" + Encode(s.name) + "&upload_id=" + id);
    res.set_header("X-GUploader-UploadID", id);
    res.status = 200;
  }

  static std::string Encode(const std::string& s) {
    static const char* kHex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
      if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
        out += static_cast<char>(c);
      } else {
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
    }
    return out;
  }

  void Answer308(httplib::Response& res, const Session& s) {
    res.status = 308;
    if (!s.data.empty()) res.set_header("Range", "bytes=0-" + std::to_string(s.data.size() - 1));
  }

  void FinishSession(httplib::Response& res, Session& s, const std::string& client_hash) {
    Finish(res, s.bucket, s.name, s.data, s.content_type, s.if_generation_match, client_hash);
    if (res.status == 200) s.finalized = true;
  }

  void SessionPut(const httplib::Request& req, httplib::Response& res, Op op) {
    const std::string id = req.get_param_value("upload_id");
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return Error(res, 404, "notFound", "No such upload session");
    Session& s = it->second;
    if (s.finalized) {
      auto o = objects_.find({s.bucket, s.name});
      if (o == objects_.end()) return Error(res, 410, "gone", "upload session finished; object gone");
      res.status = 200;
      res.set_content(Resource(s.bucket, s.name, o->second).dump(), "application/json");
      return;
    }
    const std::string cr = req.get_header_value("Content-Range");
    if (op == Op::kStatusQuery) {
      // "bytes */T" or "bytes */*"
      const std::string t = cr.substr(8);
      if (t != "*") {
        uint64_t total = std::stoull(t);
        if (s.total && *s.total != total) return Error(res, 400, "invalid", "total changed");
        s.total = total;
      }
      return Answer308(res, s);
    }
    if (cr.empty()) {
      // The whole object in one PUT.
      if (!s.data.empty()) return Error(res, 400, "invalid", "single PUT after data was sent");
      s.data = req.body;
      return FinishSession(res, s, req.get_header_value("x-goog-hash"));
    }
    // "bytes A-B/T" or "bytes A-B/*"
    uint64_t first = 0, last = 0;
    std::optional<uint64_t> total;
    {
      if (cr.rfind("bytes ", 0) != 0) return Error(res, 400, "invalid", "bad Content-Range " + cr);
      auto dash = cr.find('-'), slash = cr.find('/');
      if (dash == std::string::npos || slash == std::string::npos)
        return Error(res, 400, "invalid", "bad Content-Range " + cr);
      first = std::stoull(cr.substr(6, dash - 6));
      last = std::stoull(cr.substr(dash + 1, slash - dash - 1));
      if (cr.substr(slash + 1) != "*") total = std::stoull(cr.substr(slash + 1));
    }
    if (last < first || last - first + 1 != req.body.size())
      return Error(res, 400, "invalid", "Content-Range " + cr + " does not match the body size " +
                                            std::to_string(req.body.size()));
    if (first != s.data.size())
      return Error(res, 400, "invalid", "chunk starts at " + std::to_string(first) + " but " +
                                            std::to_string(s.data.size()) + " bytes are persisted");
    if (total) s.total = total;
    const bool final_chunk = s.total && last + 1 == *s.total;
    if (!final_chunk && req.body.size() % kQuantum != 0)
      return Error(res, 400, "invalid", "non-final chunk of " + std::to_string(req.body.size()) +
                                            " bytes is not a multiple of 256 KiB");
    if (drop_chunks_ > 0) {
      --drop_chunks_;
      const uint64_t keep = std::min<uint64_t>(drop_persist_, req.body.size());
      s.data += req.body.substr(0, keep);
      if (s.total && s.data.size() == *s.total) FinishSession(res, s, req.get_header_value("x-goog-hash"));
      return Drop(res, "", 1000);
    }
    if (partial_persist_) {
      const uint64_t keep = std::min<uint64_t>(*partial_persist_, req.body.size());
      partial_persist_.reset();
      s.data += req.body.substr(0, keep);
      if (keep < req.body.size()) return Answer308(res, s);
    } else {
      s.data += req.body;
    }
    if (final_chunk) return FinishSession(res, s, req.get_header_value("x-goog-hash"));
    return Answer308(res, s);
  }

  void Download(const httplib::Request& req, httplib::Response& res, const std::string& bucket,
                const std::string& name) {
    auto it = objects_.find({bucket, name});
    if (it == objects_.end()) return Error(res, 404, "notFound", "No such object: " + bucket + "/" + name);
    const Object& o = it->second;
    if (auto g = ParamInt(req, "generation"); g && *g != o.generation)
      return Error(res, 404, "notFound", "No such object: " + bucket + "/" + name + "#" + std::to_string(*g));
    if (!PreconditionOk(ParamInt(req, "ifGenerationMatch"), bucket, name))
      return Error(res, 412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.");
    const uint64_t size = o.data.size();
    uint64_t first = 0, last = size == 0 ? 0 : size - 1;
    bool ranged = false;
    const std::string range = req.get_header_value("Range");
    if (!range.empty()) {
      if (range.rfind("bytes=", 0) != 0 || range.find('-') == std::string::npos)
        return Error(res, 400, "invalid", "bad Range " + range);
      ranged = true;
      auto dash = range.find('-');
      first = std::stoull(range.substr(6, dash - 6));
      if (dash + 1 < range.size()) last = std::min<uint64_t>(last, std::stoull(range.substr(dash + 1)));
      if (first >= size) {
        res.set_header("Content-Range", "bytes */" + std::to_string(size));
        return Error(res, 416, "requestedRangeNotSatisfiable", "The requested range cannot be satisfied.");
      }
    }
    const std::string crc = corrupt_download_hash_ > 0 ? Crc(o.data + "x") : Crc(o.data);
    if (corrupt_download_hash_ > 0) --corrupt_download_hash_;
    res.set_header("x-goog-hash", "crc32c=" + crc + ",md5=" + Md5(o.data));
    res.set_header("x-goog-generation", std::to_string(o.generation));
    res.set_header("x-goog-metageneration", "1");
    res.set_header("x-goog-stored-content-length", std::to_string(size));
    res.set_header("ETag", "etag-" + std::to_string(o.generation));
    std::string body = size == 0 ? std::string() : o.data.substr(first, last - first + 1);
    if (ranged) res.set_header("Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) +
                                                    "/" + std::to_string(size));
    if (cut_downloads_ > 0) {
      --cut_downloads_;
      const uint64_t claimed = body.size();
      body.resize(std::min<uint64_t>(cut_download_after_, body.size()));
      Drop(res, std::move(body), claimed);
      res.status = ranged ? 206 : 200;
      return;
    }
    res.status = ranged ? 206 : 200;
    res.set_content(body, o.content_type);
  }

  void List(const httplib::Request& req, httplib::Response& res, const std::string& bucket) {
    const std::string prefix = req.get_param_value("prefix");
    const std::string delimiter = req.get_param_value("delimiter");
    int max_results = 1000;
    if (req.has_param("maxResults")) max_results = std::clamp(std::stoi(req.get_param_value("maxResults")), 1, 1000);
    std::string after;  // the page token is the last entry of the previous page, base64'd
    if (req.has_param("pageToken") && !Base64Decode(req.get_param_value("pageToken"), &after))
      return Error(res, 400, "invalid", "bad pageToken");
    const bool has_token = req.has_param("pageToken");
    json items = json::array(), prefixes = json::array();
    std::string last_entry;
    int emitted = 0;
    bool more = false;
    for (auto it = objects_.lower_bound({bucket, prefix}); it != objects_.end() && it->first.first == bucket; ++it) {
      const std::string& name = it->first.second;
      if (name.compare(0, prefix.size(), prefix) != 0) break;
      // The entry for this name: itself, or its "directory" with a delimiter.
      std::string entry = name;
      bool is_prefix = false;
      if (!delimiter.empty()) {
        auto d = name.find(delimiter, prefix.size());
        if (d != std::string::npos) {
          entry = name.substr(0, d + delimiter.size());
          is_prefix = true;
        }
      }
      if (has_token && entry <= after) continue;
      if (entry == last_entry) continue;  // same prefix again
      if (emitted == max_results) {
        more = true;
        break;
      }
      if (is_prefix)
        prefixes.push_back(entry);
      else
        items.push_back(Resource(bucket, name, it->second));
      last_entry = entry;
      ++emitted;
    }
    json body = {{"kind", "storage#objects"}};
    if (!items.empty()) body["items"] = items;
    if (!prefixes.empty()) body["prefixes"] = prefixes;
    if (more) body["nextPageToken"] = Base64Encode(last_entry);
    res.set_content(body.dump(), "application/json");
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;

  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Object> objects_;
  std::map<std::string, Session> sessions_;
  std::map<Op, std::vector<Failure>> failures_;
  std::vector<Logged> log_;
  int64_t next_generation_ = 1000;
  int next_session_ = 1;
  int drop_chunks_ = 0;
  uint64_t drop_persist_ = 0;
  std::optional<uint64_t> partial_persist_;
  int corrupt_download_hash_ = 0;
  int corrupt_upload_crc_ = 0;
  uint64_t cut_download_after_ = 0;
  int cut_downloads_ = 0;
  int lose_upload_responses_ = 0;
  bool dropped_ = false;
  std::string required_token_;
};

}  // namespace cohort::storage::fake
