// The head keeps serving whatever clients, agents and jobs throw at it:
// real `cohort start` processes on loopback. Each test fires hostile input,
// then checks that /api/health answers and that an ordinary job still runs
// to SUCCEEDED. The first three are the regressions of the observations that
// opened this work: nested JSON killed the head; a results file whose name is
// not UTF-8 killed it and the saved state killed every restart; every job's
// environment held the cluster's admin token.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "integration/cluster_harness.h"

namespace cohort::itest {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The head is healthy and an ordinary job still succeeds.
void ExpectStillServing(LocalCluster& c) {
  auto health = Http("GET", c.url() + "/api/health");
  ASSERT_EQ(health.status, 200) << health.body << health.error;
  ASSERT_TRUE(c.head().running());
  const std::string id = c.Submit({{"entrypoint", "echo still-here"}});
  json d = c.WaitStatus(id, "SUCCEEDED", 30s);
  EXPECT_EQ(d.value("status", ""), "SUCCEEDED") << d.dump();
}

TEST(HostileInputTest, DeeplyNestedJsonIsRefusedWith400) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));
  for (const std::string& body : {std::string(300000, '['), "{\"entrypoint\":\"true\",\"metadata\":" +
                                                                std::string(100000, '[') + std::string(100000, ']') +
                                                                "}",
                                  "{\"entrypoint\":\"true\",\"runtime_env\":{\"env_vars\":" +
                                      std::string(5000, '{') + "}}"}) {
    auto r = c.Post("/api/jobs/", body);
    EXPECT_EQ(r.status, 400) << r.body.substr(0, 300) << r.error;
    EXPECT_TRUE(Contains(r.body, "nested deeper than 64")) << r.body.substr(0, 300);
  }
  // Wrong types, invalid UTF-8, numbers out of range: 400 each.
  for (const std::string& body :
       {std::string(R"({"entrypoint": 12})"), std::string("{\"entrypoint\": \"echo \xff\xfe\"}"),
        std::string(R"({"entrypoint": "true", "scaling": {"num_workers": 1e300}})"),
        std::string(R"({"entrypoint": "true", "scaling": {"num_workers": -5}})"),
        std::string(R"({"entrypoint": "true", "entrypoint_num_cpus": "many"})"),
        std::string(R"({"entrypoint": "true", "submission_id": "../../etc"})"),
        std::string(R"({"entrypoint": "true", "runtime_env": {"env_vars": {"A": 1}}})")}) {
    auto r = c.Post("/api/jobs/", body);
    EXPECT_GE(r.status, 400) << body;
    EXPECT_LT(r.status, 500) << body << " -> " << r.body;
  }
  ExpectStillServing(c);
}

TEST(HostileInputTest, AResultsFileNamedWithInvalidUtf8NeitherKillsTheHeadNorItsRestart) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));
  const std::string results = c.dir() + "/bucket";
  // printf writes the raw bytes 0xff 0xfe into the file name.
  const std::string id = c.Submit(
      {{"entrypoint", "mkdir -p '" + results + "' && printf x > \"" + results + "/$(printf 'model\\377\\376.pt')\""},
       {"results_uri", "file://" + results}});
  json d = c.WaitStatus(id, "SUCCEEDED", 30s);
  ASSERT_EQ(d.value("status", ""), "SUCCEEDED") << d.dump();
  ASSERT_EQ(d["results"].size(), 1u) << d.dump();
  EXPECT_TRUE(Contains(d["results"][0]["uri"].get<std::string>(), "model\xEF\xBF\xBD"));
  ExpectStillServing(c);
  // kill -9 and restart on the same state: it loads and serves the record.
  c.head().Kill();
  ASSERT_TRUE(c.StartHead());
  EXPECT_EQ(c.Status(id), "SUCCEEDED");
  EXPECT_EQ(c.Get("/api/jobs/").status, 200);
}

TEST(HostileInputTest, JobsNeverSeeTheAdminTokenAndTheirOwnTokenReadsOnlyTheirJob) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));
  const std::string other = c.Submit({{"entrypoint", "sleep 30"}, {"runtime_env", {{"env_vars", {{"K", "v"}}}}}});
  const std::string id = c.Submit({{"entrypoint", "env"}});
  ASSERT_EQ(c.WaitStatus(id, "SUCCEEDED", 30s).value("status", ""), "SUCCEEDED");
  const std::string env = c.Logs(id);
  ASSERT_FALSE(c.token().empty());
  EXPECT_FALSE(Contains(env, c.token())) << "the admin token reached a job's environment";
  const size_t at = env.find("COHORT_JOB_TOKEN=");
  ASSERT_NE(at, std::string::npos) << env;
  const std::string job_token = env.substr(at + 17, env.find('\n', at) - at - 17);
  // Reads its own job, logs and metrics; nothing else, and cannot act.
  EXPECT_EQ(Http("GET", c.url() + "/api/jobs/" + id, "", job_token).status, 200);
  EXPECT_EQ(Http("GET", c.url() + "/api/jobs/" + id + "/logs", "", job_token).status, 200);
  EXPECT_EQ(Http("GET", c.url() + "/api/jobs/" + id + "/metrics", "", job_token).status, 200);
  EXPECT_EQ(Http("GET", c.url() + "/api/jobs/" + other, "", job_token).status, 401);
  EXPECT_EQ(Http("GET", c.url() + "/api/jobs/", "", job_token).status, 401);
  EXPECT_EQ(Http("POST", c.url() + "/api/jobs/" + other + "/stop", "", job_token).status, 401);
  EXPECT_EQ(Http("POST", c.url() + "/api/jobs/", R"({"entrypoint":"true"})", job_token).status, 401);
  EXPECT_EQ(Http("GET", c.url() + "/api/cluster/status", "", job_token).status, 401);
  EXPECT_EQ(c.Status(other), "RUNNING");
  ASSERT_EQ(c.Post("/api/jobs/" + other + "/stop", "").status, 200);
}

TEST(HostileInputTest, JobOutputThatIsNotTextIsServedAsValidJson) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));
  // Binary log bytes and report lines that are not JSON, too deep, or not UTF-8.
  const std::string script =
      "head -c 3000 /dev/urandom; echo; "
      "printf '%s\\n' 'not json' '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]' "
      "'{\"rank\":\"x\",\"time\":\"y\",\"loss\":1}' >> \"$COHORT_REPORT_PATH\"; "
      "printf '{\"k\\377\":2}\\n' >> \"$COHORT_REPORT_PATH\"; sleep 1";
  const std::string id = c.Submit({{"entrypoint", script}});
  json d = c.WaitStatus(id, "SUCCEEDED", 30s);
  ASSERT_EQ(d.value("status", ""), "SUCCEEDED") << d.dump();
  auto logs = c.Get("/api/jobs/" + id + "/logs");
  ASSERT_EQ(logs.status, 200);
  EXPECT_TRUE(logs.Json().is_object()) << "logs must be valid JSON whatever the job printed";
  auto metrics = c.Get("/api/jobs/" + id + "/metrics");
  ASSERT_EQ(metrics.status, 200);
  ASSERT_TRUE(metrics.Json().is_object()) << metrics.body;
  EXPECT_LE(metrics.Json()["metrics"].size(), 2u);
  ExpectStillServing(c);
}

// A TCP connection to 127.0.0.1:port from source address `from` (another
// loopback address is another client to the head's per-client cap); -1 when
// refused.
int ConnectFrom(const char* from, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  ::inet_pton(AF_INET, from, &src.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
    ::close(fd);
    return -1;
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(HostileInputTest, HostileHttpClientsDoNotStarveOthers) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  ASSERT_TRUE(c.StartAgent("a1", 2));
  // 500 idle connections from one client: over its cap (64) they are
  // refused, and every other client is still served.
  std::vector<int> idle;
  for (int i = 0; i < 500; ++i)
    if (int fd = ConnectFrom("127.0.0.2", c.dashboard_port()); fd >= 0) idle.push_back(fd);
  ASSERT_GT(idle.size(), 64u);
  auto ok = c.Get("/api/jobs/");
  EXPECT_EQ(ok.status, 200) << ok.error;
  // A large body without a token: 401 before the body is read.
  const auto t0 = std::chrono::steady_clock::now();
  auto unauth = Http("POST", c.url() + "/api/jobs/", std::string(8 << 20, 'x'));
  EXPECT_TRUE(unauth.status == 401 || unauth.status == 0) << unauth.status;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  // A public route takes only small bodies.
  EXPECT_EQ(Http("POST", c.url() + "/api/version", std::string(1 << 20, 'x')).status, 413);
  for (int fd : idle) ::close(fd);
  ExpectStillServing(c);
}

}  // namespace
}  // namespace cohort::itest
