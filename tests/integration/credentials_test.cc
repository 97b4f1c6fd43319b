// The cluster's two secrets with real processes: the API (admin) token opens
// the HTTP API; the join token lets agents register and fetch packages and
// opens nothing else. Agents that still present the admin token join, with
// one WARN in the head's log. Token files (--token-file, --join-token-file,
// $COHORT_TOKEN_FILE) keep secrets off command lines.
#include <sys/stat.h>

#include "integration/cluster_harness.h"

namespace cohort::itest {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

size_t Occurrences(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The process's command line, NUL separators as spaces.
std::string CommandLine(pid_t pid) {
  std::string s = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  for (char& ch : s)
    if (ch == '\0') ch = ' ';
  return s;
}

// `cohort ARGS` with no token in the environment but `env` (VAR=value ...),
// and a state dir without a token file.
CmdResult Cohort(const LocalCluster& c, const std::string& env, const std::string& args, int timeout_s = 60) {
  return Sh("env -u COHORT_TOKEN -u COHORT_TOKEN_FILE -u COHORT_JOIN_TOKEN_FILE COHORT_STATE_DIR=" +
                ShellQuote(c.dir() + "/cli-state") + " " + env + " " + ShellQuote(kCohort) + " " + args,
            timeout_s);
}

// What the head logs the first time an agent presents the admin token.
const char kAdminTokenWarning[] = "authenticated with the head's API (admin) token";

TEST(CredentialsIntegrationTest, AgentsJoinWithTheJoinTokenWhichTheApiRefuses) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  const std::string join = FirstLine(c.join_token_file());
  ASSERT_FALSE(join.empty());
  EXPECT_NE(join, c.token());
  EXPECT_EQ(fs::status(c.join_token_file()).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  // The start message says where both secrets are, and holds neither.
  // The message is printed as the head starts serving: wait for all of it.
  std::string started;
  WaitFor([&] { return Contains(started = ReadFile(c.dir() + "/head.log"), "Press Ctrl-C"); }, 10s, 20ms);
  EXPECT_TRUE(Contains(started, "API token:          " + c.head_state() + "/token")) << started;
  EXPECT_TRUE(Contains(started, "Join token:         " + c.join_token_file())) << started;
  EXPECT_TRUE(Contains(started, "--join-token-file " + c.join_token_file())) << started;
  EXPECT_FALSE(Contains(started, join)) << started;
  EXPECT_FALSE(Contains(started, c.token())) << started;

  ASSERT_TRUE(c.StartAgent("a1", 1));  // --join-token-file
  EXPECT_FALSE(Contains(CommandLine(c.agent(0).proc->pid()), join));

  // A job whose working dir the agent fetches from the head (GetPackage with
  // the join token).
  const std::string pkg = "/api/packages/gcs/_ray_pkg_0123456789abcdef.zip";
  ASSERT_EQ(c.Put(pkg, MakeZip({{"run.sh", "echo from-package\n"}})).status, 200);
  const std::string id = c.Submit(
      {{"entrypoint", "sh run.sh"}, {"runtime_env", {{"working_dir", "gcs://_ray_pkg_0123456789abcdef.zip"}}}});
  EXPECT_EQ(c.WaitStatus(id, "SUCCEEDED", 30s).value("status", ""), "SUCCEEDED") << c.Logs(id);
  EXPECT_TRUE(Contains(c.Logs(id), "from-package")) << c.Logs(id);

  // The join token opens nothing on the HTTP API.
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/api/jobs/"},
           {"GET", "/api/jobs/" + id},
           {"GET", "/api/jobs/" + id + "/logs"},
           {"GET", "/api/cluster/status"},
           {"POST", "/api/jobs/"},
           {"POST", "/api/jobs/" + id + "/stop"},
           {"DELETE", "/api/jobs/" + id},
           {"GET", pkg}}) {
    auto r = Http(method, c.url() + path, method == "POST" ? R"({"entrypoint":"true"})" : "", join);
    EXPECT_EQ(r.status, 401) << method << " " << path << ": " << r.body;
  }
  EXPECT_EQ(c.Get("/api/jobs/" + id).status, 200);
  auto cli = Cohort(c, "", "job list --address " + c.url() + " --token-file " + ShellQuote(c.join_token_file()));
  EXPECT_NE(cli.code, 0) << cli.out;
  EXPECT_TRUE(Contains(cli.out, "the head refused the token")) << cli.out;

  EXPECT_FALSE(Contains(ReadFile(c.dir() + "/head.log"), kAdminTokenWarning));
}

TEST(CredentialsIntegrationTest, AWrongJoinTokenIsRefusedClearly) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  const std::string wrong = c.dir() + "/wrong_token";
  WriteFile(wrong, "not-the-join-token\n");
  ChildProcess bad;
  ASSERT_TRUE(bad.Start({kCohort, "start", "--address", c.agent_address(), "--block", "--state-dir",
                         c.dir() + "/bad-agent", "--num-cpus", "1", "--join-token-file", wrong},
                        c.dir() + "/bad-agent.log"));
  auto code = bad.ExitCode(30s);
  ASSERT_TRUE(code.has_value()) << "the agent with a wrong join token kept running:\n" << bad.Output();
  EXPECT_NE(*code, 0);
  const std::string out = bad.Output();
  EXPECT_TRUE(Contains(out, "refused this agent: the join token does not match the head's")) << out;
  EXPECT_TRUE(Contains(out, "--join-token-file")) << out;
  EXPECT_TRUE(c.Get("/api/cluster/status").Json()["nodes"].empty());

  // Token files that cannot be used fail at once, before contacting the head.
  const std::string join_flags = "start --address " + c.agent_address() + " --block --state-dir " +
                                 ShellQuote(c.dir() + "/agent-x") + " --num-cpus 1 ";
  auto missing = Cohort(c, "", join_flags + "--join-token-file " + ShellQuote(c.dir() + "/missing"), 20);
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_TRUE(Contains(missing.out, "cannot read --join-token-file " + c.dir() + "/missing: No such file"))
      << missing.out;
  const std::string empty = c.dir() + "/empty_token";
  WriteFile(empty, "\n");
  auto blank = Cohort(c, "", join_flags + "--join-token-file " + ShellQuote(empty), 20);
  EXPECT_EQ(blank.code, 2) << blank.out;
  EXPECT_TRUE(Contains(blank.out, "--join-token-file " + empty + " is empty")) << blank.out;
  auto env_missing = Cohort(c, "COHORT_JOIN_TOKEN_FILE=" + ShellQuote(c.dir() + "/missing"), join_flags, 20);
  EXPECT_EQ(env_missing.code, 2) << env_missing.out;
  EXPECT_TRUE(Contains(env_missing.out, "cannot read $COHORT_JOIN_TOKEN_FILE")) << env_missing.out;
  auto both = Cohort(c, "", join_flags + "--join-token-file " + ShellQuote(wrong) + " --token-file " +
                                ShellQuote(c.head_state() + "/token"), 20);
  EXPECT_EQ(both.code, 2) << both.out;
  EXPECT_TRUE(Contains(both.out, "not both")) << both.out;

  // The join token from $COHORT_JOIN_TOKEN_FILE joins.
  auto env_join = Cohort(c, "COHORT_JOIN_TOKEN_FILE=" + ShellQuote(c.join_token_file()),
                         "start --address " + c.agent_address() + " --state-dir " + ShellQuote(c.dir() + "/env-agent") +
                             " --num-cpus 1 --num-gpus 0",
                         30);
  EXPECT_EQ(env_join.code, 0) << env_join.out;
  EXPECT_TRUE(Contains(env_join.out, "cohort node agent started")) << env_join.out;
  EXPECT_TRUE(WaitFor([&] { return c.Get("/api/cluster/status").Json()["nodes"].size() == 1; }, 10s));
  Sh(ShellQuote(kCohort) + " stop --state-dir " + ShellQuote(c.dir() + "/env-agent"));
}

TEST(CredentialsIntegrationTest, TheAdminTokenStillJoinsWithOneWarning) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  const std::string admin_file = c.head_state() + "/token";
  ASSERT_TRUE(c.StartAgent("a1", 1, {"--token-file", admin_file}));
  ASSERT_TRUE(c.StartAgent("a2", 1, {"--token-file", admin_file}));
  const std::string id = c.Submit({{"entrypoint", "echo legacy"}});
  EXPECT_EQ(c.WaitStatus(id, "SUCCEEDED", 30s).value("status", ""), "SUCCEEDED") << c.Logs(id);
  const std::string log = ReadFile(c.dir() + "/head.log");
  EXPECT_EQ(Occurrences(log, kAdminTokenWarning), 1u) << log;
  const size_t at = log.find(kAdminTokenWarning);
  ASSERT_NE(at, std::string::npos);
  const std::string line = log.substr(log.rfind('\n', at) + 1, log.find('\n', at) - log.rfind('\n', at));
  EXPECT_TRUE(Contains(line, "WARN")) << line;
  EXPECT_TRUE(Contains(line, "join token")) << line;
  EXPECT_FALSE(Contains(log, c.token())) << "the head logged its token";
}

TEST(CredentialsIntegrationTest, TheCliReadsTokenFiles) {
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  const std::string file = c.dir() + "/api_token";
  WriteFile(file, "  " + c.token() + " \r\nsecond line\n");
  ::chmod(file.c_str(), 0600);
  const std::string addr = " --address " + c.url();

  auto list = Cohort(c, "", "job list" + addr + " --token-file " + ShellQuote(file));
  EXPECT_EQ(list.code, 0) << list.out;
  EXPECT_TRUE(Contains(list.out, "No jobs.")) << list.out;
  auto status = Cohort(c, "", "status" + addr + " --token-file " + ShellQuote(file));
  EXPECT_EQ(status.code, 0) << status.out;
  auto env = Cohort(c, "COHORT_TOKEN_FILE=" + ShellQuote(file), "job list" + addr);
  EXPECT_EQ(env.code, 0) << env.out;
  auto submit = Cohort(c, "COHORT_TOKEN_FILE=" + ShellQuote(file), "job submit --no-wait" + addr + " -- true");
  EXPECT_EQ(submit.code, 0) << submit.out;
  auto none = Cohort(c, "", "job list" + addr);  // no token anywhere
  EXPECT_NE(none.code, 0) << none.out;
  EXPECT_TRUE(Contains(none.out, "the head refused the token")) << none.out;

  auto missing = Cohort(c, "", "job list" + addr + " --token-file " + ShellQuote(c.dir() + "/missing"));
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_TRUE(Contains(missing.out, "cohort job list: cannot read --token-file " + c.dir() + "/missing"))
      << missing.out;
  auto status_missing = Cohort(c, "", "status" + addr + " --token-file " + ShellQuote(c.dir() + "/missing"));
  EXPECT_EQ(status_missing.code, 2) << status_missing.out;
  EXPECT_TRUE(Contains(status_missing.out, "cohort status: cannot read --token-file")) << status_missing.out;
  const std::string empty = c.dir() + "/empty";
  WriteFile(empty, "");
  auto blank = Cohort(c, "", "job status x" + addr + " --token-file " + ShellQuote(empty));
  EXPECT_EQ(blank.code, 2) << blank.out;
  EXPECT_TRUE(Contains(blank.out, "--token-file " + empty + " is empty")) << blank.out;
  auto dir = Cohort(c, "", "job list" + addr + " --token-file " + ShellQuote(c.dir()));
  EXPECT_EQ(dir.code, 2) << dir.out;
  EXPECT_TRUE(Contains(dir.out, "is a directory")) << dir.out;
  auto both = Cohort(c, "", "job list" + addr + " --token x --token-file " + ShellQuote(file));
  EXPECT_EQ(both.code, 2) << both.out;
  EXPECT_TRUE(Contains(both.out, "give --token or --token-file, not both")) << both.out;
  auto env_missing = Cohort(c, "COHORT_TOKEN_FILE=" + ShellQuote(c.dir() + "/missing"), "job list" + addr);
  EXPECT_EQ(env_missing.code, 2) << env_missing.out;
  EXPECT_TRUE(Contains(env_missing.out, "cannot read $COHORT_TOKEN_FILE")) << env_missing.out;
  // --token and $COHORT_TOKEN come first.
  auto flag_first = Cohort(c, "COHORT_TOKEN_FILE=" + ShellQuote(c.dir() + "/missing"),
                           "job list" + addr + " --token " + c.token());
  EXPECT_EQ(flag_first.code, 0) << flag_first.out;
}

TEST(CredentialsIntegrationTest, TheHeadTakesItsTokensFromFiles) {
  LocalCluster c;
  const std::string admin = c.dir() + "/admin", join = c.dir() + "/join";
  WriteFile(admin, "admin-secret-0123456789\n");
  WriteFile(join, "join-secret-9876543210\n");
  ASSERT_TRUE(c.StartHead({"--token-file", admin, "--join-token-file", join}));
  EXPECT_FALSE(fs::exists(c.head_state() + "/join_token"));  // given, not created
  // The message is printed as the head starts serving: wait for all of it.
  std::string started;
  WaitFor([&] { return Contains(started = ReadFile(c.dir() + "/head.log"), "Press Ctrl-C"); }, 10s, 20ms);
  EXPECT_TRUE(Contains(started, "API token:          " + admin)) << started;
  EXPECT_TRUE(Contains(started, "Join token:         " + join)) << started;
  EXPECT_EQ(Http("GET", c.url() + "/api/jobs/", "", "admin-secret-0123456789").status, 200);
  EXPECT_EQ(Http("GET", c.url() + "/api/jobs/", "", "join-secret-9876543210").status, 401);

  ChildProcess agent;
  ASSERT_TRUE(agent.Start({kCohort, "start", "--address", c.agent_address(), "--block", "--state-dir",
                           c.dir() + "/a1", "--num-cpus", "1", "--num-gpus", "0", "--join-token-file", join},
                          c.dir() + "/a1.log"));
  EXPECT_TRUE(WaitFor(
      [&] {
        auto r = Http("GET", c.url() + "/api/cluster/status", "", "admin-secret-0123456789");
        return r.status == 200 && r.Json()["nodes"].size() == 1 && r.Json()["nodes"][0].value("state", "") == "ALIVE";
      },
      30s))
      << agent.Output();
  agent.Terminate(5s);

  // Bad head flags fail before anything starts.
  const std::string head_flags = "start --head --block --host 127.0.0.1 --port " + std::to_string(FreePort()) +
                                 " --dashboard-port " + std::to_string(FreePort()) + " --state-dir " +
                                 ShellQuote(c.dir() + "/head2") + " ";
  auto same =
      Cohort(c, "", head_flags + "--token-file " + ShellQuote(admin) + " --join-token-file " + ShellQuote(admin), 20);
  EXPECT_EQ(same.code, 1) << same.out;
  EXPECT_TRUE(Contains(same.out, "the join token is the API token")) << same.out;
  auto missing = Cohort(c, "", head_flags + "--join-token-file " + ShellQuote(c.dir() + "/missing"), 20);
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_TRUE(Contains(missing.out, "cannot read --join-token-file")) << missing.out;
  auto none = Cohort(c, "", head_flags + "--auth none --token-file " + ShellQuote(admin), 20);
  EXPECT_EQ(none.code, 2) << none.out;
}

// `cohort run`: the embedded agent joins with the join token (no warning on
// the terminal, where the embedded head's warnings go).
TEST(CredentialsIntegrationTest, CohortRunJoinsWithTheJoinToken) {
  LocalCluster c;
  auto run = Cohort(c, "", "run --dashboard-port 0 --num-cpus 1 --state-dir " + ShellQuote(c.dir() + "/run") +
                               " -- echo embedded-ok",
                    120);
  EXPECT_EQ(run.code, 0) << run.out;
  EXPECT_TRUE(Contains(run.out, "embedded-ok")) << run.out;
  EXPECT_FALSE(Contains(run.out, kAdminTokenWarning)) << run.out;
  EXPECT_TRUE(fs::exists(c.dir() + "/run/head/join_token"));
}

}  // namespace
}  // namespace cohort::itest
