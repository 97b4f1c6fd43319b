// Tests for the job client: address/token resolution, the submit body,
// shell quoting, error texts (unreachable head, refused token, server
// errors), package upload (check, then PUT only when missing), all against a
// fake head (cpp-httplib) in-process. Following a job (the log-tail
// WebSocket) is tested in follow_job_test.cc.
#include "cli/job_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "cli/package.h"

namespace cohort::cli {
namespace {

namespace fs = std::filesystem;

// An HTTP server on 127.0.0.1:<free port> serving on its own threads.
class FakeHead {
 public:
  FakeHead() {
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeHead() {
    server_.stop();
    thread_.join();
  }
  httplib::Server& server() { return server_; }
  std::string address() const { return "http://127.0.0.1:" + std::to_string(port_); }
  Connection connection(const std::string& token = "secret") const {
    return Connection{address(), token, "/state"};
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

// A port nothing listens on.
int ClosedPort() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(s);
  return ntohs(addr.sin_port);
}

class EnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"COHORT_ADDRESS", "COHORT_TOKEN", "COHORT_STATE_DIR", "HOME"}) {
      const char* old = std::getenv(v);
      saved_.emplace_back(v, old ? std::optional<std::string>(old) : std::nullopt);
      ::unsetenv(v);
    }
    std::string tmpl = ::testing::TempDir() + "/job_client_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
  std::string dir_;
};

TEST_F(EnvTest, AddressDefaultsEnvAndFlag) {
  ::setenv("HOME", dir_.c_str(), 1);
  Connection c = ResolveConnection("", "", "");
  EXPECT_EQ(c.address, "http://127.0.0.1:8265");
  EXPECT_EQ(c.state_dir, dir_ + "/.cohort");
  EXPECT_EQ(c.token, "");
  ::setenv("COHORT_ADDRESS", "head.example:9000/", 1);
  EXPECT_EQ(ResolveConnection("", "", "").address, "http://head.example:9000");
  EXPECT_EQ(ResolveConnection("https://h:1/", "", "").address, "https://h:1");
}

TEST_F(EnvTest, TokenFromFlagEnvOrStateDirFile) {
  fs::create_directories(dir_ + "/state");
  std::ofstream(dir_ + "/state/token") << "from-file\n";
  ::setenv("COHORT_STATE_DIR", (dir_ + "/state").c_str(), 1);
  EXPECT_EQ(ResolveConnection("", "", "").token, "from-file");
  ::setenv("COHORT_TOKEN", "from-env", 1);
  EXPECT_EQ(ResolveConnection("", "", "").token, "from-env");
  EXPECT_EQ(ResolveConnection("", "from-flag", "").token, "from-flag");
  ::unsetenv("COHORT_TOKEN");
  EXPECT_EQ(ResolveConnection("", "", dir_ + "/nowhere").token, "");
  EXPECT_EQ(ResolveConnection("", "", dir_ + "/nowhere").state_dir, dir_ + "/nowhere");
}

TEST(ShellJoinTest, QuotesLikeShlexJoin) {
  EXPECT_EQ(ShellJoin({"python", "train.py", "--lr", "0.1", "--out=/tmp/x,y:z@1%+"}),
            "python train.py --lr 0.1 --out=/tmp/x,y:z@1%+");
  EXPECT_EQ(ShellJoin({"echo", "a b", ""}), "echo 'a b' ''");
  EXPECT_EQ(ShellJoin({"echo", "it's", "$HOME", "*"}), "echo 'it'\"'\"'s' '$HOME' '*'");
}

TEST(BuildSubmitRequestTest, RayFieldsAndCohortExtensions) {
  SubmitOptions o;
  o.entrypoint = {"python", "train.py", "--epochs", "3"};
  o.submission_id = "my-job";
  o.runtime_env_json = R"({"env_vars": {"A": "1"}, "working_dir": "/ignored"})";
  o.working_dir = "./src";
  o.env = {"B=2=3"};
  o.metadata_json = R"({"owner": "alice"})";
  o.workers = 4;
  o.cpus_per_worker = 2;
  o.gpus_per_worker = 0.5;
  o.placement_strategy = "spread";
  o.max_failures = 3;
  o.results_uri = "gs://bucket/results";
  Result<Json> r = BuildSubmitRequest(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, Json::parse(R"({
    "entrypoint": "python train.py --epochs 3",
    "submission_id": "my-job",
    "runtime_env": {"env_vars": {"A": "1", "B": "2=3"}, "working_dir": "./src"},
    "metadata": {"owner": "alice"},
    "scaling": {"num_workers": 4, "resources_per_worker": {"CPU": 2, "GPU": 0.5},
                "placement_strategy": "SPREAD"},
    "failure": {"max_failures": 3},
    "results_uri": "gs://bucket/results"})"));
  EXPECT_TRUE((*r)["scaling"]["resources_per_worker"]["CPU"].is_number_integer());
  EXPECT_EQ(LocalWorkingDir(*r), "./src");
}

TEST(BuildSubmitRequestTest, MinimalBodyIsRaysShape) {
  SubmitOptions o;
  o.entrypoint = {"echo", "hi"};
  Result<Json> r = BuildSubmitRequest(o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dump(), R"({"entrypoint":"echo hi","runtime_env":{},"metadata":{}})");
  EXPECT_EQ(LocalWorkingDir(*r), "");
  o.working_dir = "gcs://_ray_pkg_0123456789abcdef.zip";
  EXPECT_EQ(LocalWorkingDir(*BuildSubmitRequest(o)), "");
  o.working_dir = "";
  o.entrypoint_num_cpus = 1.5;
  o.entrypoint_memory = 1 << 20;
  r = BuildSubmitRequest(o);
  EXPECT_EQ((*r)["entrypoint_num_cpus"], 1.5);
  EXPECT_EQ((*r)["entrypoint_memory"], 1 << 20);
}

TEST(BuildSubmitRequestTest, RejectsBadInput) {
  auto code = [](SubmitOptions o) { return BuildSubmitRequest(o).status().code(); };
  SubmitOptions o;
  EXPECT_EQ(code(o), StatusCode::kInvalidArgument);  // no entrypoint
  o.entrypoint = {"true"};
  SubmitOptions bad = o;
  bad.runtime_env_json = "[1]";
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.env = {"NOEQUALS"};
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.metadata_json = R"({"n": 1})";
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.workers = 0;
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.gpus_per_worker = 1;  // without --workers
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.workers = 2;
  bad.placement_strategy = "RANDOM";
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.max_failures = -2;
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.grad_compression = "zstd";
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
}

TEST(BuildSubmitRequestTest, GradCompressionBecomesTheWorkersVariable) {
  SubmitOptions o;
  o.entrypoint = {"train"};
  o.workers = 2;
  o.grad_compression = "bf16-ef";
  auto body = BuildSubmitRequest(o);
  ASSERT_TRUE(body.ok()) << body.status().ToString();
  EXPECT_EQ((*body)["runtime_env"]["env_vars"]["COHORT_GRAD_COMPRESSION"], "bf16-ef");
}

TEST(JobClientTest, SubmitSendsBodyAndTokenAndReturnsTheId) {
  FakeHead head;
  std::mutex mu;
  std::string got_body, got_auth, got_type;
  head.server().Post("/api/jobs/", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    got_body = req.body;
    got_auth = req.get_header_value("Authorization");
    got_type = req.get_header_value("Content-Type");
    res.set_content(R"({"job_id": "raysubmit_abc", "submission_id": "raysubmit_abc"})",
                    "application/json");
  });
  JobClient client(head.connection());
  SubmitOptions o;
  o.entrypoint = {"echo", "hi"};
  Result<std::string> id = client.Submit(*BuildSubmitRequest(o));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(*id, "raysubmit_abc");
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(Json::parse(got_body)["entrypoint"], "echo hi");
  EXPECT_EQ(got_auth, "Bearer secret");
  EXPECT_EQ(got_type, "application/json");
}

TEST(JobClientTest, NoTokenSendsNoAuthorizationHeader) {
  FakeHead head;
  std::atomic<bool> had_auth{true};
  head.server().Get("/api/jobs/", [&](const httplib::Request& req, httplib::Response& res) {
    had_auth = req.has_header("Authorization");
    res.set_content("[]", "application/json");
  });
  JobClient client(head.connection(""));
  Result<Json> list = client.List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_TRUE(list->empty());
  EXPECT_FALSE(had_auth);
}

TEST(JobClientTest, ServerErrorsCarryTheTextAndCode) {
  FakeHead head;
  head.server().Get(R"(/api/jobs/([^/]+))", [](const httplib::Request& req, httplib::Response& res) {
    res.status = 404;
    res.set_content("Job " + std::string(req.matches[1]) + " does not exist", "text/plain");
  });
  head.server().Delete(R"(/api/jobs/([^/]+))", [](const httplib::Request&, httplib::Response& res) {
    res.status = 400;
    res.set_content(
        "Attempted to delete job 'x', but it is in a non-terminal state RUNNING.", "text/plain");
  });
  head.server().Post("/api/jobs/", [](const httplib::Request&, httplib::Response& res) {
    res.status = 500;
  });
  JobClient client(head.connection());
  Result<Json> d = client.Get("nope");
  EXPECT_EQ(d.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(d.status().message(), "Job nope does not exist (HTTP 404)");
  Status del = client.Delete("x");
  EXPECT_EQ(del.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(del.message(),
            "Attempted to delete job 'x', but it is in a non-terminal state RUNNING. (HTTP 400)");
  Result<std::string> sub = client.Submit(Json::object());
  EXPECT_EQ(sub.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(sub.status().message(), "POST /api/jobs/ failed (HTTP 500)");
}

TEST(JobClientTest, RefusedTokenExplainsWhereTheTokenIs) {
  FakeHead head;
  head.server().Get("/api/jobs/", [](const httplib::Request&, httplib::Response& res) {
    res.status = 401;
    res.set_content("Unauthorized: missing or invalid bearer token", "text/plain");
  });
  JobClient client(head.connection("wrong"));
  Result<Json> list = client.List();
  EXPECT_EQ(list.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(list.status().message(),
            "the head refused the token: pass --token or set COHORT_TOKEN (the head's token is "
            "in /state/token)");
}

TEST(JobClientTest, UnreachableHeadSaysSo) {
  const std::string address = "http://127.0.0.1:" + std::to_string(ClosedPort());
  JobClient client(Connection{address, "", "/state"});
  Result<Json> list = client.List();
  EXPECT_EQ(list.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(list.status().message(),
            "cannot reach the cohort head at " + address + ": is it running? (cohort start --head)");
}

TEST(JobClientTest, SmallCallsParseTheirAnswers) {
  FakeHead head;
  head.server().Post(R"(/api/jobs/([^/]+)/stop)", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"stopped": true})", "application/json");
  });
  head.server().Get(R"(/api/jobs/([^/]+)/logs)", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"logs": "hello\n"})", "application/json");
  });
  head.server().Get(R"(/api/jobs/([^/]+)/metrics)", [](const httplib::Request& req, httplib::Response& res) {
    EXPECT_EQ(req.get_param_value("since"), "2");
    res.set_content(R"({"metrics": [{"rank": 0, "time": 1.5, "epoch": 3}], "next": 3})",
                    "application/json");
  });
  head.server().Get("/api/cluster/status", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"nodes": [], "pending_demand": []})", "application/json");
  });
  JobClient client(head.connection());
  EXPECT_TRUE(*client.Stop("j"));
  EXPECT_EQ(*client.Logs("j"), "hello\n");
  Result<MetricsPage> page = client.Metrics("j", 2);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->metrics.size(), 1u);
  EXPECT_EQ(page->metrics[0].dump(), R"({"rank":0,"time":1.5,"epoch":3})");
  EXPECT_EQ(page->next, 3);
  EXPECT_TRUE(client.ClusterStatus()->contains("nodes"));
}

TEST_F(EnvTest, UploadPackageChecksThenPutsOnlyWhenMissing) {
  fs::create_directories(dir_ + "/wd/sub");
  std::ofstream(dir_ + "/wd/train.py") << "print(1)\n";
  std::ofstream(dir_ + "/wd/sub/x.txt") << "x";
  const std::string name = ScanDirectory(dir_ + "/wd")->name;

  FakeHead head;
  std::mutex mu;
  std::map<std::string, std::string> stored;
  int puts = 0;
  head.server().Get(R"(/api/packages/gcs/(.+))", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    if (!stored.count(req.matches[1])) {
      res.status = 404;
      res.set_content("Package gcs://" + std::string(req.matches[1]) + " does not exist",
                      "text/plain");
    }
  });
  head.server().Put(R"(/api/packages/gcs/(.+))", [&](const httplib::Request& req, httplib::Response&) {
    std::lock_guard<std::mutex> lock(mu);
    stored[req.matches[1]] = req.body;
    ++puts;
  });
  JobClient client(head.connection());
  std::vector<std::string> lines;
  auto note = [&](const std::string& l) { lines.push_back(l); };
  Result<std::string> uri = client.UploadPackage(dir_ + "/wd", note);
  ASSERT_TRUE(uri.ok()) << uri.status().ToString();
  EXPECT_EQ(*uri, "gcs://" + name);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(puts, 1);
    EXPECT_EQ(stored[name], *ZipPackage(*ScanDirectory(dir_ + "/wd")));
  }
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("Uploaded"), std::string::npos) << lines[0];
  // Again: the head has it, nothing is sent.
  EXPECT_EQ(*client.UploadPackage(dir_ + "/wd/", note), "gcs://" + name);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(puts, 1);
  }
  // A .zip file goes up as is, named by its SHA-1.
  std::ofstream(dir_ + "/pkg.zip", std::ios::binary) << "PK-not-really";
  uri = client.UploadPackage(dir_ + "/pkg.zip");
  ASSERT_TRUE(uri.ok()) << uri.status().ToString();
  EXPECT_EQ(*uri, "gcs://_ray_pkg_" + Sha1Hex("PK-not-really") + ".zip");
  // Neither a directory nor a zip.
  std::ofstream(dir_ + "/notes.txt") << "n";
  EXPECT_EQ(client.UploadPackage(dir_ + "/notes.txt").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(client.UploadPackage(dir_ + "/missing").status().code(), StatusCode::kInvalidArgument);
}

TEST(FollowJobTest, UnknownJobIsAnError) {
  FakeHead head;
  head.server().Get(R"(/api/jobs/([^/]+))", [](const httplib::Request&, httplib::Response& res) {
    res.status = 404;
    res.set_content("Job nope does not exist", "text/plain");
  });
  JobClient client(head.connection());
  ProgressPrinter printer([](std::string_view) {}, false, 80);
  Result<FollowResult> r = FollowJob(client, "nope", printer, FollowOptions{});
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

TEST(FinalStatusLineTest, Texts) {
  EXPECT_EQ(FinalStatusLine("j", "STOPPED", "Job was intentionally stopped."),
            "Job j was stopped: Job was intentionally stopped.");
  EXPECT_EQ(FinalStatusLine("j", "FAILED", ""), "Job j failed");
  EXPECT_EQ(FinalStatusLine("j", "FAILED", "Job entrypoint command failed with exit code 1. No logs available."),
            "Job j failed: Job entrypoint command failed with exit code 1");
}

TEST(JobResultsTextTest, BucketObjectsNodeListingsAndNothingYet) {
  Json bucket = Json::parse(R"({"status": "SUCCEEDED", "results_uri": "gs://b/run",
      "results": [{"uri": "gs://b/run/model.pt", "size_bytes": 2048, "crc32c": "AAAAAA=="}]})");
  const std::string b = FormatJobResults("j", bucket);
  EXPECT_NE(b.find("Job j (SUCCEEDED): 1 object(s), 2.0 KiB, in gs://b/run\n"), std::string::npos) << b;
  EXPECT_NE(b.find("gs://b/run/model.pt  2.0 KiB  AAAAAA=="), std::string::npos) << b;

  Json waiting = Json::parse(R"({"status": "RUNNING", "results_uri": "gs://b/run", "results": null})");
  EXPECT_NE(FormatJobResults("j", waiting).find("listed here once the job has succeeded"), std::string::npos);

  Json nodes = Json::parse(R"({"status": "SUCCEEDED", "results_dir": "/r",
      "node_results": [
        {"node_id": "n1", "node_address": "10.0.0.1", "dir": "/r", "file_count": 3, "total_bytes": 3072,
         "files": [{"path": "model.pt", "size_bytes": 1024}, {"path": "bad\u001bname", "size_bytes": 0}]},
        {"node_id": "n2", "node_address": "10.0.0.2", "dir": "/r", "file_count": 0, "total_bytes": 0, "files": []}]})");
  const std::string n = FormatJobResults("j", nodes);
  EXPECT_NE(n.find("results are on 1 node(s)"), std::string::npos) << n;
  EXPECT_NE(n.find("node n1 (10.0.0.1): /r, 3 file(s), 3.0 KiB"), std::string::npos) << n;
  EXPECT_NE(n.find("model.pt"), std::string::npos) << n;
  EXPECT_EQ(n.find('\x1b'), std::string::npos) << "control characters are escaped";
  EXPECT_NE(n.find("... and 1 more"), std::string::npos) << n;
  EXPECT_EQ(n.find("n2"), std::string::npos) << "a node without files is not listed";
  EXPECT_EQ(n.find("several nodes"), std::string::npos) << n;
  nodes["node_results"][1]["file_count"] = 1;
  EXPECT_NE(FormatJobResults("j", nodes).find("spread over several nodes"), std::string::npos);

  Json empty = Json::parse(R"({"status": "RUNNING", "results_dir": "/r", "node_results": []})");
  EXPECT_EQ(FormatJobResults("j", empty), "Job j (RUNNING): no results yet in /r (results are listed when a worker exits)\n");
  empty["status"] = "FAILED";
  EXPECT_NE(FormatJobResults("j", empty).find("no results were left in /r"), std::string::npos);
}

TEST(TextHelpersTest, TableAmountsBytes) {
  EXPECT_EQ(FormatTable({{"A", "BB"}, {"ccc", "d"}}), "A    BB\nccc  d\n");
  EXPECT_EQ(FormatAmount(16), "16");
  EXPECT_EQ(FormatAmount(0.5), "0.5");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(64.0 * (1ull << 30)), "64.0 GiB");
  EXPECT_EQ(FormatTimeMs(0), "-");
}

}  // namespace
}  // namespace cohort::cli
