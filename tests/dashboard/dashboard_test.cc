// The dashboard's routes (src/dashboard/dashboard.cc) on an HttpServer bound
// to an ephemeral port, with the head's auth settings: the page and its
// bundle are public and embedded byte for byte, with the right content types
// and cache headers; POST /api/authenticate turns the bearer token into the
// session cookie; and no asset loads anything from another host (no CDN).
#include "cohort/dashboard/dashboard.h"

#include <curl/curl.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace cohort::dashboard {
namespace {

namespace fs = std::filesystem;

struct CurlInit {
  CurlInit() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};
const CurlInit kCurlInit;

struct Reply {
  long status = 0;
  std::string body;
  net::HeaderMap headers;
};

size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

size_t AppendHeader(char* data, size_t size, size_t n, void* out) {
  std::string line(data, size * n);
  size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    (*static_cast<net::HeaderMap*>(out))[line.substr(0, colon)] = value;
  }
  return size * n;
}

Reply Fetch(const std::string& method, const std::string& url, const std::vector<std::string>& headers = {}) {
  Reply r;
  CURL* curl = curl_easy_init();
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  if (method == "POST") curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, AppendHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r.headers);
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return r;
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const fs::path kAssetDir = fs::path(COHORT_SOURCE_DIR) / "src" / "dashboard" / "assets";

// An HttpServer configured as the head configures its own.
class DashboardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    net::HttpServer::Options options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.bearer_token = "0123456789abcdef0123456789abcdef";
    for (const char* p : kPublicPaths) options.public_paths.push_back(p);
    options.token_cookie = kTokenCookie;
    auto server = net::HttpServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    RegisterDashboard(*server_);
    server_->Handle("GET", "/api/jobs/", [](const net::Request&) { return net::Response::Json(200, "[]"); });
  }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(server_->port()) + path;
  }
  std::unique_ptr<net::HttpServer> server_;
};

TEST_F(DashboardTest, ServesThePageWithoutAToken) {
  Reply r = Fetch("GET", Url("/"));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["Content-Type"], "text/html; charset=utf-8");
  EXPECT_EQ(r.headers["Cache-Control"], "no-cache");
  EXPECT_EQ(r.headers["X-Content-Type-Options"], "nosniff");
  EXPECT_NE(r.headers["Content-Security-Policy"].find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(r.body, ReadFile(kAssetDir / "index.html"));
  // The page names the bundle by content hash, relative to itself.
  EXPECT_TRUE(std::regex_search(r.body, std::regex(R"(<script src="static/app\.js\?v=[0-9a-f]{12}"></script>)")))
      << r.body;
  EXPECT_TRUE(
      std::regex_search(r.body, std::regex(R"(<link rel="stylesheet" href="static/app\.css\?v=[0-9a-f]{12}">)")))
      << r.body;
  EXPECT_NE(r.body.find("id=\"login\""), std::string::npos);  // the token prompt
}

TEST_F(DashboardTest, ServesTheBundleWithContentTypes) {
  for (auto [name, type] :
       {std::pair{"app.js", "text/javascript; charset=utf-8"}, std::pair{"app.css", "text/css; charset=utf-8"}}) {
    SCOPED_TRACE(name);
    const std::string on_disk = ReadFile(kAssetDir / name);
    ASSERT_GT(on_disk.size(), 1000u);
    Reply plain = Fetch("GET", Url(std::string("/static/") + name));
    ASSERT_EQ(plain.status, 200);
    EXPECT_EQ(plain.headers["Content-Type"], type);
    EXPECT_EQ(plain.body, on_disk);  // embedded byte for byte
    EXPECT_EQ(plain.headers["Cache-Control"], "no-cache");
    // As index.html asks for it: cached for good under its hash.
    Reply versioned = Fetch("GET", Url(std::string("/static/") + name + "?v=abc"));
    ASSERT_EQ(versioned.status, 200);
    EXPECT_EQ(versioned.headers["Cache-Control"], "public, max-age=31536000, immutable");
    // Revalidation with the ETag: 304 and no body.
    const std::string etag = plain.headers["ETag"];
    ASSERT_FALSE(etag.empty());
    EXPECT_EQ(etag.front(), '"');
    Reply again = Fetch("GET", Url(std::string("/static/") + name), {"If-None-Match: " + etag});
    EXPECT_EQ(again.status, 304);
    EXPECT_TRUE(again.body.empty());
    Reply head = Fetch("HEAD", Url(std::string("/static/") + name));
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.headers["Content-Length"], std::to_string(on_disk.size()));
  }
  EXPECT_EQ(Fetch("GET", Url("/static/nope.js")).status, 404);
  EXPECT_EQ(Fetch("GET", Url("/static/index.html")).status, 404);
  EXPECT_EQ(Fetch("POST", Url("/")).status, 405);
}

TEST_F(DashboardTest, TheApiStillNeedsTheToken) {
  EXPECT_EQ(Fetch("GET", Url("/api/jobs/")).status, 401);
  EXPECT_EQ(Fetch("POST", Url("/api/authenticate")).status, 401);
  EXPECT_EQ(Fetch("POST", Url("/api/authenticate"), {"Authorization: Bearer wrong"}).status, 401);
  EXPECT_EQ(Fetch("GET", Url("/api/jobs/"), {"Authorization: Bearer 0123456789abcdef0123456789abcdef"}).status, 200);
}

TEST_F(DashboardTest, AuthenticateSetsTheSessionCookie) {
  Reply r = Fetch("POST", Url("/api/authenticate"), {"Authorization: Bearer 0123456789abcdef0123456789abcdef"});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"authenticated":true})");
  const std::string cookie = r.headers["Set-Cookie"];
  EXPECT_EQ(cookie, "cohort_token=0123456789abcdef0123456789abcdef; Path=/; HttpOnly; SameSite=Strict");
  EXPECT_EQ(r.headers["Cache-Control"], "no-store");
  // The cookie alone now opens the API (what the page's WebSocket relies on).
  EXPECT_EQ(Fetch("GET", Url("/api/jobs/"), {"Cookie: cohort_token=0123456789abcdef0123456789abcdef"}).status, 200);
  // Ray's proxy header works for the exchange too.
  Reply ray = Fetch("POST", Url("/api/authenticate"), {"X-Ray-Authorization: Bearer 0123456789abcdef0123456789abcdef"});
  EXPECT_EQ(ray.status, 200);
  EXPECT_EQ(ray.headers["Set-Cookie"], cookie);
  // Signing out clears it.
  Reply out = Fetch("DELETE", Url("/api/authenticate"), {"Cookie: cohort_token=0123456789abcdef0123456789abcdef"});
  EXPECT_EQ(out.status, 200);
  EXPECT_NE(out.headers["Set-Cookie"].find("cohort_token=;"), std::string::npos);
  EXPECT_NE(out.headers["Set-Cookie"].find("Max-Age=0"), std::string::npos);
}

TEST(DashboardNoAuthTest, AuthenticateWithoutAuthSetsNoCookie) {
  net::HttpServer::Options options;
  options.host = "127.0.0.1";
  options.port = 0;
  auto server = net::HttpServer::Start(options);
  ASSERT_TRUE(server.ok());
  RegisterDashboard(**server);
  Reply r = Fetch("POST", "http://127.0.0.1:" + std::to_string((*server)->port()) + "/api/authenticate");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.count("Set-Cookie"), 0u);
  // A value that cannot be a cookie is refused rather than echoed.
  Reply bad = Fetch("POST", "http://127.0.0.1:" + std::to_string((*server)->port()) + "/api/authenticate",
                    {"Authorization: Bearer a;b=c"});
  EXPECT_EQ(bad.status, 400);
}

// "No CDN": nothing in the page or its bundle points at another host. XML
// namespace names (never fetched) are the only absolute URLs allowed.
TEST(DashboardAssetsTest, NothingComesFromAnotherHost) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(kAssetDir)) names.push_back(e.path().filename().string());
  ASSERT_GE(names.size(), 3u);
  const std::regex url(R"re(https?://[^\s"'`)<>]+)re", std::regex::icase);
  const std::regex protocol_relative(R"((src|href)\s*=\s*["']//)", std::regex::icase);
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    const std::string text = ReadFile(kAssetDir / name);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), url); it != std::sregex_iterator(); ++it) {
      const std::string found = it->str();
      EXPECT_EQ(found.rfind("http://www.w3.org/", 0), 0u) << "an absolute URL in " << name << ": " << found;
    }
    EXPECT_FALSE(std::regex_search(text, protocol_relative)) << name;
    EXPECT_EQ(text.find("@import"), std::string::npos) << name;
  }
  const std::string html = ReadFile(kAssetDir / "index.html");
  const std::regex ref(R"re((?:src|href)="([^"]*)")re");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), ref); it != std::sregex_iterator(); ++it) {
    const std::string target = (*it)[1];
    EXPECT_TRUE(target.rfind("static/", 0) == 0 || target.rfind("#", 0) == 0 || target == "data:,") << target;
  }
}

}  // namespace
}  // namespace cohort::dashboard
