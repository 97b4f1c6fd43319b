// Private plumbing shared by HttpServer's translation units (the listener in
// http_server.cc, HTTP connections in http_session.cc, WebSocket connections
// in websocket_session.cc). Includes Asio/Beast, so only those .cc files
// include it.
//
// Ownership and threading: HttpServer::Impl owns one ServerCore. Every field
// marked "loop" is touched only on the loop thread while the loop runs, and by
// Stop() after the loop thread has been joined. Live connections are owned by
// `connections` (strong refs) and remove themselves when they end, so a
// connection waiting for an async handler stays alive without a pending op.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "cohort/net/http_server.h"
#include "router.h"

namespace cohort::net::internal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;

// A way onto the loop that outlives the server: posts become no-ops once the
// server has stopped, so a Responder or WebSocketSession held by another
// thread can never touch a destroyed io_context. Thread-safe.
class LoopHandle {
 public:
  explicit LoopHandle(asio::io_context* ioc) : ioc_(ioc) {}

  template <typename Fn>
  bool Post(Fn&& fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (ioc_ == nullptr) return false;
    asio::post(*ioc_, std::forward<Fn>(fn));
    return true;
  }
  void Disable() {
    std::lock_guard<std::mutex> lock(mu_);
    ioc_ = nullptr;
  }

 private:
  std::mutex mu_;
  asio::io_context* ioc_;  // GUARDED_BY(mu_); null once stopped
};

// One accepted socket (HTTP keep-alive connection or WebSocket).
class Connection {
 public:
  explicit Connection(std::string client_ip) : client_ip_(std::move(client_ip)) {}
  virtual ~Connection() = default;
  // The remote IP address the connection caps count it under.
  const std::string& client_ip() const { return client_ip_; }
  // Loop thread, during Stop(): HTTP drops the socket; WebSocket sends 1001.
  virtual void BeginShutdown() = 0;
  // Stop(), after the loop thread has exited: destroy the socket while the
  // io_context still exists (a user may hold the object for longer).
  virtual void ReleaseSocket() = 0;

 private:
  const std::string client_ip_;
};

// "10.0.0.7" for a socket's peer (an IPv4-mapped IPv6 address as IPv4); ""
// when the peer is unknown (the socket is already broken).
std::string ClientIp(const asio::ip::tcp::socket& socket);

struct ServerCore {
  explicit ServerCore(HttpServer::Options opts)
      : options(std::move(opts)), loop_handle(std::make_shared<LoopHandle>(&ioc)) {}

  // Counts the connection under its client_ip() until Unregister. A socket
  // handed from one Connection to another (HTTP -> WebSocket) is registered
  // by the new one before the old one unregisters.
  void Register(std::shared_ptr<Connection> c) {  // loop
    Connection* key = c.get();
    if (connections.emplace(key, std::move(c)).second) ++per_client[key->client_ip()];
  }
  // REQUIRES: the caller holds its own reference to *c. Idempotent.
  void Unregister(Connection* c) {  // loop
    if (connections.erase(c) != 0) {
      auto it = per_client.find(c->client_ip());
      if (it != per_client.end() && --it->second == 0) per_client.erase(it);
    }
    if (stopping && connections.empty() && on_drained) on_drained();
  }
  // Open connections from `client_ip`.
  size_t ConnectionsFrom(const std::string& client_ip) const {  // loop
    auto it = per_client.find(client_ip);
    return it == per_client.end() ? 0 : it->second;
  }
  void Count(std::string_view method, std::string_view pattern, int status) {
    counters.Add(method, pattern, status);
  }

  const HttpServer::Options options;
  asio::io_context ioc;
  std::shared_ptr<LoopHandle> loop_handle;
  Router router;          // locks internally
  RouteCounters counters;  // locks internally
  bool stopping = false;  // loop
  std::unordered_map<Connection*, std::shared_ptr<Connection>> connections;  // loop
  std::unordered_map<std::string, size_t> per_client;  // loop; client_ip -> open connections
  std::function<void()> on_drained;  // loop; set by Stop()
};

// http_session.cc: serves HTTP/1.1 on an accepted socket (admitted under
// the connection caps; `client_ip` from ClientIp).
void StartHttpSession(ServerCore* core, asio::ip::tcp::socket socket, std::string client_ip);

// websocket_session.cc: completes the upgrade (`upgrade` is the parsed
// request) and then calls route->on_open on the loop thread.
void StartWebSocketSession(ServerCore* core, beast::tcp_stream stream,
                           http::request<http::string_body> upgrade, Request request,
                           std::shared_ptr<const Route> route, std::string client_ip);

}  // namespace cohort::net::internal
