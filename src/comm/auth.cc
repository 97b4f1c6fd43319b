// Challenge-response peer authentication; see auth.h.
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace cohort::comm::auth {

Result<std::string> RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    return Status::Internal(
        "cannot draw random bytes for authentication (OpenSSL RAND_bytes failed)");
  }
  return out;
}

std::string Mac(const std::string& secret, std::string_view role, std::string_view context,
                std::string_view nonce_a, std::string_view nonce_c) {
  std::string message = "cohort-auth-v1 ";
  message.append(role);
  message.push_back('\0');
  const auto len = static_cast<uint32_t>(context.size());
  for (int i = 0; i < 4; ++i) message.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  message.append(context);
  message.append(nonce_a);
  message.append(nonce_c);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &out_len);
  return std::string(reinterpret_cast<const char*>(out), out_len);
}

bool MacEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<Challenge> Challenge::New() {
  COHORT_ASSIGN_OR_RETURN(std::string nonce, RandomBytes(kNonceBytes));
  return Challenge(std::move(nonce));
}

std::string Challenge::Wire() const { return std::string(kChallengeMagic) + nonce_; }

bool Challenge::Verify(const std::string& secret, std::string_view context,
                       std::string_view response, std::string* reply) const {
  reply->assign(1, kVerdictRefused);
  if (response.size() != kResponseBytes) return false;
  const std::string_view nonce_c = response.substr(0, kNonceBytes);
  const std::string_view proof = response.substr(kNonceBytes);
  if (!MacEquals(proof, Mac(secret, "connector", context, nonce_, nonce_c))) return false;
  reply->assign(1, kVerdictAccepted);
  reply->append(Mac(secret, "acceptor", context, nonce_, nonce_c));
  return true;
}

namespace {

constexpr const char* kSameToken = "every rank of a job needs the same COHORT_JOB_TOKEN";

// Reads exactly n bytes. `stage` names what is awaited, for messages.
Status ReadExactly(int fd, char* buf, size_t n, Deadline deadline, const std::string& peer,
                   const std::string& stage) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, buf + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      return Status::Unavailable(peer + " closed the connection while this rank waited for its " +
                                 stage + " (it runs without a job token, or refused this one; " +
                                 kSameToken + ")");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Status::Unavailable("authenticating to " + peer + ": " + std::strerror(errno));
    }
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, deadline.RemainingMsForPoll());
    if (pr < 0 && errno != EINTR) {
      return Status::Internal("authenticating to " + peer + ": poll: " + std::strerror(errno));
    }
    if (pr == 0 && deadline.Expired()) {
      return Status::DeadlineExceeded(peer + " sent no " + stage +
                                      " before the deadline (it is stalled, or runs without a "
                                      "job token; " + kSameToken + ")");
    }
  }
  return Status::Ok();
}

Status WriteExactly(int fd, const std::string& data, Deadline deadline, const std::string& peer) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t w = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (w > 0) {
      sent += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      return Status::Unavailable("authenticating to " + peer + ": " + std::strerror(errno));
    }
    pollfd p{fd, POLLOUT, 0};
    int pr = ::poll(&p, 1, deadline.RemainingMsForPoll());
    if (pr < 0 && errno != EINTR) {
      return Status::Internal("authenticating to " + peer + ": poll: " + std::strerror(errno));
    }
    if (pr == 0 && deadline.Expired()) {
      return Status::DeadlineExceeded("timed out authenticating to " + peer);
    }
  }
  return Status::Ok();
}

}  // namespace

Status Authenticate(int fd, const std::string& secret, std::string_view context,
                    const std::string& peer, Deadline deadline, std::string_view preamble) {
  if (!preamble.empty()) {
    COHORT_RETURN_IF_ERROR(WriteExactly(fd, std::string(preamble), deadline, peer));
  }
  char challenge[kChallengeBytes];
  COHORT_RETURN_IF_ERROR(
      ReadExactly(fd, challenge, 1, deadline, peer, "authentication challenge"));
  if (challenge[0] != kChallengeMagic[0]) {
    return Status::FailedPrecondition(peer + " did not send an authentication challenge (it runs "
                                      "without a job token, or is not a cohort rendezvous; " +
                                      std::string(kSameToken) + ")");
  }
  COHORT_RETURN_IF_ERROR(ReadExactly(fd, challenge + 1, kChallengeBytes - 1, deadline, peer,
                                     "authentication challenge"));
  if (std::string_view(challenge, kChallengeMagic.size()) != kChallengeMagic) {
    return Status::FailedPrecondition(peer + " sent a malformed authentication challenge");
  }
  const std::string nonce_a(challenge + kChallengeMagic.size(), kNonceBytes);
  COHORT_ASSIGN_OR_RETURN(std::string nonce_c, RandomBytes(kNonceBytes));
  COHORT_RETURN_IF_ERROR(WriteExactly(
      fd, nonce_c + Mac(secret, "connector", context, nonce_a, nonce_c), deadline, peer));

  char verdict[kAcceptBytes];
  COHORT_RETURN_IF_ERROR(ReadExactly(fd, verdict, 1, deadline, peer, "authentication verdict"));
  if (verdict[0] == kVerdictRefused) {
    return Status::FailedPrecondition(peer + " refused the job token: this rank's " +
                                      "COHORT_JOB_TOKEN is not the job's (" + kSameToken + ")");
  }
  if (verdict[0] != kVerdictAccepted) {
    return Status::FailedPrecondition(peer + " sent a malformed authentication verdict");
  }
  COHORT_RETURN_IF_ERROR(ReadExactly(fd, verdict + 1, kMacBytes, deadline, peer,
                                     "authentication verdict"));
  if (!MacEquals(std::string_view(verdict + 1, kMacBytes),
                 Mac(secret, "acceptor", context, nonce_a, nonce_c))) {
    return Status::FailedPrecondition(
        peer + " accepted this rank but could not prove it holds the job token (another job, or "
               "an impostor, listens at that address)");
  }
  return Status::Ok();
}

}  // namespace cohort::comm::auth
