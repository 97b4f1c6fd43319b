// Tests for the rendezvous stores: MemoryStore, PrefixStore, TcpStore server and
// client. Tests start their own threads; every wait is bounded by a deadline.
#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cohort/comm/store.h"

namespace cohort::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// --- MemoryStore ---------------------------------------------------------------

TEST(MemoryStoreTest, SetGetOverwrite) {
  auto store = NewMemoryStore();
  ASSERT_TRUE(store->Set("a", "1").ok());
  Result<std::string> v = store->Get("a", Deadline::After(milliseconds(100)));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "1");
  ASSERT_TRUE(store->Set("a", std::string("x\0y", 3)).ok());
  v = store->Get("a", Deadline::Never());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, std::string("x\0y", 3));
  EXPECT_EQ(store->LocalAddress(), "");
}

TEST(MemoryStoreTest, GetWaitsForSet) {
  auto store = NewMemoryStore();
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    EXPECT_TRUE(store->Set("late", "here").ok());
  });
  Result<std::string> v = store->Get("late", Deadline::After(milliseconds(3000)));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "here");
}

TEST(MemoryStoreTest, GetTimesOut) {
  auto store = NewMemoryStore();
  auto start = Clock::now();
  Result<std::string> v = store->Get("never", Deadline::After(milliseconds(100)));
  const int64_t elapsed = MsSince(start);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(Contains(v.status().message(), "'never'")) << v.status().message();
  EXPECT_GE(elapsed, 95);
  EXPECT_LT(elapsed, 1000);
}

TEST(MemoryStoreTest, AddCountsAndIsReadableAsText) {
  auto store = NewMemoryStore();
  Result<int64_t> v = store->Add("n", 2);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 2);
  v = store->Add("n", -5);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, -3);
  Result<std::string> text = store->Get("n", Deadline::Never());
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "-3");
  ASSERT_TRUE(store->Set("s", "not a number").ok());
  v = store->Add("s", 1);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
}

TEST(MemoryStoreTest, ConcurrentAddIsAtomic) {
  auto store = NewMemoryStore();
  constexpr int kThreads = 8, kAdds = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAdds; ++i) ASSERT_TRUE(store->Add("count", 1).ok());
    });
  }
  for (auto& t : threads) t.join();
  Result<int64_t> v = store->Add("count", 0);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, kThreads * kAdds);
}

// --- PrefixStore -----------------------------------------------------------------

TEST(PrefixStoreTest, PrefixesKeysAndIsolates) {
  auto base = NewMemoryStore();
  auto a = NewPrefixStore("comm0", base);
  auto b = NewPrefixStore("comm1", base);
  ASSERT_TRUE(a->Set("addr/0", "A").ok());
  ASSERT_TRUE(b->Set("addr/0", "B").ok());
  Result<std::string> v = base->Get("comm0/addr/0", Deadline::After(milliseconds(100)));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "A");
  v = b->Get("addr/0", Deadline::After(milliseconds(100)));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "B");
  Result<int64_t> n = a->Add("n", 5);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 5);
  n = base->Add("comm0/n", 1);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 6);
  // A key only the other prefix has is not visible.
  v = a->Get("only_base", Deadline::After(milliseconds(50)));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(a->LocalAddress(), "");
}

TEST(PrefixStoreTest, NestedPrefixes) {
  auto base = NewMemoryStore();
  auto inner = NewPrefixStore("x", NewPrefixStore("y", base));
  ASSERT_TRUE(inner->Set("k", "v").ok());
  Result<std::string> v = base->Get("y/x/k", Deadline::After(milliseconds(100)));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "v");
}

// --- TcpStore --------------------------------------------------------------------

std::unique_ptr<TcpStoreServer> StartServer(int port = 0) {
  TcpStoreOptions options;
  options.port = port;
  Result<std::unique_ptr<TcpStoreServer>> server = TcpStoreServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  if (!server.ok()) return nullptr;
  return std::move(server).value();
}

std::shared_ptr<Store> Connect(int port, const std::string& host = "127.0.0.1") {
  TcpStoreOptions options;
  options.host = host;
  options.port = port;
  Result<std::shared_ptr<Store>> store =
      ConnectTcpStore(options, Deadline::After(milliseconds(3000)));
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  if (!store.ok()) return nullptr;
  return std::move(store).value();
}

TEST(TcpStoreTest, SetGetAcrossClients) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  EXPECT_GT(server->port(), 0);
  auto a = Connect(server->port());
  auto b = Connect(server->port());
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->Set("rank0/addr", "10.0.0.1:1234").ok());
  Result<std::string> v = b->Get("rank0/addr", Deadline::After(milliseconds(1000)));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "10.0.0.1:1234");
  // Overwrite, empty value, binary value, and a larger value.
  ASSERT_TRUE(b->Set("rank0/addr", "").ok());
  v = a->Get("rank0/addr", Deadline::After(milliseconds(1000)));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "");
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + 7);
  ASSERT_TRUE(a->Set("big", big).ok());
  v = b->Get("big", Deadline::After(milliseconds(3000)));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_TRUE(*v == big);
}

TEST(TcpStoreTest, HostNameAndLocalAddress) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto by_name = Connect(server->port(), "localhost");
  ASSERT_NE(by_name, nullptr);
  EXPECT_EQ(by_name->LocalAddress(), "127.0.0.1");
  auto by_ip = Connect(server->port());
  ASSERT_NE(by_ip, nullptr);
  EXPECT_EQ(by_ip->LocalAddress(), "127.0.0.1");
  EXPECT_EQ(NewPrefixStore("p", by_ip)->LocalAddress(), "127.0.0.1");
  ASSERT_TRUE(by_name->Set("k", "v").ok());
  Result<std::string> v = by_ip->Get("k", Deadline::After(milliseconds(1000)));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "v");
}

TEST(TcpStoreTest, GetBlocksUntilAnotherThreadSets) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto waiter = Connect(server->port());
  auto setter = Connect(server->port());
  ASSERT_NE(waiter, nullptr);
  ASSERT_NE(setter, nullptr);
  auto start = Clock::now();
  std::thread t([&] {
    std::this_thread::sleep_for(milliseconds(150));
    EXPECT_TRUE(setter->Set("ready", "yes").ok());
  });
  Result<std::string> v = waiter->Get("ready", Deadline::After(milliseconds(4000)));
  const int64_t elapsed = MsSince(start);
  t.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "yes");
  EXPECT_GE(elapsed, 140);
  EXPECT_LT(elapsed, 2000);
}

TEST(TcpStoreTest, OneSetWakesEveryWaiter) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  constexpr int kWaiters = 6;
  std::vector<std::shared_ptr<Store>> clients;
  for (int i = 0; i < kWaiters; ++i) clients.push_back(Connect(server->port()));
  std::atomic<int> woken{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&, i] {
      Result<std::string> v = clients[i]->Get("go", Deadline::After(milliseconds(4000)));
      EXPECT_TRUE(v.ok()) << v.status().ToString();
      if (v.ok() && *v == "now") ++woken;
    });
  }
  std::this_thread::sleep_for(milliseconds(100));
  auto setter = Connect(server->port());
  ASSERT_NE(setter, nullptr);
  ASSERT_TRUE(setter->Set("go", "now").ok());
  for (auto& t : threads) t.join();
  EXPECT_EQ(woken.load(), kWaiters);
}

TEST(TcpStoreTest, GetTimeoutReturnsDeadlineExceededAndClientRecovers) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = Connect(server->port());
  ASSERT_NE(client, nullptr);
  auto start = Clock::now();
  Result<std::string> v = client->Get("missing/key", Deadline::After(milliseconds(200)));
  const int64_t elapsed = MsSince(start);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded) << v.status().ToString();
  EXPECT_TRUE(Contains(v.status().message(), "'missing/key'")) << v.status().message();
  EXPECT_TRUE(Contains(v.status().message(), "127.0.0.1:" + std::to_string(server->port())))
      << v.status().message();
  EXPECT_GE(elapsed, 190);
  EXPECT_LT(elapsed, 1000);
  // The same client keeps working, and the late key does not confuse it.
  auto other = Connect(server->port());
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->Set("missing/key", "late").ok());
  ASSERT_TRUE(client->Set("after", "ok").ok());
  v = client->Get("after", Deadline::After(milliseconds(1000)));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "ok");
  v = client->Get("missing/key", Deadline::After(milliseconds(1000)));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "late");
}

TEST(TcpStoreTest, ConcurrentAddGivesExactSum) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto shared = Connect(server->port());
  ASSERT_NE(shared, nullptr);
  constexpr int kThreads = 8, kAdds = 200;
  std::vector<std::vector<int64_t>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Half the threads share one client, half have their own.
      std::shared_ptr<Store> store = t % 2 == 0 ? shared : Connect(server->port());
      ASSERT_NE(store, nullptr);
      for (int i = 0; i < kAdds; ++i) {
        Result<int64_t> v = store->Add("counter", 1);
        ASSERT_TRUE(v.ok()) << v.status().ToString();
        seen[t].push_back(*v);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& s : seen) all.insert(s.begin(), s.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kAdds));  // every result distinct
  Result<int64_t> total = shared->Add("counter", 0);
  ASSERT_TRUE(total.ok());
  EXPECT_EQ(*total, kThreads * kAdds);
  Result<std::string> text = shared->Get("counter", Deadline::After(milliseconds(1000)));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, std::to_string(kThreads * kAdds));
  Result<int64_t> neg = shared->Add("counter", -int64_t{kThreads * kAdds} - 10);
  ASSERT_TRUE(neg.ok());
  EXPECT_EQ(*neg, -10);
}

TEST(TcpStoreTest, AddToNonIntegerIsAnErrorAndConnectionSurvives) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = Connect(server->port());
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("word", "hello").ok());
  Result<int64_t> v = client->Add("word", 1);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument) << v.status().ToString();
  EXPECT_TRUE(Contains(v.status().message(), "'word'")) << v.status().message();
  v = client->Add("n", 7);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, 7);
}

TEST(TcpStoreTest, ServerDestroyedWhileClientWaitsFailsFast) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  auto client = Connect(port);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Set("k", "v").ok());
  Result<std::string> v = Status::Internal("not run");
  Clock::time_point returned;
  std::thread waiter([&] {
    v = client->Get("never/set", Deadline::After(milliseconds(10000)));
    returned = Clock::now();
  });
  std::this_thread::sleep_for(milliseconds(100));
  auto destroyed = Clock::now();
  server.reset();
  waiter.join();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kUnavailable) << v.status().ToString();
  EXPECT_TRUE(Contains(v.status().message(),
                       "rendezvous store at 127.0.0.1:" + std::to_string(port) +
                           " closed the connection"))
      << v.status().message();
  EXPECT_LT(std::chrono::duration_cast<milliseconds>(returned - destroyed).count(), 1000);
  // Later calls fail at once too.
  auto start = Clock::now();
  EXPECT_EQ(client->Set("k", "v2").code(), StatusCode::kUnavailable);
  EXPECT_EQ(client->Add("n", 1).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(client->Get("k", Deadline::After(milliseconds(3000))).status().code(),
            StatusCode::kUnavailable);
  EXPECT_LT(MsSince(start), 500);
}

TEST(TcpStoreTest, ServerDestroyedBeforeRequestFailsFast) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = Connect(server->port());
  ASSERT_NE(client, nullptr);
  server.reset();
  auto start = Clock::now();
  Status s = client->Set("k", "v");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_LT(MsSince(start), 1000);
}

TEST(TcpStoreTest, ClientStartedBeforeServerRetriesConnect) {
  int port = 0;
  {
    auto probe = StartServer();  // find a free port, then release it
    ASSERT_NE(probe, nullptr);
    port = probe->port();
  }
  Result<std::shared_ptr<Store>> client = Status::Internal("not run");
  std::thread connector([&] {
    TcpStoreOptions options;
    options.port = port;
    client = ConnectTcpStore(options, Deadline::After(milliseconds(4000)));
  });
  std::this_thread::sleep_for(milliseconds(300));
  auto server = StartServer(port);
  connector.join();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->port(), port);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE((*client)->Set("k", "v").ok());
  Result<std::string> v = (*client)->Get("k", Deadline::After(milliseconds(1000)));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "v");
}

TEST(TcpStoreTest, ConnectGivesUpAtDeadlineNamingTheAddress) {
  int port = 0;
  {
    auto probe = StartServer();
    ASSERT_NE(probe, nullptr);
    port = probe->port();
  }
  TcpStoreOptions options;
  options.port = port;
  auto start = Clock::now();
  Result<std::shared_ptr<Store>> client =
      ConnectTcpStore(options, Deadline::After(milliseconds(200)));
  const int64_t elapsed = MsSince(start);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kDeadlineExceeded) << client.status().ToString();
  EXPECT_TRUE(Contains(client.status().message(), "127.0.0.1:" + std::to_string(port)))
      << client.status().message();
  EXPECT_GE(elapsed, 190);
  EXPECT_LT(elapsed, 1500);
}

TEST(TcpStoreTest, BadOptions) {
  TcpStoreOptions options;
  options.port = 0;
  EXPECT_EQ(ConnectTcpStore(options, Deadline::After(milliseconds(100))).status().code(),
            StatusCode::kInvalidArgument);
  options.port = 70000;
  EXPECT_EQ(TcpStoreServer::Start(options).status().code(), StatusCode::kInvalidArgument);
  // A port another store listens on cannot be bound again.
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  options.port = server->port();
  Result<std::unique_ptr<TcpStoreServer>> second = TcpStoreServer::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(Contains(second.status().message(), std::to_string(server->port())))
      << second.status().message();
}

}  // namespace
}  // namespace cohort::comm
