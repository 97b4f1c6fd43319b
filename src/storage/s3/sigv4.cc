// SigV4 signing and hashing helpers; see sigv4.h. Pure functions plus a
// signer whose key cache is guarded by a mutex (thread-safe).
#include "s3/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <time.h>

#include <algorithm>
#include <cctype>

namespace cohort::storage::s3 {

const char kEmptyPayloadSha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const char kUnsignedPayload[] = "UNSIGNED-PAYLOAD";

namespace {

constexpr char kAlgorithm[] = "AWS4-HMAC-SHA256";

std::string Digest(const EVP_MD* md, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, md, nullptr);
  return std::string(reinterpret_cast<const char*>(out), n);
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

// Trims leading/trailing whitespace and collapses inner runs of spaces/tabs to one space.
std::string CanonicalHeaderValue(std::string_view v) {
  std::string out;
  bool in_space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      in_space = true;
      continue;
    }
    if (in_space && !out.empty()) out += ' ';
    in_space = false;
    out += c;
  }
  return out;
}

}  // namespace

std::string HexEncode(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::string Sha256(std::string_view data) { return Digest(EVP_sha256(), data); }
std::string Md5(std::string_view data) { return Digest(EVP_md5(), data); }
std::string Sha256Hex(std::string_view data) { return HexEncode(Sha256(data)); }

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &n);
  return std::string(reinterpret_cast<const char*>(out), n);
}

std::string UriEncode(std::string_view s, bool encode_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~' || (c == '/' && !encode_slash)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string EncodePath(std::string_view raw_path) {
  if (raw_path.empty()) return "/";
  std::string out = UriEncode(raw_path, /*encode_slash=*/false);
  if (out.front() != '/') out.insert(out.begin(), '/');
  return out;
}

bool UriDecode(std::string_view s, bool plus_is_space, std::string* out) {
  out->clear();
  out->reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      *out += (plus_is_space && s[i] == '+') ? ' ' : s[i];
      continue;
    }
    if (i + 2 >= s.size()) return false;
    int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
    if (hi < 0 || lo < 0) return false;
    *out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

std::string AmzDate(std::chrono::system_clock::time_point t) {
  const time_t secs = std::chrono::system_clock::to_time_t(t);
  struct tm tm_utc;
  gmtime_r(&secs, &tm_utc);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm_utc);
  return buf;
}

SigV4Signer::SigV4Signer(Credentials credentials, std::string region, std::string service)
    : credentials_(std::move(credentials)), region_(std::move(region)), service_(std::move(service)) {}

std::string SigV4Signer::SigningKey(const std::string& date) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (cached_date_ != date) {
    std::string k = HmacSha256("AWS4" + credentials_.secret_access_key, date);
    k = HmacSha256(k, region_);
    k = HmacSha256(k, service_);
    cached_key_ = HmacSha256(k, "aws4_request");
    cached_date_ = date;
  }
  return cached_key_;
}

SignedRequest SigV4Signer::Sign(const SigningInput& input, std::chrono::system_clock::time_point now) const {
  SignedRequest out;
  const std::string amz_date = AmzDate(now);
  const std::string date = amz_date.substr(0, 8);
  const std::string payload_hash = input.payload_hash.empty() ? kEmptyPayloadSha256 : input.payload_hash;

  // Headers: lower-cased names; repeated names are joined with ',' in order.
  std::vector<std::pair<std::string, std::string>> headers;
  auto add = [&headers](std::string name, std::string value) {
    name = ToLower(name);
    for (auto& [k, v] : headers) {
      if (k == name) {
        v += "," + value;
        return;
      }
    }
    headers.emplace_back(std::move(name), std::move(value));
  };
  add("host", input.host);
  for (const auto& [k, v] : input.headers) {
    const std::string lower = ToLower(k);
    // The signer owns these; a caller's copy would be signed twice.
    if (lower == "host" || lower == "x-amz-date" || lower == "x-amz-content-sha256" ||
        lower == "x-amz-security-token" || lower == "authorization")
      continue;
    add(lower, v);
  }
  add("x-amz-date", amz_date);
  add("x-amz-content-sha256", payload_hash);
  if (!credentials_.session_token.empty()) add("x-amz-security-token", credentials_.session_token);
  std::stable_sort(headers.begin(), headers.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });

  std::string canonical_headers;
  for (const auto& [k, v] : headers) {
    canonical_headers += k + ":" + CanonicalHeaderValue(v) + "\n";
    if (!out.signed_headers.empty()) out.signed_headers += ';';
    out.signed_headers += k;
  }

  out.canonical_uri = EncodePath(input.path);
  std::vector<std::pair<std::string, std::string>> query;
  query.reserve(input.query.size());
  for (const auto& [k, v] : input.query) query.emplace_back(UriEncode(k, true), UriEncode(v, true));
  std::sort(query.begin(), query.end());
  for (const auto& [k, v] : query) {
    if (!out.canonical_query.empty()) out.canonical_query += '&';
    out.canonical_query += k + "=" + v;
  }

  out.canonical_request = input.method + "\n" + out.canonical_uri + "\n" + out.canonical_query + "\n" +
                          canonical_headers + "\n" + out.signed_headers + "\n" + payload_hash;
  const std::string scope = date + "/" + region_ + "/" + service_ + "/aws4_request";
  out.string_to_sign =
      std::string(kAlgorithm) + "\n" + amz_date + "\n" + scope + "\n" + Sha256Hex(out.canonical_request);
  out.signature = HexEncode(HmacSha256(SigningKey(date), out.string_to_sign));
  out.authorization = std::string(kAlgorithm) + " Credential=" + credentials_.access_key_id + "/" + scope +
                      ", SignedHeaders=" + out.signed_headers + ", Signature=" + out.signature;
  out.headers = std::move(headers);
  out.headers.emplace_back("authorization", out.authorization);
  return out;
}

}  // namespace cohort::storage::s3
