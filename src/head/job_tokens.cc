// See job_tokens.h.
#include "job_tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cohort/common/atomic_file.h"

namespace cohort::head {

namespace {
constexpr std::string_view kPrefix = "cohort-job.";
constexpr size_t kMacHex = 64;

// 32 bytes from the kernel's CSPRNG (getrandom: no need to start OpenSSL's
// generator, which would map more of libcrypto into an idle head).
bool RandomBytes(unsigned char* out, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::getrandom(out + done, n - done, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(got);
  }
  return true;
}

std::string Hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  return out;
}
}  // namespace

JobTokens JobTokens::Random() {
  unsigned char raw[32];
  if (!RandomBytes(raw, sizeof(raw))) std::abort();  // no randomness: nothing is safe
  return JobTokens(Hex(raw, sizeof(raw)));
}

Result<JobTokens> JobTokens::Load(const std::string& state_dir) {
  const std::string path = state_dir + "/job_secret";
  std::ifstream in(path);
  std::string secret;
  if (in && std::getline(in, secret) && secret.size() >= 32) return JobTokens(secret);
  unsigned char raw[32];
  if (!RandomBytes(raw, sizeof(raw))) return Status::Internal("cannot draw random bytes for the job secret");
  secret = Hex(raw, sizeof(raw));
  COHORT_RETURN_IF_ERROR(WriteFileAtomically(path, secret + "\n", 0600));
  return JobTokens(secret);
}

std::string JobTokens::Mac(std::string_view job_id) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()),
       reinterpret_cast<const unsigned char*>(job_id.data()), job_id.size(), mac, &len);
  return Hex(mac, len);
}

std::string JobTokens::TokenFor(std::string_view job_id) const {
  return std::string(kPrefix) + Mac(job_id) + "." + std::string(job_id);
}

std::optional<std::string> JobTokens::JobOf(std::string_view token) const {
  if (token.size() <= kPrefix.size() + kMacHex + 1 || token.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  const std::string_view mac = token.substr(kPrefix.size(), kMacHex);
  if (token[kPrefix.size() + kMacHex] != '.') return std::nullopt;
  const std::string_view job = token.substr(kPrefix.size() + kMacHex + 1);
  const std::string expected = Mac(job);
  if (CRYPTO_memcmp(expected.data(), mac.data(), kMacHex) != 0) return std::nullopt;
  return std::string(job);
}

bool JobTokenMayAccess(std::string_view job_id, std::string_view method, std::string_view path) {
  if (method != "GET" && method != "HEAD") return false;
  const std::string base = "/api/jobs/" + std::string(job_id);
  if (path == base) return true;
  for (const char* sub : {"/logs", "/logs/tail", "/metrics"})
    if (path == base + sub) return true;
  return false;
}

}  // namespace cohort::head
