// SigV4 signer tests: AWS's published S3 example (spec section 3.2) exactly,
// the encoding rules, and cross-signing against AWS's own JavaScript signer
// (@aws-sdk/signature-v4 via tools/emulators/s3/sign.js; skipped when
// node/npm or the npm registry are unavailable).
#include "s3/sigv4.h"

#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "storage/s3_testing.h"

namespace cohort::storage::s3 {
namespace {

using std::chrono::system_clock;

system_clock::time_point At(int year, int month, int day, int h, int m, int s) {
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = s;
  return system_clock::from_time_t(timegm(&tm));
}

const Credentials kExampleCredentials{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};

TEST(SigV4Test, AwsGetObjectExample) {
  SigV4Signer signer(kExampleCredentials, "us-east-1");
  SigningInput in;
  in.method = "GET";
  in.host = "examplebucket.s3.amazonaws.com";
  in.path = "/test.txt";
  in.headers = {{"Range", "bytes=0-9"}};
  in.payload_hash = kEmptyPayloadSha256;
  const SignedRequest out = signer.Sign(in, At(2013, 5, 24, 0, 0, 0));

  EXPECT_EQ(out.canonical_request,
            "GET\n"
            "/test.txt\n"
            "\n"
            "host:examplebucket.s3.amazonaws.com\n"
            "range:bytes=0-9\n"
            "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-amz-date:20130524T000000Z\n"
            "\n"
            "host;range;x-amz-content-sha256;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex(out.canonical_request),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(out.string_to_sign,
            "AWS4-HMAC-SHA256\n"
            "20130524T000000Z\n"
            "20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(out.signed_headers, "host;range;x-amz-content-sha256;x-amz-date");
  EXPECT_EQ(out.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_EQ(out.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");

  // The headers to send: exactly the signed ones plus authorization.
  std::map<std::string, std::string> sent(out.headers.begin(), out.headers.end());
  EXPECT_EQ(sent.size(), 5u);
  EXPECT_EQ(sent["host"], "examplebucket.s3.amazonaws.com");
  EXPECT_EQ(sent["range"], "bytes=0-9");
  EXPECT_EQ(sent["x-amz-date"], "20130524T000000Z");
  EXPECT_EQ(sent["x-amz-content-sha256"], kEmptyPayloadSha256);
  EXPECT_EQ(sent["authorization"], out.authorization);
}

TEST(SigV4Test, EmptyPayloadHashIsTheDefault) {
  SigV4Signer signer(kExampleCredentials, "us-east-1");
  SigningInput in;
  in.method = "GET";
  in.host = "examplebucket.s3.amazonaws.com";
  in.path = "/test.txt";
  in.headers = {{"range", "  bytes=0-9 "}};  // trimmed
  EXPECT_EQ(signer.Sign(in, At(2013, 5, 24, 0, 0, 0)).signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_EQ(Sha256Hex(""), kEmptyPayloadSha256);
}

TEST(SigV4Test, UriEncodingFollowsS3Rules) {
  EXPECT_EQ(UriEncode("AZaz09-._~", true), "AZaz09-._~");
  EXPECT_EQ(UriEncode("a b+c%é/d", true), "a%20b%2Bc%25%C3%A9%2Fd");
  EXPECT_EQ(UriEncode("a b/c", false), "a%20b/c");
  EXPECT_EQ(UriEncode("!'()*=&", true), "%21%27%28%29%2A%3D%26");
  EXPECT_EQ(EncodePath(""), "/");
  EXPECT_EQ(EncodePath("/bucket/dir/a b+c%é.txt"), "/bucket/dir/a%20b%2Bc%25%C3%A9.txt");
  EXPECT_EQ(EncodePath("/bucket//x/"), "/bucket//x/");  // no normalisation
  std::string decoded;
  ASSERT_TRUE(UriDecode("a%20b%2Bc%25%C3%A9+x", false, &decoded));
  EXPECT_EQ(decoded, "a b+c%é+x");
  ASSERT_TRUE(UriDecode("a+b%2Bc", true, &decoded));  // ListObjectsV2 encoding-type=url
  EXPECT_EQ(decoded, "a b+c");
  EXPECT_FALSE(UriDecode("bad%2", false, &decoded));
  EXPECT_FALSE(UriDecode("bad%zz", false, &decoded));
}

TEST(SigV4Test, CanonicalQueryAndHeaders) {
  SigV4Signer signer({"AKID", "SECRET", "SESSION"}, "eu-west-1");
  SigningInput in;
  in.method = "GET";
  in.host = "127.0.0.1:4568";
  in.path = "/test-bucket";
  in.query = {{"prefix", "runs/a b/"}, {"list-type", "2"}, {"delimiter", "/"}, {"uploads", ""}};
  in.headers = {{"X-Amz-Meta-Note", "  two   spaced\twords  "}, {"Content-Type", "text/plain"}};
  const SignedRequest out = signer.Sign(in, At(2024, 2, 29, 23, 59, 59));
  EXPECT_EQ(out.canonical_query, "delimiter=%2F&list-type=2&prefix=runs%2Fa%20b%2F&uploads=");
  EXPECT_EQ(out.canonical_uri, "/test-bucket");
  EXPECT_EQ(out.signed_headers,
            "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-note;x-amz-security-token");
  EXPECT_NE(out.canonical_request.find("\nx-amz-meta-note:two spaced words\n"), std::string::npos)
      << out.canonical_request;
  EXPECT_NE(out.canonical_request.find("\nx-amz-security-token:SESSION\n"), std::string::npos);
  EXPECT_NE(out.canonical_request.find("\nx-amz-date:20240229T235959Z\n"), std::string::npos);
  EXPECT_NE(out.authorization.find("Credential=AKID/20240229/eu-west-1/s3/aws4_request, "),
            std::string::npos);
  std::map<std::string, std::string> sent(out.headers.begin(), out.headers.end());
  EXPECT_EQ(sent["x-amz-security-token"], "SESSION");
}

TEST(SigV4Test, SignerOwnedHeadersAreNotDuplicated) {
  SigV4Signer signer(kExampleCredentials, "us-east-1");
  SigningInput in;
  in.method = "GET";
  in.host = "examplebucket.s3.amazonaws.com";
  in.path = "/test.txt";
  in.headers = {{"Range", "bytes=0-9"}, {"X-Amz-Date", "19990101T000000Z"}, {"Host", "evil"}};
  EXPECT_EQ(signer.Sign(in, At(2013, 5, 24, 0, 0, 0)).signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

// --- Cross-signing against @aws-sdk/signature-v4 -------------------------------

struct CrossCase {
  std::string name;
  nlohmann::json request;  // sign.js input
};

std::vector<CrossCase> CrossCases() {
  const nlohmann::json base = {{"accessKeyId", "AKIDEXAMPLE"},
                               {"secretAccessKey", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
                               {"region", "us-east-1"},
                               {"date", "2024-03-01T12:34:56Z"}};
  std::vector<CrossCase> cases;
  auto add = [&](std::string name, nlohmann::json extra) {
    nlohmann::json j = base;
    j.update(extra);
    cases.push_back({std::move(name), std::move(j)});
  };
  add("list_with_special_query", {{"method", "GET"},
                                  {"host", "127.0.0.1:4568"},
                                  {"path", "/test-bucket"},
                                  {"query",
                                   {{"list-type", "2"},
                                    {"prefix", "runs/a b+c&d=e/é~"},
                                    {"delimiter", "/"},
                                    {"max-keys", "7"},
                                    {"continuation-token", "1/abc+def==?x"},
                                    {"encoding-type", "url"}}}});
  add("put_key_with_spaces_and_unicode", {{"method", "PUT"},
                                          {"host", "127.0.0.1:4568"},
                                          {"path", "/test-bucket/dir/a b+c%é 日本.txt"},
                                          {"headers",
                                           {{"content-type", "text/plain; charset=utf-8"},
                                            {"content-md5", "XrY7u+Ae7tCTyyK7j1rNww=="},
                                            {"x-amz-checksum-crc32c", "yZRlqg=="},
                                            {"if-none-match", "*"}}},
                                          {"body", "hello world"}});
  add("delete_empty_payload_odd_chars", {{"method", "DELETE"},
                                         {"host", "bucket.s3.eu-central-1.amazonaws.com"},
                                         {"region", "eu-central-1"},
                                         {"path", "/ü/x~y(1)!*'@$,;:=.bin"}});
  add("session_token_get_range",
      {{"method", "GET"},
       {"host", "examplebucket.s3.amazonaws.com"},
       {"path", "/runs/r1/model.pt"},
       {"sessionToken", "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+/="},
       {"headers", {{"range", "bytes=100-"}, {"x-amz-checksum-mode", "ENABLED"}}}});
  add("create_multipart_valueless_query", {{"method", "POST"},
                                           {"host", "localhost:9000"},
                                           {"path", "/bkt/big file.bin"},
                                           {"query", {{"uploads", ""}}},
                                           {"headers", {{"content-type", "application/octet-stream"}}},
                                           {"body", ""}});
  add("upload_part_query", {{"method", "PUT"},
                            {"host", "localhost:9000"},
                            {"path", "/bkt/big file.bin"},
                            {"query", {{"partNumber", "12"}, {"uploadId", "VXBsb2FkIElE+/=="}}},
                            {"body", std::string(1000, 'x')}});
  add("unsigned_payload_and_whitespace",
      {{"method", "PUT"},
       {"host", "examplebucket.s3.amazonaws.com"},
       {"path", "/a/b"},
       {"unsignedPayload", true},
       {"headers", {{"x-amz-meta-note", "  two   spaced   words "}, {"content-type", "application/xml"}}}});
  return cases;
}

SigningInput InputFromJson(const nlohmann::json& j) {
  SigningInput in;
  in.method = j.at("method");
  in.host = j.at("host");
  in.path = j.at("path");
  if (j.contains("query"))
    for (auto& [k, v] : j["query"].items()) in.query.emplace_back(k, v.get<std::string>());
  if (j.contains("headers"))
    for (auto& [k, v] : j["headers"].items()) in.headers.emplace_back(k, v.get<std::string>());
  if (j.value("unsignedPayload", false))
    in.payload_hash = kUnsignedPayload;
  else
    in.payload_hash = Sha256Hex(j.value("body", std::string()));
  return in;
}

TEST(SigV4CrossTest, MatchesAwsSdkSignatureV4) {
  std::string why;
  const std::string tools = storage::testing::EnsureS3Tools(&why);
  if (tools.empty()) GTEST_SKIP() << why;

  const std::vector<CrossCase> cases = CrossCases();
  nlohmann::json input = nlohmann::json::array();
  for (const auto& c : cases) input.push_back(c.request);
  const std::string script = std::string(COHORT_SOURCE_DIR) + "/tools/emulators/s3/sign.js";
  storage::testing::CommandResult r = storage::testing::RunCommand(
      "NODE_PATH='" + tools + "/node_modules' node '" + script + "'", input.dump());
  ASSERT_EQ(r.exit_code, 0) << "sign.js failed: " << r.out;
  const nlohmann::json output = nlohmann::json::parse(r.out);
  ASSERT_EQ(output.size(), cases.size());

  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    const nlohmann::json& req = cases[i].request;
    const Credentials creds{req.at("accessKeyId"), req.at("secretAccessKey"), req.value("sessionToken", "")};
    SigV4Signer signer(creds, req.at("region"));
    std::tm tm{};
    strptime(req.at("date").get<std::string>().c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const SignedRequest ours = signer.Sign(InputFromJson(req), system_clock::from_time_t(timegm(&tm)));
    EXPECT_EQ(ours.authorization, output[i].at("authorization").get<std::string>())
        << "our canonical request:\n"
        << ours.canonical_request;
    // And the headers the SDK would send carry the same values as ours.
    std::map<std::string, std::string> sent(ours.headers.begin(), ours.headers.end());
    for (auto& [k, v] : output[i].at("headers").items()) {
      std::string lower = k;
      for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      ASSERT_TRUE(sent.count(lower)) << "we do not send " << lower;
      EXPECT_EQ(sent[lower], v.get<std::string>()) << lower;
    }
  }
}

}  // namespace
}  // namespace cohort::storage::s3
