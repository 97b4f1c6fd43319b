// HttpServer: the listener, the loop thread, route registration and Stop().
// See include/cohort/net/http_server.h for the contract; connections live in
// http_session.cc and websocket_session.cc.
//
// Shutdown, in order: (1) Stop() posts BeginShutdown to the loop: close the
// listener, drop HTTP connections, send 1001 to WebSockets; (2) the loop is
// stopped as soon as no connection is left, or after shutdown_grace; (3) the
// caller joins the loop thread, disables the LoopHandle (late Responder /
// SendText / Post calls become no-ops), and destroys the remaining sockets
// while the io_context still exists.
//
// Connection caps are applied at accept: a socket over a cap gets a canned
// 503 written without blocking (a fresh socket's send buffer has room), and
// is closed in the same turn, so a flood of refused connections costs no
// state beyond the rate limit of its log lines.
#include <pthread.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "cohort/common/logging.h"
#include "cohort/net/http_server.h"
#include "server_core.h"

namespace cohort::net {

namespace asio = boost::asio;
using internal::ServerCore;

namespace internal {

std::string ClientIp(const asio::ip::tcp::socket& socket) {
  boost::system::error_code ec;
  auto endpoint = socket.remote_endpoint(ec);
  if (ec) return "";
  asio::ip::address address = endpoint.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  return address.to_string(ec);
}

}  // namespace internal

namespace {

constexpr std::string_view kTooManyConnections =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Server: cohort\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Length: 46\r\n"
    "Connection: close\r\n"
    "\r\n"
    "503: Service Unavailable: too many connections";
static_assert(kTooManyConnections.size() - kTooManyConnections.find("\r\n\r\n") - 4 == 46);

constexpr auto kRefusalLogInterval = std::chrono::minutes(1);
constexpr size_t kMaxRefusalLogClients = 4096;

}  // namespace

struct HttpServer::Impl {
  explicit Impl(Options options)
      : core(std::move(options)),
        acceptor(core.ioc),
        retry_timer(core.ioc),
        grace_timer(core.ioc),
        work(asio::make_work_guard(core.ioc)) {}

  void Accept();
  // Starts an HTTP session for `socket`, or refuses it when over a cap.
  void Admit(asio::ip::tcp::socket socket);
  void LogRefusal(const std::string& client_ip, const std::string& why);
  void BeginShutdown();
  void RunLoop();

  ServerCore core;  // first member: owns the io_context, so it is destroyed last
  asio::ip::tcp::acceptor acceptor;
  asio::steady_timer retry_timer;  // backs off after a failed accept (e.g. EMFILE)
  asio::steady_timer grace_timer;  // bounds the WebSocket close handshakes in Stop()
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
  std::atomic<std::thread::id> loop_thread_id{};
  int port = 0;
  std::mutex stop_mu;
  bool stopped = false;  // GUARDED_BY(stop_mu)

  // Loop: when each client's refusals were last logged, and how many since.
  struct RefusalLog {
    std::chrono::steady_clock::time_point last;
    uint64_t unlogged = 0;
  };
  std::unordered_map<std::string, RefusalLog> refusal_log;
};

void HttpServer::Impl::Accept() {
  acceptor.async_accept([this](boost::system::error_code ec, asio::ip::tcp::socket socket) {
    if (core.stopping || ec == asio::error::operation_aborted) return;
    if (ec) {
      COHORT_LOG(WARN) << "accept on port " << port << " failed: " << ec.message();
      retry_timer.expires_after(std::chrono::milliseconds(100));
      retry_timer.async_wait([this](boost::system::error_code ec2) {
        if (!ec2 && !core.stopping) Accept();
      });
      return;
    }
    Admit(std::move(socket));
    Accept();
  });
}

void HttpServer::Impl::Admit(asio::ip::tcp::socket socket) {
  const Options& opts = core.options;
  std::string ip = internal::ClientIp(socket);
  std::string why;
  if (opts.max_connections != 0 && core.connections.size() >= opts.max_connections) {
    why = std::to_string(core.connections.size()) + " connections open, max_connections is " +
          std::to_string(opts.max_connections);
  } else if (size_t open = core.ConnectionsFrom(ip);
             opts.max_connections_per_client != 0 && open >= opts.max_connections_per_client) {
    why = std::to_string(open) + " connections open from it, max_connections_per_client is " +
          std::to_string(opts.max_connections_per_client);
  }
  if (why.empty()) return internal::StartHttpSession(&core, std::move(socket), std::move(ip));

  // Refuse without blocking: one non-blocking write of the canned answer,
  // discard what the client may have sent already (unread data would turn
  // our close into a reset that can destroy the answer), then close.
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  socket.write_some(asio::buffer(kTooManyConnections.data(), kTooManyConnections.size()), ec);
  socket.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  std::array<char, 4096> discard;
  for (int i = 0; i < 4; ++i) {
    socket.read_some(asio::buffer(discard), ec);
    if (ec) break;
  }
  socket.close(ec);
  LogRefusal(ip, why);
}

void HttpServer::Impl::LogRefusal(const std::string& client_ip, const std::string& why) {
  auto now = std::chrono::steady_clock::now();
  std::string key = client_ip;
  auto it = refusal_log.find(key);
  if (it == refusal_log.end() && refusal_log.size() >= kMaxRefusalLogClients) {
    for (auto i = refusal_log.begin(); i != refusal_log.end();) {
      i = now - i->second.last >= kRefusalLogInterval ? refusal_log.erase(i) : std::next(i);
    }
    // Still full: many clients at once; they share one entry.
    if (refusal_log.size() >= kMaxRefusalLogClients) key = "(other clients)";
    it = refusal_log.find(key);
  }
  if (it != refusal_log.end() && now - it->second.last < kRefusalLogInterval) {
    ++it->second.unlogged;
    return;
  }
  uint64_t unlogged = it == refusal_log.end() ? 0 : it->second.unlogged;
  refusal_log[key] = RefusalLog{now, 0};
  COHORT_LOG(WARN) << "HTTP server on port " << port << ": refused a connection from "
                   << (client_ip.empty() ? "an unknown address" : client_ip) << " (" << why << ")"
                   << (key != client_ip ? " [many clients are being refused; reported together]" : "")
                   << (unlogged ? "; " + std::to_string(unlogged) + " more refused since the last report" : "")
                   << "; next report for it in a minute at the earliest";
}

void HttpServer::Impl::BeginShutdown() {
  core.stopping = true;
  boost::system::error_code ignored;
  acceptor.close(ignored);
  retry_timer.cancel();
  work.reset();
  auto connections = core.connections;  // copy: BeginShutdown may unregister
  for (auto& [ptr, connection] : connections) connection->BeginShutdown();
  // Stop the loop as soon as every connection is gone (user timers on the
  // loop must not keep Stop() waiting), or when the grace period ends.
  if (core.connections.empty()) {
    core.ioc.stop();
    return;
  }
  core.on_drained = [this] { core.ioc.stop(); };
  grace_timer.expires_after(core.options.shutdown_grace);
  grace_timer.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    COHORT_LOG(WARN) << "HTTP server on port " << port << ": " << core.connections.size()
                     << " connection(s) did not close within the shutdown grace period";
    core.ioc.stop();
  });
}

void HttpServer::Impl::RunLoop() {
  loop_thread_id = std::this_thread::get_id();
  pthread_setname_np(pthread_self(), "cohort-http");
  while (true) {
    try {
      core.ioc.run();
      return;
    } catch (const std::exception& e) {
      COHORT_LOG(ERROR) << "HTTP server loop: uncaught exception: " << e.what();
    } catch (...) {
      COHORT_LOG(ERROR) << "HTTP server loop: uncaught exception";
    }
  }
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(Options options) {
  if (options.port < 0 || options.port > 65535) {
    return Status::InvalidArgument("HTTP server: port " + std::to_string(options.port) + " is out of range");
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  const Options& opts = impl->core.options;
  std::string where = opts.host + ":" + std::to_string(opts.port);

  boost::system::error_code ec;
  asio::ip::tcp::resolver resolver(impl->core.ioc);
  auto endpoints = resolver.resolve(opts.host, std::to_string(opts.port), asio::ip::tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) {
    return Status::InvalidArgument("HTTP server: cannot resolve host '" + opts.host + "': " + ec.message());
  }
  asio::ip::tcp::endpoint endpoint = endpoints.begin()->endpoint();
  asio::ip::tcp::acceptor& acceptor = impl->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return Status::IoError("HTTP server: cannot open a socket for " + where + ": " + ec.message());
  acceptor.bind(endpoint, ec);
  if (ec == asio::error::address_in_use) {
    return Status::Unavailable("port " + std::to_string(opts.port) + " is already in use (HTTP server on " +
                               where + ")");
  }
  if (ec) return Status::IoError("HTTP server: cannot bind " + where + ": " + ec.message());
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IoError("HTTP server: cannot listen on " + where + ": " + ec.message());
  impl->port = acceptor.local_endpoint(ec).port();
  if (ec) return Status::IoError("HTTP server: cannot read the bound port: " + ec.message());

  impl->Accept();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->RunLoop(); });
  COHORT_LOG(DEBUG) << "HTTP server listening on " << opts.host << ":" << impl->port;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

int HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() {
  std::lock_guard<std::mutex> lock(impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  COHORT_CHECK(!IsLoopThread()) << "HttpServer::Stop() called on its own loop thread";
  ServerCore& core = impl_->core;
  asio::post(core.ioc, [impl = impl_.get()] { impl->BeginShutdown(); });
  if (impl_->thread.joinable()) impl_->thread.join();
  core.loop_handle->Disable();
  // The loop is gone: this thread now owns the loop state.
  auto connections = std::move(core.connections);
  core.connections.clear();
  core.on_drained = nullptr;
  for (auto& [ptr, connection] : connections) connection->ReleaseSocket();
}

asio::io_context& HttpServer::loop() { return impl_->core.ioc; }

bool HttpServer::IsLoopThread() const { return impl_->loop_thread_id.load() == std::this_thread::get_id(); }

void HttpServer::Post(std::function<void()> fn) {
  impl_->core.loop_handle->Post([fn = std::move(fn)] {
    try {
      fn();
    } catch (const std::exception& e) {
      COHORT_LOG(ERROR) << "task posted to the HTTP loop threw: " << e.what();
    }
  });
}

void HttpServer::Handle(std::string method, std::string pattern, Handler handler) {
  COHORT_CHECK(handler) << "empty handler for " << pattern;
  auto route = std::make_shared<internal::Route>();
  route->kind = internal::RouteKind::kSync;
  route->method = std::move(method);
  route->pattern = std::move(pattern);
  route->handler = std::move(handler);
  impl_->core.router.Add(std::move(route));
}

void HttpServer::HandleAsync(std::string method, std::string pattern, AsyncHandler handler) {
  COHORT_CHECK(handler) << "empty handler for " << pattern;
  auto route = std::make_shared<internal::Route>();
  route->kind = internal::RouteKind::kAsync;
  route->method = std::move(method);
  route->pattern = std::move(pattern);
  route->async_handler = std::move(handler);
  impl_->core.router.Add(std::move(route));
}

void HttpServer::HandleWebSocket(std::string pattern, PreUpgrade pre_upgrade, OnOpen on_open) {
  COHORT_CHECK(on_open) << "empty OnOpen for " << pattern;
  auto route = std::make_shared<internal::Route>();
  route->kind = internal::RouteKind::kWebSocket;
  route->method = "GET";
  route->pattern = std::move(pattern);
  route->pre_upgrade = std::move(pre_upgrade);
  route->on_open = std::move(on_open);
  impl_->core.router.Add(std::move(route));
}

std::vector<HttpServer::RouteCount> HttpServer::RouteCounts() const { return impl_->core.counters.Snapshot(); }

}  // namespace cohort::net
