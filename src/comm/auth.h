// Peer authentication for the rendezvous store and the TCP mesh: a
// challenge-response handshake keyed by the job's secret (COHORT_JOB_TOKEN),
// run on a connection before anything else is trusted on it.
//
// The accepting side sends its challenge as soon as it accepts (all nonces
// are fresh random bytes):
//   acceptor  -> connector: challenge = "\xA7" "CH1" | nonce_a (32 bytes)
//   connector -> acceptor:  [preamble] | response = nonce_c (32 bytes) | MAC("connector")
//   acceptor  -> connector: u8 0 | MAC("acceptor")   accepted
//                           u8 1, then it closes     refused
// where MAC(role) = HMAC-SHA256(secret, "cohort-auth-v1 " role "\0" |
// u32 len(context) | context | nonce_a | nonce_c). The preamble is the
// protocol's own (the store's AUTH frame, the mesh's hello naming the
// claimed rank); the connector sends it without waiting for the challenge.
// `context` says which connection this is ("store", "mesh rank 3 -> rank
// 1"), so a proof made for one role, rank or nonce is worthless for another;
// the acceptor's proof covers the connector's nonce, so a connector knows its
// acceptor holds the secret too. MACs are compared in constant time. The
// secret never crosses the wire. Nothing is encrypted: the handshake keeps
// out peers that do not hold the secret, not eavesdroppers.
//
// The first byte of a challenge (0xA7) is no store status code, so a store
// client without a secret can tell it met a store that requires one.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "cohort/common/deadline.h"
#include "cohort/common/status.h"

namespace cohort::comm::auth {

inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMacBytes = 32;
inline constexpr std::string_view kChallengeMagic{"\xA7" "CH1", 4};
inline constexpr size_t kChallengeBytes = kChallengeMagic.size() + kNonceBytes;
inline constexpr size_t kResponseBytes = kNonceBytes + kMacBytes;
inline constexpr size_t kAcceptBytes = 1 + kMacBytes;  // a refusal is 1 byte
inline constexpr char kVerdictAccepted = 0;
inline constexpr char kVerdictRefused = 1;

// Fills a string with n bytes from OpenSSL's CSPRNG; Internal if it fails.
Result<std::string> RandomBytes(size_t n);

// The proof for `role` ("connector" or "acceptor"); see the top of the file.
std::string Mac(const std::string& secret, std::string_view role, std::string_view context,
                std::string_view nonce_a, std::string_view nonce_c);

// Constant-time equality of two MACs (false when the sizes differ).
bool MacEquals(std::string_view a, std::string_view b);

// The acceptor's half, for event loops that cannot block: holds the nonce it
// sent until the response arrives. Thread-compatible.
class Challenge {
 public:
  // Draws a fresh nonce.
  static Result<Challenge> New();
  // The kChallengeBytes to send.
  std::string Wire() const;
  // Checks a response (exactly kResponseBytes; anything else is refused)
  // made for `context`. On success returns true and sets *reply to the
  // accept verdict carrying the acceptor's proof; otherwise returns false
  // and sets *reply to the one refusal byte.
  bool Verify(const std::string& secret, std::string_view context, std::string_view response,
              std::string* reply) const;

 private:
  explicit Challenge(std::string nonce) : nonce_(std::move(nonce)) {}
  std::string nonce_;
};

// The connector's half, on a connected non-blocking socket: sends
// `preamble` (bytes the protocol puts before the response, e.g. a hello that
// names the connector; sent at once, without waiting for the challenge, so an
// acceptor that runs without a secret rejects the connection right away),
// reads the challenge, answers it and checks the acceptor's proof, every step
// bounded by `deadline`. `peer` names the acceptor in messages ("rendezvous store at
// 10.0.0.1:29500", "rank 0 (10.0.0.1:41234)"). Errors:
//   FailedPrecondition  the acceptor refused the token, did not prove it holds
//                       it, or sent something other than a challenge
//   DeadlineExceeded    no challenge or verdict before the deadline
//   Unavailable         the connection closed or failed mid-handshake
Status Authenticate(int fd, const std::string& secret, std::string_view context,
                    const std::string& peer, Deadline deadline, std::string_view preamble = {});

}  // namespace cohort::comm::auth
