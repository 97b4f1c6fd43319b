// Shared by the head's white-box tests: a fake agent session that records
// what the head sends it, and a fixture with a Cluster over a fresh state
// dir plus helpers to join nodes, submit jobs and report worker exits.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cluster.h"

namespace cohort::head::testing {

namespace fs = std::filesystem;
using json = nlohmann::json;

class FakeSession : public rpc::AgentSession {
 public:
  explicit FakeSession(std::string id) : id_(std::move(id)) {}
  bool Send(const rpc::HeadMessage& msg) override {
    sent.push_back(msg);
    return true;
  }
  void Close() override { closed = true; }
  const std::string& peer() const override { return peer_; }
  const std::string& node_id() const override { return id_; }
  std::vector<rpc::StartWorker> Starts() const {
    std::vector<rpc::StartWorker> out;
    for (const auto& m : sent)
      if (m.has_start_worker()) out.push_back(m.start_worker());
    return out;
  }
  std::vector<rpc::HeadMessage> sent;
  bool closed = false;

 private:
  std::string id_, peer_ = "ipv4:127.0.0.1:1";
};

class ClusterFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cohort_head_test_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    Open();
  }
  void TearDown() override {
    cluster_.reset();
    logs_.reset();
    state_.reset();
    fs::remove_all(dir_);
  }
  void Open() {
    cluster_.reset();
    state_ = std::move(StateStore::Open((dir_ / "cohort.db").string())).value();
    logs_ = std::move(LogStore::Open((dir_ / "logs").string())).value();
    HeadOptions o = options_;
    o.state_dir = dir_.string();
    cluster_ = std::make_unique<Cluster>(o, state_.get(), logs_.get(), deps_);
    ASSERT_TRUE(cluster_->Recover().ok());
  }
  std::shared_ptr<FakeSession> Join(const std::string& id, double cpus, double gpus = 0) {
    auto session = std::make_shared<FakeSession>(id);
    rpc::Register reg;
    reg.set_node_id(id);
    reg.set_address("10.0.0." + std::to_string(sessions_.size() + 1));
    (*reg.mutable_resources())["CPU"] = cpus;
    if (gpus > 0) (*reg.mutable_resources())["GPU"] = gpus;
    auto reply = cluster_->OnRegister(reg, session);
    EXPECT_TRUE(reply.has_registered());
    sessions_.push_back(session);
    return session;
  }
  std::string Submit(const json& body) {
    auto reply = cluster_->Submit(body.dump());
    EXPECT_EQ(reply.status, 200) << reply.body;
    return json::parse(reply.body)["submission_id"];
  }
  json Details(const std::string& id) { return json::parse(cluster_->GetJob(id).body); }
  void Exit(FakeSession& s, const std::string& id, int attempt, int rank, int code) {
    rpc::AgentMessage m;
    auto* e = m.mutable_worker_exited();
    e->set_job_id(id);
    e->set_attempt(attempt);
    e->set_rank(rank);
    e->set_exit_code(code);
    cluster_->OnMessage(s, m);
  }

  fs::path dir_;
  HeadOptions options_;  // state_dir is set by Open()
  ClusterDeps deps_;     // tests may set a FakeClock or a lister before Open()
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<LogStore> logs_;
  std::unique_ptr<Cluster> cluster_;
  std::vector<std::shared_ptr<FakeSession>> sessions_;
};

}  // namespace cohort::head::testing
