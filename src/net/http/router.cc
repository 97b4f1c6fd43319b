// Route table, URL decoding, auth helpers and request counters; see router.h.
#include "router.h"

#include <algorithm>
#include <exception>
#include <optional>

#include "cohort/common/logging.h"

namespace cohort::net::internal {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Splits a raw path ("/a/b%20c/") into decoded segments ["a", "b c", ""].
std::vector<std::string> DecodedSegments(std::string_view raw_path) {
  std::vector<std::string> out;
  if (!raw_path.empty() && raw_path.front() == '/') raw_path.remove_prefix(1);
  size_t start = 0;
  while (true) {
    size_t slash = raw_path.find('/', start);
    std::string_view piece = raw_path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    out.push_back(PercentDecode(piece, /*plus_is_space=*/false));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

// Per-segment ranks of a successful match (literal 2 > param 1 > rest 0);
// a lexicographically larger vector is the more specific route.
bool MatchSegments(const std::vector<PatternSegment>& pattern, const std::vector<std::string>& path,
                   std::vector<int>* rank, std::map<std::string, std::string>* params) {
  rank->clear();
  params->clear();
  for (size_t i = 0; i < pattern.size(); ++i) {
    const PatternSegment& seg = pattern[i];
    if (seg.type == PatternSegment::Type::kRest) {
      if (i >= path.size()) return false;  // needs the '/' before it
      std::string rest;
      for (size_t j = i; j < path.size(); ++j) {
        if (j > i) rest += '/';
        rest += path[j];
      }
      (*params)[seg.text] = std::move(rest);
      rank->push_back(0);
      return true;
    }
    if (i >= path.size()) return false;
    if (seg.type == PatternSegment::Type::kLiteral) {
      if (path[i] != seg.text) return false;
      rank->push_back(2);
    } else {
      if (path[i].empty()) return false;
      (*params)[seg.text] = path[i];
      rank->push_back(1);
    }
  }
  return pattern.size() == path.size();
}

bool IsWebSocket(const Route& r) { return r.kind == RouteKind::kWebSocket; }

}  // namespace

std::string PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%' && i + 2 < s.size()) {
      int hi = HexValue(s[i + 1]);
      int lo = HexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += (plus_is_space && c == '+') ? ' ' : c;
  }
  return out;
}

void SplitTarget(std::string_view target, std::string_view* path, std::string_view* query) {
  size_t q = target.find('?');
  size_t hash = target.find('#');
  if (hash != std::string_view::npos) target = target.substr(0, hash);
  if (q == std::string_view::npos || q >= target.size()) {
    *path = target;
    *query = {};
  } else {
    *path = target.substr(0, q);
    *query = target.substr(q + 1);
  }
}

std::multimap<std::string, std::string> ParseQuery(std::string_view raw_query) {
  std::multimap<std::string, std::string> out;
  size_t start = 0;
  while (start <= raw_query.size()) {
    size_t amp = raw_query.find('&', start);
    if (amp == std::string_view::npos) amp = raw_query.size();
    std::string_view piece = raw_query.substr(start, amp - start);
    if (!piece.empty()) {
      size_t eq = piece.find('=');
      std::string key = PercentDecode(piece.substr(0, eq), true);
      std::string value = eq == std::string_view::npos ? "" : PercentDecode(piece.substr(eq + 1), true);
      out.emplace(std::move(key), std::move(value));
    }
    start = amp + 1;
  }
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Walk the expected length (b) whatever a is, so timing reveals only sizes.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) {
    unsigned char ca = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    diff |= static_cast<unsigned char>(ca ^ static_cast<unsigned char>(b[i]));
  }
  return diff == 0;
}

bool IsPublicPath(const std::vector<std::string>& public_paths, std::string_view raw_path) {
  for (const std::string& entry : public_paths) {
    if (!entry.empty() && entry.back() == '*') {
      std::string_view prefix(entry.data(), entry.size() - 1);
      if (raw_path.substr(0, prefix.size()) == prefix) return true;
    } else if (raw_path == entry) {
      return true;
    }
  }
  return false;
}

bool HasBearerToken(const HeaderMap& headers, std::string_view token) {
  std::string expected = "Bearer " + std::string(token);
  bool ok = false;
  for (const char* name : {"Authorization", "X-Ray-Authorization"}) {
    auto it = headers.find(std::string_view(name));
    if (it != headers.end() && ConstantTimeEquals(it->second, expected)) ok = true;
  }
  return ok;
}

namespace {

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "http://host:port" (or https) names the same authority as the Host header.
bool OriginMatchesHost(std::string_view origin, std::string_view host) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (origin.substr(0, scheme.size()) == scheme) {
      origin.remove_prefix(scheme.size());
      CaseInsensitiveLess less;
      return !host.empty() && !less(origin, host) && !less(host, origin);
    }
  }
  return false;  // "null", other schemes
}

}  // namespace

std::vector<std::string_view> SameOriginCookieValues(const HeaderMap& headers, std::string_view cookie_name) {
  std::vector<std::string_view> out;
  if (cookie_name.empty()) return out;
  auto cookies = headers.find(std::string_view("Cookie"));
  if (cookies == headers.end()) return out;
  // A cookie rides along on cross-site requests too; accept it only from the
  // page's own origin (browsers send Origin on WebSocket upgrades and CORS).
  auto origin = headers.find(std::string_view("Origin"));
  if (origin != headers.end()) {
    auto host = headers.find(std::string_view("Host"));
    if (host == headers.end() || !OriginMatchesHost(TrimSpaces(origin->second), TrimSpaces(host->second))) return out;
  }
  std::string_view rest = cookies->second;  // "a=1; b=2" (repeated headers joined with ", ")
  while (!rest.empty()) {
    size_t end = rest.find_first_of(";,");
    std::string_view pair = TrimSpaces(rest.substr(0, end));
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos || TrimSpaces(pair.substr(0, eq)) != cookie_name) continue;
    out.push_back(TrimSpaces(pair.substr(eq + 1)));
  }
  return out;
}

bool HasTokenCookie(const HeaderMap& headers, std::string_view cookie_name, std::string_view token) {
  if (token.empty()) return false;
  bool ok = false;
  for (std::string_view value : SameOriginCookieValues(headers, cookie_name)) {
    if (ConstantTimeEquals(value, token)) ok = true;
  }
  return ok;
}

std::vector<std::string_view> PresentedTokens(const HeaderMap& headers, std::string_view cookie_name) {
  constexpr std::string_view kScheme = "Bearer ";
  std::vector<std::string_view> out;
  for (const char* name : {"Authorization", "X-Ray-Authorization"}) {
    auto it = headers.find(std::string_view(name));
    if (it == headers.end()) continue;
    std::string_view value = it->second;
    if (value.substr(0, kScheme.size()) != kScheme) continue;
    value.remove_prefix(kScheme.size());
    if (!value.empty()) out.push_back(value);
  }
  for (std::string_view value : SameOriginCookieValues(headers, cookie_name)) {
    if (!value.empty()) out.push_back(value);
  }
  return out;
}

AuthOutcome Authenticate(const HttpServer::Options& options, std::string_view raw_path, Request* request) {
  request->principal.clear();
  if (options.bearer_token.empty()) {
    request->principal = "admin";
    return AuthOutcome::kAllowed;
  }
  if (HasBearerToken(request->headers, options.bearer_token) ||
      HasTokenCookie(request->headers, options.token_cookie, options.bearer_token)) {
    request->principal = "admin";
    return AuthOutcome::kAllowed;
  }
  if (IsPublicPath(options.public_paths, raw_path)) return AuthOutcome::kAllowed;
  if (!options.authorize) return AuthOutcome::kDenied;
  for (std::string_view token : PresentedTokens(request->headers, options.token_cookie)) {
    std::optional<std::string> principal;
    try {
      principal = options.authorize(token, *request);
    } catch (const std::exception& e) {
      COHORT_LOG(ERROR) << "HTTP authorize hook threw for " << MethodLabel(request->method) << " request from "
                        << request->remote_address << ": " << e.what();
      return AuthOutcome::kHookFailed;
    } catch (...) {
      COHORT_LOG(ERROR) << "HTTP authorize hook threw for " << MethodLabel(request->method) << " request from "
                        << request->remote_address;
      return AuthOutcome::kHookFailed;
    }
    if (principal) {
      request->principal = std::move(*principal);
      return AuthOutcome::kAllowed;
    }
  }
  return AuthOutcome::kDenied;
}

std::string MethodLabel(std::string_view method) {
  static const char* const kKnown[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
  for (const char* known : kKnown) {
    if (method == known) return known;
  }
  return "OTHER";
}

bool ParsePattern(std::string_view pattern, std::vector<PatternSegment>* segments) {
  segments->clear();
  if (pattern.empty() || pattern.front() != '/') return false;
  std::string_view rest = pattern.substr(1);
  size_t start = 0;
  while (true) {
    size_t slash = rest.find('/', start);
    std::string_view piece = rest.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (!segments->empty() && segments->back().type == PatternSegment::Type::kRest) return false;
    if (!piece.empty() && piece.front() == '{') {
      if (piece.size() < 3 || piece.back() != '}') return false;
      std::string_view name = piece.substr(1, piece.size() - 2);
      PatternSegment::Type type = PatternSegment::Type::kParam;
      if (name.back() == '*') {
        type = PatternSegment::Type::kRest;
        name.remove_suffix(1);
      }
      if (name.empty() || name.find_first_of("{}*") != std::string_view::npos) return false;
      segments->push_back({type, std::string(name)});
    } else {
      if (piece.find_first_of("{}") != std::string_view::npos) return false;
      segments->push_back({PatternSegment::Type::kLiteral, std::string(piece)});
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return true;
}

void Router::Add(std::shared_ptr<Route> route) {
  COHORT_CHECK(ParsePattern(route->pattern, &route->segments)) << "malformed route pattern '"
                                                               << route->pattern << "'";
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& r : routes_) {
    COHORT_CHECK(!(IsWebSocket(*r) == IsWebSocket(*route) && r->method == route->method &&
                   r->pattern == route->pattern))
        << "route registered twice: " << route->method << " " << route->pattern;
  }
  routes_.push_back(std::move(route));
}

RouteMatch Router::Match(std::string_view method, std::string_view raw_path, bool upgrade) const {
  std::vector<std::string> path = DecodedSegments(raw_path);
  std::vector<std::shared_ptr<const Route>> routes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    routes = routes_;
  }
  RouteMatch result;
  std::vector<int> best_path_rank;
  std::vector<int> rank;
  std::map<std::string, std::string> params;
  // Two passes: the preferred family first (WebSocket routes for an upgrade).
  for (int pass = 0; pass < 2 && !result.route; ++pass) {
    bool want_ws = (pass == 0) == upgrade;
    std::shared_ptr<const Route> best;
    std::tuple<std::vector<int>, int> best_key;  // (rank, method priority)
    for (const auto& r : routes) {
      if (IsWebSocket(*r) != want_ws) continue;
      if (!MatchSegments(r->segments, path, &rank, &params)) continue;
      if (result.pattern.empty() || rank > best_path_rank) {
        best_path_rank = rank;
        result.pattern = r->pattern;
      }
      std::string allowed = r->method;
      if (std::find(result.allowed.begin(), result.allowed.end(), allowed) == result.allowed.end()) {
        result.allowed.push_back(allowed);
      }
      int priority = 0;
      if (r->method == method) {
        priority = 2;
      } else if (method == "HEAD" && r->method == "GET" && !want_ws) {
        priority = 1;
      } else {
        continue;
      }
      auto key = std::make_tuple(rank, priority);
      if (!best || key > best_key) {
        best = r;
        best_key = std::move(key);
        result.params = params;
      }
    }
    if (best) {
      result.route = best;
      result.pattern = best->pattern;
    }
  }
  if (!result.route) {
    if (std::find(result.allowed.begin(), result.allowed.end(), "GET") != result.allowed.end() &&
        std::find(result.allowed.begin(), result.allowed.end(), "HEAD") == result.allowed.end()) {
      result.allowed.push_back("HEAD");
    }
    std::sort(result.allowed.begin(), result.allowed.end());
  }
  return result;
}

void RouteCounters::Add(std::string_view method, std::string_view pattern, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[std::make_tuple(MethodLabel(method), std::string(pattern), status)];
}

std::vector<HttpServer::RouteCount> RouteCounters::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<HttpServer::RouteCount> out;
  out.reserve(counts_.size());
  for (const auto& [key, count] : counts_) {
    out.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), count});
  }
  return out;
}

}  // namespace cohort::net::internal
