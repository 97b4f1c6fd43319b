// Tests of HttpServer's WebSocket routes (the Ray log-tail protocol,
// ray-jobs-api.md §2.8) and of WebSocketClient, on loopback.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "cohort/net/http_server.h"
#include "cohort/net/ws_client.h"

namespace cohort::net {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<HttpServer> StartServer(HttpServer::Options opts = {}) {
  opts.host = "127.0.0.1";
  opts.port = 0;
  auto server = HttpServer::Start(std::move(opts));
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return std::move(server).value();
}

std::string WsUrl(const HttpServer& s, const std::string& path) {
  return "ws://127.0.0.1:" + std::to_string(s.port()) + path;
}

// The log-tail route shape: unknown jobs are refused before the upgrade.
void AddTailRoute(HttpServer& server, std::function<void(std::shared_ptr<WebSocketSession>)> on_open) {
  server.HandleWebSocket(
      "/api/jobs/{id}/logs/tail",
      [](const Request& req) -> std::optional<Response> {
        if (req.PathParam("id") == "missing") return Response::Text(404, "Job missing does not exist");
        return std::nullopt;
      },
      std::move(on_open));
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

TEST(WebSocketTest, PreUpgradeRefusalIsPlainHttp) {
  auto server = StartServer();
  AddTailRoute(*server, [](std::shared_ptr<WebSocketSession> s) { s->Close(); });

  auto client = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/missing/logs/tail"));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kNotFound);
  EXPECT_NE(client.status().message().find("HTTP 404: Job missing does not exist"), std::string::npos)
      << client.status().ToString();

  // The same through a plain HTTP client sending upgrade headers.
  CURL* curl = curl_easy_init();
  std::string url = "http://127.0.0.1:" + std::to_string(server->port()) + "/api/jobs/missing/logs/tail";
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Connection: Upgrade");
  headers = curl_slist_append(headers, "Upgrade: websocket");
  headers = curl_slist_append(headers, "Sec-WebSocket-Version: 13");
  headers = curl_slist_append(headers, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
  EXPECT_EQ(curl_easy_perform(curl), CURLE_OK);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  EXPECT_EQ(status, 404);
  // A plain GET (no upgrade) on a known job: 400.
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  url = "http://127.0.0.1:" + std::to_string(server->port()) + "/api/jobs/known/logs/tail";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  EXPECT_EQ(curl_easy_perform(curl), CURLE_OK);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  EXPECT_EQ(status, 400);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);

  auto unknown = WebSocketClient::Connect(WsUrl(*server, "/api/nowhere"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
}

TEST(WebSocketTest, MessagesInOrderThenClose1000) {
  auto server = StartServer();
  constexpr int kMessages = 500;
  std::promise<uint16_t> server_saw_close;
  AddTailRoute(*server, [&](std::shared_ptr<WebSocketSession> s) {
    EXPECT_EQ(s->request().PathParam("id"), "raysubmit_1");
    s->SetOnClose([&](uint16_t code) { server_saw_close.set_value(code); });
    for (int i = 0; i < kMessages; ++i) EXPECT_TRUE(s->SendText("line" + std::to_string(i) + "\n"));
    s->Close();
    EXPECT_TRUE(s->closed());
    EXPECT_FALSE(s->SendText("after close"));
  });
  auto client = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/raysubmit_1/logs/tail"));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  std::string expected, got;
  for (int i = 0; i < kMessages; ++i) expected += "line" + std::to_string(i) + "\n";
  int frames = 0;
  while (true) {
    auto msg = (*client)->ReadMessage(Deadline::After(5s));
    ASSERT_TRUE(msg.ok()) << msg.status().ToString();
    if (!msg->has_value()) break;
    got += **msg;
    ++frames;
  }
  EXPECT_EQ(frames, kMessages);
  EXPECT_EQ(got, expected);
  EXPECT_EQ((*client)->close_code(), std::optional<uint16_t>(1000));
  // Reads after the close keep answering "closed".
  auto again = (*client)->ReadMessage(Deadline::After(1s));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
  EXPECT_TRUE((*client)->Close().ok());
  auto code = server_saw_close.get_future();
  ASSERT_EQ(code.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(code.get(), 1000);
  uint64_t upgrades = 0;
  for (const auto& row : server->RouteCounts()) {
    if (row.pattern == "/api/jobs/{id}/logs/tail" && row.status == 101) upgrades = row.count;
  }
  EXPECT_EQ(upgrades, 1u);
}

TEST(WebSocketTest, SendTextFromForeignThreads) {
  auto server = StartServer();
  std::promise<std::shared_ptr<WebSocketSession>> opened;
  AddTailRoute(*server, [&](std::shared_ptr<WebSocketSession> s) { opened.set_value(s); });
  auto client = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/j/logs/tail"));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  std::shared_ptr<WebSocketSession> session = opened.get_future().get();

  // One producer thread: order preserved; the close frame goes after its frames.
  std::thread producer([session] {
    for (int i = 0; i < 300; ++i) session->SendText(std::to_string(i) + ",");
    session->Close(1000, "job finished");
  });
  std::string got;
  while (true) {
    auto msg = (*client)->ReadMessage(Deadline::After(5s));
    ASSERT_TRUE(msg.ok()) << msg.status().ToString();
    if (!msg->has_value()) break;
    got += **msg;
  }
  producer.join();
  std::string expected;
  for (int i = 0; i < 300; ++i) expected += std::to_string(i) + ",";
  EXPECT_EQ(got, expected);
  EXPECT_EQ((*client)->close_code(), std::optional<uint16_t>(1000));
  EXPECT_EQ((*client)->close_reason(), "job finished");
  // on_close set after the end still fires (posted to the loop).
  std::promise<uint16_t> late;
  for (int i = 0; i < 200 && session->buffered_bytes() > 0; ++i) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(50ms);
  session->SetOnClose([&](uint16_t code) { late.set_value(code); });
  auto f = late.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), 1000);
  EXPECT_FALSE(session->SendText("late"));
}

TEST(WebSocketTest, ManyConcurrentTails) {
  auto server = StartServer();
  AddTailRoute(*server, [](std::shared_ptr<WebSocketSession> s) {
    std::string id(s->request().PathParam("id"));
    std::thread([s, id] {
      for (int i = 0; i < 50; ++i) s->SendText(id + ":" + std::to_string(i) + "\n");
      s->Close();
    }).detach();
  });
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      auto client = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/job" + std::to_string(c) + "/logs/tail"));
      if (!client.ok()) return;
      std::string got, expected;
      for (int i = 0; i < 50; ++i) expected += "job" + std::to_string(c) + ":" + std::to_string(i) + "\n";
      while (true) {
        auto msg = (*client)->ReadMessage(Deadline::After(5s));
        if (!msg.ok() || !msg->has_value()) break;
        got += **msg;
      }
      if (got == expected && (*client)->close_code() == std::optional<uint16_t>(1000)) ++good;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(good.load(), 8);
}

TEST(WebSocketTest, AuthIsRequiredForTheUpgrade) {
  HttpServer::Options opts;
  opts.bearer_token = "tok";
  auto server = StartServer(opts);
  AddTailRoute(*server, [](std::shared_ptr<WebSocketSession> s) {
    s->SendText("hello");
    s->Close();
  });
  auto refused = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/j/logs/tail"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("HTTP 401: Unauthorized: missing or invalid bearer token"),
            std::string::npos)
      << refused.status().ToString();
  auto wrong = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/j/logs/tail"), {{"Authorization", "Bearer nope"}});
  EXPECT_FALSE(wrong.ok());
  // Auth comes before the pre-upgrade check: no token, no 404 either.
  auto hidden = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/missing/logs/tail"));
  ASSERT_FALSE(hidden.ok());
  EXPECT_EQ(hidden.status().code(), StatusCode::kFailedPrecondition);

  auto client = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/j/logs/tail"), {{"Authorization", "Bearer tok"}});
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto msg = (*client)->ReadMessage(Deadline::After(5s));
  ASSERT_TRUE(msg.ok());
  EXPECT_EQ(msg->value_or(""), "hello");
}

TEST(WebSocketTest, StopSendsGoingAwayPromptly) {
  auto server = StartServer();
  std::promise<uint16_t> server_close;
  AddTailRoute(*server, [&](std::shared_ptr<WebSocketSession> s) {
    s->SetOnClose([&](uint16_t code) { server_close.set_value(code); });
    s->SendText("first");
  });
  auto client = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/j/logs/tail"));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto first = (*client)->ReadMessage(Deadline::After(5s));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->value_or(""), "first");
  // The client blocks in ReadMessage (as `cohort job logs --follow` does)
  // while the server stops.
  auto reader = std::async(std::launch::async, [&] { return (*client)->ReadMessage(Deadline::After(5s)); });
  std::this_thread::sleep_for(50ms);
  auto start = std::chrono::steady_clock::now();
  server->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 900ms);
  auto end = reader.get();
  ASSERT_TRUE(end.ok()) << end.status().ToString();
  EXPECT_FALSE(end->has_value());
  EXPECT_EQ((*client)->close_code(), std::optional<uint16_t>(1001));
  auto code = server_close.get_future();
  ASSERT_EQ(code.wait_for(1s), std::future_status::ready);
  EXPECT_EQ(code.get(), 1001);
}

TEST(WebSocketTest, StopIsBoundedWhenThePeerDoesNotAnswerTheClose) {
  HttpServer::Options opts;
  opts.shutdown_grace = 200ms;
  auto server = StartServer(opts);
  std::promise<uint16_t> server_close;
  AddTailRoute(*server, [&](std::shared_ptr<WebSocketSession> s) {
    s->SetOnClose([&](uint16_t code) { server_close.set_value(code); });
  });
  // Connected but never reading: the server's close frame gets no answer.
  auto client = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/j/logs/tail"));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  std::this_thread::sleep_for(50ms);
  auto start = std::chrono::steady_clock::now();
  server->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);
  auto code = server_close.get_future();
  ASSERT_EQ(code.wait_for(1s), std::future_status::ready);
  EXPECT_EQ(code.get(), 1006);
  // The close frame was sent all the same: the client finds it.
  auto end = (*client)->ReadMessage(Deadline::After(2s));
  ASSERT_TRUE(end.ok()) << end.status().ToString();
  EXPECT_FALSE(end->has_value());
  EXPECT_EQ((*client)->close_code(), std::optional<uint16_t>(1001));
}

TEST(WebSocketTest, ClientCloseReachesTheServer) {
  auto server = StartServer();
  std::promise<uint16_t> server_close;
  std::promise<std::shared_ptr<WebSocketSession>> opened;
  AddTailRoute(*server, [&](std::shared_ptr<WebSocketSession> s) {
    s->SetOnClose([&](uint16_t code) { server_close.set_value(code); });
    opened.set_value(s);
  });
  auto client = WebSocketClient::Connect(WsUrl(*server, "/api/jobs/j/logs/tail"));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto session = opened.get_future().get();
  EXPECT_TRUE((*client)->SendText("ignored by the server").ok());
  EXPECT_TRUE((*client)->Close(1000).ok());
  auto code = server_close.get_future();
  ASSERT_EQ(code.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(code.get(), 1000);
  EXPECT_TRUE(session->closed());
  EXPECT_FALSE(session->SendText("x"));
  EXPECT_TRUE((*client)->Close().ok());  // idempotent
}

TEST(WebSocketTest, ClientReportsAbnormalCloseAndDeadlines) {
  // A bare Beast server that accepts the upgrade, sends one frame and drops
  // the socket without a close frame: the 1006 case.
  namespace asio = boost::asio;
  namespace websocket = boost::beast::websocket;
  asio::io_context ioc;
  asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  int port = acceptor.local_endpoint().port();
  std::promise<void> release;
  std::thread fake([&] {
    for (int round = 0; round < 2; ++round) {
      boost::system::error_code ec;
      asio::ip::tcp::socket socket(ioc);
      acceptor.accept(socket, ec);
      if (ec) return;
      websocket::stream<asio::ip::tcp::socket> ws(std::move(socket));
      ws.accept(ec);
      if (ec) return;
      if (round == 0) {
        ws.write(asio::buffer(std::string("only")), ec);
        ws.next_layer().close(ec);  // no close frame
      } else {
        release.get_future().wait();  // round 1: silent until the client gives up
      }
    }
  });
  std::string url = "ws://127.0.0.1:" + std::to_string(port) + "/x";
  auto client = WebSocketClient::Connect(url);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto msg = (*client)->ReadMessage(Deadline::After(5s));
  ASSERT_TRUE(msg.ok());
  EXPECT_EQ(msg->value_or(""), "only");
  auto end = (*client)->ReadMessage(Deadline::After(5s));
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(end.status().message().find("1006"), std::string::npos) << end.status().ToString();
  EXPECT_EQ((*client)->close_code(), std::optional<uint16_t>(1006));

  auto silent = WebSocketClient::Connect(url);
  ASSERT_TRUE(silent.ok()) << silent.status().ToString();
  auto start = std::chrono::steady_clock::now();
  auto none = (*silent)->ReadMessage(Deadline::After(100ms));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kDeadlineExceeded);
  silent->reset();
  release.set_value();
  fake.join();

  EXPECT_EQ(WebSocketClient::Connect("http://127.0.0.1:1/x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WebSocketClient::Connect("ws://127.0.0.1:notaport/x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(WebSocketClient::Connect("ws://127.0.0.1:1/x", {}, Deadline::After(2s)).status().code(),
            StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cohort::net
