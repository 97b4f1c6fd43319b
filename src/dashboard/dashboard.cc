// Serves the embedded dashboard files and the cookie login; see
// include/cohort/dashboard/dashboard.h.
#include "cohort/dashboard/dashboard.h"

#include <string>
#include <string_view>

#include "assets.h"

namespace cohort::dashboard {
namespace {

using internal::Asset;

const Asset* FindAsset(std::string_view name) {
  for (size_t i = 0; i < internal::kAssetCount; ++i) {
    if (name == internal::kAssets[i].name) return &internal::kAssets[i];
  }
  return nullptr;
}

// The page may load only what the head serves: no CDN, no inline script.
constexpr const char* kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

bool EtagMatches(std::string_view if_none_match, std::string_view etag) {
  if (if_none_match == "*") return true;
  size_t pos = 0;
  while (pos < if_none_match.size()) {
    size_t comma = if_none_match.find(',', pos);
    std::string_view item =
        if_none_match.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.substr(0, 2) == "W/") item.remove_prefix(2);
    if (item == etag) return true;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return false;
}

net::Response Serve(const net::Request& request, const Asset& asset, bool versioned) {
  net::Response r;
  r.headers["ETag"] = asset.etag;
  // index.html: always revalidate (it names the current bundle). The bundle,
  // asked for by its content hash (?v=), never changes under that name.
  r.headers["Cache-Control"] = versioned ? "public, max-age=31536000, immutable" : "no-cache";
  r.headers["X-Content-Type-Options"] = "nosniff";
  r.headers["Referrer-Policy"] = "no-referrer";
  if (std::string_view(asset.name) == "index.html") {
    r.headers["Content-Security-Policy"] = kContentSecurityPolicy;
    r.headers["X-Frame-Options"] = "DENY";
  }
  if (EtagMatches(request.Header("If-None-Match"), asset.etag)) {
    r.status = 304;
    r.content_type.clear();
    return r;
  }
  r.status = 200;
  r.content_type = asset.content_type;
  r.body.assign(reinterpret_cast<const char*>(asset.data), asset.size);
  return r;
}

// The bearer token the request was let in with ("" when none was sent, as
// with auth disabled).
std::string BearerToken(const net::Request& request) {
  for (const char* name : {"Authorization", "X-Ray-Authorization"}) {
    std::string_view v = request.Header(name);
    if (v.substr(0, 7) == "Bearer ") return std::string(v.substr(7));
  }
  return "";
}

bool CookieSafe(std::string_view value) {
  if (value.empty() || value.size() > 512) return false;
  for (char c : value) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' ||
              c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

void RegisterDashboard(net::HttpServer& server) {
  server.Handle("GET", "/", [](const net::Request& request) {
    const Asset* index = FindAsset("index.html");
    if (index == nullptr) return net::Response::Text(404, "404: Not Found: the dashboard was built without its page");
    return Serve(request, *index, /*versioned=*/false);
  });
  server.Handle("GET", "/static/{name}", [](const net::Request& request) {
    std::string_view name = request.PathParam("name");
    const Asset* asset = name == "index.html" ? nullptr : FindAsset(name);
    if (asset == nullptr) return net::Response::Text(404, "404: Not Found");
    return Serve(request, *asset, request.Query("v").has_value());
  });
  // The server has checked the bearer token before this runs (the route is
  // not public), so the header's token is the cluster's.
  server.Handle("POST", "/api/authenticate", [](const net::Request& request) {
    net::Response r = net::Response::Json(200, R"({"authenticated":true})");
    r.headers["Cache-Control"] = "no-store";
    std::string token = BearerToken(request);
    if (token.empty()) return r;  // auth disabled: nothing to remember
    if (!CookieSafe(token)) return net::Response::Text(400, "the token cannot be stored in a cookie");
    r.headers["Set-Cookie"] = std::string(kTokenCookie) + "=" + token + "; Path=/; HttpOnly; SameSite=Strict";
    return r;
  });
  server.Handle("DELETE", "/api/authenticate", [](const net::Request&) {
    net::Response r = net::Response::Json(200, R"({"authenticated":false})");
    r.headers["Cache-Control"] = "no-store";
    r.headers["Set-Cookie"] = std::string(kTokenCookie) + "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict";
    return r;
  });
}

}  // namespace cohort::dashboard
