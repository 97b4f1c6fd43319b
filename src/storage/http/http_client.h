// A small synchronous HTTP client on libcurl, shared by the gs:// and s3://
// backends (and their tests). One easy handle per call; safe to call from
// any thread. Transport failures (refused, reset, timeout, cut-short body)
// are Unavailable statuses naming the URL; any HTTP status is a response.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::storage::http {

struct Response {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  // First value of a header (name in lower case), or "".
  std::string Header(std::string_view name) const;
};

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  // Body: either `body` (in memory) or `body_reader` with `body_size`
  // bytes (streamed; the reader fills buf and returns bytes written, 0 at the end).
  std::string_view body;
  std::function<size_t(char* buf, size_t max)> body_reader;
  uint64_t body_size = 0;
  // Streaming download: called with each piece of the response body of a
  // 2xx response (error bodies are always collected into Response::body).
  // Return false to abort the transfer.
  std::function<bool(const char* data, size_t n)> on_body;
  // Called once the final response's status line and headers are in (after
  // any 1xx), before any body byte reaches on_body; return false to abort
  // the transfer (Perform then returns Cancelled). Lets a streaming reader
  // check e.g. 200 vs 206 before it writes anything.
  std::function<bool(const Response& head)> on_response_headers;
  // Connect directly, ignoring http_proxy/https_proxy/all_proxy (the GCE
  // metadata server must never be reached through a proxy).
  bool no_proxy = false;
  std::chrono::milliseconds connect_timeout{10000};
  // Abort if fewer than 1 byte/s moves for this long (a stalled connection).
  std::chrono::milliseconds stall_timeout{60000};
};

Result<Response> Perform(const Request& request);

// Percent-encodes everything but unreserved characters (RFC 3986): for GCS
// object names in paths and for query values.
std::string UrlEncode(std::string_view s);

}  // namespace cohort::storage::http
