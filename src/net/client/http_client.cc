// The libcurl client; see cohort/net/http_client.h.
#include "cohort/net/http_client.h"

#include <curl/curl.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

namespace cohort::net {
namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  const HttpRequest* request;
  HttpResponse* response;
  bool aborted_by_receiver = false;  // on_body / on_response_headers said stop
  bool cancelled = false;            // cancel() said stop
  bool headers_reported = false;
};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// One header line: a status line (a new response begins, e.g. after a 1xx),
// a "name: value" line, or the blank line that ends the block.
size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  std::string_view line(data, bytes);
  HttpResponse& r = *t->response;
  if (line.rfind("HTTP/", 0) == 0) {
    r.headers.clear();
    const size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      long status = 0;
      for (size_t i = sp + 1; i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])); ++i)
        status = status * 10 + (line[i] - '0');
      r.status = status;
    }
    return bytes;
  }
  if (line == "\r\n" || line == "\n") {
    // The final (non-1xx) block is complete: report it once, before any body byte.
    if (r.status >= 200 && !t->headers_reported) {
      t->headers_reported = true;
      if (t->request->on_response_headers && !t->request->on_response_headers(r)) {
        t->aborted_by_receiver = true;
        return 0;
      }
    }
    return bytes;
  }
  const size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ' ||
                              value.back() == '\t'))
      value.remove_suffix(1);
    r.headers.emplace_back(std::move(name), std::string(value));
  }
  return bytes;
}

size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  const long status = t->response->status;
  if (t->request->on_body && status >= 200 && status < 300) {
    if (!t->request->on_body(data, bytes)) {
      t->aborted_by_receiver = true;
      return 0;
    }
    return bytes;
  }
  t->response->body.append(data, bytes);
  return bytes;
}

size_t OnRead(char* buf, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  return t->request->body_reader(buf, size * n);
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (t->request->cancel()) {
    t->cancelled = true;
    return 1;
  }
  return 0;
}

HttpTransportError::Kind KindOf(CURLcode rc) {
  using Kind = HttpTransportError::Kind;
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
      return Kind::kConnect;
    case CURLE_OPERATION_TIMEDOUT:
      return Kind::kTimeout;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
      return Kind::kTls;
    default:
      return Kind::kTransfer;
  }
}

// curl's generic text for rc, its detail (the error buffer) and the OS error,
// without repeating any of them.
std::string Cause(CURLcode rc, const char* errbuf, long os_errno) {
  const std::string generic = curl_easy_strerror(rc);
  std::string text = errbuf[0] != '\0' ? std::string(errbuf) : generic;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.find(generic) == std::string::npos) text = generic + ": " + text;
  if (os_errno != 0) {
    const std::string os = std::strerror(static_cast<int>(os_errno));
    if (text.find(os) == std::string::npos) text += " (" + os + ")";
  }
  return text;
}

void SetBlob(CURL* curl, CURLoption option, const std::string& pem) {
  curl_blob blob{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
  curl_easy_setopt(curl, option, &blob);
}

void ConfigureTls(CURL* curl, const HttpTlsOptions& tls) {
  if (!tls.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, tls.ca_file.c_str());
  if (!tls.ca_pem.empty()) SetBlob(curl, CURLOPT_CAINFO_BLOB, tls.ca_pem);
  if (tls.insecure_skip_verify) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (!tls.client_cert_file.empty()) curl_easy_setopt(curl, CURLOPT_SSLCERT, tls.client_cert_file.c_str());
  if (!tls.client_key_file.empty()) curl_easy_setopt(curl, CURLOPT_SSLKEY, tls.client_key_file.c_str());
  if (!tls.client_cert_pem.empty()) {
    SetBlob(curl, CURLOPT_SSLCERT_BLOB, tls.client_cert_pem);
    curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (!tls.client_key_pem.empty()) {
    SetBlob(curl, CURLOPT_SSLKEY_BLOB, tls.client_key_pem);
    curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
  }
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return "";
}

std::string UrlEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string RedactUrl(std::string_view url) {
  static const char* kSecretParams[] = {
      "access_token",     "token",          "id_token",          "key",          "api_key",
      "apikey",           "sig",            "signature",         "password",     "secret",
      "client_secret",    "assertion",      "upload_id",         "x-amz-signature",
      "x-amz-credential", "x-amz-security-token",                "x-goog-signature",
      "x-goog-credential"};
  std::string_view rest = url;
  if (size_t hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  std::string out;
  // scheme://[userinfo@]authority
  if (size_t scheme = rest.find("://"); scheme != std::string_view::npos) {
    out.append(rest.substr(0, scheme + 3));
    rest.remove_prefix(scheme + 3);
    const size_t end = std::min(rest.find_first_of("/?"), rest.size());
    std::string_view authority = rest.substr(0, end);
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
    out.append(authority);
    rest.remove_prefix(end);
  }
  const size_t q = rest.find('?');
  out.append(rest.substr(0, q));
  if (q == std::string_view::npos) return out;
  std::string_view query = rest.substr(q + 1);
  out += '?';
  bool first = true;
  while (true) {
    const size_t amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    if (!first) out += '&';
    first = false;
    const size_t eq = param.find('=');
    const std::string_view name = param.substr(0, eq);
    bool secret = false;
    for (const char* s : kSecretParams)
      if (EqualsIgnoreCase(name, s)) secret = true;
    if (secret && eq != std::string_view::npos) {
      out.append(name);
      out += "=REDACTED";
    } else {
      out.append(param);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

Result<HttpResponse> SendHttp(const HttpRequest& request, HttpTransportError* error) {
  GlobalInit();
  if (error != nullptr) *error = HttpTransportError{};
  HttpResponse response;
  Transfer transfer{&request, &response};
  char errbuf[CURL_ERROR_SIZE];
  errbuf[0] = '\0';

  curl_slist* raw_headers = nullptr;
  bool has_content_type = false;
  for (const auto& [k, v] : request.headers) {
    raw_headers = curl_slist_append(raw_headers, (k + ": " + v).c_str());
    if (EqualsIgnoreCase(k, "content-type")) has_content_type = true;
  }
  // No "Expect: 100-continue" round trip; no default Content-Type for bodies.
  raw_headers = curl_slist_append(raw_headers, "Expect:");
  if (!has_content_type) raw_headers = curl_slist_append(raw_headers, "Content-Type:");
  std::unique_ptr<curl_slist, SlistDeleter> headers(raw_headers);

  // Declared last: the handle goes before anything it points at.
  std::unique_ptr<CURL, CurlDeleter> handle(curl_easy_init());
  if (!handle) return Status::Internal("curl_easy_init failed");
  CURL* curl = handle.get();
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (!request.user_agent.empty()) curl_easy_setopt(curl, CURLOPT_USERAGENT, request.user_agent.c_str());
  if (request.no_proxy) curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  if (request.connect_timeout.count() > 0)
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(request.connect_timeout.count()));
  if (request.total_timeout.count() > 0)
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(request.total_timeout.count()));
  if (request.stall_timeout.count() > 0) {
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                     std::max<long>(1, static_cast<long>(request.stall_timeout.count() / 1000)));
  }
  ConfigureTls(curl, request.tls);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  if (request.cancel) {
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &transfer);
  }

  const std::string& method = request.method;
  const bool body_method = method == "POST" || method == "PUT" || method == "PATCH";
  if (method == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (request.body_reader) {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(curl, CURLOPT_READDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body_size));
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  } else if (body_method || !request.body.empty()) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.empty() ? "" : request.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  } else {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }

  const CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  long os_errno = 0;
  curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);

  auto fail = [&](HttpTransportError::Kind kind, const std::string& cause) {
    if (error != nullptr) *error = HttpTransportError{kind, cause};
    const std::string what = method + " " + RedactUrl(request.url) + ": " + cause;
    return kind == HttpTransportError::Kind::kAborted ? Status::Cancelled(what) : Status::Unavailable(what);
  };
  if (transfer.aborted_by_receiver)
    return fail(HttpTransportError::Kind::kAborted, "download aborted by the receiver");
  if (transfer.cancelled) return fail(HttpTransportError::Kind::kAborted, "cancelled");
  if (rc != CURLE_OK) return fail(KindOf(rc), Cause(rc, errbuf, os_errno));
  response.status = status;
  return response;
}

}  // namespace cohort::net
