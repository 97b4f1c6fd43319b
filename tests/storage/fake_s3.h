// FakeS3: a small, strict S3 server on cpp-httplib for the behaviours that
// s3rver lacks (AbortMultipartUpload, If-None-Match: *, scripted 5xx/4xx
// faults, checksum echoes). Path-style only: /BUCKET/KEY.
//
// Strictness, checked on every request (a failure answers 403
// SignatureDoesNotMatch and is recorded in violations()): the Authorization
// header has the SigV4 shape with the expected access key, date and region;
// SignedHeaders is sorted and names host, x-amz-date, x-amz-content-sha256,
// every x-amz-* header sent (x-amz-security-token when a session token is
// expected), content-md5, range, if-none-match and content-type when sent;
// x-amz-content-sha256 is the SHA-256 of the body received; Content-MD5 is
// the MD5 of the body; the path is percent-encoded the S3 way. This checks
// the request's form independently of our signer, not the signature value
// (sigv4_test.cc compares that against AWS's own signer).
//
// Objects are stored in memory. Multipart: parts other than the last must be
// >= 5 MiB and Complete must list parts in ascending order with their ETags.
// Used by s3_faults_test.cc; the server runs on its own threads; every
// accessor locks.
#pragma once

#include <httplib.h>
#include <openssl/evp.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace cohort::storage::testing {

class FakeS3 {
 public:
  struct Request {
    std::string method;
    std::string target;  // raw "/bucket/key?query"
    std::string bucket;
    std::string key;                             // decoded
    std::map<std::string, std::string> query;    // decoded
    std::map<std::string, std::string> headers;  // lower-cased names
    std::string body;
    bool Has(const std::string& param) const { return query.count(param) > 0; }
  };
  struct Reply {
    int status = 200;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  // Called for each request that passed the checks, before normal handling;
  // returning a reply injects it. Runs on a server thread (under no lock).
  using Hook = std::function<std::optional<Reply>(const Request&)>;

  explicit FakeS3(std::string access_key = "AKIDFAKE", std::string region = "us-east-1",
                  std::string session_token = "")
      : access_key_(std::move(access_key)),
        region_(std::move(region)),
        session_token_(std::move(session_token)) {
    auto handler = [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); };
    server_.Get(".*", handler);
    server_.Put(".*", handler);
    server_.Post(".*", handler);
    server_.Delete(".*", handler);
    server_.set_payload_max_length(64ull << 20);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeS3() {
    server_.stop();
    thread_.join();
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  void SetHook(Hook hook) {
    std::lock_guard<std::mutex> lock(mu_);
    hook_ = std::move(hook);
  }
  // Status for AbortMultipartUpload (s3rver answers 405).
  void SetAbortStatus(int status) {
    std::lock_guard<std::mutex> lock(mu_);
    abort_status_ = status;
  }
  void PutObject(const std::string& bucket, const std::string& key, std::string data) {
    std::lock_guard<std::mutex> lock(mu_);
    objects_[bucket + "/" + key] = std::move(data);
  }
  std::optional<std::string> Object(const std::string& bucket, const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = objects_.find(bucket + "/" + key);
    if (it == objects_.end()) return std::nullopt;
    return it->second;
  }
  std::vector<Request> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }
  std::vector<std::string> violations() const {
    std::lock_guard<std::mutex> lock(mu_);
    return violations_;
  }
  size_t open_uploads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return uploads_.size();
  }
  // Requests matching method and (optionally) having query parameter `param`.
  int Count(const std::string& method, const std::string& param = "") const {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const auto& r : log_)
      if (r.method == method && (param.empty() || r.Has(param))) ++n;
    return n;
  }

  static std::string Hex(const unsigned char* p, size_t n) {
    static const char* kHex = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; ++i) {
      s += kHex[p[i] >> 4];
      s += kHex[p[i] & 15];
    }
    return s;
  }
  static std::string DigestHex(const EVP_MD* md, const std::string& data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data.data(), data.size(), out, &n, md, nullptr);
    return Hex(out, n);
  }
  static std::string Md5Base64(const std::string& data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data.data(), data.size(), md, &n, EVP_md5(), nullptr);
    unsigned char b64[64];
    const int len = EVP_EncodeBlock(b64, md, static_cast<int>(n));
    return std::string(reinterpret_cast<char*>(b64), len);
  }
  static std::string ErrorXml(const std::string& code, const std::string& message) {
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + code + "</Code><Message>" + message +
           "</Message><RequestId>FAKE</RequestId></Error>";
  }

 private:
  struct Upload {
    std::string bucket, key;
    std::map<int, std::string> parts;
  };

  static bool Unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
  }
  // Decodes a strictly encoded component (only unreserved, '/' when allowed, %XX uppercase).
  static bool StrictDecode(const std::string& s, bool allow_slash, std::string* out) {
    out->clear();
    for (size_t i = 0; i < s.size(); ++i) {
      const unsigned char c = s[i];
      if (Unreserved(c) || (allow_slash && c == '/')) {
        *out += static_cast<char>(c);
      } else if (c == '%' && i + 2 < s.size()) {
        auto hex = [](char h) {
          return (h >= '0' && h <= '9') ? h - '0' : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
        };
        const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
        if (hi < 0 || lo < 0) return false;
        *out += static_cast<char>(hi * 16 + lo);
        i += 2;
      } else {
        return false;
      }
    }
    return true;
  }

  std::string Check(const Request& r) {
    auto header = [&](const std::string& name) -> std::string {
      auto it = r.headers.find(name);
      return it == r.headers.end() ? "" : it->second;
    };
    static const std::regex kAuth(
        "^AWS4-HMAC-SHA256 Credential=([^/]+)/([0-9]{8})/([^/]+)/s3/aws4_request, "
        "SignedHeaders=([a-z0-9;-]+), Signature=[0-9a-f]{64}$");
    std::smatch m;
    const std::string auth = header("authorization");
    if (!std::regex_match(auth, m, kAuth)) return "malformed Authorization: '" + auth + "'";
    if (m[1] != access_key_) return "access key " + m[1].str();
    if (m[3] != region_) return "region " + m[3].str();
    const std::string date = header("x-amz-date");
    static const std::regex kDate("^[0-9]{8}T[0-9]{6}Z$");
    if (!std::regex_match(date, kDate)) return "x-amz-date '" + date + "'";
    if (date.substr(0, 8) != m[2]) return "scope date differs from x-amz-date";
    std::tm tm{};
    strptime(date.c_str(), "%Y%m%dT%H%M%SZ", &tm);
    if (std::llabs(static_cast<long long>(timegm(&tm) - std::time(nullptr))) > 15 * 60) return "clock skew";
    // SignedHeaders: sorted, unique, complete.
    std::vector<std::string> signed_list;
    std::string rest = m[4].str();
    for (size_t start = 0;;) {
      size_t semi = rest.find(';', start);
      signed_list.push_back(rest.substr(start, semi - start));
      if (semi == std::string::npos) break;
      start = semi + 1;
    }
    for (size_t i = 1; i < signed_list.size(); ++i)
      if (!(signed_list[i - 1] < signed_list[i])) return "SignedHeaders not sorted/unique: " + rest;
    const std::set<std::string> signed_set(signed_list.begin(), signed_list.end());
    for (const char* required : {"host", "x-amz-date", "x-amz-content-sha256"})
      if (!signed_set.count(required)) return std::string("SignedHeaders lacks ") + required;
    for (const auto& name : signed_set)
      if (!r.headers.count(name)) return "signed header " + name + " was not sent";
    for (const auto& [name, value] : r.headers) {
      const bool must = name.rfind("x-amz-", 0) == 0 || name == "content-md5" || name == "range" ||
                        name == "if-none-match" || name == "if-match" || name == "content-type";
      if (must && !signed_set.count(name)) return "header " + name + " is sent but not signed";
    }
    if (!session_token_.empty() && header("x-amz-security-token") != session_token_)
      return "x-amz-security-token missing or wrong";
    if (session_token_.empty() && r.headers.count("x-amz-security-token")) return "unexpected session token";
    if (header("host") != "127.0.0.1:" + std::to_string(port_)) return "host '" + header("host") + "'";
    // Payload integrity.
    if (header("x-amz-content-sha256") != DigestHex(EVP_sha256(), r.body))
      return "x-amz-content-sha256 is not the SHA-256 of the body";
    if (r.headers.count("content-md5") && header("content-md5") != Md5Base64(r.body))
      return "Content-MD5 is not the MD5 of the body";
    return "";
  }

  void Send(httplib::Response& res, const Reply& reply) {
    res.status = reply.status;
    for (const auto& [k, v] : reply.headers) res.set_header(k, v);
    res.set_content(reply.body, reply.body.empty() ? "text/plain" : "application/xml");
  }

  void Handle(const httplib::Request& hreq, httplib::Response& res) {
    Request r;
    r.method = hreq.method;
    r.target = hreq.target;
    r.body = hreq.body;
    for (const auto& [k, v] : hreq.headers) {
      std::string lower = k;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[lower] = v;
    }
    std::string violation;
    const size_t qmark = r.target.find('?');
    const std::string raw_path = r.target.substr(0, qmark);
    std::string path;
    if (!StrictDecode(raw_path, true, &path) || path.empty() || path[0] != '/') {
      violation = "path not strictly encoded: " + raw_path;
    } else {
      const size_t slash = path.find('/', 1);
      r.bucket = path.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
      if (slash != std::string::npos) r.key = path.substr(slash + 1);
    }
    if (qmark != std::string::npos) {
      const std::string q = r.target.substr(qmark + 1);
      for (size_t start = 0; start <= q.size();) {
        size_t amp = q.find('&', start);
        if (amp == std::string::npos) amp = q.size();
        const std::string pair = q.substr(start, amp - start);
        const size_t eq = pair.find('=');
        std::string name, value;
        if (eq == std::string::npos || !StrictDecode(pair.substr(0, eq), false, &name) ||
            !StrictDecode(pair.substr(eq + 1), false, &value))
          violation = "query not strictly encoded: " + q;
        r.query[name] = value;
        start = amp + 1;
      }
    }
    if (violation.empty()) violation = Check(r);
    Hook hook;
    {
      std::lock_guard<std::mutex> lock(mu_);
      log_.push_back(r);
      if (!violation.empty()) violations_.push_back(r.method + " " + r.target + ": " + violation);
      hook = hook_;
    }
    if (!violation.empty()) return Send(res, {403, ErrorXml("SignatureDoesNotMatch", violation), {}});
    if (hook) {
      if (std::optional<Reply> injected = hook(r)) return Send(res, *injected);
    }
    Send(res, Serve(r));
  }

  Reply Serve(const Request& r) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string id = r.bucket + "/" + r.key;
    auto header = [&](const std::string& name) -> std::string {
      auto it = r.headers.find(name);
      return it == r.headers.end() ? "" : it->second;
    };
    auto quoted_md5 = [](const std::string& data) { return "\"" + DigestHex(EVP_md5(), data) + "\""; };
    if (r.key.empty() && r.method == "GET" && r.Has("list-type")) return List(r);
    if (r.key.empty()) return {501, ErrorXml("NotImplemented", "bucket-level requests"), {}};

    if (r.method == "PUT" && r.Has("uploadId")) {
      auto it = uploads_.find(r.query.at("uploadId"));
      if (it == uploads_.end()) return {404, ErrorXml("NoSuchUpload", "no such upload"), {}};
      const int n = std::atoi(r.query.at("partNumber").c_str());
      if (n < 1 || n > 10000) return {400, ErrorXml("InvalidArgument", "part number"), {}};
      it->second.parts[n] = r.body;
      return {200, "", {{"ETag", quoted_md5(r.body)}}};
    }
    if (r.method == "PUT") {
      if (header("if-none-match") == "*" && objects_.count(id))
        return {
            412,
            ErrorXml("PreconditionFailed", "At least one of the pre-conditions you specified did not hold"),
            {}};
      objects_[id] = r.body;
      Reply reply{200, "", {{"ETag", quoted_md5(r.body)}}};
      if (r.headers.count("x-amz-checksum-crc32c"))
        reply.headers.emplace_back("x-amz-checksum-crc32c", header("x-amz-checksum-crc32c"));
      return reply;
    }
    if (r.method == "POST" && r.Has("uploads")) {
      const std::string upload_id = "upload-" + std::to_string(++next_upload_);
      uploads_[upload_id] = {r.bucket, r.key, {}};
      return {200,
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult><Bucket>" +
                  r.bucket + "</Bucket><Key>k</Key><UploadId>" + upload_id +
                  "</UploadId></InitiateMultipartUploadResult>",
              {}};
    }
    if (r.method == "POST" && r.Has("uploadId")) {
      auto it = uploads_.find(r.query.at("uploadId"));
      if (it == uploads_.end()) return {404, ErrorXml("NoSuchUpload", "no such upload"), {}};
      static const std::regex kPart(
          "<Part><PartNumber>([0-9]+)</PartNumber><ETag>(&quot;|\")([0-9a-f]{32})(&quot;|\")</ETag></Part>");
      std::string assembled;
      int expected = 1;
      size_t count = 0;
      for (auto pm = std::sregex_iterator(r.body.begin(), r.body.end(), kPart); pm != std::sregex_iterator();
           ++pm, ++expected, ++count) {
        const int n = std::stoi((*pm)[1].str());
        auto part = it->second.parts.find(n);
        if (n != expected || part == it->second.parts.end() ||
            "\"" + (*pm)[3].str() + "\"" != quoted_md5(part->second))
          return {400, ErrorXml("InvalidPart", "part " + std::to_string(n)), {}};
        assembled += part->second;
      }
      if (count == 0 || count != it->second.parts.size())
        return {400, ErrorXml("InvalidPart", "parts listed do not match parts uploaded"), {}};
      for (const auto& [n, data] : it->second.parts)
        if (n < static_cast<int>(count) && data.size() < (5u << 20))
          return {400, ErrorXml("EntityTooSmall", "part " + std::to_string(n) + " is below 5 MiB"), {}};
      if (header("if-none-match") == "*" && objects_.count(id))
        return {412, ErrorXml("PreconditionFailed", "object exists"), {}};
      objects_[id] = assembled;
      uploads_.erase(it);
      return {200,
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult><Bucket>" +
                  r.bucket + "</Bucket><Key>k</Key><ETag>&quot;" + DigestHex(EVP_md5(), assembled) + "-" +
                  std::to_string(count) + "&quot;</ETag></CompleteMultipartUploadResult>",
              {}};
    }
    if (r.method == "DELETE" && r.Has("uploadId")) {
      if (abort_status_ != 204)
        return {abort_status_, ErrorXml("MethodNotAllowed", "The specified method is not allowed"), {}};
      uploads_.erase(r.query.at("uploadId"));
      return {204, "", {}};
    }
    if (r.method == "DELETE") {
      objects_.erase(id);
      return {204, "", {}};
    }
    if (r.method == "GET" || r.method == "HEAD") {
      auto it = objects_.find(id);
      if (it == objects_.end())
        return {404, r.method == "HEAD" ? "" : ErrorXml("NoSuchKey", "no such key"), {}};
      // httplib cuts the body to a Range header itself (adding Content-Range) and keeps the status we set.
      return {r.headers.count("range") ? 206 : 200,
              it->second,
              {{"ETag", quoted_md5(it->second)}, {"Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"}}};
    }
    return {405, ErrorXml("MethodNotAllowed", r.method), {}};
  }

  // AWS's encoding-type=url form: unreserved and '/' kept, space as '+', the rest %XX.
  static std::string AwsUrlEncode(const std::string& s) {
    static const char* kHex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
      if (Unreserved(c) || c == '/') {
        out += static_cast<char>(c);
      } else if (c == ' ') {
        out += '+';
      } else {
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
    }
    return out;
  }
  static std::string XmlEscape(const std::string& s) {
    std::string out;
    for (char c : s) {
      if (c == '&')
        out += "&amp;";
      else if (c == '<')
        out += "&lt;";
      else if (c == '>')
        out += "&gt;";
      else
        out += c;
    }
    return out;
  }

  // ListObjectsV2 (called with mu_ held). Tokens are opaque: "t+/=" + hex of the last entry.
  Reply List(const Request& r) {
    auto q = [&](const std::string& name) { return r.Has(name) ? r.query.at(name) : std::string(); };
    if (q("list-type") != "2") return {400, ErrorXml("InvalidArgument", "list-type"), {}};
    const std::string prefix = q("prefix"), delimiter = q("delimiter"), token = q("continuation-token");
    const bool url = q("encoding-type") == "url";
    const int max_keys = r.Has("max-keys") ? std::atoi(q("max-keys").c_str()) : 1000;
    std::string after;
    if (!token.empty()) {
      if (token.rfind("t+/=", 0) != 0)
        return {400, ErrorXml("InvalidArgument", "bad continuation token"), {}};
      for (size_t i = 4; i + 1 < token.size(); i += 2)
        after += static_cast<char>(std::stoi(token.substr(i, 2), nullptr, 16));
    }
    struct Entry {
      std::string name;
      bool is_prefix;
      size_t size;
      std::string etag;
    };
    std::vector<Entry> entries;
    const std::string bucket_prefix = r.bucket + "/";
    for (const auto& [id, data] : objects_) {
      if (id.rfind(bucket_prefix, 0) != 0) continue;
      const std::string key = id.substr(bucket_prefix.size());
      if (key.rfind(prefix, 0) != 0) continue;
      size_t d = delimiter.empty() ? std::string::npos : key.find(delimiter, prefix.size());
      Entry e{key, false, data.size(), DigestHex(EVP_md5(), data)};
      if (d != std::string::npos) e = {key.substr(0, d + delimiter.size()), true, 0, ""};
      if (!after.empty() && e.name <= after) continue;
      if (!entries.empty() && entries.back().is_prefix && entries.back().name == e.name) continue;
      entries.push_back(e);
    }
    const bool truncated = static_cast<int>(entries.size()) > max_keys;
    if (truncated) entries.resize(max_keys);
    auto enc = [&](const std::string& s) { return XmlEscape(url ? AwsUrlEncode(s) : s); };
    std::string xml =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult "
        "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
    xml += "<Name>" + r.bucket + "</Name><Prefix>" + enc(prefix) + "</Prefix><MaxKeys>" +
           std::to_string(max_keys) + "</MaxKeys>";
    if (url) xml += "<EncodingType>url</EncodingType>";
    xml += std::string("<IsTruncated>") + (truncated ? "true" : "false") + "</IsTruncated>";
    for (const auto& e : entries) {
      if (e.is_prefix) continue;
      xml += "<Contents><Key>" + enc(e.name) +
             "</Key><LastModified>2015-10-21T07:28:00.000Z</LastModified><ETag>&quot;" + e.etag +
             "&quot;</ETag><Size>" + std::to_string(e.size) +
             "</Size><StorageClass>STANDARD</StorageClass></Contents>";
    }
    for (const auto& e : entries)
      if (e.is_prefix) xml += "<CommonPrefixes><Prefix>" + enc(e.name) + "</Prefix></CommonPrefixes>";
    if (truncated) {
      static const char* kHex = "0123456789abcdef";
      std::string next = "t+/=";
      for (unsigned char c : entries.back().name) {
        next += kHex[c >> 4];
        next += kHex[c & 15];
      }
      xml += "<NextContinuationToken>" + next + "</NextContinuationToken>";
    }
    xml += "<KeyCount>" + std::to_string(entries.size()) + "</KeyCount></ListBucketResult>";
    return {200, xml, {}};
  }

  const std::string access_key_, region_, session_token_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  mutable std::mutex mu_;
  Hook hook_;
  int abort_status_ = 204;
  int next_upload_ = 0;
  std::map<std::string, std::string> objects_;
  std::map<std::string, Upload> uploads_;
  std::vector<Request> log_;
  std::vector<std::string> violations_;
};

}  // namespace cohort::storage::testing
