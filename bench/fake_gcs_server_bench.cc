// fake_gcs_server_bench: an in-memory endpoint for the Cloud Storage JSON API
// v1, for bench/storage.sh. Not a benchmark itself (the *_bench name only
// gets it built with the other bench drivers).
//
//   fake_gcs_server_bench [--port N]      # 0 (default): an ephemeral port
//
// Prints "port=N" on stdout once it listens on 127.0.0.1, then serves until
// SIGTERM / SIGINT. Why not the firebase emulator (spec storage.md §5): it
// refuses bodies over ~130 MiB and chunked resumable uploads, and the bench
// moves 512 MiB. Why not tests/storage/fake_gcs.h: it recomputes MD5 and
// CRC32C of the whole object on every metadata request and copies it on
// every download, which would bill a client that asks for metadata (gcloud)
// for the fake's work rather than its own.
//
// Serves what `cohort storage cp`, curl and `gcloud storage cp` send: media,
// multipart and resumable uploads, compose (gcloud's parallel composite
// uploads; the result has a crc32c and no md5Hash, as on GCS) (chunks must start at the persisted
// offset; status queries "bytes */T"; x-goog-hash crc32c checked, 400 on a
// mismatch), downloads with alt=media and Range (206/416) and x-goog-hash
// (crc32c + md5), object and bucket metadata, list (prefix/delimiter, one
// page), delete. Every bucket exists. CRC32C and MD5 are computed while the
// body arrives (once per object), as a real service does. HTTP/1.1
// keep-alive, "Expect: 100-continue", chunked request bodies; one thread
// per connection. No auth: any Authorization header is ignored.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cohort/storage/crc32c.h"

namespace {

using json = nlohmann::json;
using cohort::storage::Base64Encode;
using cohort::storage::Crc32cExtend;
using cohort::storage::Crc32cToBase64;

// ---- object data: a growable byte buffer (realloc: no zero-fill, mremap) ---
class Bytes {
 public:
  Bytes() = default;
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  ~Bytes() { std::free(data_); }
  void Reserve(size_t n) {
    if (n <= cap_) return;
    char* p = static_cast<char*>(std::realloc(data_, n));
    if (p == nullptr) throw std::bad_alloc();
    data_ = p;
    cap_ = n;
  }
  // Room for n more bytes at end(); Commit(k) after writing k of them.
  char* Extend(size_t n) {
    if (size_ + n > cap_) Reserve(std::max(size_ + n, cap_ + cap_ / 2 + (1 << 20)));
    return data_ + size_;
  }
  void Commit(size_t n) { size_ += n; }
  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  char* data_ = nullptr;
  size_t size_ = 0, cap_ = 0;
};

// Running CRC32C + MD5 of bytes as they arrive.
class Hasher {
 public:
  Hasher() : md5_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(md5_, EVP_md5(), nullptr); }
  ~Hasher() { EVP_MD_CTX_free(md5_); }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void Update(const char* p, size_t n) {
    crc_ = Crc32cExtend(crc_, p, n);
    EVP_DigestUpdate(md5_, p, n);
  }
  uint32_t crc() const { return crc_; }
  std::string Md5Base64() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(md5_, md, &len);
    return Base64Encode(std::string_view(reinterpret_cast<char*>(md), len));
  }

 private:
  uint32_t crc_ = 0;
  EVP_MD_CTX* md5_;
};

struct Object {
  std::string bucket, name, content_type;
  std::unique_ptr<Bytes> data;
  std::string crc32c, md5;  // base64; md5 empty for composite objects (as on GCS)
  int64_t generation = 0;
  int component_count = 0;  // composite objects
};

struct Session {
  std::string bucket, name, content_type;
  std::optional<int64_t> if_generation_match;
  std::unique_ptr<Bytes> data = std::make_unique<Bytes>();
  std::unique_ptr<Hasher> hash = std::make_unique<Hasher>();
  std::optional<uint64_t> total;
  std::shared_ptr<const Object> finished;  // set once the object is written
  std::mutex mu;                           // one chunk at a time
};

std::mutex g_mu;  // guards the three maps and counters below
std::map<std::pair<std::string, std::string>, std::shared_ptr<const Object>> g_objects;
std::map<std::string, std::shared_ptr<Session>> g_sessions;
int64_t g_next_generation = 1;
int64_t g_next_session = 1;
int g_port = 0;

// ---- HTTP plumbing ---------------------------------------------------------
struct Request {
  std::string method, target, path;
  std::map<std::string, std::string> query;    // decoded
  std::map<std::string, std::string> headers;  // lower-case names
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  std::string Param(const std::string& name) const {
    auto it = query.find(name);
    return it == query.end() ? "" : it->second;
  }
  bool Has(const std::string& name) const { return query.count(name) != 0; }
};

std::string PercentDecode(const std::string& s, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string PercentEncode(const std::string& s) {
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

// Buffered reads from one connection.
class Conn {
 public:
  explicit Conn(int fd) : fd_(fd), buf_(1 << 20) {}
  ~Conn() { ::close(fd_); }
  int fd() const { return fd_; }

  // A line without its CRLF; false at EOF / error.
  bool ReadLine(std::string* line) {
    line->clear();
    while (true) {
      for (size_t i = pos_; i < end_; ++i) {
        if (buf_[i] == '\n') {
          line->append(buf_.data() + pos_, i - pos_);
          pos_ = i + 1;
          if (!line->empty() && line->back() == '\r') line->pop_back();
          return true;
        }
      }
      line->append(buf_.data() + pos_, end_ - pos_);
      pos_ = end_ = 0;
      if (line->size() > 65536 || !Fill()) return false;
    }
  }
  // Exactly n bytes, handed to sink(ptr, len) in pieces; false on EOF.
  template <typename Sink>
  bool ReadExact(uint64_t n, Sink&& sink) {
    while (n > 0) {
      if (pos_ == end_ && !Fill()) return false;
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n, end_ - pos_));
      sink(buf_.data() + pos_, take);
      pos_ += take;
      n -= take;
    }
    return true;
  }
  bool WriteAll(const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  bool WriteAll(const std::string& s) { return WriteAll(s.data(), s.size()); }

 private:
  bool Fill() {
    while (true) {
      ssize_t r = ::recv(fd_, buf_.data(), buf_.size(), 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      pos_ = 0;
      end_ = static_cast<size_t>(r);
      return true;
    }
  }
  int fd_;
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
};

struct Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // A body served from an object instead of `body`: [first, first + length).
  std::shared_ptr<const Object> object;
  uint64_t first = 0, length = 0;
};

const char* Reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 308: return "Resume Incomplete";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 412: return "Precondition Failed";
    case 416: return "Requested Range Not Satisfiable";
    default: return "Error";
  }
}

void Error(Response& res, int code, const std::string& reason, const std::string& message) {
  json body = {{"error",
                {{"code", code},
                 {"message", message},
                 {"errors", json::array({{{"domain", "global"}, {"reason", reason}, {"message", message}}})}}}};
  res.status = code;
  res.headers = {{"Content-Type", "application/json; charset=UTF-8"}};
  res.body = body.dump();
}

void Json(Response& res, const json& body) {
  res.status = 200;
  res.headers.emplace_back("Content-Type", "application/json; charset=UTF-8");
  res.body = body.dump();
}

json Resource(const Object& o) {
  const std::string base = "http://127.0.0.1:" + std::to_string(g_port);
  const std::string path = "/storage/v1/b/" + PercentEncode(o.bucket) + "/o/" + PercentEncode(o.name);
  json r = {{"kind", "storage#object"},
          {"selfLink", base + path},
          {"mediaLink", base + "/download" + path + "?generation=" + std::to_string(o.generation) + "&alt=media"},
          {"id", o.bucket + "/" + o.name + "/" + std::to_string(o.generation)},
          {"name", o.name},
          {"bucket", o.bucket},
          {"generation", std::to_string(o.generation)},
          {"metageneration", "1"},
          {"contentType", o.content_type},
          {"storageClass", "STANDARD"},
          {"size", std::to_string(o.data->size())},
          {"crc32c", o.crc32c},
          {"etag", "etag-" + std::to_string(o.generation)},
          {"timeCreated", "2026-01-01T00:00:00.000Z"},
          {"updated", "2026-01-01T00:00:00.000Z"}};
  if (!o.md5.empty()) r["md5Hash"] = o.md5;
  if (o.component_count > 0) r["componentCount"] = o.component_count;
  return r;
}

std::optional<int64_t> ParamInt(const Request& req, const char* name) {
  if (!req.Has(name)) return std::nullopt;
  return std::stoll(req.Param(name));
}

// ifGenerationMatch: 0 = must not exist, G = the live generation is G. Under g_mu.
bool PreconditionOk(const std::optional<int64_t>& want, const std::string& bucket, const std::string& name) {
  if (!want) return true;
  auto it = g_objects.find({bucket, name});
  if (*want == 0) return it == g_objects.end();
  return it != g_objects.end() && it->second->generation == *want;
}

// Checks the client's x-goog-hash crc32c (if any), then stores the object.
void Finish(Response& res, const std::string& bucket, const std::string& name, std::string content_type,
            std::unique_ptr<Bytes> data, Hasher& hash, const std::optional<int64_t>& if_generation_match,
            const std::string& client_hash, std::shared_ptr<const Object>* stored = nullptr) {
  const std::string crc = Crc32cToBase64(hash.crc());
  if (auto pos = client_hash.find("crc32c="); pos != std::string::npos) {
    std::string sent = client_hash.substr(pos + 7, client_hash.find(',', pos) - pos - 7);
    if (sent != crc)
      return Error(res, 400, "invalid", "Provided CRC32C \"" + sent + "\" doesn't match calculated CRC32C \"" + crc + "\".");
  }
  auto o = std::make_shared<Object>();
  o->bucket = bucket;
  o->name = name;
  o->content_type = content_type.empty() ? "application/octet-stream" : content_type;
  o->data = std::move(data);
  o->crc32c = crc;
  o->md5 = hash.Md5Base64();
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!PreconditionOk(if_generation_match, bucket, name))
      return Error(res, 412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.");
    o->generation = g_next_generation++;
    g_objects[{bucket, name}] = o;
  }
  if (stored) *stored = o;
  Json(res, Resource(*o));
}

// Reads the request body (Content-Length or chunked) into sink; false on a broken connection.
template <typename Sink>
bool ReadBody(Conn& c, const Request& req, Sink&& sink) {
  if (req.Header("transfer-encoding").find("chunked") != std::string::npos) {
    std::string line;
    while (true) {
      if (!c.ReadLine(&line)) return false;
      const uint64_t n = std::strtoull(line.c_str(), nullptr, 16);
      if (n == 0) {
        while (c.ReadLine(&line) && !line.empty()) {
        }
        return true;
      }
      if (!c.ReadExact(n, sink) || !c.ReadLine(&line)) return false;
    }
  }
  const std::string cl = req.Header("content-length");
  return cl.empty() || c.ReadExact(std::strtoull(cl.c_str(), nullptr, 10), sink);
}

uint64_t ContentLength(const Request& req) { return std::strtoull(req.Header("content-length").c_str(), nullptr, 10); }

// ---- handlers --------------------------------------------------------------
// Each reads the body itself (uploads hash it as it arrives); returns false
// when the connection broke.

bool MediaUpload(Conn& c, const Request& req, Response& res, const std::string& bucket) {
  auto data = std::make_unique<Bytes>();
  data->Reserve(ContentLength(req));
  Hasher hash;
  if (!ReadBody(c, req, [&](const char* p, size_t n) {
        std::memcpy(data->Extend(n), p, n);
        data->Commit(n);
        hash.Update(p, n);
      }))
    return false;
  if (req.Param("name").empty()) {
    Error(res, 400, "required", "Required parameter: name");
    return true;
  }
  Finish(res, bucket, req.Param("name"), req.Header("content-type"), std::move(data), hash,
         ParamInt(req, "ifGenerationMatch"), req.Header("x-goog-hash"));
  return true;
}

// multipart/related: a JSON metadata part, then the data part.
bool MultipartUpload(Conn& c, const Request& req, Response& res, const std::string& bucket) {
  std::string body;
  if (!ReadBody(c, req, [&](const char* p, size_t n) { body.append(p, n); })) return false;
  const std::string ct = req.Header("content-type");
  auto b = ct.find("boundary=");
  if (b == std::string::npos) {
    Error(res, 400, "invalid", "multipart upload without a boundary");
    return true;
  }
  std::string boundary = ct.substr(b + 9);
  if (auto semi = boundary.find(';'); semi != std::string::npos) boundary.resize(semi);
  if (boundary.size() >= 2 && (boundary.front() == '"' || boundary.front() == '\''))
    boundary = boundary.substr(1, boundary.size() - 2);
  // Lines may end in CRLF (RFC 2046) or LF (Python's email generator, which gcloud uses).
  const std::string delim = "--" + boundary;
  std::vector<std::pair<std::string, std::string>> parts;  // (headers, content)
  size_t pos = body.find(delim);
  while (pos != std::string::npos) {
    size_t start = pos + delim.size();
    if (body.compare(start, 2, "--") == 0) break;
    start = body.find('\n', start);
    if (start == std::string::npos) break;
    ++start;
    size_t head_end = body.find("\n\n", start), skip = 2;
    if (const size_t crlf = body.find("\r\n\r\n", start); crlf != std::string::npos && crlf < head_end) {
      head_end = crlf;
      skip = 4;
    }
    const size_t next = body.find("\n" + delim, start);
    if (head_end == std::string::npos || next == std::string::npos || head_end > next) break;
    const size_t content = head_end + skip;
    const size_t content_end = skip == 4 && next > content && body[next - 1] == '\r' ? next - 1 : next;
    parts.emplace_back(body.substr(start, head_end - start), body.substr(content, content_end - content));
    pos = next + 1;
  }
  if (parts.size() != 2) {
    Error(res, 400, "invalid", "multipart upload needs 2 parts, got " + std::to_string(parts.size()));
    return true;
  }
  json meta = json::parse(parts[0].second, nullptr, false);
  if (!meta.is_object()) {
    Error(res, 400, "parseError", "bad metadata JSON");
    return true;
  }
  std::string name = meta.value("name", req.Param("name"));
  std::string content_type = meta.value("contentType", std::string());
  auto data = std::make_unique<Bytes>();
  const std::string& content = parts[1].second;
  std::memcpy(data->Extend(content.size()), content.data(), content.size());
  data->Commit(content.size());
  Hasher hash;
  hash.Update(content.data(), content.size());
  std::string client_hash;
  if (meta.contains("crc32c")) client_hash = "crc32c=" + meta["crc32c"].get<std::string>();
  Finish(res, bucket, name, content_type, std::move(data), hash, ParamInt(req, "ifGenerationMatch"), client_hash);
  return true;
}

bool ResumableInit(Conn& c, const Request& req, Response& res, const std::string& bucket) {
  std::string body;
  if (!ReadBody(c, req, [&](const char* p, size_t n) { body.append(p, n); })) return false;
  auto s = std::make_shared<Session>();
  s->bucket = bucket;
  if (!body.empty()) {
    json j = json::parse(body, nullptr, false);
    if (!j.is_object()) {
      Error(res, 400, "parseError", "bad JSON");
      return true;
    }
    s->name = j.value("name", std::string());
    s->content_type = j.value("contentType", std::string());
  }
  if (s->name.empty()) s->name = req.Param("name");
  if (s->name.empty()) {
    Error(res, 400, "required", "Required: object name");
    return true;
  }
  if (s->content_type.empty()) s->content_type = req.Header("x-upload-content-type");
  s->if_generation_match = ParamInt(req, "ifGenerationMatch");
  if (auto len = req.Header("x-upload-content-length"); !len.empty()) s->data->Reserve(std::stoull(len));
  std::string id;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!PreconditionOk(s->if_generation_match, bucket, s->name)) {
      Error(res, 412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.");
      return true;
    }
    id = "session-" + std::to_string(g_next_session++);
    g_sessions[id] = s;
  }
  res.status = 200;
  res.headers.emplace_back("Location", "http://127.0.0.1:" + std::to_string(g_port) + "/upload/storage/v1/b/" +
                                           PercentEncode(bucket) + "/o?uploadType=resumable&name=" +
                                           PercentEncode(s->name) + "&upload_id=" + id);
  res.headers.emplace_back("X-GUploader-UploadID", id);
  return true;
}

void Answer308(Response& res, const Session& s) {
  res.status = 308;
  if (s.data->size() > 0) res.headers.emplace_back("Range", "bytes=0-" + std::to_string(s.data->size() - 1));
}

bool SessionPut(Conn& c, const Request& req, Response& res) {
  std::shared_ptr<Session> s;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_sessions.find(req.Param("upload_id"));
    if (it != g_sessions.end()) s = it->second;
  }
  auto drain = [&] { return ReadBody(c, req, [](const char*, size_t) {}); };
  if (!s) {
    if (!drain()) return false;
    Error(res, 404, "notFound", "No such upload session");
    return true;
  }
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->finished) {
    if (!drain()) return false;
    Json(res, Resource(*s->finished));
    return true;
  }
  const std::string cr = req.Header("content-range");
  uint64_t first = 0, last = 0;
  std::optional<uint64_t> total;
  bool has_range = false;  // "bytes A-B/..." (not a status query "bytes */T")
  if (!cr.empty()) {
    if (cr.rfind("bytes ", 0) != 0) {
      if (!drain()) return false;
      Error(res, 400, "invalid", "bad Content-Range " + cr);
      return true;
    }
    const std::string spec = cr.substr(6);
    const size_t slash = spec.find('/');
    if (slash == std::string::npos) {
      if (!drain()) return false;
      Error(res, 400, "invalid", "bad Content-Range " + cr);
      return true;
    }
    if (spec.substr(slash + 1) != "*") total = std::stoull(spec.substr(slash + 1));
    if (spec[0] != '*') {
      has_range = true;
      const size_t dash = spec.find('-');
      first = std::stoull(spec.substr(0, dash));
      last = std::stoull(spec.substr(dash + 1, slash - dash - 1));
    }
  }
  if (total) {
    if (s->total && *s->total != *total) {
      if (!drain()) return false;
      Error(res, 400, "invalid", "the total size changed");
      return true;
    }
    s->total = total;
  }
  if (!cr.empty() && !has_range) {
    // Status query (or a final empty PUT "bytes */T" that completes the upload).
    if (!drain()) return false;
    if (s->total && *s->total == s->data->size()) {
      Finish(res, s->bucket, s->name, s->content_type, std::move(s->data), *s->hash, s->if_generation_match,
             req.Header("x-goog-hash"), &s->finished);
      return true;
    }
    Answer308(res, *s);
    return true;
  }
  if (has_range) {
    if (first != s->data->size() || last < first || last - first + 1 != ContentLength(req)) {
      if (!drain()) return false;
      Error(res, 400, "invalid", "chunk " + cr + " of " + std::to_string(ContentLength(req)) + " bytes, but " +
                                     std::to_string(s->data->size()) + " bytes are persisted");
      return true;
    }
  } else if (s->data->size() != 0) {
    if (!drain()) return false;
    Error(res, 400, "invalid", "a PUT without Content-Range after data was sent");
    return true;
  }
  // Append what arrives; a connection that breaks mid-chunk keeps what came (GCS does too).
  const bool ok = ReadBody(c, req, [&](const char* p, size_t n) {
    std::memcpy(s->data->Extend(n), p, n);
    s->data->Commit(n);
    s->hash->Update(p, n);
  });
  if (!ok) return false;
  if (!has_range) s->total = s->data->size();  // the whole object in one PUT
  if (s->total && s->data->size() == *s->total) {
    Finish(res, s->bucket, s->name, s->content_type, std::move(s->data), *s->hash, s->if_generation_match,
           req.Header("x-goog-hash"), &s->finished);
    if (res.status != 200) s->data = std::make_unique<Bytes>();
    return true;
  }
  Answer308(res, *s);
  return true;
}

// POST /storage/v1/b/B/o/DEST/compose {"sourceObjects": [{"name", "generation"?}], "destination": {...}}.
bool Compose(Conn& c, const Request& req, Response& res, const std::string& bucket, const std::string& name) {
  std::string body;
  if (!ReadBody(c, req, [&](const char* p, size_t n) { body.append(p, n); })) return false;
  json j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("sourceObjects") || !j["sourceObjects"].is_array() ||
      j["sourceObjects"].empty() || j["sourceObjects"].size() > 32) {
    Error(res, 400, "invalid", "compose needs 1 to 32 sourceObjects");
    return true;
  }
  std::vector<std::shared_ptr<const Object>> sources;
  uint64_t total = 0;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    for (const auto& src : j["sourceObjects"]) {
      const std::string src_name = src.value("name", "");
      auto it = g_objects.find({bucket, src_name});
      int64_t want = 0;
      if (src.contains("generation"))
        want = src["generation"].is_string() ? std::stoll(src["generation"].get<std::string>())
                                             : src["generation"].get<int64_t>();
      if (it == g_objects.end() || (want != 0 && want != it->second->generation)) {
        Error(res, 404, "notFound", "No such object: " + bucket + "/" + src_name);
        return true;
      }
      sources.push_back(it->second);
      total += it->second->data->size();
    }
  }
  auto data = std::make_unique<Bytes>();
  data->Reserve(total);
  uint32_t crc = 0;
  int components = 0;
  for (const auto& src : sources) {
    std::memcpy(data->Extend(src->data->size()), src->data->data(), src->data->size());
    data->Commit(src->data->size());
    crc = Crc32cExtend(crc, src->data->data(), src->data->size());
    components += std::max(1, src->component_count);
  }
  auto o = std::make_shared<Object>();
  o->bucket = bucket;
  o->name = name;
  o->content_type = "application/octet-stream";
  if (j.contains("destination") && j["destination"].is_object())
    o->content_type = j["destination"].value("contentType", o->content_type);
  o->data = std::move(data);
  o->crc32c = Crc32cToBase64(crc);
  o->component_count = components;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!PreconditionOk(ParamInt(req, "ifGenerationMatch"), bucket, name)) {
      Error(res, 412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.");
      return true;
    }
    o->generation = g_next_generation++;
    g_objects[{bucket, name}] = o;
  }
  Json(res, Resource(*o));
  return true;
}

void Download(const Request& req, Response& res, const std::shared_ptr<const Object>& o) {
  const uint64_t size = o->data->size();
  uint64_t first = 0, last = size == 0 ? 0 : size - 1;
  bool ranged = false;
  const std::string range = req.Header("range");
  if (!range.empty() && range.rfind("bytes=", 0) == 0) {
    const std::string spec = range.substr(6);
    const size_t dash = spec.find('-');
    if (dash == std::string::npos) return Error(res, 400, "invalid", "bad Range " + range);
    ranged = true;
    if (dash == 0) {  // suffix: the last N bytes
      const uint64_t n = std::min<uint64_t>(std::stoull(spec.substr(1)), size);
      first = size - n;
    } else {
      first = std::stoull(spec.substr(0, dash));
      if (dash + 1 < spec.size()) last = std::min<uint64_t>(last, std::stoull(spec.substr(dash + 1)));
    }
    if (first >= size) {
      res.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
      return Error(res, 416, "requestedRangeNotSatisfiable", "The requested range cannot be satisfied.");
    }
  }
  res.status = ranged ? 206 : 200;
  res.headers = {{"Content-Type", o->content_type},
                 {"x-goog-hash", "crc32c=" + o->crc32c},
                 {"x-goog-generation", std::to_string(o->generation)},
                 {"x-goog-metageneration", "1"},
                 {"x-goog-stored-content-length", std::to_string(size)},
                 {"x-goog-stored-content-encoding", "identity"},
                 {"ETag", "etag-" + std::to_string(o->generation)}};
  if (!o->md5.empty()) res.headers.emplace_back("x-goog-hash", "md5=" + o->md5);
  if (ranged)
    res.headers.emplace_back("Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" +
                                                  std::to_string(size));
  res.object = o;
  res.first = first;
  res.length = size == 0 ? 0 : last - first + 1;
}

void List(const Request& req, Response& res, const std::string& bucket) {
  const std::string prefix = req.Param("prefix"), delimiter = req.Param("delimiter");
  json items = json::array(), prefixes = json::array();
  std::string last_prefix;
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto it = g_objects.lower_bound({bucket, prefix}); it != g_objects.end() && it->first.first == bucket; ++it) {
    const std::string& name = it->first.second;
    if (name.compare(0, prefix.size(), prefix) != 0) break;
    if (!delimiter.empty()) {
      if (auto d = name.find(delimiter, prefix.size()); d != std::string::npos) {
        std::string p = name.substr(0, d + delimiter.size());
        if (p != last_prefix) prefixes.push_back(p);
        last_prefix = p;
        continue;
      }
    }
    items.push_back(Resource(*it->second));
  }
  json body = {{"kind", "storage#objects"}};
  if (!items.empty()) body["items"] = items;
  if (!prefixes.empty()) body["prefixes"] = prefixes;
  Json(res, body);
}

// Routes one request whose headers have been read; reads its body. False: close.
bool Route(Conn& c, const Request& req, Response& res) {
  static const std::string kUpload = "/upload/storage/v1/b/";
  static const std::string kResumable = "/resumable/upload/storage/v1/b/";  // gcloud's resumable path
  static const std::string kApi = "/storage/v1/b/";
  static const std::string kDownload = "/download/storage/v1/b/";  // mediaLink
  auto drain = [&] { return ReadBody(c, req, [](const char*, size_t) {}); };
  std::string rest;
  bool upload = false;
  if (req.path.rfind(kUpload, 0) == 0) {
    rest = req.path.substr(kUpload.size());
    upload = true;
  } else if (req.path.rfind(kResumable, 0) == 0) {
    rest = req.path.substr(kResumable.size());
    upload = true;
  } else if (req.path.rfind(kApi, 0) == 0) {
    rest = req.path.substr(kApi.size());
  } else if (req.path.rfind(kDownload, 0) == 0) {
    rest = req.path.substr(kDownload.size());
  } else {
    if (!drain()) return false;
    Error(res, 404, "notFound", "Not Found: " + req.path);
    return true;
  }
  const size_t slash = rest.find('/');
  const std::string bucket = PercentDecode(rest.substr(0, slash), false);
  rest = slash == std::string::npos ? "" : rest.substr(slash);
  if (rest.empty() && !upload && req.method == "GET") {  // bucket metadata
    if (!drain()) return false;
    Json(res, {{"kind", "storage#bucket"},
               {"id", bucket},
               {"name", bucket},
               {"location", "US"},
               {"storageClass", "STANDARD"},
               {"metageneration", "1"},
               {"timeCreated", "2026-01-01T00:00:00.000Z"},
               {"updated", "2026-01-01T00:00:00.000Z"}});
    return true;
  }
  std::optional<std::string> name;
  std::string action;  // "compose" in /o/NAME/compose
  if (rest.rfind("/o/", 0) == 0) {
    std::string segment = rest.substr(3);
    if (auto s = segment.find('/'); s != std::string::npos) {
      action = segment.substr(s + 1);
      segment.resize(s);
    }
    name = PercentDecode(segment, false);
  } else if (rest != "/o") {
    if (!drain()) return false;
    Error(res, 404, "notFound", "Not Found: " + req.path);
    return true;
  }
  if (upload && req.method == "POST") {
    const std::string type = req.Param("uploadType");
    if (type == "resumable") return ResumableInit(c, req, res, bucket);
    if (type == "multipart") return MultipartUpload(c, req, res, bucket);
    return MediaUpload(c, req, res, bucket);
  }
  if (upload && req.method == "PUT") return SessionPut(c, req, res);
  if (!upload && name && action == "compose" && req.method == "POST") return Compose(c, req, res, bucket, *name);
  if (!drain()) return false;
  if (!action.empty()) {
    Error(res, 400, "invalid", "unsupported request " + req.method + " " + req.path);
    return true;
  }
  if (!upload && req.method == "GET" && !name) {
    List(req, res, bucket);
    return true;
  }
  if (!upload && name && (req.method == "GET" || req.method == "DELETE")) {
    std::shared_ptr<const Object> o;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      auto it = g_objects.find({bucket, *name});
      if (it != g_objects.end()) o = it->second;
      if (auto g = ParamInt(req, "generation"); o && g && *g != o->generation) o.reset();
      if (o && !PreconditionOk(ParamInt(req, "ifGenerationMatch"), bucket, *name)) {
        Error(res, 412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.");
        return true;
      }
      if (o && req.method == "DELETE") g_objects.erase(it);
    }
    if (!o) {
      Error(res, 404, "notFound", "No such object: " + bucket + "/" + *name);
    } else if (req.method == "DELETE") {
      res.status = 204;
    } else if (req.Param("alt") == "media") {
      Download(req, res, o);
    } else {
      Json(res, Resource(*o));
    }
    return true;
  }
  Error(res, 400, "invalid", "unsupported request " + req.method + " " + req.path);
  return true;
}

bool ParseRequestHead(Conn& c, Request* req) {
  std::string line;
  do {
    if (!c.ReadLine(&line)) return false;
  } while (line.empty());
  const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1) return false;
  req->method = line.substr(0, sp1);
  req->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const size_t q = req->target.find('?');
  req->path = req->target.substr(0, q);
  if (q != std::string::npos) {
    std::string qs = req->target.substr(q + 1);
    size_t start = 0;
    while (start <= qs.size()) {
      size_t amp = qs.find('&', start);
      if (amp == std::string::npos) amp = qs.size();
      const std::string kv = qs.substr(start, amp - start);
      if (!kv.empty()) {
        const size_t eq = kv.find('=');
        req->query[PercentDecode(kv.substr(0, eq), true)] =
            eq == std::string::npos ? "" : PercentDecode(kv.substr(eq + 1), true);
      }
      start = amp + 1;
    }
  }
  while (true) {
    if (!c.ReadLine(&line)) return false;
    if (line.empty()) break;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char ch) { return std::tolower(ch); });
    size_t v = colon + 1;
    while (v < line.size() && (line[v] == ' ' || line[v] == '\t')) ++v;
    std::string value = line.substr(v);
    auto [it, inserted] = req->headers.emplace(key, value);
    if (!inserted) it->second += ", " + value;
  }
  return true;
}

bool SendResponse(Conn& c, const Request& req, const Response& res) {
  std::string head = "HTTP/1.1 " + std::to_string(res.status) + " " + Reason(res.status) + "\r\n";
  for (const auto& [k, v] : res.headers) head += k + ": " + v + "\r\n";
  const uint64_t length = res.object ? res.length : res.body.size();
  head += "Content-Length: " + std::to_string(length) + "\r\n\r\n";
  if (req.method == "HEAD") return c.WriteAll(head);
  if (!res.object) return c.WriteAll(head + res.body);
  return c.WriteAll(head) && c.WriteAll(res.object->data->data() + res.first, static_cast<size_t>(res.length));
}

void Serve(int fd) {
  Conn c(fd);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  while (true) {
    Request req;
    if (!ParseRequestHead(c, &req)) return;
    if (req.Header("expect") == "100-continue" && !c.WriteAll("HTTP/1.1 100 Continue\r\n\r\n")) return;
    Response res;
    bool keep;
    try {
      keep = Route(c, req, res);
    } catch (const std::exception& e) {  // stoull on a malformed number, bad_alloc
      Error(res, 400, "invalid", std::string("bad request: ") + e.what());
      keep = false;
    }
    if (!keep) return;
    if (!SendResponse(c, req, res)) return;
    std::string connection = req.Header("connection");
    std::transform(connection.begin(), connection.end(), connection.begin(), ::tolower);
    if (connection == "close") return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--port" && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--port N]\n", argv[0]);
      return 2;
    }
  }
  ::signal(SIGPIPE, SIG_IGN);
  const int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(ls, 128) != 0) {
    std::perror("fake_gcs_server_bench: bind/listen");
    return 1;
  }
  socklen_t len = sizeof(addr);
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &len);
  g_port = ntohs(addr.sin_port);
  std::printf("port=%d\n", g_port);
  std::fflush(stdout);
  while (true) {
    const int fd = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::perror("fake_gcs_server_bench: accept");
      return 1;
    }
    std::thread(Serve, fd).detach();
  }
}
