// Collectives against a serial reference: 1-4 ranks, both transports, as
// threads and as processes; zero and odd counts; bfloat16 within tolerance;
// shared (in-place) and staged buffers; dead and stalled peers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <tuple>

#include "cohort/comm/communicator.h"
#include "reduce.h"
#include "testing/ranks.h"

namespace cohort::comm {
namespace {

using testing::RunRankProcesses;
using testing::RunRankThreads;

// Every rank's input is exactly representable, and so is every partial sum.
float Input(int rank, size_t i) { return static_cast<float>((rank + 1) * 0.5 + (i % 97) * 0.25); }
float ExpectedSum(int world, size_t i) {
  double s = 0;
  for (int r = 0; r < world; ++r) s += Input(r, i);
  return static_cast<float>(s);
}

Status Fail(const std::string& what) { return Status::Internal(what); }

Options SmallOptions(TransportKind kind) {
  Options o;
  o.transport = kind;
  o.timeout = std::chrono::milliseconds(20000);
  o.read_env_overrides = false;
  o.shm_scratch_bytes = 64 * 1024;  // forces many staged pieces
  o.tcp_chunk_bytes = 4096;         // forces many chunks per ring step
  return o;
}

// Runs the full battery of collectives on one rank and checks the results.
Status CheckAll(Communicator& c, size_t count) {
  const int n = c.world_size(), r = c.rank();
  // All-reduce sum and average, float32, plain (staged) buffer.
  std::vector<float> data(count);
  for (size_t i = 0; i < count; ++i) data[i] = Input(r, i);
  COHORT_RETURN_IF_ERROR(c.AllReduce(data.data(), count, DType::kFloat32, ReduceOp::kSum));
  for (size_t i = 0; i < count; ++i)
    if (data[i] != ExpectedSum(n, i))
      return Fail("sum mismatch at " + std::to_string(i) + ": " + std::to_string(data[i]) +
                  " != " + std::to_string(ExpectedSum(n, i)));
  for (size_t i = 0; i < count; ++i) data[i] = Input(r, i);
  COHORT_RETURN_IF_ERROR(c.AllReduce(data.data(), count, DType::kFloat32, ReduceOp::kAverage));
  for (size_t i = 0; i < count; ++i)
    if (std::fabs(data[i] - ExpectedSum(n, i) / n) > 1e-6f * std::fabs(ExpectedSum(n, i)))
      return Fail("average mismatch at " + std::to_string(i));

  // In place in shared memory (the gradient-bucket path), twice in a row.
  COHORT_ASSIGN_OR_RETURN(void* shared, c.AllocateShared((count + 5) * sizeof(float)));
  float* sp = static_cast<float*>(shared) + 5;  // not at the segment's start
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < count; ++i) sp[i] = Input(r, i) * (round + 1);
    COHORT_RETURN_IF_ERROR(c.AllReduce(sp, count, DType::kFloat32, ReduceOp::kSum));
    for (size_t i = 0; i < count; ++i)
      if (sp[i] != ExpectedSum(n, i) * (round + 1)) return Fail("shared sum mismatch at " + std::to_string(i));
  }

  // bfloat16: summed in float, rounded once (ring: per step) -> relative tolerance.
  std::vector<uint16_t> bf(count);
  for (size_t i = 0; i < count; ++i) bf[i] = FloatToBFloat16(Input(r, i) * 1.37f);
  COHORT_RETURN_IF_ERROR(c.AllReduce(bf.data(), count, DType::kBFloat16, ReduceOp::kSum));
  for (size_t i = 0; i < count; ++i) {
    double expected = 0;
    for (int q = 0; q < n; ++q) expected += BFloat16ToFloat(FloatToBFloat16(Input(q, i) * 1.37f));
    if (std::fabs(BFloat16ToFloat(bf[i]) - expected) > 0.02 * std::fabs(expected) + 1e-3)
      return Fail("bf16 mismatch at " + std::to_string(i));
  }

  // Broadcast from the last rank.
  std::vector<char> bytes(count + 3);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(r == n - 1 ? i * 7 : 0);
  COHORT_RETURN_IF_ERROR(c.Broadcast(bytes.data(), bytes.size(), n - 1));
  for (size_t i = 0; i < bytes.size(); ++i)
    if (bytes[i] != static_cast<char>(i * 7)) return Fail("broadcast mismatch at " + std::to_string(i));

  // All-gather of count + 1 bytes per rank.
  std::vector<char> in(count + 1), out(n * (count + 1));
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<char>(r * 31 + i);
  COHORT_RETURN_IF_ERROR(c.AllGather(in.data(), out.data(), in.size()));
  for (int q = 0; q < n; ++q)
    for (size_t i = 0; i < in.size(); ++i)
      if (out[q * in.size() + i] != static_cast<char>(q * 31 + i)) return Fail("all-gather mismatch");

  // Async all-reduces complete in order, then a barrier.
  std::vector<float> a(count), b(count);
  for (size_t i = 0; i < count; ++i) a[i] = b[i] = Input(r, i);
  auto wa = c.AllReduceAsync(a.data(), count, DType::kFloat32, ReduceOp::kSum);
  auto wb = c.AllReduceAsync(b.data(), count, DType::kFloat32, ReduceOp::kAverage);
  COHORT_RETURN_IF_ERROR(wa->Wait());
  COHORT_RETURN_IF_ERROR(wb->Wait());
  for (size_t i = 0; i < count; ++i)
    if (a[i] != ExpectedSum(n, i)) return Fail("async sum mismatch");
  return c.Barrier();
}

class CollectivesThreads
    : public ::testing::TestWithParam<std::tuple<TransportKind, int, size_t>> {};

TEST_P(CollectivesThreads, MatchSerialReference) {
  auto [kind, world, count] = GetParam();
  auto results = RunRankThreads(world, SmallOptions(kind), [&](Communicator& c) {
    EXPECT_EQ(c.transport(), kind);
    return CheckAll(c, count);
  });
  for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].ToString();
}

INSTANTIATE_TEST_SUITE_P(
    All, CollectivesThreads,
    ::testing::Combine(::testing::Values(TransportKind::kShm, TransportKind::kTcp),
                       ::testing::Values(1, 2, 3, 4),
                       ::testing::Values(size_t{0}, size_t{1}, size_t{7}, size_t{1001},
                                         size_t{100003})),
    [](const auto& info) {
      return std::string(TransportName(std::get<0>(info.param))) + "_w" +
             std::to_string(std::get<1>(info.param)) + "_n" + std::to_string(std::get<2>(info.param));
    });

class CollectivesProcesses : public ::testing::TestWithParam<std::tuple<TransportKind, int>> {};

TEST_P(CollectivesProcesses, MatchSerialReference) {
  auto [kind, world] = GetParam();
  auto results = RunRankProcesses(world, SmallOptions(kind), [&](int, Communicator* c) {
    if (c->transport() != kind) return Fail("wrong transport");
    for (size_t count : {size_t{0}, size_t{13}, size_t{262147}})
      COHORT_RETURN_IF_ERROR(CheckAll(*c, count));
    return Status::Ok();
  });
  for (int r = 0; r < world; ++r)
    EXPECT_EQ(results[r].exit_code, 0) << "rank " << r << ": " << results[r].message;
}

INSTANTIATE_TEST_SUITE_P(All, CollectivesProcesses,
                         ::testing::Combine(::testing::Values(TransportKind::kShm, TransportKind::kTcp),
                                            ::testing::Values(1, 2, 3, 4)),
                         [](const auto& info) {
                           return std::string(TransportName(std::get<0>(info.param))) + "_w" +
                                  std::to_string(std::get<1>(info.param));
                         });

// A peer that dies (exits without joining the collective) or stalls makes
// every other rank fail well before the test's kill limit, naming the peer.
class FailingPeer : public ::testing::TestWithParam<std::tuple<TransportKind, bool>> {};

TEST_P(FailingPeer, OthersFailNamingIt) {
  auto [kind, stall] = GetParam();
  Options o = SmallOptions(kind);
  o.timeout = std::chrono::milliseconds(1500);
  const int world = 3, victim = 2;
  auto results = RunRankProcesses(
      world, o,
      [&](int rank, Communicator* c) {
        std::vector<float> data(1000, 1.0f);
        COHORT_RETURN_IF_ERROR(c->AllReduce(data.data(), data.size(), DType::kFloat32, ReduceOp::kSum));
        if (rank == victim) {
          if (stall) std::this_thread::sleep_for(std::chrono::seconds(20));
          _exit(0);  // dies without a word
        }
        Status s = c->AllReduce(data.data(), data.size(), DType::kFloat32, ReduceOp::kSum);
        if (s.ok()) return Fail("all-reduce succeeded without rank 2");
        // Later calls return the same sticky error.
        Status again = c->Barrier();
        if (again.ok()) return Fail("barrier succeeded after a failure");
        return Status::Internal(s.ToString());
      },
      /*kill_after_s=*/5);
  bool someone_named_victim = false;
  for (int r = 0; r < world; ++r) {
    if (r == victim) continue;
    EXPECT_EQ(results[r].exit_code, 1) << results[r].message;
    EXPECT_LT(results[r].seconds, 4.5) << "rank " << r << " took too long: " << results[r].message;
    EXPECT_EQ(results[r].message.find("succeeded"), std::string::npos) << results[r].message;
    if (results[r].message.find("rank 2") != std::string::npos) someone_named_victim = true;
  }
  EXPECT_TRUE(someone_named_victim) << results[0].message << " | " << results[1].message;
  if (kind == TransportKind::kShm) {
    // On shared memory every rank waits on every peer directly.
    for (int r = 0; r < world; ++r)
      if (r != victim) {
        EXPECT_NE(results[r].message.find("rank 2"), std::string::npos) << results[r].message;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(All, FailingPeer,
                         ::testing::Combine(::testing::Values(TransportKind::kShm, TransportKind::kTcp),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(TransportName(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_stalls" : "_dies");
                         });

// 16-bit floats on the wire (TCP ring): half the bytes, float32 additions;
// every rank ends with the same values, each one a 16-bit value close to the sum.
class HalfWire : public ::testing::TestWithParam<std::tuple<WireFormat, int, size_t>> {};

TEST_P(HalfWire, EveryRankGetsTheSameRoundedSum) {
  const auto [wire, world, count] = GetParam();
  std::vector<std::vector<float>> results(world);
  auto input = [](int r, size_t i) { return std::sin(0.37f * static_cast<float>(i) + r) * (1.0f + r); };
  auto round_trip = [wire = wire](float f) {
    return wire == WireFormat::kFloat16 ? Float16ToFloat(FloatToFloat16(f)) : BFloat16ToFloat(FloatToBFloat16(f));
  };
  const int mantissa_bits = wire == WireFormat::kFloat16 ? 11 : 8;
  Options o = SmallOptions(TransportKind::kTcp);
  o.tcp_small_bytes = 0;  // the ring even for tiny buffers
  auto statuses = RunRankThreads(world, o, [&](Communicator& c) {
    std::vector<float> data(count);
    for (size_t i = 0; i < count; ++i) data[i] = input(c.rank(), i);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      std::vector<float> d = data;
      auto work = c.AllReduceAsync(d.data(), count, DType::kFloat32, op, wire);
      COHORT_RETURN_IF_ERROR(work->Wait());
      if (op == ReduceOp::kAverage) {
        for (size_t i = 0; i < count; ++i) d[i] *= static_cast<float>(c.world_size());
      }
      results[c.rank()] = d;
      if (op == ReduceOp::kSum) COHORT_RETURN_IF_ERROR(c.Barrier());
    }
    return Status::Ok();
  });
  for (const Status& s : statuses) ASSERT_TRUE(s.ok()) << s.ToString();
  for (int r = 1; r < world; ++r) EXPECT_EQ(results[r], results[0]) << "rank " << r << " differs from rank 0";
  for (size_t i = 0; i < count; ++i) {
    double exact = 0, magnitude = 0;
    for (int r = 0; r < world; ++r) {
      exact += input(r, i);
      magnitude += std::fabs(input(r, i));
    }
    // One rounding of each partial sum sent and of the result.
    ASSERT_NEAR(results[0][i], exact, magnitude * world * std::ldexp(1.0, -mantissa_bits) + 1e-6) << "at " << i;
    // It crossed the wire as 16-bit floats: the result is such a value (times
    // world_size for the average, exact for 2 and 4).
    if (world != 3) {
      ASSERT_EQ(round_trip(results[0][i]), results[0][i]) << "at " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tcp, HalfWire,
                         ::testing::Combine(::testing::Values(WireFormat::kBFloat16, WireFormat::kFloat16),
                                            ::testing::Values(2, 3, 4),
                                            ::testing::Values(size_t{0}, size_t{1}, size_t{5}, size_t{100003})),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == WireFormat::kFloat16 ? "fp16" : "bf16") +
                                  "_w" + std::to_string(std::get<1>(info.param)) + "_n" +
                                  std::to_string(std::get<2>(info.param));
                         });

// Recursive doubling (small buffers): exact sums and identical bits on every
// rank, for powers of two and for the ranks folded in beyond one.
class Doubling : public ::testing::TestWithParam<std::tuple<int, size_t>> {};

TEST_P(Doubling, MatchesTheReferenceWithIdenticalBitsOnEveryRank) {
  const auto [world, count] = GetParam();
  Options o = SmallOptions(TransportKind::kTcp);
  o.tcp_small_bytes = size_t{1} << 30;  // every all-reduce
  std::vector<std::vector<float>> results(world);
  auto statuses = RunRankThreads(world, o, [&](Communicator& c) {
    COHORT_RETURN_IF_ERROR(CheckAll(c, count));
    std::vector<float> d(count);
    for (size_t i = 0; i < count; ++i) d[i] = std::sin(0.1f * static_cast<float>(i) + c.rank()) / 3.0f;
    // A 16-bit wire is not used for buffers this small: float32 all the way.
    COHORT_RETURN_IF_ERROR(c.AllReduce(d.data(), count, DType::kFloat32, ReduceOp::kAverage, c.DefaultDeadline(),
                                       WireFormat::kBFloat16));
    results[c.rank()] = d;
    return Status::Ok();
  });
  for (const Status& s : statuses) ASSERT_TRUE(s.ok()) << s.ToString();
  for (int r = 1; r < world; ++r) EXPECT_EQ(results[r], results[0]) << "rank " << r << " differs from rank 0";
  for (size_t i = 0; i < count; ++i) {
    double exact = 0;
    for (int r = 0; r < world; ++r) exact += std::sin(0.1f * static_cast<float>(i) + r) / 3.0f;
    ASSERT_NEAR(results[0][i], exact / world, 1e-6) << "at " << i;
    ASSERT_NE(BFloat16ToFloat(FloatToBFloat16(results[0][i])), results[0][i]) << "rounded to bfloat16 at " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Tcp, Doubling,
                         ::testing::Combine(::testing::Values(2, 3, 5, 6, 8),
                                            ::testing::Values(size_t{1}, size_t{1001})),
                         [](const auto& info) {
                           return "w" + std::to_string(std::get<0>(info.param)) + "_n" +
                                  std::to_string(std::get<1>(info.param));
                         });

// Several TCP connections per pair of ranks: a transfer longer than one
// stripe is spread over them and must arrive in order, reduced correctly
// (the ring reduces the received prefix while the rest is still arriving).
class TcpStreams : public ::testing::TestWithParam<std::tuple<int, int, size_t>> {};

TEST_P(TcpStreams, StripedTransfersMatchTheReference) {
  const auto [streams, world, count] = GetParam();
  Options o = SmallOptions(TransportKind::kTcp);
  o.tcp_streams = streams;
  o.tcp_chunk_bytes = 5000;  // reductions straddle stripe boundaries
  auto statuses = RunRankThreads(world, o, [&](Communicator& c) { return CheckAll(c, count); });
  for (int r = 0; r < world; ++r) EXPECT_TRUE(statuses[r].ok()) << "rank " << r << ": " << statuses[r].ToString();
}

INSTANTIATE_TEST_SUITE_P(Tcp, TcpStreams,
                         ::testing::Combine(::testing::Values(1, 3, 16), ::testing::Values(2, 3),
                                            // one float past a stripe; many stripes, the last one short
                                            ::testing::Values(size_t{32769}, size_t{300007})),
                         [](const auto& info) {
                           return "s" + std::to_string(std::get<0>(info.param)) + "_w" +
                                  std::to_string(std::get<1>(info.param)) + "_n" +
                                  std::to_string(std::get<2>(info.param));
                         });

TEST(TcpStreams, RanksWithDifferentCountsFailNamingTheVariable) {
  auto store = NewMemoryStore();
  Status results[2];
  std::thread ranks[2];
  // Capture before any rank runs: rank 0 logs the refusal as soon as rank 1 connects.
  ::testing::internal::CaptureStderr();
  for (int r = 0; r < 2; ++r) {
    ranks[r] = std::thread([&, r] {
      Options o = SmallOptions(TransportKind::kTcp);
      o.timeout = std::chrono::milliseconds(2000);
      o.tcp_streams = r == 0 ? 2 : 3;
      auto c = Communicator::Create(store, r, 2, o);
      results[r] = c.ok() ? Status::Ok() : c.status();
    });
  }
  for (auto& t : ranks) t.join();
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(results[0].ok());
  EXPECT_FALSE(results[1].ok());
  EXPECT_NE(log.find("COHORT_COMM_TCP_STREAMS differs between ranks"), std::string::npos) << log;
}

TEST(TcpStreams, BadEnvironmentValuesAreRefused) {
  for (const char* bad : {"0", "17", "two", "-1"}) {
    setenv("COHORT_COMM_TCP_STREAMS", bad, 1);
    Options o;
    o.transport = TransportKind::kTcp;
    auto c = Communicator::Create(NewMemoryStore(), 0, 1, o);
    EXPECT_FALSE(c.ok()) << bad;
    if (!c.ok()) {
      EXPECT_NE(c.status().message().find("COHORT_COMM_TCP_STREAMS"), std::string::npos);
    }
  }
  setenv("COHORT_COMM_TCP_STREAMS", "4", 1);
  setenv("COHORT_COMM_TCP_SOCKET_BUFFER", "1048576", 1);
  Options o;
  auto c = Communicator::Create(NewMemoryStore(), 0, 1, o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->options().tcp_streams, 4);
  EXPECT_EQ((*c)->options().tcp_socket_buffer_bytes, 1048576);
  unsetenv("COHORT_COMM_TCP_STREAMS");
  unsetenv("COHORT_COMM_TCP_SOCKET_BUFFER");
}

// Ranks as threads of this process with made-up host keys: rank r is on
// host hosts_of[r]. Runs CheckAll (every collective against the reference).
std::vector<Status> RunOnHosts(const std::vector<int>& hosts_of, size_t count) {
  const int world = static_cast<int>(hosts_of.size());
  auto store = NewMemoryStore();
  std::vector<Status> results(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      Options o = SmallOptions(TransportKind::kAuto);
      o.host_key = "host-" + std::to_string(hosts_of[r]);
      auto comm = Communicator::Create(store, r, world, o);
      if (!comm.ok()) {
        results[r] = comm.status();
        return;
      }
      results[r] = CheckAll(**comm, count);
      if (!results[r].ok()) return;
      // The wire format on the between-hosts rings: identical on every rank.
      std::vector<float> d(count);
      for (size_t i = 0; i < count; ++i) d[i] = std::sin(0.1f * static_cast<float>(i) + r);
      results[r] = (*comm)->AllReduce(d.data(), count, DType::kFloat32, ReduceOp::kSum, (*comm)->DefaultDeadline(),
                                      WireFormat::kBFloat16);
      if (!results[r].ok()) return;
      std::vector<float> all(count * world);
      results[r] = (*comm)->AllGather(d.data(), all.data(), count * sizeof(float));
      for (int q = 0; q < world && results[r].ok(); ++q)
        if (std::memcmp(all.data() + q * count, d.data(), count * sizeof(float)) != 0)
          results[r] = Fail("rank " + std::to_string(q) + " ended with other values");
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

// Several ranks on each of several hosts: shared memory within a host, a ring
// per stripe between hosts; uneven hosts take the flat ring. Same results.
class Hierarchical : public ::testing::TestWithParam<std::tuple<std::vector<int>, size_t>> {};

TEST_P(Hierarchical, MatchesTheSerialReference) {
  const auto& [hosts_of, count] = GetParam();
  for (const Status& s : RunOnHosts(hosts_of, count)) EXPECT_TRUE(s.ok()) << s.ToString();
}

INSTANTIATE_TEST_SUITE_P(
    Hosts, Hierarchical,
    ::testing::Combine(::testing::Values(std::vector<int>{0, 0, 1, 1}, std::vector<int>{0, 1, 0, 1},
                                         std::vector<int>{0, 0, 0, 1, 1, 1}, std::vector<int>{0, 0, 1}),
                       ::testing::Values(size_t{0}, size_t{7}, size_t{100003})),
    [](const auto& info) {
      std::string name = "h";
      for (int h : std::get<0>(info.param)) name += std::to_string(h);
      return name + "_n" + std::to_string(std::get<1>(info.param));
    });

TEST(Fp16WireKernels, MatchTheScalarConversionSaturatingAndKeepingNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> in = {0.0f, -0.0f, 1.0f, 1.00048828125f /* a tie: rounds to even (1.0) */,
                           1.00146484375f /* a tie: rounds up to even */, 3.14159f, 65504.0f, 65519.0f, 70000.0f,
                           -1e9f, inf, -inf, 5.96e-8f /* 2^-24: the smallest subnormal */, 2e-8f /* to 0 */,
                           6.1e-5f, std::numeric_limits<float>::quiet_NaN()};
  for (int i = 0; i < 1000; ++i) in.push_back(std::ldexp(std::sin(static_cast<float>(i)), i % 40 - 25));
  std::vector<uint16_t> fast(in.size());
  NarrowToFloat16(fast.data(), in.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) EXPECT_EQ(fast[i], FloatToFloat16(in[i])) << "at " << i << ": " << in[i];
  EXPECT_EQ(Float16ToFloat(FloatToFloat16(1.00048828125f)), 1.0f);
  EXPECT_EQ(Float16ToFloat(FloatToFloat16(1.00146484375f)), 1.001953125f);
  EXPECT_EQ(Float16ToFloat(FloatToFloat16(70000.0f)), 65504.0f);
  EXPECT_EQ(Float16ToFloat(FloatToFloat16(-inf)), -65504.0f);
  EXPECT_EQ(Float16ToFloat(FloatToFloat16(2e-8f)), 0.0f);
  EXPECT_GT(Float16ToFloat(FloatToFloat16(5.96e-8f)), 0.0f);
  EXPECT_TRUE(std::isnan(Float16ToFloat(FloatToFloat16(std::numeric_limits<float>::quiet_NaN()))));
  std::vector<float> wide(in.size()), back(in.size(), 1.0f);
  WidenFromFloat16(wide.data(), fast.data(), in.size());
  AddFloat16Into(back.data(), fast.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (std::isnan(in[i])) continue;
    EXPECT_EQ(wide[i], Float16ToFloat(fast[i])) << "at " << i;
    EXPECT_EQ(back[i], 1.0f + Float16ToFloat(fast[i])) << "at " << i;
  }
}

TEST(ErrorFeedback, WhatRoundingTakesOffComesBackInTheNextCall) {
  for (WireFormat wire : {WireFormat::kBFloat16, WireFormat::kFloat16}) {
    SCOPED_TRACE(std::string(WireFormatName(wire)));
    const size_t n = 5000;
    std::vector<float> residual(n, 0.0f);
    double sent = 0, exact = 0;
    for (int step = 0; step < 50; ++step) {
      std::vector<float> g(n);
      for (size_t i = 0; i < n; ++i) g[i] = 1.0f / 3.0f + 1e-3f * static_cast<float>(i % 7) + (i == 0 ? 1e5f : 0.0f);
      for (size_t i = 1; i < n; ++i) exact += g[i];
      QuantizeWithErrorFeedback(wire, g.data(), residual.data(), n);
      for (size_t i = 1; i < n; ++i) {
        const float f = g[i];
        EXPECT_EQ(f, wire == WireFormat::kFloat16 ? Float16ToFloat(FloatToFloat16(f))
                                                  : BFloat16ToFloat(FloatToBFloat16(f)));
        sent += f;
      }
      if (wire == WireFormat::kFloat16) {
        EXPECT_EQ(g[0], 65504.0f);  // saturated; the rest waits in the residual
      }
    }
    double left = 0;
    for (size_t i = 1; i < n; ++i) left += residual[i];
    // Nothing is lost: what was sent plus what is still owed is the exact total.
    EXPECT_NEAR(sent + left, exact, 1e-6 * exact);
    // And what is owed stays within one rounding per value.
    EXPECT_LT(std::fabs(left), n * 0.5 * std::ldexp(1.0, wire == WireFormat::kFloat16 ? -11 : -8));
  }
  std::vector<float> g = {1.0f / 3.0f}, e = {0.0f};
  QuantizeWithErrorFeedback(WireFormat::kNative, g.data(), e.data(), 1);
  EXPECT_EQ(g[0], 1.0f / 3.0f);
  EXPECT_EQ(e[0], 0.0f);
}

TEST(Bf16WireKernels, RoundToNearestEvenLikeTheScalarConversion) {
  std::vector<float> in = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, 3.14159f, -2.5e-20f, 6.5e30f,
                           std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  for (int i = 0; i < 1000; ++i) in.push_back(std::ldexp(std::sin(static_cast<float>(i)), i % 40 - 20));
  std::vector<uint16_t> fast(in.size());
  NarrowToBFloat16(fast.data(), in.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i) EXPECT_EQ(fast[i], FloatToBFloat16(in[i])) << "at " << i << ": " << in[i];
  std::vector<float> back(in.size(), 1.0f);
  AddBFloat16Into(back.data(), fast.data(), in.size());
  EXPECT_EQ(back[2], 2.0f);
}

TEST(Rendezvous, MissingRankTimesOutNamingIt) {
  Options o = SmallOptions(TransportKind::kAuto);
  o.timeout = std::chrono::milliseconds(500);
  auto store = NewMemoryStore();
  auto start = std::chrono::steady_clock::now();
  auto c = Communicator::Create(store, 0, 2, o);  // rank 1 never comes
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("rank 1"), std::string::npos) << c.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(Communicator, RejectsBadArguments) {
  auto results = RunRankThreads(1, SmallOptions(TransportKind::kShm), [](Communicator& c) {
    if (c.Broadcast(nullptr, 0, 3).ok()) return Fail("bad root accepted");
    if (c.AllReduce(nullptr, 10, DType::kFloat32, ReduceOp::kSum).ok()) return Fail("null accepted");
    return c.error();  // argument errors are not sticky
  });
  EXPECT_TRUE(results[0].ok()) << results[0].ToString();
  EXPECT_FALSE(Communicator::Create(NewMemoryStore(), 2, 2, {}).ok());
}

TEST(Communicator, AbortMakesPeersFailFast) {
  Options o = SmallOptions(TransportKind::kShm);
  o.timeout = std::chrono::milliseconds(30000);
  auto start = std::chrono::steady_clock::now();
  auto results = RunRankThreads(2, o, [](Communicator& c) {
    if (c.rank() == 1) {
      c.Abort("data loader failed");
      return Status::Ok();
    }
    std::vector<float> d(10);
    Status s = c.AllReduce(d.data(), d.size(), DType::kFloat32, ReduceOp::kSum);
    if (s.ok()) return Fail("succeeded after the peer aborted");
    if (s.message().find("data loader failed") == std::string::npos) return s;
    return Status::Ok();
  });
  EXPECT_TRUE(results[0].ok()) << results[0].ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

}  // namespace
}  // namespace cohort::comm
