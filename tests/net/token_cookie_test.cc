// HttpServer's cookie authentication (Options::token_cookie): the token in a
// cookie passes like the bearer header, for same-origin requests and
// WebSocket upgrades (a browser WebSocket cannot send Authorization).
// White-box tests of HasTokenCookie (src/net/http/router.h), then the server
// on an ephemeral port, driven by libcurl and the WebSocket client.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cohort/net/http_server.h"
#include "cohort/net/ws_client.h"
#include "http/router.h"

namespace cohort::net {
namespace {

using internal::HasTokenCookie;

HeaderMap Headers(std::initializer_list<std::pair<const char*, const char*>> list) {
  HeaderMap h;
  for (const auto& [k, v] : list) h[k] = v;
  return h;
}

TEST(HasTokenCookieTest, FindsTheNamedCookie) {
  EXPECT_TRUE(HasTokenCookie(Headers({{"Cookie", "cohort_token=tok"}}), "cohort_token", "tok"));
  EXPECT_TRUE(HasTokenCookie(Headers({{"Cookie", "a=1; cohort_token=tok; b=2"}}), "cohort_token", "tok"));
  EXPECT_TRUE(HasTokenCookie(Headers({{"Cookie", "a=1;cohort_token=tok "}}), "cohort_token", "tok"));
  // Repeated Cookie headers are joined with ", " by the server.
  EXPECT_TRUE(HasTokenCookie(Headers({{"Cookie", "a=1, cohort_token=tok"}}), "cohort_token", "tok"));
  // A stale cookie next to the right one (two paths) still passes.
  EXPECT_TRUE(HasTokenCookie(Headers({{"Cookie", "cohort_token=old; cohort_token=tok"}}), "cohort_token", "tok"));
}

TEST(HasTokenCookieTest, RefusesWrongOrMissing) {
  EXPECT_FALSE(HasTokenCookie(Headers({}), "cohort_token", "tok"));
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", "cohort_token=tok2"}}), "cohort_token", "tok"));
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", "cohort_token=to"}}), "cohort_token", "tok"));
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", "cohort_token="}}), "cohort_token", "tok"));
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", "xcohort_token=tok"}}), "cohort_token", "tok"));
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", "other=tok"}}), "cohort_token", "tok"));
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", "cohort_token"}}), "cohort_token", "tok"));
  // The feature off (no cookie name) or no token configured.
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", "cohort_token=tok"}}), "", "tok"));
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", "cohort_token="}}), "cohort_token", ""));
}

TEST(HasTokenCookieTest, OriginMustBeTheHost) {
  const char* cookie = "cohort_token=tok";
  EXPECT_TRUE(
      HasTokenCookie(Headers({{"Cookie", cookie}, {"Host", "127.0.0.1:8265"}, {"Origin", "http://127.0.0.1:8265"}}),
                     "cohort_token", "tok"));
  EXPECT_TRUE(HasTokenCookie(
      Headers({{"Cookie", cookie}, {"Host", "Dash.Example:443"}, {"Origin", "https://dash.example:443"}}),
      "cohort_token", "tok"));
  EXPECT_FALSE(
      HasTokenCookie(Headers({{"Cookie", cookie}, {"Host", "127.0.0.1:8265"}, {"Origin", "http://evil.example"}}),
                     "cohort_token", "tok"));
  EXPECT_FALSE(
      HasTokenCookie(Headers({{"Cookie", cookie}, {"Host", "127.0.0.1:8265"}, {"Origin", "http://127.0.0.1:8266"}}),
                     "cohort_token", "tok"));
  EXPECT_FALSE(HasTokenCookie(Headers({{"Cookie", cookie}, {"Host", "127.0.0.1:8265"}, {"Origin", "null"}}),
                              "cohort_token", "tok"));
  EXPECT_FALSE(
      HasTokenCookie(Headers({{"Cookie", cookie}, {"Origin", "http://127.0.0.1:8265"}}), "cohort_token", "tok"));
}

// --- the server --------------------------------------------------------------

struct CurlInit {
  CurlInit() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};
const CurlInit kCurlInit;

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

long Get(const std::string& url, const std::vector<std::string>& headers) {
  CURL* curl = curl_easy_init();
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
  long status = 0;
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return status;
}

std::unique_ptr<HttpServer> StartServer(std::string cookie_name) {
  HttpServer::Options options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.bearer_token = "s3cret";
  options.token_cookie = std::move(cookie_name);
  auto server = HttpServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  (*server)->Handle("GET", "/api/thing", [](const Request&) { return Response::Text(200, "thing"); });
  (*server)->HandleWebSocket("/api/tail", nullptr, [](std::shared_ptr<WebSocketSession> ws) {
    ws->SendText("hello");
    ws->Close(1000);
  });
  return std::move(server).value();
}

TEST(TokenCookieServerTest, CookiePassesLikeTheHeader) {
  auto server = StartServer("cohort_token");
  const std::string url = "http://127.0.0.1:" + std::to_string(server->port()) + "/api/thing";
  const std::string host = "Host: 127.0.0.1:" + std::to_string(server->port());
  EXPECT_EQ(Get(url, {}), 401);
  EXPECT_EQ(Get(url, {"Authorization: Bearer s3cret"}), 200);
  EXPECT_EQ(Get(url, {"Cookie: cohort_token=s3cret"}), 200);
  EXPECT_EQ(Get(url, {"Cookie: theme=dark; cohort_token=s3cret"}), 200);
  EXPECT_EQ(Get(url, {"Cookie: cohort_token=wrong"}), 401);
  EXPECT_EQ(Get(url, {"Cookie: other=s3cret"}), 401);
  EXPECT_EQ(Get(url, {"Cookie: cohort_token=s3cret", "Origin: http://127.0.0.1:" + std::to_string(server->port())}),
            200);
  // A cross-origin request carrying the cookie is refused; the header still works.
  EXPECT_EQ(Get(url, {"Cookie: cohort_token=s3cret", "Origin: http://evil.example"}), 401);
  EXPECT_EQ(Get(url, {"Authorization: Bearer s3cret", "Origin: http://evil.example"}), 200);
}

TEST(TokenCookieServerTest, OffUnlessConfigured) {
  auto server = StartServer("");
  const std::string url = "http://127.0.0.1:" + std::to_string(server->port()) + "/api/thing";
  EXPECT_EQ(Get(url, {"Cookie: cohort_token=s3cret"}), 401);
  EXPECT_EQ(Get(url, {"Authorization: Bearer s3cret"}), 200);
}

TEST(TokenCookieServerTest, WebSocketUpgradeWithTheCookie) {
  auto server = StartServer("cohort_token");
  const std::string origin = "http://127.0.0.1:" + std::to_string(server->port());
  const std::string url = "ws://127.0.0.1:" + std::to_string(server->port()) + "/api/tail";

  auto refused = WebSocketClient::Connect(url, {{"Origin", origin}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status().ToString();

  auto cross = WebSocketClient::Connect(url, {{"Cookie", "cohort_token=s3cret"}, {"Origin", "http://evil.example"}});
  ASSERT_FALSE(cross.ok());
  EXPECT_EQ(cross.status().code(), StatusCode::kFailedPrecondition) << cross.status().ToString();

  auto ws = WebSocketClient::Connect(url, {{"Cookie", "cohort_token=s3cret"}, {"Origin", origin}});
  ASSERT_TRUE(ws.ok()) << ws.status().ToString();
  auto msg = (*ws)->ReadMessage(Deadline::After(std::chrono::seconds(5)));
  ASSERT_TRUE(msg.ok()) << msg.status().ToString();
  ASSERT_TRUE(msg->has_value());
  EXPECT_EQ(**msg, "hello");
  auto end = (*ws)->ReadMessage(Deadline::After(std::chrono::seconds(5)));
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
  EXPECT_EQ((*ws)->close_code(), 1000);
}

}  // namespace
}  // namespace cohort::net
