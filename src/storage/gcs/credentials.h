// OAuth2 access tokens for the gs:// backend (spec storage.md §2).
//
// Providers:
//   - MetadataServerCredentials: the GCE/GKE metadata server (Workload
//     Identity on GKE; the VM's service account on GCE). Probes
//     /computeMetadata/v1/instance, then fetches
//     .../service-accounts/default/token. Every request carries
//     `Metadata-Flavor: Google` and every response must carry it back.
//   - ServiceAccountCredentials: a service-account JSON key; a self-made
//     RS256 JWT is exchanged at the key's token_uri (RFC 7523).
// Both cache the token until 5 minutes before it expires (half its lifetime
// for tokens shorter than 10 minutes), refresh single-flight (one fetch runs,
// concurrent callers wait for it) and are thread-safe.
//
// DiscoverCredentials() picks one in the order of spec §2.3: explicit key
// path, GOOGLE_APPLICATION_CREDENTIALS, gcloud's well-known file (only if it
// holds a service-account key), then the metadata server. The emulator case
// (STORAGE_EMULATOR_HOST: no auth at all) is decided by the caller,
// NewGcsStoreFromEnv() in gcs_store.cc.
//
// Called by GcsStore on any thread (Token() before each request,
// Invalidate() after a 401).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cohort/common/status.h"
#include "http/retry.h"

namespace cohort::storage::gcs {

inline constexpr char kDevstorageReadWriteScope[] = "https://www.googleapis.com/auth/devstorage.read_write";
inline constexpr char kNoCredentialsHint[] =
    "no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS, run on GKE with Workload Identity, "
    "or set STORAGE_EMULATOR_HOST";

class CredentialsProvider {
 public:
  virtual ~CredentialsProvider() = default;
  // A valid access token (from the cache, or freshly fetched).
  virtual Result<std::string> Token() = 0;
  // Drops the cached token (GCS answered 401): the next Token() fetches anew.
  virtual void Invalidate() = 0;
  // "metadata server at http://169.254.169.254", "service account x@y (key /path)".
  virtual std::string Describe() const = 0;
};

// A fixed token (tests, or a token minted elsewhere). Invalidate() is a no-op.
std::shared_ptr<CredentialsProvider> NewStaticTokenCredentials(std::string token);

using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;

// Shared token cache: subclasses implement Fetch(); Token() serves the
// cached value until `expiry - margin` (margin = min(5 min, lifetime / 2)).
class CachingCredentials : public CredentialsProvider {
 public:
  explicit CachingCredentials(SteadyClock clock);
  Result<std::string> Token() override;
  void Invalidate() override;
  // Number of successful fetches so far (tests, logging).
  int fetch_count() const;

 protected:
  struct FetchedToken {
    std::string access_token;
    std::chrono::seconds expires_in{0};
  };
  virtual Result<FetchedToken> Fetch() = 0;

 private:
  SteadyClock clock_;
  // Held across Fetch(): concurrent callers wait for the one fetch (single flight).
  mutable std::mutex mu_;
  std::string token_;
  std::chrono::steady_clock::time_point refresh_at_{};
  int fetch_count_ = 0;
};

struct MetadataServerOptions {
  // Base URL, e.g. "http://169.254.169.254" or "http://127.0.0.1:8181".
  std::string base_url = "http://169.254.169.254";
  std::vector<std::string> scopes = {kDevstorageReadWriteScope};
  // A new GKE pod cannot reach the metadata server for its first seconds:
  // transport errors, 5xx, 429 and 408 are retried for this long before the
  // probe or token fetch gives up.
  std::chrono::milliseconds startup_window{10000};
  std::chrono::milliseconds attempt_timeout{2000};  // connect / stall timeout per attempt
  std::chrono::milliseconds initial_backoff{250};   // doubles, capped at 2 s
  SteadyClock clock;                                // default: steady_clock::now
};

// "http://" + host unless the value already has a scheme (GCE_METADATA_HOST
// convention); "" -> "".
std::string MetadataBaseUrlFromHost(const std::string& host);

class MetadataServerCredentials : public CachingCredentials {
 public:
  explicit MetadataServerCredentials(MetadataServerOptions options);
  // GET /computeMetadata/v1/instance: OK when a genuine metadata server
  // answers (200 with Metadata-Flavor: Google), retried for startup_window.
  Status Probe();
  std::string Describe() const override;

 protected:
  Result<FetchedToken> Fetch() override;

 private:
  // GET base_url + path with the flavor header, patient retry; checks the
  // response's flavor header.
  Result<std::string> Get(const std::string& path, const std::string& what);
  MetadataServerOptions options_;
};

struct ServiceAccountKey {
  std::string client_email;
  std::string private_key_pem;
  std::string private_key_id;
  std::string token_uri = "https://oauth2.googleapis.com/token";
  std::string project_id;
};

// Parses a credentials JSON file's text; InvalidArgument naming `origin`
// (the path) on a bad file, "unsupported credential type X" for any type but
// "service_account".
Result<ServiceAccountKey> ParseServiceAccountKey(const std::string& json_text, const std::string& origin);

struct ServiceAccountOptions {
  std::vector<std::string> scopes = {kDevstorageReadWriteScope};
  RetryPolicy retry;                      // for the token exchange (5xx, 429, transport)
  std::function<int64_t()> unix_seconds;  // JWT iat; default: system_clock
  SteadyClock clock;
};

// The signed JWT assertion (RS256) for `key` with the given claims; exposed for tests.
Result<std::string> MakeJwtAssertion(const ServiceAccountKey& key, const std::vector<std::string>& scopes,
                                     int64_t issued_at);

class ServiceAccountCredentials : public CachingCredentials {
 public:
  ServiceAccountCredentials(ServiceAccountKey key, std::string origin, ServiceAccountOptions options);
  std::string Describe() const override;

 protected:
  Result<FetchedToken> Fetch() override;

 private:
  ServiceAccountKey key_;
  std::string origin_;
  ServiceAccountOptions options_;
};

// Reads and parses a key file (see ParseServiceAccountKey).
Result<std::shared_ptr<ServiceAccountCredentials>> NewServiceAccountCredentialsFromFile(
    const std::string& path, ServiceAccountOptions options = {});

struct DiscoveryOptions {
  // Explicit key path (a job-spec value), tried first when non-empty.
  std::string key_file;
  // Environment lookup (default: getenv); tests pass a map.
  std::function<std::optional<std::string>(const std::string&)> getenv;
  MetadataServerOptions metadata;  // base_url is replaced from the environment
  // Probe the metadata server patiently (startup_window) even without a hint
  // that we run on Google Cloud; by default only GCE_METADATA_HOST, a
  // Google DMI product name or KUBERNETES_SERVICE_HOST earn the full window,
  // elsewhere one quick probe is made so that laptops fail fast.
  bool assume_metadata_server = false;
};

// Spec §2.3 order; the error lists every source it tried, after kNoCredentialsHint.
Result<std::shared_ptr<CredentialsProvider>> DiscoverCredentials(const DiscoveryOptions& options = {});

}  // namespace cohort::storage::gcs
