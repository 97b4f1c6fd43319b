// Route table, URL decoding, auth helpers and request counters of HttpServer.
//
// Pure logic with no Boost, so it is cheap to compile and to unit-test. Used
// by http_session.cc (on the loop thread) and http_server.cc (registration,
// any thread). Router and RouteCounters lock internally; the free functions
// are thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "cohort/net/http_server.h"

namespace cohort::net::internal {

// "%41b+c" -> "Ab+c" (or "Ab c" with plus_is_space). A malformed escape is
// kept literally, as browsers and aiohttp do.
std::string PercentDecode(std::string_view s, bool plus_is_space);
// Splits "/a/b?x=1" into raw path "/a/b" and raw query "x=1".
void SplitTarget(std::string_view target, std::string_view* path, std::string_view* query);
// "a=1&b=x%20y&c" -> {a:1, b:"x y", c:""}; empty pieces are skipped.
std::multimap<std::string, std::string> ParseQuery(std::string_view raw_query);
// Equality whose running time depends only on the lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);
// True when `raw_path` is listed exactly, or starts with an entry's text
// before its trailing '*'.
bool IsPublicPath(const std::vector<std::string>& public_paths, std::string_view raw_path);
// True when the request carries "Bearer <token>" in Authorization or in Ray's
// fallback X-Ray-Authorization.
bool HasBearerToken(const HeaderMap& headers, std::string_view token);
// True when the Cookie header holds `cookie_name`=<token> (constant-time
// compare) and the request is not cross-origin: an Origin header, when
// present, must name the Host the request was sent to. Empty `cookie_name`:
// false.
bool HasTokenCookie(const HeaderMap& headers, std::string_view cookie_name, std::string_view token);
// The values of cookie `cookie_name`, in order, when the request is not
// cross-origin (as for HasTokenCookie). Empty `cookie_name`: none.
std::vector<std::string_view> SameOriginCookieValues(const HeaderMap& headers, std::string_view cookie_name);
// The bearer credentials a request presents, in the order they are tried:
// "Authorization: Bearer <t>", "X-Ray-Authorization: Bearer <t>", then the
// values of cookie `cookie_name` (SameOriginCookieValues). Empty ones are
// skipped. The views point into `headers`.
std::vector<std::string_view> PresentedTokens(const HeaderMap& headers, std::string_view cookie_name);

enum class AuthOutcome { kAllowed, kDenied, kHookFailed };
// The "Auth" and "Principal" rules of http_server.h: decides whether
// `request` (method, target, path, query, headers, remote_address filled) may
// proceed on `raw_path`, and sets request->principal when it may. Calls
// options.authorize when the rules say so; kHookFailed when it threw (logged).
AuthOutcome Authenticate(const HttpServer::Options& options, std::string_view raw_path, Request* request);

// Known verbs as themselves, anything else "OTHER" (bounds counter labels).
std::string MethodLabel(std::string_view method);

struct PatternSegment {
  enum class Type { kLiteral, kParam, kRest };
  Type type;
  std::string text;  // literal text, or the parameter's name
};
// "/api/jobs/{id}/logs" -> [api, jobs, {id}, logs]; false if malformed (no
// leading '/', a stray brace, an empty name, "{x*}" not last).
bool ParsePattern(std::string_view pattern, std::vector<PatternSegment>* segments);

enum class RouteKind { kSync, kAsync, kWebSocket };

struct Route {
  RouteKind kind = RouteKind::kSync;
  std::string method;  // "GET" for WebSocket routes
  std::string pattern;
  std::vector<PatternSegment> segments;
  HttpServer::Handler handler;             // kSync
  HttpServer::AsyncHandler async_handler;  // kAsync
  HttpServer::PreUpgrade pre_upgrade;      // kWebSocket (may be empty)
  HttpServer::OnOpen on_open;              // kWebSocket
};

struct RouteMatch {
  std::shared_ptr<const Route> route;        // null: 404 or 405
  std::map<std::string, std::string> params;  // decoded path parameters
  std::string pattern;                        // best pattern matching the path ("" if none)
  std::vector<std::string> allowed;           // for 405: methods the path accepts
};

class Router {
 public:
  // COHORT_CHECKs that the pattern parses and (kind family, method, pattern)
  // is new. WebSocket routes and HTTP routes may share a pattern.
  void Add(std::shared_ptr<Route> route);
  // An upgrade request prefers WebSocket routes, any other request HTTP
  // routes; each falls back to the other family. HEAD falls back to GET for
  // HTTP routes.
  RouteMatch Match(std::string_view method, std::string_view raw_path, bool upgrade) const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const Route>> routes_;  // GUARDED_BY(mu_)
};

class RouteCounters {
 public:
  void Add(std::string_view method, std::string_view pattern, int status);
  std::vector<HttpServer::RouteCount> Snapshot() const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> counts_;  // GUARDED_BY(mu_)
};

}  // namespace cohort::net::internal
