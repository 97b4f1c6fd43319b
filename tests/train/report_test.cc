// Tests for Reporter: JSON lines to an append-mode file, to a listening
// Unix-domain socket, and error reporting for an unwritable path.
#include "cohort/train/report.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace cohort::train {
namespace {

using nlohmann::json;

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/report_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    ::unsetenv(kReportPathEnv);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  static std::vector<std::string> Lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    std::string line;
    while (std::getline(in, line)) out.push_back(line);
    return out;
  }

  static double Now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  std::string dir_;
};

TEST_F(ReportTest, FileLinesAreJsonWithRankTimeAndMetrics) {
  const std::string path = dir_ + "/metrics.jsonl";
  ::setenv(kReportPathEnv, path.c_str(), 1);
  Reporter r = Reporter::FromEnv(3);
  EXPECT_EQ(r.destination(), path);
  double before = Now();
  ASSERT_TRUE(r.Report({{"epoch", 1}, {"train_loss", 0.25}, {"val_accuracy", 0.875}}).ok());
  ASSERT_TRUE(r.Report({{"epoch", 2}}).ok());
  double after = Now();

  auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 2u);
  json j = json::parse(lines[0]);
  EXPECT_EQ(j["rank"], 3);
  EXPECT_TRUE(j["rank"].is_number_integer());
  EXPECT_GE(j["time"].get<double>(), before - 1e-3);
  EXPECT_LE(j["time"].get<double>(), after + 1e-3);
  EXPECT_EQ(j["epoch"].get<double>(), 1.0);
  EXPECT_EQ(j["train_loss"].get<double>(), 0.25);
  EXPECT_EQ(j["val_accuracy"].get<double>(), 0.875);
  // rank and time come first.
  EXPECT_EQ(lines[0].rfind("{\"rank\":3,\"time\":", 0), 0u) << lines[0];
  EXPECT_EQ(json::parse(lines[1])["epoch"].get<double>(), 2.0);
}

TEST_F(ReportTest, TwoReportersAppendToOneFile) {
  const std::string path = dir_ + "/shared.jsonl";
  {
    std::ofstream pre(path);
    pre << "{\"existing\":true}\n";
  }
  Reporter a = Reporter::ForPath(path, 0);
  Reporter b = Reporter::ForPath(path, 1);
  std::thread ta([&] {
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(a.Report({{"step", i}}).ok());
  });
  std::thread tb([&] {
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(b.Report({{"step", i}}).ok());
  });
  ta.join();
  tb.join();
  auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 101u);
  EXPECT_EQ(lines[0], "{\"existing\":true}");
  int count[2] = {0, 0};
  for (size_t i = 1; i < lines.size(); ++i) {
    json j = json::parse(lines[i]);  // throws (fails the test) on an interleaved line
    ++count[j["rank"].get<int>()];
  }
  EXPECT_EQ(count[0], 50);
  EXPECT_EQ(count[1], 50);
}

TEST_F(ReportTest, NonFiniteIsNull) {
  const std::string path = dir_ + "/nan.jsonl";
  Reporter r = Reporter::ForPath(path, 0);
  ASSERT_TRUE(r.Report({{"loss", std::numeric_limits<double>::quiet_NaN()},
                        {"grad", std::numeric_limits<double>::infinity()},
                        {"ok", 1.5}})
                  .ok());
  auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 1u);
  json j = json::parse(lines[0]);
  EXPECT_TRUE(j["loss"].is_null()) << lines[0];
  EXPECT_TRUE(j["grad"].is_null()) << lines[0];
  EXPECT_EQ(j["ok"].get<double>(), 1.5);
}

TEST_F(ReportTest, ReportJsonAddsRankAndTime) {
  const std::string path = dir_ + "/custom.jsonl";
  Reporter r = Reporter::ForPath(path, 2);
  ASSERT_TRUE(r.ReportJson("{\"event\": \"done\",\n \"nested\": {\"a\": [1, 2]}}").ok());
  ASSERT_TRUE(r.ReportJson("{\"rank\": 7, \"time\": 1.0, \"x\": 1}").ok());
  EXPECT_EQ(r.ReportJson("[1,2]").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.ReportJson("{not json").code(), StatusCode::kInvalidArgument);
  auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 2u);
  json a = json::parse(lines[0]);
  EXPECT_EQ(a["rank"], 2);
  EXPECT_TRUE(a["time"].is_number());
  EXPECT_EQ(a["event"], "done");
  EXPECT_EQ(a["nested"]["a"][1], 2);
  EXPECT_EQ(lines[0].rfind("{\"rank\":2,", 0), 0u) << lines[0];
  json b = json::parse(lines[1]);
  EXPECT_EQ(b["rank"], 7);
  EXPECT_EQ(b["time"], 1.0);
}

TEST_F(ReportTest, ReservedNamesRejected) {
  Reporter r = Reporter::ForPath(dir_ + "/r.jsonl", 0);
  EXPECT_EQ(r.Report({{"rank", 1}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Report({{"time", 1}}).code(), StatusCode::kInvalidArgument);
}

TEST_F(ReportTest, UnwritablePathNamesIt) {
  const std::string path = dir_ + "/no/such/dir/metrics.jsonl";
  Reporter r = Reporter::ForPath(path, 0);
  Status s = r.Report({{"x", 1}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
  EXPECT_FALSE(r.Open().ok());
}

TEST_F(ReportTest, SocketMode) {
  const std::string path = dir_ + "/report.sock";
  int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof(addr.sun_path));
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);

  ::setenv(kReportPathEnv, path.c_str(), 1);
  Reporter r = Reporter::FromEnv(1);
  ASSERT_TRUE(r.Report({{"epoch", 0}, {"loss", std::nan("")}}).ok());
  ASSERT_TRUE(r.Report({{"epoch", 1}}).ok());

  pollfd pfd{listener, POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 5000), 1);
  int conn = ::accept(listener, nullptr, nullptr);
  ASSERT_GE(conn, 0);
  std::string got;
  while (std::count(got.begin(), got.end(), '\n') < 2) {
    pollfd cp{conn, POLLIN, 0};
    ASSERT_EQ(::poll(&cp, 1, 5000), 1) << "timed out; got: " << got;
    char buf[4096];
    ssize_t n = ::read(conn, buf, sizeof(buf));
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  std::istringstream in(got);
  std::string l0, l1;
  std::getline(in, l0);
  std::getline(in, l1);
  json a = json::parse(l0);
  EXPECT_EQ(a["rank"], 1);
  EXPECT_EQ(a["epoch"].get<double>(), 0.0);
  EXPECT_TRUE(a["loss"].is_null());
  EXPECT_EQ(json::parse(l1)["epoch"].get<double>(), 1.0);

  // The listener going away is an error naming the socket, not a SIGPIPE.
  ::close(conn);
  ::close(listener);
  Status s;
  for (int i = 0; i < 5 && s.ok(); ++i) s = r.Report({{"epoch", 2}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
}

TEST_F(ReportTest, StdoutWhenUnset) {
  ::unsetenv(kReportPathEnv);
  Reporter r = Reporter::FromEnv(0);
  EXPECT_EQ(r.destination(), "<stdout>");
  ::testing::internal::CaptureStdout();
  Status s = r.Report({{"x", 2}});
  std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(s.ok());
  json j = json::parse(out);
  EXPECT_EQ(j["x"].get<double>(), 2.0);
}

}  // namespace
}  // namespace cohort::train
