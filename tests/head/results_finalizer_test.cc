// Results listings run on the work pool: a hung bucket never delays
// heartbeats or other jobs, a listing past its deadline fails only its job,
// and any object name (not valid UTF-8 included) is stored and served -- also
// after a head restart.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "cluster_fixture.h"
#include "cohort/common/json.h"

namespace cohort::head {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

class ResultsFinalizerTest : public testing::ClusterFixture {
 protected:
  void SetUp() override {
    deps_.clock = &clock_;
    deps_.listing_deadline = 60s;
    deps_.lister = [this](const std::string& uri) -> Result<std::vector<storage::ObjectInfo>> {
      if (uri.find("hung") != std::string::npos) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return release_; });
        return Status::Unavailable("bucket went away");
      }
      ++listed_;
      storage::ObjectInfo o;
      o.key = std::string("run1/model\xff\xfe.pt");
      o.size_bytes = 3;
      o.crc32c = "AAAAAA==";
      return std::vector<storage::ObjectInfo>{o};
    };
    ClusterFixture::SetUp();
  }
  void TearDown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      release_ = true;
    }
    cv_.notify_all();
    ClusterFixture::TearDown();
  }
  // Ticks until `id` leaves RUNNING (the listing runs on a pool thread).
  json WaitDone(const std::string& id) {
    for (int i = 0; i < 500; ++i) {
      cluster_->Tick();
      json d = Details(id);
      if (d["status"] != "RUNNING") return d;
      std::this_thread::sleep_for(10ms);
    }
    return Details(id);
  }
  FakeClock clock_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool release_ = false;
  std::atomic<int> listed_{0};
};

TEST_F(ResultsFinalizerTest, AHungBucketDelaysNothingElseAndFailsItsJobAtTheDeadline) {
  auto a = Join("node-a", 4);
  const std::string hung = Submit({{"entrypoint", "train"}, {"results_uri", "file:///tmp/hung"}});
  Exit(*a, hung, 0, 0, 0);
  const auto t0 = std::chrono::steady_clock::now();
  cluster_->Tick();  // returns at once: the listing waits on a pool thread
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(Details(hung)["status"], "RUNNING");
  // Meanwhile other jobs are placed and finish.
  const std::string other = Submit({{"entrypoint", "true"}});
  EXPECT_EQ(Details(other)["status"], "RUNNING");
  Exit(*a, other, 0, 0, 0);
  EXPECT_EQ(Details(other)["status"], "SUCCEEDED");
  clock_.Advance(61s);
  rpc::AgentMessage hb;
  hb.mutable_heartbeat();
  cluster_->OnMessage(*a, hb);
  cluster_->Tick();
  const json d = Details(hung);
  EXPECT_EQ(d["status"], "FAILED");
  EXPECT_NE(d["message"].get<std::string>().find("longer than 60 s"), std::string::npos) << d["message"];
  EXPECT_EQ(json::parse(cluster_->ClusterStatus().body)["nodes"][0]["state"], "ALIVE");
}

TEST_F(ResultsFinalizerTest, ObjectNamesThatAreNotUtf8AreStoredServedAndRecovered) {
  auto a = Join("node-a", 4);
  const std::string id = Submit({{"entrypoint", "train"}, {"results_uri", "file:///tmp/run1"}});
  Exit(*a, id, 0, 0, 0);
  json d = WaitDone(id);
  ASSERT_EQ(d["status"], "SUCCEEDED") << d.dump();
  ASSERT_EQ(d["results"].size(), 1u);
  EXPECT_TRUE(IsValidUtf8(d["results"][0]["uri"].get<std::string>()));
  EXPECT_TRUE(IsValidUtf8(cluster_->ListJobs().body));
  Open();  // the saved state loads
  EXPECT_EQ(Details(id)["status"], "SUCCEEDED");
  EXPECT_EQ(Details(id)["results"][0]["size_bytes"], 3);
}

TEST_F(ResultsFinalizerTest, AListingInterruptedByARestartIsRedone) {
  auto a = Join("node-a", 4);
  release_ = false;
  const std::string id = Submit({{"entrypoint", "train"}, {"results_uri", "file:///tmp/run2"}});
  Exit(*a, id, 0, 0, 0);
  Open();  // before the tick collects the listing
  json d = WaitDone(id);
  EXPECT_EQ(d["status"], "SUCCEEDED") << d.dump();
  EXPECT_GE(listed_.load(), 1);
}

}  // namespace
}  // namespace cohort::head
