// Tests of FollowJob (`cohort job logs --follow`, `cohort job submit`,
// `cohort run`) against a fake head that serves the job's details, metrics
// and the logs/tail WebSocket the way the real head does (cohort::net::
// HttpServer, bearer token on), and of the WebSocketClient pieces it relies
// on (Abort, SetIdleTimeout). A TCP proxy between the two cuts or freezes
// connections to play a network that fails mid-stream.
//
// What is checked: a 5 MB log is printed completely and exactly once, without
// the whole-log GET; a connection cut mid-frame, or closed by the head with
// 1001, resumes without duplicates or gaps; following ends when the job is
// terminal (with its status, message and progress); a head that disappears
// ends following with a clear error within the timeout; Ctrl-C ends it
// promptly; an offset from an earlier follow is honoured.
#include "cli/job_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include "cohort/net/http_server.h"
#include "cohort/net/ws_client.h"

namespace cohort::cli {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kToken = "secret";

// `lines` lines of about `width` bytes each, numbered, so that a duplicate or
// a gap shows in a diff.
std::string MakeLog(size_t lines, size_t width, const std::string& tag = "line") {
  std::string out;
  out.reserve(lines * (width + 1));
  for (size_t i = 0; i < lines; ++i) {
    char head[64];
    std::snprintf(head, sizeof(head), "%s %07zu ", tag.c_str(), i);
    std::string line = head;
    while (line.size() < width) line += static_cast<char>('a' + (i + line.size()) % 26);
    out += line + "\n";
  }
  return out;
}

// Output without the CLI's own note lines ("(...)"), i.e. the job's log.
std::string WithoutNotes(const std::string& out, std::vector<std::string>* notes = nullptr) {
  std::string log;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.front() == '(') {
      if (notes) notes->push_back(line);
      continue;
    }
    log += line + "\n";
  }
  return log;
}

// A head with one job, "raysubmit_t": details, metrics, the whole-log GET
// (counted: FollowJob must not use it) and the logs/tail WebSocket, relaying
// the log like the real head's TailLoop (whole lines, about 16 KiB a frame,
// from byte 0; close 1000 once the job is terminal and the log drained).
class FakeJobHead {
 public:
  FakeJobHead() {
    net::HttpServer::Options o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.bearer_token = kToken;
    o.shutdown_grace = std::chrono::milliseconds(200);
    auto server = net::HttpServer::Start(o);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    server_->Handle("GET", "/api/jobs/{id}", [this](const net::Request& r) {
      std::lock_guard<std::mutex> lock(mu_);
      ++detail_polls_;
      if (r.PathParam("id") != "raysubmit_t") {
        return net::Response::Text(404, "Job " + std::string(r.PathParam("id")) + " does not exist");
      }
      Json d = {{"submission_id", "raysubmit_t"}, {"status", status_}, {"message", message_}};
      if (!pending_reason_.empty()) d["pending_reason"] = pending_reason_;
      return net::Response::Json(200, d.dump());
    });
    server_->Handle("GET", "/api/jobs/{id}/logs", [this](const net::Request&) {
      std::lock_guard<std::mutex> lock(mu_);
      ++whole_log_gets_;
      return net::Response::Json(200, Json{{"logs", log_}}.dump());
    });
    server_->Handle("GET", "/api/jobs/{id}/metrics", [this](const net::Request& r) {
      std::lock_guard<std::mutex> lock(mu_);
      size_t since = std::stoul(r.Query("since").value_or("0"));
      Json page = Json::array();
      for (size_t i = since; i < metrics_.size(); ++i) page.push_back(metrics_[i]);
      return net::Response::Json(200, Json{{"metrics", page}, {"next", metrics_.size()}}.dump());
    });
    server_->HandleWebSocket("/api/jobs/{id}/logs/tail",
                             [this](const net::Request&) -> std::optional<net::Response> {
                               std::lock_guard<std::mutex> lock(mu_);
                               if (refuse_tails_) return net::Response::Text(503, "busy");
                               return std::nullopt;
                             },
                             [this](std::shared_ptr<net::WebSocketSession> ws) {
                               std::lock_guard<std::mutex> lock(mu_);
                               ++tail_opens_;
                               if (stopping_) return ws->Close(1001, "head shutting down");
                               tails_.emplace_back([this, ws] { TailLoop(ws, tail_opens_); });
                             });
  }
  ~FakeJobHead() { Shutdown(); }

  // Stops serving: open streams get 1001, new connections are refused.
  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    server_->Stop();
    for (auto& t : tails_) t.join();
  }

  int port() const { return server_->port(); }
  std::string address() const { return "http://127.0.0.1:" + std::to_string(port()); }

  void AppendLog(std::string_view text) {
    std::lock_guard<std::mutex> lock(mu_);
    log_.append(text);
    cv_.notify_all();
  }
  void SetStatus(std::string status, std::string message = "", std::string pending_reason = "") {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(status);
    message_ = std::move(message);
    pending_reason_ = std::move(pending_reason);
    cv_.notify_all();
  }
  void AddMetric(Json report) {
    std::lock_guard<std::mutex> lock(mu_);
    metrics_.push_back(std::move(report));
  }
  // The n-th tail connection (1-based) is closed with `code` after it has
  // been sent at least `bytes`.
  void CloseTailAfter(int n, size_t bytes, uint16_t code) {
    std::lock_guard<std::mutex> lock(mu_);
    close_tail_ = n;
    close_after_ = bytes;
    close_code_ = code;
  }

  // Tail streams are not closed when the job ends (a misbehaving head).
  void HoldTailsOpen() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_tails_open_ = true;
  }
  // From now on the tail route answers 503 instead of upgrading.
  void RefuseTails() {
    std::lock_guard<std::mutex> lock(mu_);
    refuse_tails_ = true;
  }

  int whole_log_gets() {
    std::lock_guard<std::mutex> lock(mu_);
    return whole_log_gets_;
  }
  int tail_opens() {
    std::lock_guard<std::mutex> lock(mu_);
    return tail_opens_;
  }
  int detail_polls() {
    std::lock_guard<std::mutex> lock(mu_);
    return detail_polls_;
  }

 private:
  void TailLoop(std::shared_ptr<net::WebSocketSession> ws, int n) {
    size_t offset = 0;
    // Frames end elsewhere on each connection (as on the real head, where
    // they end where the log ended when read), so a replayed frame can
    // straddle the offset the client had printed.
    const size_t max_frame = (16 << 10) + 777 * static_cast<size_t>(n - 1);
    std::unique_lock<std::mutex> lock(mu_);
    while (!ws->closed() && !stopping_) {
      const bool done = IsTerminalStatus(status_);
      size_t end = std::min(log_.size(), offset + max_frame);
      if (!done || end < log_.size()) {
        size_t nl = log_.rfind('\n', end - 1);
        end = (end > offset && nl != std::string::npos && nl >= offset) ? nl + 1 : offset;
      }
      if (end > offset) {
        std::string frame = log_.substr(offset, end - offset);
        offset = end;
        ws->SendText(std::move(frame));
        if (n == close_tail_ && offset >= close_after_) return ws->Close(close_code_, "restarting");
        continue;
      }
      if (done && !hold_tails_open_) return ws->Close(1000);
      cv_.wait_for(lock, 20ms);
    }
  }

  std::unique_ptr<net::HttpServer> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool refuse_tails_ = false;
  bool hold_tails_open_ = false;
  std::string status_ = "RUNNING", message_, pending_reason_;
  std::string log_;
  Json metrics_ = Json::array();
  int whole_log_gets_ = 0, tail_opens_ = 0, detail_polls_ = 0;
  int close_tail_ = 0;
  size_t close_after_ = 0;
  uint16_t close_code_ = 1001;
  std::vector<std::thread> tails_;
};

// A TCP proxy to 127.0.0.1:upstream. It can cut the first log-tail
// connection after some bytes to the client (a reset, no close frame: the
// 1006 case), or freeze every connection (nothing forwarded, nothing closed).
class Proxy {
 public:
  explicit Proxy(int upstream) : upstream_(upstream) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 64), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~Proxy() {
    stop_ = true;
    acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : pumps_) t.join();
    ::close(listen_fd_);
  }

  std::string address() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  void CutFirstTailAfter(size_t bytes) { cut_after_ = bytes; }
  void Freeze() { frozen_ = true; }
  int cuts() const { return cuts_; }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      pumps_.emplace_back([this, client] { Pump(client); });
    }
  }

  static bool SendAll(int fd, const char* data, size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      data += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }

  static void Reset(int fd) {
    linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    ::close(fd);
  }

  void Pump(int client) {
    int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(upstream_));
    if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(server);
      Reset(client);
      return;
    }
    bool first = true, cut_this = false;
    size_t to_client = 0;
    char buf[64 << 10];
    while (!stop_) {
      if (frozen_) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      if (p[0].revents) {
        ssize_t n = ::recv(client, buf, sizeof(buf), 0);
        if (n <= 0) break;
        if (first) {
          first = false;
          const bool tail = std::string_view(buf, n).find("/logs/tail") != std::string_view::npos;
          cut_this = tail && cut_after_ > 0 && !cut_used_.exchange(true);
        }
        if (!SendAll(server, buf, n)) break;
      }
      if (p[1].revents) {
        ssize_t n = ::recv(server, buf, sizeof(buf), 0);
        if (n <= 0) break;
        size_t send = static_cast<size_t>(n);
        if (cut_this && to_client + send >= cut_after_) {
          SendAll(client, buf, cut_after_ - to_client);
          ++cuts_;
          Reset(client);
          ::close(server);
          return;
        }
        to_client += send;
        if (!SendAll(client, buf, send)) break;
      }
    }
    ::close(client);
    ::close(server);
  }

  int upstream_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false}, frozen_{false}, cut_used_{false};
  std::atomic<size_t> cut_after_{0};
  std::atomic<int> cuts_{0};
  std::mutex mu_;
  std::vector<std::thread> pumps_;
  std::thread acceptor_;
};

// Runs FollowJob for "raysubmit_t" on a thread of its own, capturing what it
// prints.
class Follower {
 public:
  Follower(std::string address, FollowOptions options, bool plain_progress = false)
      : client_(Connection{std::move(address), kToken, "/state"}),
        printer_([this](std::string_view s) { Write(s); }, /*tty=*/false, 80, plain_progress) {
    future_ = std::async(std::launch::async, [this, options] {
      return FollowJob(client_, "raysubmit_t", printer_, options);
    });
  }
  ~Follower() {
    if (future_.valid()) future_.wait();
  }

  // The result, or DeadlineExceeded if FollowJob is still running after
  // `timeout` (the test then fails instead of hanging).
  Result<FollowResult> Get(std::chrono::seconds timeout = 60s) {
    if (future_.wait_for(timeout) != std::future_status::ready) {
      return Status::DeadlineExceeded("FollowJob did not return");
    }
    return future_.get();
  }
  bool Done() { return future_.wait_for(0s) == std::future_status::ready; }
  size_t printed() const { return printed_.load(); }
  std::string out() {
    std::lock_guard<std::mutex> lock(mu_);
    return out_;
  }
  // Waits until at least `bytes` were printed.
  bool WaitPrinted(size_t bytes, std::chrono::seconds timeout = 30s) {
    const auto until = Clock::now() + timeout;
    while (printed_.load() < bytes) {
      if (Clock::now() > until) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

 private:
  void Write(std::string_view s) {
    std::lock_guard<std::mutex> lock(mu_);
    out_.append(s);
    printed_ = out_.size();
  }

  JobClient client_;
  std::mutex mu_;
  std::string out_;
  std::atomic<size_t> printed_{0};
  ProgressPrinter printer_;
  std::future<Result<FollowResult>> future_;
};

FollowOptions FastOptions() {
  FollowOptions o;
  o.poll_interval = 20ms;
  o.reconnect_delay = 20ms;
  o.unreachable_timeout = 5000ms;
  return o;
}

TEST(LogOffsetFilterTest, EachByteOnceAcrossRestarts) {
  LogOffsetFilter f;
  EXPECT_EQ(f.Next("abc"), "abc");
  EXPECT_EQ(f.Next("de"), "de");
  EXPECT_EQ(f.printed(), 5u);
  f.Restart();  // the stream starts over at byte 0, in other chunks
  EXPECT_EQ(f.Next("ab"), "");
  EXPECT_EQ(f.Next("cdefg"), "fg");  // straddles the printed offset
  EXPECT_EQ(f.Next("h"), "h");
  EXPECT_EQ(f.printed(), 8u);
  f.Restart();
  EXPECT_EQ(f.Next("abcdefgh"), "");  // exactly what was printed
  EXPECT_EQ(f.Next(""), "");
  EXPECT_EQ(f.Next("ij"), "ij");
  EXPECT_EQ(f.position(), 10u);

  LogOffsetFilter resumed(3);  // printed by an earlier follow
  EXPECT_EQ(resumed.Next("ab"), "");
  EXPECT_EQ(resumed.Next("cd"), "d");
}

TEST(LogTailUrlTest, WsUrlFromTheAddress) {
  JobClient client(Connection{"http://10.0.0.5:8265", "", "/state"});
  EXPECT_EQ(*client.LogTailUrl("raysubmit_a b"), "ws://10.0.0.5:8265/api/jobs/raysubmit_a%20b/logs/tail");
  JobClient tls(Connection{"https://head.example", "", "/state"});
  EXPECT_EQ(tls.LogTailUrl("j").status().code(), StatusCode::kInvalidArgument);
}

TEST(FollowJobTest, FiveMegabyteLogIsPrintedCompletelyAndExactlyOnce) {
  FakeJobHead head;
  const std::string log = MakeLog(50000, 104);  // 5.25 MB
  ASSERT_GT(log.size(), 5u << 20);
  head.AppendLog(std::string_view(log).substr(0, 1 << 20));  // some is there before following
  Follower follower(head.address(), FastOptions());
  // The rest arrives while the job runs, in pieces that cut lines.
  for (size_t at = 1 << 20; at < log.size(); at += 333333) {
    head.AppendLog(std::string_view(log).substr(at, 333333));
    std::this_thread::sleep_for(10ms);
  }
  head.SetStatus("SUCCEEDED", "Job finished successfully.");
  Result<FollowResult> r = follower.Get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, "SUCCEEDED");
  EXPECT_EQ(r->log_offset, log.size());
  const std::string out = follower.out();
  EXPECT_EQ(out.size(), log.size());
  EXPECT_TRUE(out == log) << "the printed log differs from the job's log";
  EXPECT_EQ(head.whole_log_gets(), 0);  // never downloaded as a whole
  EXPECT_EQ(head.tail_opens(), 1);
}

TEST(FollowJobTest, ConnectionCutMidFrameResumesWithoutDuplicatesOrGaps) {
  FakeJobHead head;
  Proxy proxy(head.port());
  const std::string log = MakeLog(30000, 99);  // 3 MB
  head.AppendLog(std::string_view(log).substr(0, 2 << 20));
  proxy.CutFirstTailAfter((1 << 20) + 12345);  // inside a frame
  Follower follower(proxy.address(), FastOptions());
  ASSERT_TRUE(follower.WaitPrinted((1 << 20) + 100000));
  head.AppendLog(std::string_view(log).substr(2 << 20));
  head.SetStatus("SUCCEEDED");
  Result<FollowResult> r = follower.Get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, "SUCCEEDED");
  EXPECT_EQ(proxy.cuts(), 1);
  EXPECT_EQ(head.tail_opens(), 2);
  std::vector<std::string> notes;
  const std::string printed = WithoutNotes(follower.out(), &notes);
  EXPECT_TRUE(printed == log) << "printed " << printed.size() << " bytes of " << log.size();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("(log stream interrupted after byte "), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("reconnecting)"), std::string::npos) << notes[0];
  EXPECT_EQ(r->log_offset, log.size());
  EXPECT_EQ(head.whole_log_gets(), 0);
}

TEST(FollowJobTest, HeadClosingWith1001IsResumedWithoutDuplicatesOrGaps) {
  FakeJobHead head;
  const std::string log = MakeLog(4000, 80);
  head.AppendLog(log);
  head.CloseTailAfter(1, 100000, 1001);  // e.g. the head restarting
  Follower follower(head.address(), FastOptions());
  ASSERT_TRUE(follower.WaitPrinted(100000));
  head.CloseTailAfter(2, 200000, 1011);  // and the next one breaks too
  head.SetStatus("FAILED", "Job entrypoint command failed with exit code 3");
  Result<FollowResult> r = follower.Get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, "FAILED");
  EXPECT_EQ(FinalStatusLine("raysubmit_t", r->status, r->message),
            "Job raysubmit_t failed: Job entrypoint command failed with exit code 3");
  std::vector<std::string> notes;
  EXPECT_TRUE(WithoutNotes(follower.out(), &notes) == log);
  EXPECT_GE(head.tail_opens(), 2);
  ASSERT_FALSE(notes.empty());
  EXPECT_NE(notes[0].find("closed the log stream with code 1001 (restarting)"), std::string::npos)
      << notes[0];
}

TEST(FollowJobTest, EndsWhenTheJobIsTerminalWithProgressAndNotes) {
  FakeJobHead head;
  head.SetStatus("PENDING", "", "waiting for 2 x {CPU: 1}");
  FollowOptions options = FastOptions();
  Follower follower(head.address(), options, /*plain_progress=*/true);
  std::this_thread::sleep_for(100ms);
  head.SetStatus("RUNNING");
  head.AppendLog("start\nepoch=1 ");
  std::this_thread::sleep_for(100ms);
  head.AppendLog("ok\n");
  head.AddMetric({{"rank", 0}, {"time", 100.0}, {"epoch", 1}, {"epochs", 2}, {"train_loss", 0.5}});
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(follower.Done());  // still running: following goes on
  head.AppendLog("epoch=2 ok\ndone");  // the last line has no newline
  head.AddMetric({{"rank", 0}, {"time", 110.0}, {"epoch", 2}, {"epochs", 2}, {"train_loss", 0.25}});
  head.SetStatus("SUCCEEDED", "Job finished successfully.");
  Result<FollowResult> r = follower.Get(20s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->interrupted);
  EXPECT_EQ(r->status, "SUCCEEDED");
  EXPECT_EQ(r->message, "Job finished successfully.");
  EXPECT_EQ(r->details["status"], "SUCCEEDED");
  const std::string out = follower.out();
  // The pending note first; the log whole and in order; the progress lines.
  EXPECT_EQ(out.rfind("Job raysubmit_t is pending: waiting for 2 x {CPU: 1}\n", 0), 0u) << out;
  std::string log;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Job ", 0) == 0 || line.rfind("progress: ", 0) == 0) continue;
    log += line + "\n";
  }
  EXPECT_EQ(log, "start\nepoch=1 ok\nepoch=2 ok\ndone\n") << out;
  EXPECT_NE(out.find("progress: epoch 2/2 100%"), std::string::npos) << out;
  EXPECT_EQ(head.whole_log_gets(), 0);
}

TEST(FollowJobTest, AnEarlierOffsetIsNotPrintedAgain) {
  FakeJobHead head;
  head.AppendLog("already printed\nnew line\n");
  head.SetStatus("STOPPED", "Job was intentionally stopped.");
  FollowOptions options = FastOptions();
  options.log_offset = 16;  // `cohort run` after Ctrl-C follows the rest of the log
  Follower follower(head.address(), options);
  Result<FollowResult> r = follower.Get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(follower.out(), "new line\n");
  EXPECT_EQ(r->log_offset, 25u);
  EXPECT_EQ(r->status, "STOPPED");
}

TEST(FollowJobTest, HeadThatDisappearsIsAClearErrorNotAHang) {
  auto head = std::make_unique<FakeJobHead>();
  const std::string address = head->address();
  head->AppendLog("line 1\n");
  FollowOptions options = FastOptions();
  options.unreachable_timeout = 1000ms;
  Follower follower(address, options);
  ASSERT_TRUE(follower.WaitPrinted(7));
  const auto gone = Clock::now();
  head.reset();  // the head goes away for good
  Result<FollowResult> r = follower.Get(30s);
  const auto took = Clock::now() - gone;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  // Either side notices first: the status polls or the log stream.
  const std::string& msg = r.status().message();
  EXPECT_TRUE(msg.find("cannot reach the cohort head at " + address) != std::string::npos ||
              msg.find("lost the log stream of job raysubmit_t from the cohort head at " + address) !=
                  std::string::npos)
      << msg;
  EXPECT_LT(took, 10s);
  EXPECT_EQ(WithoutNotes(follower.out()), "line 1\n");
}

TEST(FollowJobTest, LogStreamThatCannotBeReopenedIsAClearError) {
  // The status polls keep working, but every try to open the log stream
  // fails (the tail route answers 503).
  FakeJobHead head;
  head.AppendLog(MakeLog(2000, 80));
  head.RefuseTails();
  FollowOptions options = FastOptions();
  options.unreachable_timeout = 800ms;
  const auto start = Clock::now();
  Follower follower(head.address(), options);
  Result<FollowResult> r = follower.Get(30s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_EQ(r.status().message().rfind("lost the log stream of job raysubmit_t from the cohort head at " +
                                           head.address() + " after byte 0, and ",
                                       0),
            0u)
      << r.status().message();
  EXPECT_NE(r.status().message().find("HTTP 503: busy"), std::string::npos) << r.status().message();
  EXPECT_LT(Clock::now() - start, 10s);
  EXPECT_TRUE(follower.out().rfind("(log stream interrupted after byte 0: ", 0) == 0) << follower.out();
}

TEST(FollowJobTest, InterruptEndsFollowingPromptly) {
  FakeJobHead head;
  head.AppendLog("working\n");
  FollowOptions options = FastOptions();
  std::atomic<bool> stop{false};
  options.interrupted = [&] { return stop.load(); };
  Follower follower(head.address(), options);
  ASSERT_TRUE(follower.WaitPrinted(8));
  const auto asked = Clock::now();
  stop = true;
  Result<FollowResult> r = follower.Get(10s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->interrupted);
  EXPECT_LT(Clock::now() - asked, 2s);
  EXPECT_EQ(r->log_offset, 8u);
}

TEST(FollowJobTest, LogStreamThatNeverEndsAfterTheJobDidIsLeftAfterTheIdleTimeout) {
  FakeJobHead head;
  head.HoldTailsOpen();
  head.AppendLog("all of it\n");
  head.SetStatus("SUCCEEDED");
  FollowOptions options = FastOptions();
  options.stream_idle_timeout = 300ms;
  Follower follower(head.address(), options);
  Result<FollowResult> r = follower.Get(10s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, "SUCCEEDED");
  EXPECT_EQ(follower.out(),
            "all of it\n(the log stream stayed silent for 0.3 s after the job ended; stopped following)\n");
}

TEST(FollowJobTest, UnknownJobIsNotFound) {
  FakeJobHead head;
  JobClient client(Connection{head.address(), kToken, "/state"});
  ProgressPrinter printer([](std::string_view) {}, false, 80);
  Result<FollowResult> r = FollowJob(client, "nope", printer, FastOptions());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(head.tail_opens(), 0);
}

// --- WebSocketClient pieces FollowJob relies on ----------------------------------

TEST(WebSocketClientTest, AbortEndsABlockedReadFromAnotherThread) {
  FakeJobHead head;  // a RUNNING job with an empty log: the stream stays silent
  auto ws = net::WebSocketClient::Connect(
      "ws://127.0.0.1:" + std::to_string(head.port()) + "/api/jobs/raysubmit_t/logs/tail",
      {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_TRUE(ws.ok()) << ws.status().ToString();
  auto read = std::async(std::launch::async, [&] { return (*ws)->ReadMessage(); });
  EXPECT_EQ(read.wait_for(200ms), std::future_status::timeout);
  (*ws)->Abort();
  ASSERT_EQ(read.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(read.get().status().code(), StatusCode::kCancelled);
  EXPECT_EQ((*ws)->ReadMessage().status().code(), StatusCode::kCancelled);
  EXPECT_TRUE((*ws)->Close().ok());
}

TEST(WebSocketClientTest, IdleTimeoutNoticesAPeerThatWentSilent) {
  FakeJobHead head;
  Proxy proxy(head.port());
  auto ws = net::WebSocketClient::Connect(
      "ws://127.0.0.1:" + std::to_string(proxy.port()) + "/api/jobs/raysubmit_t/logs/tail",
      {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_TRUE(ws.ok()) << ws.status().ToString();
  (*ws)->SetIdleTimeout(400ms);
  // While the peer answers, the pings keep the silent stream open.
  auto quiet = (*ws)->ReadMessage(Deadline::After(1000ms));
  EXPECT_EQ(quiet.status().code(), StatusCode::kDeadlineExceeded) << quiet.status().ToString();

  auto ws2 = net::WebSocketClient::Connect(
      "ws://127.0.0.1:" + std::to_string(proxy.port()) + "/api/jobs/raysubmit_t/logs/tail",
      {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_TRUE(ws2.ok()) << ws2.status().ToString();
  (*ws2)->SetIdleTimeout(400ms);
  proxy.Freeze();  // now nothing comes back, not even a pong
  const auto start = Clock::now();
  auto r = (*ws2)->ReadMessage(Deadline::After(10s));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_LT(Clock::now() - start, 3s);
}

}  // namespace
}  // namespace cohort::cli
