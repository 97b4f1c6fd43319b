// Pieces of the agent without a head: the outbox bound, resource detection,
// the results listing,
// GPU mapping, the local address toward the head, and the head-side
// registration checks (src/net/rpc/head_server.h).
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cohort/rpc/head_server.h"
#include "node_info.h"
#include "outbox.h"
#include "results_listing.h"

namespace cohort::agent {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

rpc::AgentMessage Log(const std::string& data) {
  rpc::AgentMessage m;
  m.mutable_log()->set_job_id("j");
  m.mutable_log()->set_data(data);
  return m;
}

rpc::AgentMessage Exited(int rank) {
  rpc::AgentMessage m;
  m.mutable_worker_exited()->set_job_id("j");
  m.mutable_worker_exited()->set_rank(rank);
  return m;
}

TEST(OutboxTest, FifoAndPutBack) {
  Outbox box(1 << 20);
  box.Push(Log("a"));
  box.Push(Exited(0));
  auto first = box.Take(Deadline::After(10ms));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->log().data(), "a");
  box.PushFront(std::move(*first));
  EXPECT_EQ(box.Take(Deadline::After(10ms))->log().data(), "a");
  EXPECT_TRUE(box.Take(Deadline::After(10ms))->has_worker_exited());
  EXPECT_FALSE(box.Take(Deadline::After(10ms)).has_value());
}

TEST(OutboxTest, DropsOldestLogsButNeverExits) {
  Outbox box(3000);
  box.Push(Exited(0));
  for (int i = 0; i < 10; ++i) box.Push(Log(std::string(1000, 'a' + i)));
  box.Push(Exited(1));
  EXPECT_GT(box.dropped(), 0u);
  std::vector<rpc::AgentMessage> all;
  while (auto m = box.Take(Deadline::After(1ms))) all.push_back(std::move(*m));
  ASSERT_GE(all.size(), 3u);
  EXPECT_TRUE(all.front().has_worker_exited());
  EXPECT_TRUE(all.back().has_worker_exited());
  // The newest logs survived.
  EXPECT_EQ(all[all.size() - 2].log().data()[0], 'j');
  size_t log_bytes = 0;
  for (const auto& m : all) log_bytes += m.has_log() ? m.log().data().size() : 0;
  EXPECT_LE(log_bytes, 3000u);
}

rpc::AgentMessage Chunk(int rank, uint64_t offset, const std::string& data) {
  rpc::AgentMessage m = Log(data);
  m.mutable_log()->set_rank(rank);
  m.mutable_log()->set_offset(offset);
  return m;
}

rpc::LogAck AckOf(int rank, uint64_t offset) {
  rpc::LogAck ack;
  rpc::LogMark* m = ack.add_marks();
  m->set_job_id("j");
  m->set_rank(rank);
  m->set_offset(offset);
  return ack;
}

TEST(OutboxTest, SentChunksComeBackUntilAcknowledged) {
  Outbox box(1 << 20);
  box.Sent(Chunk(0, 0, "a0\n"));
  box.Sent(Chunk(1, 0, "b0\n"));
  box.Sent(Chunk(0, 3, "a1\n"));
  box.Sent(Log("no offset: not kept"));
  EXPECT_EQ(box.unacked_bytes(), 9u);
  box.Ack(AckOf(0, 3));  // covers a0 only
  EXPECT_EQ(box.unacked_bytes(), 6u);
  box.Push(Chunk(0, 6, "a2\n"));  // queued, never sent
  box.Requeue();
  EXPECT_EQ(box.unacked_bytes(), 0u);
  std::vector<std::string> order;
  while (auto m = box.Take(Deadline::After(1ms))) order.push_back(m->log().data());
  // In the order they were sent, the requeued ones before what was queued.
  EXPECT_EQ(order, (std::vector<std::string>{"b0\n", "a1\n", "a2\n"}));
}

TEST(OutboxTest, SentChunksAreBounded) {
  Outbox box(size_t{64} << 20);
  const std::string mib(size_t{1} << 20, 'x');
  for (uint64_t i = 0; i < 20; ++i) box.Sent(Chunk(0, i << 20, mib));
  EXPECT_LE(box.unacked_bytes(), Outbox::kMaxUnackedBytes);
  box.Requeue();
  auto first = box.Take(Deadline::After(1ms));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->log().offset(), uint64_t{4} << 20);  // the oldest four were forgotten
}

TEST(OutboxTest, InterruptWakesATake) {
  Outbox box(1 << 20);
  std::thread t([&] {
    std::this_thread::sleep_for(50ms);
    box.Interrupt();
  });
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(box.Take(Deadline::After(5s)).has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  t.join();
}

TEST(OutboxTest, OnlyTheNewestExitsKeepTheirResultsListings) {
  Outbox box(1 << 20);
  for (size_t i = 0; i < Outbox::kRecentExitsWithResults + 5; ++i) {
    rpc::AgentMessage m;
    m.mutable_worker_exited()->set_rank(static_cast<int>(i));
    m.mutable_worker_exited()->mutable_results()->add_files()->set_path("model.pt");
    box.Push(std::move(m));
  }
  auto exits = box.RecentExits();
  ASSERT_EQ(exits.size(), Outbox::kRecentExitsWithResults + 5);
  for (size_t i = 0; i < exits.size(); ++i) EXPECT_EQ(exits[i].has_results(), i >= 5) << i;
}

TEST(ResultsListingTest, ListsRegularFilesSortedWithSizesAndSkipsLinks) {
  const fs::path dir = fs::temp_directory_path() / ("cohort_results_listing_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "sub" / "deeper");
  std::ofstream(dir / "model.pt") << "12345";
  std::ofstream(dir / "sub" / "deeper" / "metrics.json") << "{}";
  std::ofstream(dir / "a.txt") << "";
  fs::create_symlink("/etc/passwd", dir / "link");
  fs::create_directory_symlink("/etc", dir / "etc-link");
  rpc::LocalResults r = ListLocalResults(dir.string());
  EXPECT_EQ(r.dir(), dir.string());
  EXPECT_EQ(r.file_count(), 3u);
  EXPECT_EQ(r.total_bytes(), 7u);
  EXPECT_FALSE(r.truncated());
  ASSERT_EQ(r.files_size(), 3);
  EXPECT_EQ(r.files(0).path(), "a.txt");
  EXPECT_EQ(r.files(1).path(), "model.pt");
  EXPECT_EQ(r.files(1).size_bytes(), 5u);
  EXPECT_EQ(r.files(2).path(), "sub/deeper/metrics.json");

  // Bounded: files reported, names too long, entries visited.
  ResultsListingLimits few;
  few.max_files = 2;
  EXPECT_EQ(ListLocalResults(dir.string(), few).files_size(), 2);
  EXPECT_EQ(ListLocalResults(dir.string(), few).file_count(), 3u);
  ResultsListingLimits short_names;
  short_names.max_path_bytes = 8;
  EXPECT_EQ(ListLocalResults(dir.string(), short_names).files_size(), 2);  // not sub/deeper/...
  ResultsListingLimits walk;
  walk.max_entries = 2;
  EXPECT_TRUE(ListLocalResults(dir.string(), walk).truncated());

  // Nothing there, or not a local directory: an empty listing.
  EXPECT_EQ(ListLocalResults((dir / "missing").string()).file_count(), 0u);
  EXPECT_EQ(ListLocalResults("relative/dir").dir(), "");
  EXPECT_EQ(ListLocalResults("gs://bucket/x").file_count(), 0u);
  fs::remove_all(dir);
}

TEST(NodeInfoTest, GpusFromCudaVisibleDevices) {
  ::setenv("CUDA_VISIBLE_DEVICES", "2, 3,GPU-abc", 1);
  EXPECT_EQ(DetectGpuDevices(), (std::vector<std::string>{"2", "3", "GPU-abc"}));
  EXPECT_EQ(DetectResources().at("GPU"), 3);
  ::setenv("CUDA_VISIBLE_DEVICES", "1,-1,2", 1);
  EXPECT_EQ(DetectGpuDevices(), (std::vector<std::string>{"1"}));
  ::setenv("CUDA_VISIBLE_DEVICES", "", 1);
  EXPECT_TRUE(DetectGpuDevices().empty());
  ::unsetenv("CUDA_VISIBLE_DEVICES");
}

TEST(NodeInfoTest, CompleteResourcesFillsOnlyWhatIsMissing) {
  Result<Resources> r = CompleteResources({{"GPU", 0}, {"custom", 3}});
  ASSERT_TRUE(r.ok());
  EXPECT_GE(r->at("CPU"), 1);
  EXPECT_EQ(r->at("GPU"), 0);
  EXPECT_GT(r->at("memory"), 1e6);
  EXPECT_EQ(r->at("custom"), 3);
  EXPECT_FALSE(CompleteResources({{"CPU", -1}}).ok());
}

TEST(NodeInfoTest, CudaVisibleDevicesMapsIndices) {
  EXPECT_EQ(CudaVisibleDevicesFor({0, 1}, {"4", "5"}), "4,5");
  EXPECT_EQ(CudaVisibleDevicesFor({1}, {"4", "5"}), "5");
  EXPECT_EQ(CudaVisibleDevicesFor({2, 3}, {}), "2,3");  // no names: the index
}

TEST(NodeInfoTest, ProcessGroupRssSumsTheGroupsResidentMemory) {
  const int64_t mine = ::getpgrp();
  std::vector<char> touched(32 << 20, 1);  // 32 MiB resident in this process
  const std::map<int64_t, int64_t> rss = ProcessGroupRss({mine, 999999999});
  ASSERT_EQ(rss.count(mine), 1u);
  EXPECT_GE(rss.at(mine), int64_t{32} << 20);
  EXPECT_EQ(rss.count(999999999), 0u);  // no such group
  EXPECT_TRUE(ProcessGroupRss({}).empty());
  EXPECT_EQ(touched[12345], 1);
}

TEST(NodeInfoTest, LocalAddressTowardLoopback) {
  Result<std::string> a = LocalAddressToward("127.0.0.1:8265");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(*a, "127.0.0.1");
  EXPECT_EQ(*LocalAddressToward("localhost:1"), "127.0.0.1");
  EXPECT_FALSE(LocalAddressToward("no-such-host.invalid:1").ok());
}

TEST(NodeInfoTest, InterfaceWithAddressAndTheCollectivesVariables) {
  EXPECT_EQ(*InterfaceWithAddress("127.0.0.1"), "lo");
  EXPECT_EQ(InterfaceWithAddress("192.0.2.77").status().code(), StatusCode::kNotFound);  // TEST-NET-1
  EXPECT_FALSE(InterfaceWithAddress("not-an-ip").ok());
  std::map<std::string, std::string> env{{"NCCL_SOCKET_IFNAME", "ib0"}};
  AddSocketInterfaceEnv("eth1", &env);
  EXPECT_EQ(env["GLOO_SOCKET_IFNAME"], "eth1");
  EXPECT_EQ(env["TP_SOCKET_IFNAME"], "eth1");
  EXPECT_EQ(env["NCCL_SOCKET_IFNAME"], "ib0");  // set by the user or the job: kept
  std::map<std::string, std::string> none;
  AddSocketInterfaceEnv("", &none);
  EXPECT_TRUE(none.empty());
}

TEST(RegistrationRefusalTest, VersionAndToken) {
  rpc::Register reg;
  reg.set_protocol_version(rpc::kProtocolVersion);
  reg.set_cluster_token("t");
  EXPECT_EQ(rpc::RegistrationRefusal(reg, "t"), "");
  EXPECT_EQ(rpc::RegistrationRefusal(reg, ""), "");
  EXPECT_NE(rpc::RegistrationRefusal(reg, "u"), "");
  reg.set_protocol_version(3);
  EXPECT_EQ(rpc::RegistrationRefusal(reg, "t"),
            "agent protocol version 3 does not match the head's 1; run the same cohort version "
            "on all nodes");
}

}  // namespace
}  // namespace cohort::agent
