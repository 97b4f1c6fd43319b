// The one outgoing HTTP(S) client (libcurl), used by the gs:// and s3://
// stores, the CLI's job client and the Kubernetes API client / operator.
//
// One synchronous exchange per SendHttp() call, on a curl handle of its own:
// safe to call from any thread at once. No retries here: callers that retry
// (storage's RetryState, the operator's requeue) decide what is transient.
//
// Outcomes:
//  - Any HTTP status is a response (HttpResponse::status), 4xx/5xx included.
//  - A transport failure (refused, unresolvable, reset, timeout, TLS, a body
//    cut short) is Unavailable "METHOD URL: cause", where URL is RedactUrl(url)
//    and cause is curl's error text plus its detail, e.g. "Couldn't connect
//    to server (Failed to connect to 127.0.0.1 port 9 after 0 ms: Connection
//    refused)". The same cause, without the prefix, and what kind of failure
//    it was go to *error when given.
//  - on_body / on_response_headers returning false, or cancel() returning
//    true: Cancelled "METHOD URL: download aborted by the receiver" /
//    "METHOD URL: cancelled".
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cohort/common/status.h"

namespace cohort::net {

// Server verification and client identity for https:// (ignored for http://).
// Empty fields keep libcurl's defaults (the system CA bundle, no client cert).
struct HttpTlsOptions {
  std::string ca_file;           // PEM file of trusted CAs
  std::string ca_pem;            // PEM text of trusted CAs
  std::string client_cert_file;  // PEM client certificate (mutual TLS)
  std::string client_key_file;   // PEM private key
  std::string client_cert_pem;   // the same, as PEM text
  std::string client_key_pem;
  bool insecure_skip_verify = false;  // no peer or host name check
};

struct HttpResponse {
  long status = 0;
  // Of the final response (after any 1xx), names lower-cased, in order.
  std::vector<std::pair<std::string, std::string>> headers;
  // The body, unless it was streamed to HttpRequest::on_body (a 2xx body is;
  // an error body never is).
  std::string body;
  // First value of a header (name in lower case), or "".
  std::string Header(std::string_view name) const;
};

struct HttpRequest {
  std::string method = "GET";  // GET HEAD POST PUT PATCH DELETE ...
  std::string url;
  // Sent as given. No default Content-Type is added and "Expect:
  // 100-continue" is never sent.
  std::vector<std::pair<std::string, std::string>> headers;

  // Request body: `body` (not copied: must outlive the call), or
  // `body_reader` streaming `body_size` bytes (fills buf with at most max
  // bytes, returns how many; 0 at the end). POST, PUT and PATCH always send
  // a body (Content-Length: 0 when empty); other methods only a non-empty one.
  std::string_view body;
  std::function<size_t(char* buf, size_t max)> body_reader;
  uint64_t body_size = 0;

  // Called once the final response's status and headers are in, before any
  // body byte; false aborts the transfer (Cancelled).
  std::function<bool(const HttpResponse& head)> on_response_headers;
  // Streams the body of a 2xx response piece by piece instead of collecting
  // it in HttpResponse::body; false aborts the transfer (Cancelled). Bodies
  // of other statuses are always collected.
  std::function<bool(const char* data, size_t n)> on_body;
  // Polled while the transfer runs (about every second while it is idle, more
  // often while data moves); true aborts it (Cancelled).
  std::function<bool()> cancel;

  // 0 disables a limit.
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds total_timeout{0};
  // Abort when fewer than 1 byte/s moves for this long (whole seconds, at
  // least 1 s): a stalled connection or a silent stream.
  std::chrono::milliseconds stall_timeout{60000};

  HttpTlsOptions tls;
  std::string user_agent;  // "" sends no User-Agent
  // Connect directly, ignoring http_proxy/https_proxy/all_proxy (the GCE
  // metadata server must never be reached through a proxy).
  bool no_proxy = false;
};

// What went wrong when SendHttp() returned an error.
struct HttpTransportError {
  enum class Kind {
    kNone,
    kConnect,    // the host could not be resolved or connected to (refused, unreachable)
    kTimeout,    // connect, total or stall timeout
    kTls,        // TLS handshake / certificate problem
    kAborted,    // on_body / on_response_headers / cancel stopped it
    kTransfer,   // anything else: reset, cut-short body, bad reply, ...
  };
  Kind kind = Kind::kNone;
  std::string cause;  // as in the Status message, without "METHOD URL: "
};

Result<HttpResponse> SendHttp(const HttpRequest& request, HttpTransportError* error = nullptr);

// Percent-encodes everything but unreserved characters (RFC 3986): for path
// segments and query values.
std::string UrlEncode(std::string_view s);

// The URL for messages and logs: user:password@ dropped, and the values of
// query parameters that carry credentials or capabilities (upload_id,
// access_token, token, key, signature, X-Amz-Signature/-Credential/
// -Security-Token, X-Goog-Signature/-Credential, ...) replaced by "REDACTED".
std::string RedactUrl(std::string_view url);

}  // namespace cohort::net
