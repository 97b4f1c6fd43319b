// gs:// authentication: the metadata-server provider against a FAKE GCE/GKE
// metadata server (cpp-httplib, below), the service-account JWT flow against
// a FAKE OAuth token endpoint that verifies the RS256 signature and claims,
// credential discovery order, and the bearer token reaching FakeGcsServer.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "backends.h"
#include "cohort/net/http_client.h"
#include "gcs/credentials.h"
#include "gcs/gcs_store.h"
#include "storage/storage_testing.h"
#include "storage/fake_gcs.h"

namespace cohort::storage::gcs {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
namespace fs = std::filesystem;
using storage::testing::FreePort;

// A FAKE GCE/GKE metadata server: the probe path and the default service
// account's token, both requiring `Metadata-Flavor: Google` (403 otherwise)
// and answering with it (unless omit_flavor). Faults: the first
// fail_first requests get 503; token_delay slows token answers.
class FakeMetadataServer {
 public:
  explicit FakeMetadataServer(int port = 0) {
    server_.Get("/computeMetadata/v1/instance", [this](const httplib::Request& req, httplib::Response& res) {
      if (!Gate(req, res)) return;
      res.set_content("attributes/\nhostname\nid\nservice-accounts/\nzone\n", "application/text");
    });
    server_.Get("/computeMetadata/v1/instance/service-accounts/default/token",
                [this](const httplib::Request& req, httplib::Response& res) {
                  if (!Gate(req, res)) return;
                  if (token_delay.count() > 0) std::this_thread::sleep_for(token_delay);
                  last_token_target = req.target;
                  const int n = ++tokens_served;
                  res.set_content(json{{"access_token", "tok-" + std::to_string(n)},
                                       {"expires_in", expires_in.load()},
                                       {"token_type", "Bearer"}}
                                      .dump(),
                                  "application/json");
                });
    if (port == 0) {
      port_ = server_.bind_to_any_port("127.0.0.1");
    } else {
      port_ = port;
      if (!server_.bind_to_port("127.0.0.1", port)) port_ = -1;
    }
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 500 && !server_.is_running(); ++i) std::this_thread::sleep_for(milliseconds(2));
  }
  ~FakeMetadataServer() {
    server_.stop();
    thread_.join();
  }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  std::atomic<int> expires_in{3599};
  std::atomic<int> fail_first{0};
  std::atomic<bool> omit_flavor{false};
  std::atomic<int> requests{0};
  std::atomic<int> requests_without_flavor{0};
  std::atomic<int> tokens_served{0};
  milliseconds token_delay{0};
  std::string last_token_target;

 private:
  bool Gate(const httplib::Request& req, httplib::Response& res) {
    ++requests;
    if (!omit_flavor) res.set_header("Metadata-Flavor", "Google");
    if (req.get_header_value("Metadata-Flavor") != "Google") {
      ++requests_without_flavor;
      res.status = 403;
      res.set_content("Missing Metadata-Flavor:Google header.", "text/plain");
      return false;
    }
    if (fail_first > 0) {
      --fail_first;
      res.status = 503;
      res.set_content("not ready", "text/plain");
      return false;
    }
    return true;
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

MetadataServerOptions FastMetadata(const std::string& host) {
  MetadataServerOptions o;
  o.base_url = host;
  o.startup_window = milliseconds(3000);
  o.initial_backoff = milliseconds(20);
  o.attempt_timeout = milliseconds(1000);
  return o;
}

TEST(MetadataServerTest, FlavorHeaderIsRequiredBothWays) {
  FakeMetadataServer md;
  // The fake refuses requests without the header, like the real server.
  net::HttpRequest plain;
  plain.url = "http://" + md.host() + "/computeMetadata/v1/instance";
  auto r = net::SendHttp(plain);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 403);

  MetadataServerCredentials creds(FastMetadata(md.host()));
  ASSERT_TRUE(creds.Probe().ok());
  auto token = creds.Token();
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(*token, "tok-1");
  EXPECT_EQ(md.requests_without_flavor.load(), 1);  // only our plain request above
  EXPECT_EQ(md.last_token_target,
            "/computeMetadata/v1/instance/service-accounts/default/token?scopes=https%3A%2F%2Fwww.googleapis.com%"
            "2Fauth%2Fdevstorage.read_write");

  // A response without `Metadata-Flavor: Google` is not trusted.
  md.omit_flavor = true;
  MetadataServerCredentials impostor(FastMetadata(md.host()));
  Status probe = impostor.Probe();
  EXPECT_EQ(probe.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(probe.message().find("Metadata-Flavor"), std::string::npos) << probe.message();
  auto bad = impostor.Token();
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("Metadata-Flavor"), std::string::npos);
}

TEST(MetadataServerTest, TokenIsCachedAndRefreshedFiveMinutesBeforeExpiry) {
  FakeMetadataServer md;
  md.expires_in = 3600;
  auto now = std::make_shared<std::atomic<int64_t>>(0);  // seconds on a fake steady clock
  MetadataServerOptions o = FastMetadata(md.host());
  o.clock = [now] { return std::chrono::steady_clock::time_point(seconds(now->load())); };
  MetadataServerCredentials creds(o);
  EXPECT_EQ(*creds.Token(), "tok-1");
  EXPECT_EQ(*creds.Token(), "tok-1");
  *now = 3600 - 301;  // 301 s left: still good
  EXPECT_EQ(*creds.Token(), "tok-1");
  EXPECT_EQ(md.tokens_served.load(), 1);
  *now = 3600 - 299;  // within 5 minutes of expiry: refresh
  EXPECT_EQ(*creds.Token(), "tok-2");
  EXPECT_EQ(creds.fetch_count(), 2);

  // A short-lived token (60 s) is reused for half its life, not fetched per call.
  md.expires_in = 60;
  creds.Invalidate();
  const int64_t t0 = *now;
  EXPECT_EQ(*creds.Token(), "tok-3");
  *now = t0 + 29;
  EXPECT_EQ(*creds.Token(), "tok-3");
  *now = t0 + 31;
  EXPECT_EQ(*creds.Token(), "tok-4");
}

TEST(MetadataServerTest, NotReadyAtStartWith503ThenOk) {
  FakeMetadataServer md;
  md.fail_first = 3;
  MetadataServerCredentials creds(FastMetadata(md.host()));
  ASSERT_TRUE(creds.Probe().ok());
  EXPECT_EQ(md.requests.load(), 4);
  EXPECT_EQ(*creds.Token(), "tok-1");
}

TEST(MetadataServerTest, ConnectionRefusedAtStartThenOk) {
  const int port = FreePort();
  std::unique_ptr<FakeMetadataServer> md;
  std::thread late([&] {
    std::this_thread::sleep_for(milliseconds(600));  // the pod's first moments: nothing listens
    md = std::make_unique<FakeMetadataServer>(port);
  });
  MetadataServerCredentials creds(FastMetadata("127.0.0.1:" + std::to_string(port)));
  const auto start = std::chrono::steady_clock::now();
  Status probe = creds.Probe();
  late.join();
  ASSERT_TRUE(probe.ok()) << probe.ToString();
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(550));
  ASSERT_EQ(md->port(), port);
  EXPECT_EQ(*creds.Token(), "tok-1");
}

TEST(MetadataServerTest, GivesUpAfterTheStartupWindow) {
  MetadataServerOptions o = FastMetadata("127.0.0.1:" + std::to_string(FreePort()));
  o.startup_window = milliseconds(300);
  MetadataServerCredentials creds(o);
  const auto start = std::chrono::steady_clock::now();
  Status probe = creds.Probe();
  EXPECT_EQ(probe.code(), StatusCode::kUnavailable);
  EXPECT_NE(probe.message().find("not reachable"), std::string::npos) << probe.message();
  EXPECT_NE(probe.message().find("attempts"), std::string::npos) << probe.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(2000));
}

TEST(MetadataServerTest, ConcurrentCallersShareOneFetch) {
  FakeMetadataServer md;
  md.token_delay = milliseconds(200);
  MetadataServerCredentials creds(FastMetadata(md.host()));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      auto t = creds.Token();
      if (t.ok() && *t == "tok-1") ++ok;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(md.tokens_served.load(), 1);
}

TEST(MetadataServerTest, StoreSendsTheBearerTokenAndRefreshesOn401) {
  FakeMetadataServer md;
  fake::FakeGcsServer gcs;
  gcs.RequireBearer("tok-1");
  auto creds = std::make_shared<MetadataServerCredentials>(FastMetadata(md.host()));
  GcsStoreOptions o;
  o.endpoint = gcs.endpoint();
  o.credentials = creds;
  auto store = *NewGcsStore(o);
  ASSERT_TRUE(store->PutBuffer("bkt", "a", "x", {}).ok());
  ASSERT_TRUE(store->Stat("bkt", "a").ok());
  for (const auto& l : gcs.log()) EXPECT_EQ(l.authorization, "Bearer tok-1");
  EXPECT_EQ(md.tokens_served.load(), 1);

  // The token is revoked server-side: a 401 drops it and one retry uses a fresh one.
  gcs.RequireBearer("tok-2");
  auto stat = store->Stat("bkt", "a");
  ASSERT_TRUE(stat.ok()) << stat.status().ToString();
  EXPECT_EQ(md.tokens_served.load(), 2);
  EXPECT_EQ(gcs.log().back().authorization, "Bearer tok-2");
}

// ---- service-account keys -------------------------------------------------------------

struct RsaKey {
  EVP_PKEY* pkey = nullptr;
  RsaKey() { pkey = EVP_RSA_gen(2048); }
  ~RsaKey() { EVP_PKEY_free(pkey); }
  std::string PrivatePem() const {
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);  // PKCS#8
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<size_t>(n));
    BIO_free(bio);
    return pem;
  }
};

bool Base64UrlDecode(std::string s, std::string* out) {
  for (char& c : s) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (s.size() % 4) s += '=';
  return Base64Decode(s, out);
}

// A FAKE OAuth2 token endpoint (RFC 7523 JWT bearer grant): checks the
// grant type, the RS256 signature against the expected public key, and the
// claims; answers like oauth2.googleapis.com.
class FakeTokenEndpoint {
 public:
  FakeTokenEndpoint(EVP_PKEY* public_key, std::string email) : key_(public_key), email_(std::move(email)) {
    server_.Post("/token", [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 500 && !server_.is_running(); ++i) std::this_thread::sleep_for(milliseconds(2));
  }
  ~FakeTokenEndpoint() {
    server_.stop();
    thread_.join();
  }
  std::string uri() const { return "http://127.0.0.1:" + std::to_string(port_) + "/token"; }

  std::atomic<int> issued{0};
  std::string last_error;
  json last_claims, last_header;

 private:
  void Reject(httplib::Response& res, const std::string& why) {
    last_error = why;
    res.status = 400;
    res.set_content(json{{"error", "invalid_grant"}, {"error_description", why}}.dump(), "application/json");
  }
  void Handle(const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Content-Type") != "application/x-www-form-urlencoded")
      return Reject(res, "bad content type");
    std::map<std::string, std::string> form;
    std::string_view body = req.body;
    while (!body.empty()) {
      auto amp = body.find('&');
      std::string kv(body.substr(0, amp));
      auto eq = kv.find('=');
      form[kv.substr(0, eq)] = fake::FakeGcsServer::PercentDecode(eq == std::string::npos ? "" : kv.substr(eq + 1));
      if (amp == std::string_view::npos) break;
      body.remove_prefix(amp + 1);
    }
    if (form["grant_type"] != "urn:ietf:params:oauth:grant-type:jwt-bearer") return Reject(res, "bad grant_type");
    const std::string jwt = form["assertion"];
    auto d1 = jwt.find('.'), d2 = jwt.rfind('.');
    if (d1 == std::string::npos || d1 == d2) return Reject(res, "not a JWT");
    std::string header, claims, sig;
    if (!Base64UrlDecode(jwt.substr(0, d1), &header) || !Base64UrlDecode(jwt.substr(d1 + 1, d2 - d1 - 1), &claims) ||
        !Base64UrlDecode(jwt.substr(d2 + 1), &sig))
      return Reject(res, "bad base64url");
    const std::string signed_part = jwt.substr(0, d2);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    const bool valid = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key_) == 1 &&
                       EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                                        reinterpret_cast<const unsigned char*>(signed_part.data()),
                                        signed_part.size()) == 1;
    EVP_MD_CTX_free(ctx);
    if (!valid) return Reject(res, "Invalid JWT Signature.");
    last_header = json::parse(header, nullptr, false);
    last_claims = json::parse(claims, nullptr, false);
    const json& c = last_claims;
    if (last_header.value("alg", "") != "RS256") return Reject(res, "alg");
    if (c.value("iss", "") != email_) return Reject(res, "iss");
    if (c.value("aud", "") != uri()) return Reject(res, "aud");
    if (c.value("scope", "").find("https://www.googleapis.com/auth/devstorage.read_write") == std::string::npos)
      return Reject(res, "scope");
    const int64_t iat = c.value("iat", int64_t{0}), exp = c.value("exp", int64_t{0});
    const int64_t now = std::chrono::duration_cast<seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (exp - iat != 3600) return Reject(res, "exp-iat");
    if (std::llabs(now - iat) > 60) return Reject(res, "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe");
    const int n = ++issued;
    res.set_content(json{{"access_token", "sa-token-" + std::to_string(n)}, {"expires_in", 3599},
                         {"token_type", "Bearer"}}.dump(),
                    "application/json");
  }

  EVP_PKEY* key_;
  std::string email_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

class ServiceAccountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gcs_auth_test." + std::to_string(::getpid()) + "." +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteKey(const std::string& name, const std::string& pem, const std::string& token_uri,
                       const std::string& type = "service_account") {
    json key = {{"type", type},
                {"project_id", "demo-project"},
                {"private_key_id", "abc123"},
                {"private_key", pem},
                {"client_email", kEmail},
                {"client_id", "1234"},
                {"auth_uri", "https://accounts.google.com/o/oauth2/auth"},
                {"token_uri", token_uri}};
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << key.dump(2);
    return path;
  }

  static constexpr char kEmail[] = "trainer@demo-project.iam.gserviceaccount.com";
  RsaKey key_;
  fs::path dir_;
};

TEST_F(ServiceAccountTest, JwtIsSignedAndExchanged) {
  FakeTokenEndpoint endpoint(key_.pkey, kEmail);
  auto creds = NewServiceAccountCredentialsFromFile(WriteKey("key.json", key_.PrivatePem(), endpoint.uri()));
  ASSERT_TRUE(creds.ok()) << creds.status().ToString();
  auto token = (*creds)->Token();
  ASSERT_TRUE(token.ok()) << token.status().ToString() << " / fake says: " << endpoint.last_error;
  EXPECT_EQ(*token, "sa-token-1");
  EXPECT_EQ(endpoint.last_header["kid"], "abc123");
  EXPECT_EQ(endpoint.last_header["typ"], "JWT");
  EXPECT_EQ(endpoint.last_claims["scope"], "https://www.googleapis.com/auth/devstorage.read_write");
  EXPECT_EQ(*(*creds)->Token(), "sa-token-1");  // cached
  EXPECT_EQ(endpoint.issued.load(), 1);

  // The token reaches GCS.
  fake::FakeGcsServer gcs;
  gcs.RequireBearer("sa-token-1");
  GcsStoreOptions o;
  o.endpoint = gcs.endpoint();
  o.credentials = *creds;
  auto store = *NewGcsStore(o);
  EXPECT_TRUE(store->PutBuffer("bkt", "k", "v", {}).ok());
}

TEST_F(ServiceAccountTest, WrongKeyIsRejectedWithTheServersReason) {
  RsaKey other;
  FakeTokenEndpoint endpoint(key_.pkey, kEmail);
  auto creds = NewServiceAccountCredentialsFromFile(WriteKey("key.json", other.PrivatePem(), endpoint.uri()));
  ASSERT_TRUE(creds.ok());
  auto token = (*creds)->Token();
  ASSERT_FALSE(token.ok());
  EXPECT_NE(token.status().message().find("invalid_grant"), std::string::npos) << token.status().message();
  EXPECT_NE(token.status().message().find("Invalid JWT Signature"), std::string::npos);
  EXPECT_EQ(endpoint.issued.load(), 0);
}

TEST_F(ServiceAccountTest, BadKeyFiles) {
  auto missing = NewServiceAccountCredentialsFromFile((dir_ / "nope.json").string());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  auto user = NewServiceAccountCredentialsFromFile(WriteKey("user.json", "x", "http://x", "authorized_user"));
  EXPECT_EQ(user.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(user.status().message().find("unsupported credential type 'authorized_user'"), std::string::npos)
      << user.status().message();
  auto bad_pem = NewServiceAccountCredentialsFromFile(WriteKey("bad.json", "not a pem", "http://127.0.0.1:1/t"));
  ASSERT_TRUE(bad_pem.ok());
  EXPECT_EQ((*bad_pem)->Token().status().code(), StatusCode::kInvalidArgument);
}

// ---- discovery ------------------------------------------------------------------------------

class DiscoveryTest : public ServiceAccountTest {
 protected:
  DiscoveryOptions Options(std::map<std::string, std::string> env) {
    DiscoveryOptions o;
    env.emplace("HOME", (dir_ / "home").string());  // no gcloud file unless a test writes one
    o.getenv = [env](const std::string& name) -> std::optional<std::string> {
      auto it = env.find(name);
      if (it == env.end()) return std::nullopt;
      return it->second;
    };
    o.metadata.startup_window = milliseconds(300);
    o.metadata.initial_backoff = milliseconds(20);
    return o;
  }
};

TEST_F(DiscoveryTest, KeyFileComesBeforeTheMetadataServer) {
  FakeMetadataServer md;
  FakeTokenEndpoint endpoint(key_.pkey, kEmail);
  const std::string key = WriteKey("key.json", key_.PrivatePem(), endpoint.uri());
  auto creds = DiscoverCredentials(Options({{"GOOGLE_APPLICATION_CREDENTIALS", key}, {"GCE_METADATA_HOST", md.host()}}));
  ASSERT_TRUE(creds.ok()) << creds.status().ToString();
  EXPECT_NE((*creds)->Describe().find("service account " + std::string(kEmail)), std::string::npos);
  EXPECT_EQ(*(*creds)->Token(), "sa-token-1");
  EXPECT_EQ(md.requests.load(), 0);
}

TEST_F(DiscoveryTest, MetadataServerWhenNoKey) {
  FakeMetadataServer md;
  auto creds = DiscoverCredentials(Options({{"GCE_METADATA_HOST", md.host()}}));
  ASSERT_TRUE(creds.ok()) << creds.status().ToString();
  EXPECT_EQ((*creds)->Describe(), "the metadata server at http://" + md.host());
  EXPECT_EQ(md.requests.load(), 1);  // the probe
  EXPECT_EQ(*(*creds)->Token(), "tok-1");
}

TEST_F(DiscoveryTest, GcloudFileIsUsedOnlyForServiceAccountKeys) {
  FakeMetadataServer md;
  fs::create_directories(dir_ / "home/.config/gcloud");
  std::ofstream(dir_ / "home/.config/gcloud/application_default_credentials.json")
      << R"({"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"})";
  auto creds = DiscoverCredentials(Options({{"GCE_METADATA_HOST", "http://" + md.host()}}));
  ASSERT_TRUE(creds.ok()) << creds.status().ToString();
  EXPECT_NE((*creds)->Describe().find("metadata server"), std::string::npos);

  FakeTokenEndpoint endpoint(key_.pkey, kEmail);
  fs::copy_file(WriteKey("adc.json", key_.PrivatePem(), endpoint.uri()),
                dir_ / "home/.config/gcloud/application_default_credentials.json",
                fs::copy_options::overwrite_existing);
  auto sa = DiscoverCredentials(Options({{"GCE_METADATA_HOST", md.host()}}));
  ASSERT_TRUE(sa.ok());
  EXPECT_NE((*sa)->Describe().find("service account"), std::string::npos);
}

TEST_F(DiscoveryTest, NamedKeyFileThatFailsIsAnError) {
  FakeMetadataServer md;
  auto creds = DiscoverCredentials(
      Options({{"GOOGLE_APPLICATION_CREDENTIALS", (dir_ / "missing.json").string()}, {"GCE_METADATA_HOST", md.host()}}));
  EXPECT_EQ(creds.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(creds.status().message().find("GOOGLE_APPLICATION_CREDENTIALS"), std::string::npos);
  auto user = DiscoverCredentials(
      Options({{"GOOGLE_APPLICATION_CREDENTIALS", WriteKey("u.json", "x", "http://x", "external_account")}}));
  EXPECT_NE(user.status().message().find("unsupported credential type 'external_account'"), std::string::npos);
}

TEST_F(DiscoveryTest, NothingFoundListsWhatWasTried) {
  const std::string host = "127.0.0.1:" + std::to_string(FreePort());
  auto creds = DiscoverCredentials(Options({{"GCE_METADATA_HOST", host}}));
  ASSERT_EQ(creds.status().code(), StatusCode::kFailedPrecondition);
  const std::string& m = creds.status().message();
  EXPECT_EQ(m.rfind(kNoCredentialsHint, 0), 0u) << m;
  EXPECT_NE(m.find("GOOGLE_APPLICATION_CREDENTIALS (unset)"), std::string::npos) << m;
  EXPECT_NE(m.find("application_default_credentials.json (absent)"), std::string::npos) << m;
  EXPECT_NE(m.find("metadata server http://" + host), std::string::npos) << m;
}

TEST(GcsFromEnvTest, EmulatorHostMeansNoAuth) {
  fake::FakeGcsServer gcs;
  ::setenv("STORAGE_EMULATOR_HOST", gcs.host_port().c_str(), 1);
  ::setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json", 1);  // not even looked at
  auto store = NewGcsStoreFromEnv();
  ::unsetenv("STORAGE_EMULATOR_HOST");
  ::unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->scheme(), "gs");
  ASSERT_TRUE((*store)->PutBuffer("bkt", "k", "v", {}).ok());
  EXPECT_EQ(gcs.log().back().authorization, "");
  EXPECT_EQ(*(*store)->GetToBuffer("bkt", "k", {}), "v");
}

TEST(JwtTest, AssertionShape) {
  RsaKey key;
  ServiceAccountKey sa;
  sa.client_email = "a@b.iam.gserviceaccount.com";
  sa.private_key_pem = key.PrivatePem();
  sa.token_uri = "https://oauth2.googleapis.com/token";
  auto jwt = MakeJwtAssertion(sa, {"s1", "s2"}, 1700000000);
  ASSERT_TRUE(jwt.ok()) << jwt.status().ToString();
  EXPECT_EQ(std::count(jwt->begin(), jwt->end(), '.'), 2);
  EXPECT_EQ(jwt->find('='), std::string::npos);  // base64url without padding
  std::string claims;
  auto d1 = jwt->find('.'), d2 = jwt->rfind('.');
  ASSERT_TRUE(Base64UrlDecode(jwt->substr(d1 + 1, d2 - d1 - 1), &claims));
  json c = json::parse(claims);
  EXPECT_EQ(c["iss"], sa.client_email);
  EXPECT_EQ(c["scope"], "s1 s2");
  EXPECT_EQ(c["aud"], sa.token_uri);
  EXPECT_EQ(c["iat"], 1700000000);
  EXPECT_EQ(c["exp"], 1700003600);
  EXPECT_FALSE(c.contains("sub"));
}

}  // namespace
}  // namespace cohort::storage::gcs
