// Metadata-server and service-account token providers and credential
// discovery; see gcs/credentials.h. Thread-safe (CachingCredentials holds a
// mutex across a fetch, so concurrent callers share one fetch).
#include "gcs/credentials.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cohort/common/logging.h"
#include "cohort/net/http_client.h"
#include "cohort/storage/crc32c.h"

namespace cohort::storage::gcs {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

SteadyClock OrDefault(SteadyClock clock) {
  if (clock) return clock;
  return [] { return steady_clock::now(); };
}

std::string Truncate(std::string s, size_t n = 300) {
  if (s.size() > n) s = s.substr(0, n) + "...";
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

std::string Join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

std::string Base64Url(std::string_view bytes) {
  std::string s = Base64Encode(bytes);
  for (char& c : s) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

// Token endpoint / metadata JSON: {"access_token","expires_in","token_type"}.
Result<std::pair<std::string, seconds>> ParseTokenJson(const std::string& body, const std::string& from) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("access_token") || !j["access_token"].is_string() ||
      j["access_token"].get<std::string>().empty())
    return Status::Internal("token response from " + from + " has no access_token: " + Truncate(body));
  int64_t expires_in = 3600;
  if (j.contains("expires_in")) {
    if (j["expires_in"].is_number_integer()) {
      expires_in = j["expires_in"].get<int64_t>();
    } else if (j["expires_in"].is_string()) {
      expires_in = std::strtoll(j["expires_in"].get<std::string>().c_str(), nullptr, 10);
    }
  }
  if (j.contains("token_type") && j["token_type"].is_string()) {
    std::string type = j["token_type"].get<std::string>();
    std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
    if (type != "bearer")
      return Status::Internal("token from " + from + " has token_type '" + j["token_type"].get<std::string>() +
                              "', expected Bearer");
  }
  return std::make_pair(j["access_token"].get<std::string>(), seconds(std::max<int64_t>(0, expires_in)));
}

}  // namespace

// ---- static -----------------------------------------------------------------

namespace {
class StaticTokenCredentials : public CredentialsProvider {
 public:
  explicit StaticTokenCredentials(std::string token) : token_(std::move(token)) {}
  Result<std::string> Token() override { return token_; }
  void Invalidate() override {}
  std::string Describe() const override { return "a fixed access token"; }

 private:
  std::string token_;
};
}  // namespace

std::shared_ptr<CredentialsProvider> NewStaticTokenCredentials(std::string token) {
  return std::make_shared<StaticTokenCredentials>(std::move(token));
}

// ---- cache --------------------------------------------------------------------

CachingCredentials::CachingCredentials(SteadyClock clock) : clock_(OrDefault(std::move(clock))) {}

Result<std::string> CachingCredentials::Token() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = clock_();
  if (!token_.empty() && now < refresh_at_) return token_;
  auto fetched = Fetch();
  if (!fetched.ok()) return fetched.status().WithPrefix("getting an access token from " + Describe());
  // Refresh 5 minutes before expiry, or at half-life for short tokens, so a
  // short-lived token is still reused for a while instead of fetched per call.
  const seconds lifetime = fetched->expires_in;
  const seconds margin = std::min<seconds>(seconds(300), lifetime / 2);
  token_ = fetched->access_token;
  refresh_at_ = now + lifetime - margin;
  ++fetch_count_;
  COHORT_LOG(DEBUG) << "gcs: new access token from " << Describe() << ", expires in " << lifetime.count()
                    << " s";
  return token_;
}

void CachingCredentials::Invalidate() {
  std::lock_guard<std::mutex> lock(mu_);
  token_.clear();
}

int CachingCredentials::fetch_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fetch_count_;
}

// ---- metadata server ------------------------------------------------------------

std::string MetadataBaseUrlFromHost(const std::string& host) {
  std::string h = host;
  while (!h.empty() && h.back() == '/') h.pop_back();
  if (h.empty()) return "";
  if (h.find("://") == std::string::npos) h = "http://" + h;
  return h;
}

MetadataServerCredentials::MetadataServerCredentials(MetadataServerOptions options)
    : CachingCredentials(options.clock), options_(std::move(options)) {
  options_.base_url = MetadataBaseUrlFromHost(options_.base_url);
}

std::string MetadataServerCredentials::Describe() const { return "the metadata server at " + options_.base_url; }

Result<std::string> MetadataServerCredentials::Get(const std::string& path, const std::string& what) {
  // Patient retry: a new GKE pod cannot reach the server for a few seconds.
  // Real time (not options_.clock, which only drives the token cache).
  const auto deadline = steady_clock::now() + options_.startup_window;
  milliseconds backoff = options_.initial_backoff;
  int attempts = 0;
  while (true) {
    ++attempts;
    net::HttpRequest req;
    req.method = "GET";
    req.url = options_.base_url + path;
    req.headers = {{"Metadata-Flavor", "Google"}};
    req.no_proxy = true;
    req.connect_timeout = options_.attempt_timeout;
    req.stall_timeout = std::max(options_.attempt_timeout, milliseconds(1000));
    auto resp = net::SendHttp(req);
    std::string transient;
    if (!resp.ok()) {
      transient = resp.status().message();
    } else if (IsRetryableHttpStatus(resp->status)) {
      transient = "HTTP " + std::to_string(resp->status) + " " + Truncate(resp->body, 120);
    } else {
      // A genuine server answers with the flavor header; anything else (a
      // captive proxy, a stray web server) is not trusted.
      if (resp->Header("metadata-flavor") != "Google")
        return Status::FailedPrecondition(what + ": the response from " + options_.base_url + path +
                                          " (HTTP " + std::to_string(resp->status) +
                                          ") lacks 'Metadata-Flavor: Google'; not a metadata server");
      if (resp->status >= 200 && resp->status < 400) return std::move(resp->body);
      return Status::FailedPrecondition(what + ": GET " + options_.base_url + path + ": HTTP " +
                                        std::to_string(resp->status) + " " + Truncate(resp->body));
    }
    const auto now = steady_clock::now();
    if (now + backoff >= deadline)
      return Status::Unavailable(what + ": the metadata server at " + options_.base_url +
                                 " is not reachable: " + transient + " after " + std::to_string(attempts) +
                                 (attempts == 1 ? " attempt" : " attempts"));
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, milliseconds(2000));
  }
}

Status MetadataServerCredentials::Probe() {
  auto r = Get("/computeMetadata/v1/instance", "metadata server probe");
  return r.ok() ? Status::Ok() : r.status();
}

Result<CachingCredentials::FetchedToken> MetadataServerCredentials::Fetch() {
  std::string path = "/computeMetadata/v1/instance/service-accounts/default/token";
  if (!options_.scopes.empty()) path += "?scopes=" + net::UrlEncode(Join(options_.scopes, ","));
  COHORT_ASSIGN_OR_RETURN(std::string body, Get(path, "token"));
  COHORT_ASSIGN_OR_RETURN(auto parsed, ParseTokenJson(body, options_.base_url));
  return FetchedToken{std::move(parsed.first), parsed.second};
}

// ---- service-account key ------------------------------------------------------------

Result<ServiceAccountKey> ParseServiceAccountKey(const std::string& json_text, const std::string& origin) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::InvalidArgument("credentials file " + origin + " is not a JSON object");
  const std::string type = j.value("type", std::string());
  if (type != "service_account")
    return Status::InvalidArgument("credentials file " + origin + ": unsupported credential type '" + type +
                                   "' (only \"service_account\" keys are supported)");
  ServiceAccountKey key;
  auto str = [&](const char* name) -> std::string {
    return j.contains(name) && j[name].is_string() ? j[name].get<std::string>() : std::string();
  };
  key.client_email = str("client_email");
  key.private_key_pem = str("private_key");
  key.private_key_id = str("private_key_id");
  key.project_id = str("project_id");
  if (std::string uri = str("token_uri"); !uri.empty()) key.token_uri = uri;
  if (key.client_email.empty() || key.private_key_pem.empty())
    return Status::InvalidArgument("credentials file " + origin + " lacks client_email or private_key");
  return key;
}

Result<std::string> MakeJwtAssertion(const ServiceAccountKey& key, const std::vector<std::string>& scopes,
                                     int64_t issued_at) {
  json header = {{"alg", "RS256"}, {"typ", "JWT"}};
  if (!key.private_key_id.empty()) header["kid"] = key.private_key_id;
  json claims = {{"iss", key.client_email},
                 {"scope", Join(scopes, " ")},
                 {"aud", key.token_uri},
                 {"iat", issued_at},
                 {"exp", issued_at + 3600}};
  const std::string signing_input = Base64Url(header.dump()) + "." + Base64Url(claims.dump());

  BIO* bio = BIO_new_mem_buf(key.private_key_pem.data(), static_cast<int>(key.private_key_pem.size()));
  if (bio == nullptr) return Status::Internal("BIO_new_mem_buf failed");
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (pkey == nullptr)
    return Status::InvalidArgument("the private_key of " + key.client_email + " is not a PEM private key");
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::string sig;
  size_t sig_len = 0;
  bool ok = ctx != nullptr && EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
            EVP_DigestSign(ctx, nullptr, &sig_len,
                           reinterpret_cast<const unsigned char*>(signing_input.data()),
                           signing_input.size()) == 1;
  if (ok) {
    sig.resize(sig_len);
    ok = EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                        reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size()) == 1;
    sig.resize(sig_len);
  }
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  if (!ok) return Status::Internal("signing the JWT for " + key.client_email + " failed (RS256)");
  return signing_input + "." + Base64Url(sig);
}

ServiceAccountCredentials::ServiceAccountCredentials(ServiceAccountKey key, std::string origin,
                                                     ServiceAccountOptions options)
    : CachingCredentials(options.clock),
      key_(std::move(key)),
      origin_(std::move(origin)),
      options_(std::move(options)) {
  if (!options_.unix_seconds)
    options_.unix_seconds = [] {
      return std::chrono::duration_cast<seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    };
}

std::string ServiceAccountCredentials::Describe() const {
  return "service account " + key_.client_email + " (key " + origin_ + ", token endpoint " + key_.token_uri + ")";
}

Result<CachingCredentials::FetchedToken> ServiceAccountCredentials::Fetch() {
  RetryState retry(options_.retry);
  while (true) {
    // A fresh assertion per attempt: iat must be current.
    COHORT_ASSIGN_OR_RETURN(std::string jwt, MakeJwtAssertion(key_, options_.scopes, options_.unix_seconds()));
    const std::string body = "grant_type=" + net::UrlEncode("urn:ietf:params:oauth:grant-type:jwt-bearer") +
                             "&assertion=" + net::UrlEncode(jwt);
    net::HttpRequest req;
    req.method = "POST";
    req.url = key_.token_uri;
    req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
    req.body = body;
    auto resp = net::SendHttp(req);
    std::string transient, retry_after;
    if (!resp.ok()) {
      transient = resp.status().message();
    } else if (IsRetryableHttpStatus(resp->status)) {
      transient = "HTTP " + std::to_string(resp->status) + " " + Truncate(resp->body, 120);
      retry_after = resp->Header("retry-after");
    } else if (resp->status != 200) {
      std::string detail = Truncate(resp->body);
      json j = json::parse(resp->body, nullptr, false);
      if (j.is_object() && j.contains("error") && j["error"].is_string()) {
        detail = j["error"].get<std::string>();
        if (j.contains("error_description") && j["error_description"].is_string())
          detail += ": " + j["error_description"].get<std::string>();
        if (j["error"] == "invalid_grant") detail += " (check the key is active and the clock is right)";
      }
      return Status::FailedPrecondition("token exchange at " + key_.token_uri + ": HTTP " +
                                        std::to_string(resp->status) + " " + detail);
    } else {
      COHORT_ASSIGN_OR_RETURN(auto parsed, ParseTokenJson(resp->body, key_.token_uri));
      return FetchedToken{std::move(parsed.first), parsed.second};
    }
    if (!retry.WaitBeforeNext(retry_after))
      return Status::Unavailable("token exchange at " + key_.token_uri + ": " + transient + retry.Summary());
  }
}

Result<std::shared_ptr<ServiceAccountCredentials>> NewServiceAccountCredentialsFromFile(
    const std::string& path, ServiceAccountOptions options) {
  std::string text;
  if (!ReadWholeFile(path, &text))
    return Status::InvalidArgument("cannot read the credentials file " + path);
  COHORT_ASSIGN_OR_RETURN(ServiceAccountKey key, ParseServiceAccountKey(text, path));
  return std::make_shared<ServiceAccountCredentials>(std::move(key), path, std::move(options));
}

// ---- discovery ------------------------------------------------------------------------

namespace {

bool OnGoogleCloudHardware() {
  // GCE VMs (and so GKE nodes) report this DMI product name.
  std::string name;
  if (!ReadWholeFile("/sys/class/dmi/id/product_name", &name)) return false;
  return name.find("Google") != std::string::npos;
}

}  // namespace

Result<std::shared_ptr<CredentialsProvider>> DiscoverCredentials(const DiscoveryOptions& options) {
  auto getenv = options.getenv;
  if (!getenv)
    getenv = [](const std::string& name) -> std::optional<std::string> {
      const char* v = std::getenv(name.c_str());
      if (v == nullptr) return std::nullopt;
      return std::string(v);
    };
  auto env = [&](const std::string& name) { return getenv(name).value_or(""); };
  std::vector<std::string> tried;

  // 1. An explicit key path; 2. GOOGLE_APPLICATION_CREDENTIALS. A named file
  // that does not work is an error, not a reason to fall through.
  if (!options.key_file.empty()) {
    COHORT_ASSIGN_OR_RETURN(auto creds, NewServiceAccountCredentialsFromFile(options.key_file));
    return std::shared_ptr<CredentialsProvider>(std::move(creds));
  }
  if (std::string path = env("GOOGLE_APPLICATION_CREDENTIALS"); !path.empty()) {
    auto creds = NewServiceAccountCredentialsFromFile(path);
    if (!creds.ok()) return creds.status().WithPrefix("GOOGLE_APPLICATION_CREDENTIALS");
    return std::shared_ptr<CredentialsProvider>(std::move(creds).value());
  }
  tried.push_back("GOOGLE_APPLICATION_CREDENTIALS (unset)");

  // 3. gcloud's well-known file, used only when it holds a service-account key.
  std::string gcloud_dir = env("CLOUDSDK_CONFIG");
  if (gcloud_dir.empty() && !env("HOME").empty()) gcloud_dir = env("HOME") + "/.config/gcloud";
  if (!gcloud_dir.empty()) {
    const std::string adc = gcloud_dir + "/application_default_credentials.json";
    std::string text;
    if (ReadWholeFile(adc, &text)) {
      auto key = ParseServiceAccountKey(text, adc);
      if (key.ok())
        return std::shared_ptr<CredentialsProvider>(
            std::make_shared<ServiceAccountCredentials>(std::move(key).value(), adc, ServiceAccountOptions{}));
      tried.push_back(adc + " (" + key.status().message() + ")");
    } else {
      tried.push_back(adc + " (absent)");
    }
  }

  // 4. The metadata server.
  MetadataServerOptions md = options.metadata;
  std::string host = env("GCE_METADATA_HOST");
  if (host.empty()) host = env("GCE_METADATA_IP");
  const bool patient = !host.empty() || options.assume_metadata_server || OnGoogleCloudHardware() ||
                       !env("KUBERNETES_SERVICE_HOST").empty();
  md.base_url = host.empty() ? "http://169.254.169.254" : MetadataBaseUrlFromHost(host);
  if (!patient) {
    // Not obviously on Google Cloud: one quick look, so laptops fail fast.
    md.startup_window = milliseconds(0);
    md.attempt_timeout = std::min(md.attempt_timeout, milliseconds(1000));
  }
  auto metadata = std::make_shared<MetadataServerCredentials>(md);
  Status probe = metadata->Probe();
  if (probe.ok()) return std::shared_ptr<CredentialsProvider>(std::move(metadata));
  tried.push_back("metadata server " + md.base_url + " (" + probe.message() + ")");

  return Status::FailedPrecondition(std::string(kNoCredentialsHint) + "; tried: " + Join(tried, "; "));
}

}  // namespace cohort::storage::gcs
