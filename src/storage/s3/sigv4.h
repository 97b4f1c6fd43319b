// AWS Signature Version 4 (header-based, "AWS4-HMAC-SHA256") for S3 and
// S3-compatible stores, plus the hashing and S3 URI-encoding helpers it
// needs (OpenSSL). See docs: /work/shared/spec/storage.md section 3.2.
//
// Called by S3Store (s3_store.cc) once per HTTP attempt (x-amz-date must be
// fresh on each retry) and by tests/storage/sigv4_test.cc. SigV4Signer is
// thread-safe: the derived signing key is cached per (day, region) behind a
// mutex; everything else is a pure function.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cohort::storage::s3 {

// Static or temporary (session) credentials.
struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // AWS_SESSION_TOKEN; sent and signed as x-amz-security-token
};

// Lowercase hex of bytes.
std::string HexEncode(std::string_view bytes);
// Raw 32-byte SHA-256 / HMAC-SHA256 and the 16-byte MD5 digest.
std::string Sha256(std::string_view data);
std::string HmacSha256(std::string_view key, std::string_view data);
std::string Md5(std::string_view data);
// Lowercase hex SHA-256: the value of x-amz-content-sha256 for a signed payload.
std::string Sha256Hex(std::string_view data);
// Hex SHA-256 of the empty string ("e3b0c442...b855").
extern const char kEmptyPayloadSha256[];
// The literal payload hash for unsigned (streamed) bodies.
extern const char kUnsignedPayload[];

// S3's URI encoding: A-Z a-z 0-9 - . _ ~ are kept, every other byte becomes
// %XX (uppercase hex; space is %20). '/' is kept unless encode_slash.
std::string UriEncode(std::string_view s, bool encode_slash);
// Encodes each '/'-separated segment of a raw path ("/bucket/a b/c" ->
// "/bucket/a%20b/c"). S3 encodes once (no double encoding); "" -> "/".
std::string EncodePath(std::string_view raw_path);
// Reverse of percent-encoding. With plus_is_space, '+' decodes to ' ' (keys
// in ListObjectsV2 replies with encoding-type=url: AWS writes a space as '+'
// and a literal '+' as %2B). False on a malformed escape.
bool UriDecode(std::string_view s, bool plus_is_space, std::string* out);

// "20130524T000000Z" and "20130524" (UTC).
std::string AmzDate(std::chrono::system_clock::time_point t);

struct SigningInput {
  std::string method;  // "GET", "PUT", ...
  // The Host header exactly as sent: "bucket.s3.us-east-1.amazonaws.com",
  // "127.0.0.1:4568" (a port is part of it when not the scheme's default).
  std::string host;
  std::string path = "/";  // raw (not encoded) absolute path: "/bucket/key with spaces"
  // Raw (not encoded) query parameters; a valueless one ("uploads") has "".
  std::vector<std::pair<std::string, std::string>> query;
  // Further headers to send and sign (range, content-md5, content-type,
  // if-none-match, x-amz-checksum-crc32c, ...). Names in any case.
  std::vector<std::pair<std::string, std::string>> headers;
  // Hex SHA-256 of the body, or kUnsignedPayload; "" means the empty body.
  std::string payload_hash;
};

struct SignedRequest {
  std::string canonical_uri;    // encoded path
  std::string canonical_query;  // sorted, encoded; also usable as the URL's query string
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;  // "host;range;x-amz-content-sha256;x-amz-date"
  std::string signature;       // lowercase hex
  std::string authorization;   // the Authorization header value
  // Every header to send: host, the input headers, x-amz-date,
  // x-amz-content-sha256, x-amz-security-token (with a session token) and
  // authorization. Names lower-cased.
  std::vector<std::pair<std::string, std::string>> headers;
};

class SigV4Signer {
 public:
  SigV4Signer(Credentials credentials, std::string region, std::string service = "s3");

  SignedRequest Sign(const SigningInput& input, std::chrono::system_clock::time_point now) const;

  const Credentials& credentials() const { return credentials_; }
  const std::string& region() const { return region_; }

 private:
  // kSigning for a YYYYMMDD date (cached for the last date used).
  std::string SigningKey(const std::string& date) const;

  Credentials credentials_;
  std::string region_;
  std::string service_;
  mutable std::mutex mu_;
  mutable std::string cached_date_;
  mutable std::string cached_key_;
};

}  // namespace cohort::storage::s3
