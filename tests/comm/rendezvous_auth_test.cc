// Peer authentication with the job token: the handshake itself (auth.h), the
// TcpStore server and client, the TCP mesh, and Communicator::FromEnv with
// COHORT_JOB_TOKEN. Raw sockets play the peers that do not hold the secret:
// silent, garbage, a client without a token, a replayed answer, a fake
// server. Tests start their own threads and processes; every wait is bounded.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <regex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "auth.h"
#include "cohort/comm/communicator.h"
#include "cohort/comm/rendezvous.h"
#include "cohort/comm/store.h"
#include "testing/ranks.h"

namespace cohort::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr char kSecret[] = "3f1c0e5a9b7d24c68e0f1a2b3c4d5e6f";

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// --- raw sockets ---------------------------------------------------------------

// A blocking loopback connection to port; -1 on failure.
int RawConnect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// "127.0.0.1:port" of our end: what the acceptor names in its log.
std::string LocalName(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

void WriteRaw(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t w = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (w <= 0) return;
    sent += static_cast<size_t>(w);
  }
}

// Reads up to n bytes, stopping early at EOF, an error or the timeout.
std::string ReadRaw(int fd, size_t n, int timeout_ms = 5000) {
  std::string out;
  const Deadline deadline = Deadline::After(milliseconds(timeout_ms));
  while (out.size() < n) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, deadline.RemainingMsForPoll()) <= 0) break;
    char buf[4096];
    ssize_t r = ::recv(fd, buf, std::min(sizeof(buf), n - out.size()), 0);
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

// True when the peer closes (EOF or reset) within the timeout; bytes still
// arriving before that are skipped.
bool ClosedWithin(int fd, int timeout_ms) {
  const Deadline deadline = Deadline::After(milliseconds(timeout_ms));
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, deadline.RemainingMsForPoll()) <= 0) return false;
    char buf[256];
    ssize_t r = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return true;
  }
}

// True when nothing arrives and the connection stays open for timeout_ms.
bool StaysOpenAndSilent(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 0;
}

// A listening loopback socket on a free port (a fake server).
int RawListen(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd, 4) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

int AcceptWithin(int listener, int timeout_ms) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return -1;
  return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
}

// The store's AUTH frame: op 0xA7, key length 0.
const std::string kAuthFrame("\xA7\0\0\0\0", 5);

// --- the handshake -----------------------------------------------------------------

TEST(AuthHandshakeTest, ProofsBindTheSecretTheNoncesAndTheContext) {
  Result<auth::Challenge> challenge = auth::Challenge::New();
  ASSERT_TRUE(challenge.ok()) << challenge.status().ToString();
  const std::string wire = challenge->Wire();
  ASSERT_EQ(wire.size(), auth::kChallengeBytes);
  EXPECT_EQ(wire.substr(0, 4), std::string(auth::kChallengeMagic));
  const std::string nonce_a = wire.substr(4);
  const std::string nonce_c(auth::kNonceBytes, 'c');
  const std::string context = "mesh rank 2 -> rank 0";
  auto response = [&](const std::string& secret, const std::string& ctx, const std::string& na) {
    return nonce_c + auth::Mac(secret, "connector", ctx, na, nonce_c);
  };

  std::string reply;
  ASSERT_TRUE(challenge->Verify(kSecret, context, response(kSecret, context, nonce_a), &reply));
  ASSERT_EQ(reply.size(), auth::kAcceptBytes);
  EXPECT_EQ(reply[0], auth::kVerdictAccepted);
  EXPECT_TRUE(auth::MacEquals(reply.substr(1),
                              auth::Mac(kSecret, "acceptor", context, nonce_a, nonce_c)));
  // The acceptor's proof is not the connector's: one cannot stand for the other.
  EXPECT_FALSE(auth::MacEquals(reply.substr(1),
                               auth::Mac(kSecret, "connector", context, nonce_a, nonce_c)));

  const std::string other_nonce(auth::kNonceBytes, 'x');
  struct Case {
    const char* what;
    std::string response;
  } refused[] = {
      {"wrong secret", response("another job's token", context, nonce_a)},
      {"another nonce (replay)", response(kSecret, context, other_nonce)},
      {"another claimed rank", response(kSecret, "mesh rank 1 -> rank 0", nonce_a)},
      {"another role", response(kSecret, "store", nonce_a)},
      {"truncated", response(kSecret, context, nonce_a).substr(0, auth::kResponseBytes - 1)},
      {"empty", ""},
      {"zeros", std::string(auth::kResponseBytes, '\0')},
  };
  for (const Case& c : refused) {
    SCOPED_TRACE(c.what);
    EXPECT_FALSE(challenge->Verify(kSecret, context, c.response, &reply));
    EXPECT_EQ(reply, std::string(1, auth::kVerdictRefused));
  }
  // Fresh nonces every time.
  Result<auth::Challenge> second = auth::Challenge::New();
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->Wire(), wire);
}

// --- the store -----------------------------------------------------------------------

std::unique_ptr<TcpStoreServer> StartServer(const std::string& secret,
                                            milliseconds auth_timeout = milliseconds(10000)) {
  TcpStoreOptions options;
  options.auth_secret = secret;
  options.auth_timeout = auth_timeout;
  Result<std::unique_ptr<TcpStoreServer>> server = TcpStoreServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  if (!server.ok()) return nullptr;
  return std::move(server).value();
}

Result<std::shared_ptr<Store>> ConnectClient(int port, const std::string& secret,
                                             milliseconds timeout = milliseconds(5000)) {
  TcpStoreOptions options;
  options.port = port;
  options.auth_secret = secret;
  return ConnectTcpStore(options, Deadline::After(timeout));
}

// Set, Get (also one that waits for a later Set) and Add between two clients,
// on keys no earlier call used.
void ExpectStoreWorks(int port, const std::string& secret) {
  static int calls = 0;
  const std::string p = "check" + std::to_string(++calls) + "/";
  Result<std::shared_ptr<Store>> a = ConnectClient(port, secret);
  Result<std::shared_ptr<Store>> b = ConnectClient(port, secret);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE((*a)->Set(p + "k", "v").ok());
  Result<std::string> v = (*b)->Get(p + "k", Deadline::After(milliseconds(2000)));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "v");
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    EXPECT_TRUE((*a)->Set(p + "late", "here").ok());
  });
  v = (*b)->Get(p + "late", Deadline::After(milliseconds(3000)));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "here");
  Result<int64_t> n = (*a)->Add(p + "n", 2);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  n = (*b)->Add(p + "n", 3);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 5);
}

TEST(StoreAuthTest, SameSecretWorks) {
  auto server = StartServer(kSecret);
  ASSERT_NE(server, nullptr);
  ExpectStoreWorks(server->port(), kSecret);
}

TEST(StoreAuthTest, NoSecretOnEitherSideStillWorks) {
  auto server = StartServer("");
  ASSERT_NE(server, nullptr);
  ExpectStoreWorks(server->port(), "");
}

TEST(StoreAuthTest, WrongSecretIsRefusedAtOnceWithAClearError) {
  auto server = StartServer(kSecret);
  ASSERT_NE(server, nullptr);
  ::testing::internal::CaptureStderr();
  const auto start = Clock::now();
  Result<std::shared_ptr<Store>> client =
      ConnectClient(server->port(), "another job's token", milliseconds(5000));
  const int64_t elapsed = MsSince(start);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kFailedPrecondition) << client.status().ToString();
  EXPECT_TRUE(Contains(client.status().message(), "refused the job token"))
      << client.status().message();
  EXPECT_TRUE(Contains(client.status().message(), "127.0.0.1:" + std::to_string(server->port())))
      << client.status().message();
  EXPECT_LT(elapsed, 2000) << "a refusal must not wait for the deadline";
  // The legitimate clients are unaffected.
  ExpectStoreWorks(server->port(), kSecret);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(Contains(log, "WARN")) << log;
  EXPECT_TRUE(Contains(log, "refused a connection from 127.0.0.1:")) << log;
  EXPECT_TRUE(Contains(log, "does not match the job token")) << log;
  EXPECT_FALSE(Contains(log, kSecret)) << "the secret must never be logged";
}

TEST(StoreAuthTest, ClientWithoutASecretIsToldTheStoreRequiresOne) {
  auto server = StartServer(kSecret);
  ASSERT_NE(server, nullptr);
  ::testing::internal::CaptureStderr();
  Result<std::shared_ptr<Store>> client = ConnectClient(server->port(), "");
  ASSERT_TRUE(client.ok()) << client.status().ToString();  // plain TCP connect
  const auto start = Clock::now();
  Status s = (*client)->Set("k", "v");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "requires a job token")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "COHORT_JOB_TOKEN")) << s.message();
  EXPECT_LT(MsSince(start), 2000);
  // Later calls fail the same way, fast.
  Result<std::string> again = (*client)->Get("k", Deadline::After(milliseconds(100)));
  EXPECT_TRUE(Contains(again.status().message(), "requires a job token"))
      << again.status().ToString();
  // Nothing was stored.
  Result<std::shared_ptr<Store>> good = ConnectClient(server->port(), kSecret);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  Result<std::string> v = (*good)->Get("k", Deadline::After(milliseconds(200)));
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded) << v.status().ToString();
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(Contains(log, "SET request without authenticating")) << log;
}

TEST(StoreAuthTest, ClientWithASecretFailsFastAgainstAStoreWithout) {
  auto server = StartServer("");
  ASSERT_NE(server, nullptr);
  ::testing::internal::CaptureStderr();
  const auto start = Clock::now();
  Result<std::shared_ptr<Store>> client =
      ConnectClient(server->port(), kSecret, milliseconds(5000));
  const int64_t elapsed = MsSince(start);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(client.ok());
  EXPECT_TRUE(Contains(client.status().message(), "runs without a job token"))
      << client.status().ToString();
  EXPECT_LT(elapsed, 2000);
  EXPECT_TRUE(Contains(log, "this store runs without a job token")) << log;
}

TEST(StoreAuthTest, SilentAndGarbagePeersAreRefusedWithoutBlockingOthers) {
  constexpr int kAuthTimeoutMs = 3000;
  auto server = StartServer(kSecret, milliseconds(kAuthTimeoutMs));
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  ::testing::internal::CaptureStderr();
  const auto start = Clock::now();

  // Connects and sends nothing.
  int silent = RawConnect(port);
  // Sends half an AUTH frame and stalls.
  int partial = RawConnect(port);
  // A well-formed AUTH frame and a response of random-looking garbage.
  int garbage = RawConnect(port);
  // Not the protocol at all.
  int http = RawConnect(port);
  ASSERT_GE(silent, 0);
  ASSERT_GE(partial, 0);
  ASSERT_GE(garbage, 0);
  ASSERT_GE(http, 0);
  WriteRaw(partial, kAuthFrame.substr(0, 3));
  std::string noise(auth::kResponseBytes, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>(i * 37 + 11);
  WriteRaw(garbage, kAuthFrame + noise);
  WriteRaw(http, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");

  // Each gets the challenge; the garbage one then the refusal and EOF.
  const std::string challenge = ReadRaw(garbage, auth::kChallengeBytes);
  ASSERT_EQ(challenge.size(), auth::kChallengeBytes);
  EXPECT_EQ(challenge.substr(0, 4), std::string(auth::kChallengeMagic));
  EXPECT_EQ(ReadRaw(garbage, 1), std::string(1, auth::kVerdictRefused));
  EXPECT_TRUE(ClosedWithin(garbage, 2000));
  EXPECT_TRUE(ClosedWithin(http, 2000));

  // Meanwhile a legitimate client is served at once.
  ExpectStoreWorks(port, kSecret);
  EXPECT_LT(MsSince(start), kAuthTimeoutMs - 500) << "the stalled handshakes held up the store";
  // The stalled peers are still connected (their time is not up) ...
  EXPECT_EQ(ReadRaw(silent, auth::kChallengeBytes).size(), auth::kChallengeBytes);
  EXPECT_TRUE(StaysOpenAndSilent(silent, 100));
  // ... and are dropped once it is.
  EXPECT_TRUE(ClosedWithin(silent, kAuthTimeoutMs + 2000));
  EXPECT_TRUE(ClosedWithin(partial, 2000));
  EXPECT_GE(MsSince(start), kAuthTimeoutMs - 100);
  ExpectStoreWorks(port, kSecret);

  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(Contains(log, "refused a connection from " + LocalName(garbage) +
                                ": its authentication proof does not match"))
      << log;
  EXPECT_TRUE(Contains(log, "refused a connection from " + LocalName(http) +
                                ": it does not speak the store protocol (first byte 0x47)"))
      << log;
  for (int fd : {silent, partial}) {
    EXPECT_TRUE(Contains(log, "refused a connection from " + LocalName(fd) +
                                  ": it did not complete the authentication handshake within " +
                                  std::to_string(kAuthTimeoutMs) + " ms"))
        << log;
  }
  for (int fd : {silent, partial, garbage, http}) ::close(fd);
}

TEST(StoreAuthTest, ReplayedResponseIsRefused) {
  auto server = StartServer(kSecret);
  ASSERT_NE(server, nullptr);
  // Capture a legitimate client's answer: it connects to a relay (us), which
  // passes the real server's challenge to it and its answer back.
  int relay_port = 0;
  int relay = RawListen(&relay_port);
  ASSERT_GE(relay, 0);
  Result<std::shared_ptr<Store>> client = Status::Internal("not run");
  std::thread connector([&] { client = ConnectClient(relay_port, kSecret); });
  int to_client = AcceptWithin(relay, 5000);
  int first = RawConnect(server->port());
  ASSERT_GE(to_client, 0);
  ASSERT_GE(first, 0);
  const std::string challenge1 = ReadRaw(first, auth::kChallengeBytes);
  ASSERT_EQ(challenge1.size(), auth::kChallengeBytes);
  WriteRaw(to_client, challenge1);
  const std::string captured = ReadRaw(to_client, kAuthFrame.size() + auth::kResponseBytes);
  ASSERT_EQ(captured.size(), kAuthFrame.size() + auth::kResponseBytes);
  WriteRaw(first, captured);
  const std::string verdict = ReadRaw(first, auth::kAcceptBytes);
  ASSERT_EQ(verdict.size(), auth::kAcceptBytes);
  EXPECT_EQ(verdict[0], auth::kVerdictAccepted);
  WriteRaw(to_client, verdict);
  connector.join();
  EXPECT_TRUE(client.ok()) << client.status().ToString();

  // Replayed on a new connection, to a new nonce: refused.
  ::testing::internal::CaptureStderr();
  int second = RawConnect(server->port());
  ASSERT_GE(second, 0);
  const std::string challenge2 = ReadRaw(second, auth::kChallengeBytes);
  ASSERT_EQ(challenge2.size(), auth::kChallengeBytes);
  EXPECT_NE(challenge2, challenge1);
  WriteRaw(second, captured);
  EXPECT_EQ(ReadRaw(second, 1), std::string(1, auth::kVerdictRefused));
  EXPECT_TRUE(ClosedWithin(second, 2000));
  ExpectStoreWorks(server->port(), kSecret);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(Contains(log, "refused a connection from " + LocalName(second))) << log;
  for (int fd : {relay, to_client, first, second}) ::close(fd);
}

TEST(StoreAuthTest, ClientRefusesAServerThatCannotProveTheSecret) {
  int port = 0;
  int listener = RawListen(&port);
  ASSERT_GE(listener, 0);
  Result<std::shared_ptr<Store>> client = Status::Internal("not run");
  std::thread connector([&] { client = ConnectClient(port, kSecret); });
  int fd = AcceptWithin(listener, 5000);
  ASSERT_GE(fd, 0);
  // An impostor: a challenge it made up, then "accepted" with a made-up proof.
  WriteRaw(fd, std::string(auth::kChallengeMagic) + std::string(auth::kNonceBytes, 'n'));
  EXPECT_EQ(ReadRaw(fd, kAuthFrame.size() + auth::kResponseBytes).size(),
            kAuthFrame.size() + auth::kResponseBytes);
  WriteRaw(fd, std::string(1, auth::kVerdictAccepted) + std::string(auth::kMacBytes, 'p'));
  connector.join();
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kFailedPrecondition) << client.status().ToString();
  EXPECT_TRUE(Contains(client.status().message(), "could not prove it holds the job token"))
      << client.status().message();
  ::close(fd);
  ::close(listener);
}

TEST(StoreAuthTest, ClientGivesUpAtItsDeadlineWhenTheServerStaysSilent) {
  int port = 0;
  int listener = RawListen(&port);  // accepts (backlog) but never speaks
  ASSERT_GE(listener, 0);
  const auto start = Clock::now();
  Result<std::shared_ptr<Store>> client = ConnectClient(port, kSecret, milliseconds(300));
  const int64_t elapsed = MsSince(start);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kDeadlineExceeded) << client.status().ToString();
  EXPECT_TRUE(Contains(client.status().message(), "authentication challenge"))
      << client.status().message();
  EXPECT_GE(elapsed, 250);
  EXPECT_LT(elapsed, 2000);
  ::close(listener);
}

// --- the TCP mesh ------------------------------------------------------------------

Options MeshOptions(const std::string& secret, milliseconds timeout = milliseconds(20000)) {
  Options o;
  o.transport = TransportKind::kTcp;
  o.timeout = timeout;
  o.read_env_overrides = false;
  o.tcp_chunk_bytes = 4096;
  o.auth_secret = secret;
  return o;
}

// Sum all-reduce of (rank + 1) * (i + 1); checks the result.
Status SumCheck(Communicator& c, size_t count = 10000) {
  std::vector<float> data(count);
  for (size_t i = 0; i < count; ++i) data[i] = static_cast<float>((c.rank() + 1) * (i % 100 + 1));
  COHORT_RETURN_IF_ERROR(c.AllReduce(data.data(), count, DType::kFloat32, ReduceOp::kSum));
  const int n = c.world_size();
  for (size_t i = 0; i < count; ++i) {
    const float expected = static_cast<float>(n * (n + 1) / 2 * (i % 100 + 1));
    if (data[i] != expected)
      return Status::Internal("sum mismatch at " + std::to_string(i) + ": " +
                              std::to_string(data[i]) + " != " + std::to_string(expected));
  }
  return Status::Ok();
}

TEST(MeshAuthTest, SameSecretAllReduce) {
  for (int world : {2, 3}) {
    SCOPED_TRACE("world " + std::to_string(world));
    std::vector<Status> results = testing::RunRankThreads(
        world, MeshOptions(kSecret), [](Communicator& c) {
          if (c.transport() != TransportKind::kTcp) return Status::Internal("not on TCP");
          COHORT_RETURN_IF_ERROR(SumCheck(c));
          return c.Barrier();
        });
    for (int r = 0; r < world; ++r)
      EXPECT_TRUE(results[r].ok()) << r << ": " << results[r].ToString();
  }
}

TEST(MeshAuthTest, NoSecretStillWorks) {
  std::vector<Status> results =
      testing::RunRankThreads(3, MeshOptions(""), [](Communicator& c) { return SumCheck(c); });
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(results[r].ok()) << r << ": " << results[r].ToString();
}

TEST(MeshAuthTest, WrongSecretIsRefusedWithAClearError) {
  constexpr int kTimeoutMs = 2500;
  auto store = NewMemoryStore();
  Status results[2];
  int64_t elapsed[2] = {0, 0};
  ::testing::internal::CaptureStderr();
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      const auto start = Clock::now();
      auto c = Communicator::Create(store, r, 2,
                                    MeshOptions(r == 1 ? "another job's token" : kSecret,
                                                milliseconds(kTimeoutMs)));
      results[r] = c.ok() ? SumCheck(**c) : c.status();
      elapsed[r] = MsSince(start);
    });
  }
  for (auto& t : threads) t.join();
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(results[1].code(), StatusCode::kFailedPrecondition) << results[1].ToString();
  EXPECT_TRUE(Contains(results[1].message(), "rank 0 (127.0.0.1:")) << results[1].message();
  EXPECT_TRUE(Contains(results[1].message(), "refused the job token")) << results[1].message();
  EXPECT_LT(elapsed[1], kTimeoutMs) << "a refusal must not wait for the deadline";
  EXPECT_EQ(results[0].code(), StatusCode::kDeadlineExceeded) << results[0].ToString();
  EXPECT_TRUE(Contains(results[0].message(), "rank(s) 1 did not connect")) << results[0].message();
  EXPECT_TRUE(Contains(results[0].message(), "refused 1 connection")) << results[0].message();
  EXPECT_LT(elapsed[0], kTimeoutMs + 2000);
  EXPECT_TRUE(Contains(log, "rank 0 refused a connection on its collective port from 127.0.0.1:"))
      << log;
  EXPECT_TRUE(Contains(log, "claims rank 1 but its authentication proof does not match")) << log;
}

TEST(MeshAuthTest, StrayConnectionsNeitherJoinNorDelayTheRanks) {
  auto store = NewMemoryStore();
  // Rank 0 builds its mesh once it has every rank's host key; this one stands
  // in for rank 1's (which overwrites it) so the test can reach rank 0 first.
  ASSERT_TRUE(store->Set("host/1", "stand-in").ok());
  ::testing::internal::CaptureStderr();
  Status results[2];
  std::thread rank0([&] {
    auto c = Communicator::Create(store, 0, 2, MeshOptions(kSecret));
    results[0] = c.ok() ? SumCheck(**c) : c.status();
  });
  // Rank 0's collective port, from the store, before rank 1 exists.
  Result<std::string> address = store->Get("tcp/addr/0", Deadline::After(milliseconds(10000)));
  EXPECT_TRUE(address.ok()) << address.status().ToString();
  if (!address.ok()) {
    rank0.join();  // fails at its deadline
    return;
  }
  const int port = std::atoi(address->substr(address->rfind(':') + 1).c_str());

  int silent = RawConnect(port);
  int garbage = RawConnect(port);   // claims rank 1, answers with garbage
  int plain = RawConnect(port);     // claims rank 1 without authenticating
  int bad_rank = RawConnect(port);  // claims a rank that does not exist
  EXPECT_GE(silent, 0);
  EXPECT_GE(garbage, 0);
  EXPECT_GE(plain, 0);
  EXPECT_GE(bad_rank, 0);
  // {magic, rank, stream 0, streams per peer as the ranks use}
  auto hello = [](uint32_t magic, int32_t rank) {
    std::string h(12, '\0');
    const uint16_t stream = 0, streams = static_cast<uint16_t>(MeshOptions(kSecret).tcp_streams);
    std::memcpy(h.data(), &magic, 4);
    std::memcpy(h.data() + 4, &rank, 4);
    std::memcpy(h.data() + 8, &stream, 2);
    std::memcpy(h.data() + 10, &streams, 2);
    return h;
  };
  WriteRaw(garbage, hello(0xC0407C02, 1) + std::string(auth::kResponseBytes, '\x5a'));
  WriteRaw(plain, hello(0xC0407C01, 1));
  WriteRaw(bad_rank, hello(0xC0407C02, 7));
  EXPECT_EQ(ReadRaw(garbage, auth::kChallengeBytes).size(), auth::kChallengeBytes);
  EXPECT_EQ(ReadRaw(garbage, 1), std::string(1, auth::kVerdictRefused));
  for (int fd : {garbage, plain, bad_rank}) EXPECT_TRUE(ClosedWithin(fd, 3000));
  EXPECT_EQ(ReadRaw(silent, auth::kChallengeBytes).size(), auth::kChallengeBytes);
  EXPECT_TRUE(StaysOpenAndSilent(silent, 50));

  // The real rank 1 joins while the silent connection is still pending.
  const auto start = Clock::now();
  std::thread rank1([&] {
    auto c = Communicator::Create(store, 1, 2, MeshOptions(kSecret));
    results[1] = c.ok() ? SumCheck(**c) : c.status();
  });
  rank1.join();
  rank0.join();
  EXPECT_LT(MsSince(start), 5000);
  EXPECT_TRUE(results[0].ok()) << results[0].ToString();
  EXPECT_TRUE(results[1].ok()) << results[1].ToString();
  // Once every rank joined, the silent one is refused too.
  EXPECT_TRUE(ClosedWithin(silent, 3000));
  const std::string log = ::testing::internal::GetCapturedStderr();
  const std::string prefix = "rank 0 refused a connection on its collective port from ";
  EXPECT_TRUE(Contains(log, prefix + LocalName(garbage) + ": it claims rank 1 but its "
                                "authentication proof does not match"))
      << log;
  EXPECT_TRUE(Contains(log, prefix + LocalName(plain) + ": it did not authenticate")) << log;
  EXPECT_TRUE(Contains(log, prefix + LocalName(bad_rank) + ": it claims rank 7")) << log;
  EXPECT_TRUE(Contains(log, prefix + LocalName(silent) + ": it had not completed the handshake"))
      << log;
  for (int fd : {silent, garbage, plain, bad_rank}) ::close(fd);
}

// --- the torchrun environment ------------------------------------------------------

TEST(RendezvousAuthEnvTest, JobTokenComesFromCohortJobToken) {
  auto parse = [](std::map<std::string, std::string> env) {
    return RendezvousConfigFromEnv([env](const std::string& name) -> std::optional<std::string> {
      auto it = env.find(name);
      if (it == env.end()) return std::nullopt;
      return it->second;
    });
  };
  std::map<std::string, std::string> env = {
      {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"},     {"RANK", "1"},
      {"WORLD_SIZE", "2"},         {"LOCAL_RANK", "0"},          {"LOCAL_WORLD_SIZE", "1"},
      {"COHORT_JOB_TOKEN", "s3cr3t"}};
  Result<RendezvousConfig> c = parse(env);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->auth_secret, "s3cr3t");
  env["COHORT_JOB_TOKEN"] = "";
  c = parse(env);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->auth_secret, "");
  env.erase("COHORT_JOB_TOKEN");
  c = parse(env);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->auth_secret, "");
  c = parse({{"COHORT_JOB_TOKEN", "solo"}});  // single rank
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->auth_secret, "solo");
}

int FreePort() {
  int port = 0;
  int fd = RawListen(&port);
  ::close(fd);
  return port;
}

// Forks two ranks that rendezvous through Communicator::FromEnv on TCP, each
// with its own COHORT_JOB_TOKEN (nullptr: unset), and all-reduce.
std::vector<testing::ProcessResult> RunFromEnv(const char* token0, const char* token1,
                                               int timeout_ms) {
  const int port = FreePort();
  return testing::RunRankProcesses(
      2, Options{},
      [&](int rank, Communicator*) -> Status {
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
        setenv("RANK", std::to_string(rank).c_str(), 1);
        setenv("WORLD_SIZE", "2", 1);
        setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
        setenv("LOCAL_WORLD_SIZE", "2", 1);
        setenv("COHORT_COMM_TRANSPORT", "tcp", 1);
        setenv("COHORT_COMM_TIMEOUT_MS", std::to_string(timeout_ms).c_str(), 1);
        const char* token = rank == 0 ? token0 : token1;
        if (token != nullptr) {
          setenv("COHORT_JOB_TOKEN", token, 1);
        } else {
          unsetenv("COHORT_JOB_TOKEN");
        }
        // Rank 1 starts a little later: rank 0 hosts the store.
        if (rank == 1) std::this_thread::sleep_for(milliseconds(100));
        auto c = Communicator::FromEnv();
        if (!c.ok()) return c.status();
        return SumCheck(**c);
      },
      /*kill_after_s=*/60, [](int) { return true; });
}

TEST(FromEnvAuthTest, SameJobTokenRendezvousAndAllReduce) {
  auto results = RunFromEnv(kSecret, kSecret, 20000);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(results[r].exit_code, 0) << "rank " << r << ": " << results[r].message;
}

TEST(FromEnvAuthTest, NoJobTokenStillWorks) {
  auto results = RunFromEnv(nullptr, "", 20000);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(results[r].exit_code, 0) << "rank " << r << ": " << results[r].message;
}

TEST(FromEnvAuthTest, RankWithAnotherTokenFailsClearlyWithinTheTimeout) {
  constexpr int kTimeoutMs = 3000;
  auto results = RunFromEnv(kSecret, "another job's token", kTimeoutMs);
  EXPECT_EQ(results[1].exit_code, 1);
  EXPECT_TRUE(Contains(results[1].message, "FailedPrecondition")) << results[1].message;
  EXPECT_TRUE(Contains(results[1].message, "refused the job token")) << results[1].message;
  EXPECT_LT(results[1].seconds, kTimeoutMs / 1000.0) << results[1].message;
  // Rank 0 waits for a rank 1 that never joins, then fails naming it.
  EXPECT_EQ(results[0].exit_code, 1);
  EXPECT_TRUE(Contains(results[0].message, "rank 1")) << results[0].message;
  EXPECT_LT(results[0].seconds, kTimeoutMs / 1000.0 + 5) << results[0].message;
}

TEST(FromEnvAuthTest, RankWithoutATokenIsToldOneIsRequired) {
  auto results = RunFromEnv(kSecret, nullptr, 3000);
  EXPECT_EQ(results[1].exit_code, 1);
  EXPECT_TRUE(Contains(results[1].message, "requires a job token")) << results[1].message;
  EXPECT_EQ(results[0].exit_code, 1);
}

// --- `cohort launch` ------------------------------------------------------------------

// One rank under `cohort launch` (started by the next test; skipped otherwise):
// rendezvous and all-reduce with the token the launcher generated.
TEST(LaunchAuthTest, RankUnderCohortLaunch) {
  if (std::getenv("COHORT_AUTH_TEST_RANK") == nullptr) {
    GTEST_SKIP() << "runs as a rank of LaunchAuthTest.LaunchedRanksAuthenticateWithAGeneratedToken";
  }
  const char* token = std::getenv("COHORT_JOB_TOKEN");
  ASSERT_NE(token, nullptr);
  EXPECT_TRUE(std::regex_match(token, std::regex("[0-9a-f]{32}"))) << token;
  auto c = Communicator::FromEnv();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->transport(), TransportKind::kTcp);
  Status sum = SumCheck(**c);
  EXPECT_TRUE(sum.ok()) << sum.ToString();
  // The store on MASTER_PORT demands authentication.
  int fd = RawConnect(std::atoi(std::getenv("MASTER_PORT")));
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ReadRaw(fd, auth::kChallengeMagic.size()), std::string(auth::kChallengeMagic));
  ::close(fd);
  // Rank 0 hosts the store: nobody leaves before every rank probed it.
  Status barrier = (*c)->Barrier();
  EXPECT_TRUE(barrier.ok()) << barrier.ToString();
}

TEST(LaunchAuthTest, LaunchedRanksAuthenticateWithAGeneratedToken) {
  const std::string cohort = std::string(COHORT_BIN_DIR) + "/cohort";
  if (::access(cohort.c_str(), X_OK) != 0) GTEST_SKIP() << cohort << " is not built";
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT_GT(n, 0);
  self[n] = '\0';
  const std::string command =
      "env -u COHORT_JOB_TOKEN COHORT_AUTH_TEST_RANK=1 COHORT_COMM_TRANSPORT=tcp "
      "COHORT_COMM_TIMEOUT_MS=20000 timeout 120 " + cohort + " launch -n 2 -- " + self +
      " --gtest_filter=LaunchAuthTest.RankUnderCohortLaunch 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output.append(buf, got);
  const int status = ::pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_TRUE(Contains(output, "[rank 0] [  PASSED  ] 1 test")) << output;
  EXPECT_TRUE(Contains(output, "[rank 1] [  PASSED  ] 1 test")) << output;
  EXPECT_FALSE(Contains(output, "SKIPPED")) << output;
}

}  // namespace
}  // namespace cohort::comm
