// fuzz_s3_xml: the S3 reply parsing of the s3:// backend (src/storage/s3/).
//
// The reply decoders of s3_store.cc (ParseError, the ListObjectsV2 loop of
// S3Store::List, the UploadId / ETag reads of the multipart upload) live in
// an anonymous namespace or inside S3Store methods that first make an HTTP
// call, so they cannot be called directly. The nearest reachable entry points
// are the extractor they are built on, s3/s3_xml.h (XmlElements, XmlText,
// XmlHas, XmlUnescape, XmlEscape), and s3/sigv4.h's UriDecode (the
// encoding-type=url key decoder). The target feeds the fuzzed body through
// the same sequence of calls s3_store.cc makes for each reply kind:
//   - an error reply: XmlElements(body, "Error") -> XmlText(Code / Message);
//   - a ListObjectsV2 reply: XmlHas(ListBucketResult), EncodingType,
//     Contents -> Key (UriDecode with '+' as space) / Size (strtoull) /
//     ETag (unquoted) / LastModified, CommonPrefixes -> Prefix, IsTruncated,
//     NextContinuationToken;
//   - InitiateMultipartUpload / CompleteMultipartUpload: UploadId, ETag.
// Properties checked: every element XmlElements returns lies inside the
// input; XmlUnescape(XmlEscape(s)) == s; UriDecode(UriEncode(s)) == s;
// unescaping never grows the text by more than the entity expansion allows.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "s3/s3_xml.h"
#include "s3/sigv4.h"

namespace {

namespace s3 = cohort::storage::s3;

// s3_store.cc's Unquote.
std::string Unquote(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}

void CheckInside(std::string_view outer, const std::vector<std::string_view>& elems, std::string_view tag) {
  for (std::string_view e : elems) {
    if (e.empty()) continue;  // <tag/> yields a default-constructed view
    FUZZ_CHECK(e.data() >= outer.data() && e.data() + e.size() <= outer.data() + outer.size(),
               "XmlElements(" + std::string(tag) + ") returned text outside the document");
  }
}

std::vector<std::string_view> Elements(std::string_view xml, std::string_view tag) {
  auto elems = s3::XmlElements(xml, tag);
  CheckInside(xml, elems, tag);
  return elems;
}

void CheckRoundTrips(std::string_view text) {
  FUZZ_CHECK(s3::XmlUnescape(s3::XmlEscape(text)) == text, "XmlUnescape(XmlEscape(s)) != s");
  std::string decoded;
  for (bool encode_slash : {false, true}) {
    std::string encoded = s3::UriEncode(text, encode_slash);
    FUZZ_CHECK(s3::UriDecode(encoded, /*plus_is_space=*/false, &decoded) && decoded == text,
               "UriDecode(UriEncode(s)) != s");
    FUZZ_CHECK(s3::UriDecode(encoded, /*plus_is_space=*/true, &decoded) && decoded == text,
               "UriDecode(UriEncode(s), plus_is_space) != s");
  }
  (void)s3::EncodePath(text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);

  // ParseError (any non-2xx reply, and 200 replies that may carry an error).
  auto errors = Elements(body, "Error");
  if (!errors.empty()) {
    (void)s3::XmlText(errors.front(), "Code");
    (void)s3::XmlText(errors.front(), "Message");
    (void)Elements(errors.front(), "Code");
  }

  // S3Store::List.
  if (s3::XmlHas(body, "ListBucketResult")) {
    const bool url_encoded = s3::XmlText(body, "EncodingType") == "url";
    auto decode = [&](std::string text, std::string* out) -> bool {
      if (!url_encoded) {
        *out = std::move(text);
        return true;
      }
      return s3::UriDecode(text, /*plus_is_space=*/true, out);
    };
    for (std::string_view contents : Elements(body, "Contents")) {
      std::string key;
      if (!decode(s3::XmlText(contents, "Key"), &key)) break;
      (void)std::strtoull(s3::XmlText(contents, "Size").c_str(), nullptr, 10);
      (void)Unquote(s3::XmlText(contents, "ETag"));
      (void)s3::XmlText(contents, "LastModified");
      (void)Elements(contents, "Key");
    }
    for (std::string_view common : Elements(body, "CommonPrefixes")) {
      std::string prefix;
      if (!decode(s3::XmlText(common, "Prefix"), &prefix)) break;
    }
    if (s3::XmlText(body, "IsTruncated") == "true") (void)s3::XmlText(body, "NextContinuationToken");
  }

  // Multipart: CreateMultipartUpload's UploadId, CompleteMultipartUpload's ETag.
  (void)s3::XmlText(body, "UploadId");
  (void)Unquote(s3::XmlText(body, "ETag"));

  // The helpers on the whole input.
  std::string unescaped = s3::XmlUnescape(body);
  // The longest expansion is "&#N;" (4+ bytes) -> 4 UTF-8 bytes: never longer.
  FUZZ_CHECK(unescaped.size() <= body.size(), "XmlUnescape grew the text");
  std::string decoded;
  if (s3::UriDecode(body, /*plus_is_space=*/true, &decoded)) {
    FUZZ_CHECK(decoded.size() <= body.size(), "UriDecode grew the text");
  }
  CheckRoundTrips(std::string_view(body).substr(0, 4096));
  return 0;
}
