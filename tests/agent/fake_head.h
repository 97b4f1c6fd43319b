// Test helpers for the agent tests: FakeHead, a head that speaks the agent
// protocol through HeadRpcServer (src/net/rpc/head_server.h) and records what
// the agent sends; MakeZip, zip archives built with libzip; TempDir.
//
// FakeHead's handler methods run on gRPC threads; everything they record is
// guarded by mu_, and tests read it through Wait()/With() under that lock.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>
#include <zip.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "cohort.pb.h"
#include "cohort/rpc/head_server.h"

namespace cohort::testing {

using WorkerId = std::tuple<std::string, int, int>;  // job_id, attempt, rank

class FakeHead final : public rpc::HeadHandler {
 public:
  struct Options {
    int port = 0;
    uint32_t protocol_version = rpc::kProtocolVersion;
    std::string cluster_token;
    bool ack_logs = false;  // answer each LogChunk with a LogAck (as the head does)
  };

  // Everything the agent sent, by kind.
  struct Record {
    std::vector<rpc::Register> registrations;
    std::vector<rpc::Heartbeat> heartbeats;
    std::vector<rpc::WorkerStarted> started;
    std::vector<rpc::WorkerExited> exited;
    std::map<WorkerId, std::string> logs;
    std::map<WorkerId, std::vector<uint64_t>> log_offsets;  // LogChunk.offset of each chunk
    std::map<WorkerId, std::vector<std::string>> metrics;
    int disconnects = 0;
    int package_requests = 0;
  };

  explicit FakeHead(Options options) : options_(std::move(options)) {}
  ~FakeHead() override { Shutdown(); }

  Status Start() {
    rpc::HeadRpcServer::Options o;
    o.listen_address = "127.0.0.1:" + std::to_string(options_.port);
    o.protocol_version = options_.protocol_version;
    o.cluster_token = options_.cluster_token;
    auto server = rpc::HeadRpcServer::Start(o, this);
    if (!server.ok()) return server.status();
    server_ = std::move(server).value();
    options_.port = server_->port();
    return Status::Ok();
  }
  void Shutdown() {
    if (server_) server_->Shutdown(Deadline::After(std::chrono::seconds(1)));
    server_.reset();
  }
  int port() const { return options_.port; }
  std::string address() const { return "127.0.0.1:" + std::to_string(options_.port); }

  void AddPackage(const std::string& uri, std::string bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    packages_[uri] = std::move(bytes);
  }
  // GetPackage answers only after this long (a slow download).
  void SetPackageDelay(std::chrono::milliseconds delay) {
    std::lock_guard<std::mutex> lock(mu_);
    package_delay_ = delay;
  }

  // Waits (default 8 s) until pred(record) holds; pred runs under the lock.
  bool Wait(const std::function<bool(const Record&)>& pred,
            std::chrono::milliseconds timeout = std::chrono::seconds(8)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(record_); });
  }
  template <typename F>
  auto With(F f) {
    std::lock_guard<std::mutex> lock(mu_);
    return f(record_);
  }

  bool Send(const rpc::HeadMessage& msg) {
    std::shared_ptr<rpc::AgentSession> s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      s = session_;
    }
    return s && s->Send(msg);
  }
  // Ends the current agent stream (the agent should reconnect).
  void DropSession() {
    std::shared_ptr<rpc::AgentSession> s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      s = session_;
    }
    if (s) s->Close();
  }

  // --- rpc::HeadHandler
  rpc::HeadMessage OnRegister(const rpc::Register& reg,
                              const std::shared_ptr<rpc::AgentSession>& session) override {
    std::lock_guard<std::mutex> lock(mu_);
    record_.registrations.push_back(reg);
    session_ = session;
    cv_.notify_all();
    rpc::HeadMessage reply;
    reply.mutable_registered()->set_node_id(reg.node_id().empty() ? "assigned" : reg.node_id());
    reply.mutable_registered()->set_heartbeat_interval_ms(100);
    return reply;
  }
  void OnMessage(rpc::AgentSession& session, const rpc::AgentMessage& msg) override {
    if (msg.has_log() && options_.ack_logs) {
      rpc::HeadMessage ack;
      rpc::LogMark* m = ack.mutable_log_ack()->add_marks();
      m->set_job_id(msg.log().job_id());
      m->set_attempt(msg.log().attempt());
      m->set_rank(msg.log().rank());
      m->set_offset(msg.log().offset() + msg.log().data().size());
      session.Send(ack);
    }
    std::lock_guard<std::mutex> lock(mu_);
    switch (msg.msg_case()) {
      case rpc::AgentMessage::kHeartbeat: record_.heartbeats.push_back(msg.heartbeat()); break;
      case rpc::AgentMessage::kWorkerStarted: record_.started.push_back(msg.worker_started()); break;
      case rpc::AgentMessage::kWorkerExited: record_.exited.push_back(msg.worker_exited()); break;
      case rpc::AgentMessage::kLog: {
        const auto& l = msg.log();
        record_.logs[{l.job_id(), l.attempt(), l.rank()}] += l.data();
        record_.log_offsets[{l.job_id(), l.attempt(), l.rank()}].push_back(l.offset());
        break;
      }
      case rpc::AgentMessage::kMetrics: {
        const auto& m = msg.metrics();
        auto& lines = record_.metrics[{m.job_id(), m.attempt(), m.rank()}];
        lines.insert(lines.end(), m.json_lines().begin(), m.json_lines().end());
        break;
      }
      default: break;
    }
    cv_.notify_all();
  }
  void OnDisconnect(rpc::AgentSession&, const Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++record_.disconnects;
    cv_.notify_all();
  }
  Status GetPackage(const rpc::GetPackageRequest& request, std::string* bytes) override {
    std::chrono::milliseconds delay;
    {
      std::lock_guard<std::mutex> lock(mu_);
      delay = package_delay_;
    }
    std::this_thread::sleep_for(delay);
    std::lock_guard<std::mutex> lock(mu_);
    ++record_.package_requests;
    auto it = packages_.find(request.uri());
    if (it == packages_.end()) return Status::NotFound("Package " + request.uri() + " does not exist");
    *bytes = it->second;
    return Status::Ok();
  }

 private:
  Options options_;
  std::unique_ptr<rpc::HeadRpcServer> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  Record record_;
  std::map<std::string, std::string> packages_;
  std::chrono::milliseconds package_delay_{0};
  std::shared_ptr<rpc::AgentSession> session_;
};

// A WorkerExited for `id` in `r`, or nullptr.
inline const rpc::WorkerExited* FindExit(const FakeHead::Record& r, const WorkerId& id) {
  for (const auto& e : r.exited) {
    if (WorkerId{e.job_id(), e.attempt(), e.rank()} == id) return &e;
  }
  return nullptr;
}

inline const rpc::WorkerStarted* FindStart(const FakeHead::Record& r, const WorkerId& id) {
  for (const auto& s : r.started) {
    if (WorkerId{s.job_id(), s.attempt(), s.rank()} == id) return &s;
  }
  return nullptr;
}

inline rpc::HeadMessage StartMsg(const std::string& job, int attempt, int rank,
                                 const std::string& entrypoint,
                                 const std::map<std::string, std::string>& env = {},
                                 const std::string& package = "") {
  rpc::HeadMessage msg;
  rpc::StartWorker* s = msg.mutable_start_worker();
  s->set_job_id(job);
  s->set_attempt(attempt);
  s->set_rank(rank);
  s->set_entrypoint(entrypoint);
  for (const auto& [k, v] : env) (*s->mutable_env())[k] = v;
  s->set_working_dir_package(package);
  return msg;
}

inline rpc::HeadMessage StopMsg(const std::string& job, int attempt, int signal, int grace_ms) {
  rpc::HeadMessage msg;
  rpc::StopWorkers* s = msg.mutable_stop_workers();
  s->set_job_id(job);
  s->set_attempt(attempt);
  s->set_signal(signal);
  s->set_grace_ms(grace_ms);
  return msg;
}

struct ZipEntry {
  std::string name;
  std::string content;  // a symlink's target when symlink
  bool symlink = false;
};

// Builds a zip at `path` and returns its bytes.
inline std::string MakeZip(const std::string& path, const std::vector<ZipEntry>& entries) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (z == nullptr) return "";
  for (const ZipEntry& e : entries) {
    zip_source_t* src = zip_source_buffer(z, e.content.data(), e.content.size(), 0);
    zip_int64_t idx = zip_file_add(z, e.name.c_str(), src, ZIP_FL_ENC_RAW);
    if (idx < 0) {
      zip_source_free(src);
      continue;
    }
    mode_t mode = e.symlink ? (S_IFLNK | 0777) : (S_IFREG | 0644);
    zip_file_set_external_attributes(z, idx, 0, ZIP_OPSYS_UNIX, static_cast<zip_uint32_t>(mode) << 16);
  }
  zip_close(z);  // buffers must stay alive until here
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/cohort_agent_test.XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace cohort::testing
