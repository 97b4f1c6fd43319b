// Prometheus end to end: a head and a node agent (`cohort start ...
// --metrics-port N`) run a short job that reports metrics through
// `import cohort`; both /metrics pages are then scraped without a token and
// parsed by a real Prometheus text-format parser (Python's prometheus_client,
// Debian's python3-prometheus-client) in tests/integration/prometheus_check.py.
// Skipped when that parser is not installed.
#include "integration/cluster_harness.h"

namespace cohort::itest {
namespace {

const std::string kSystemPython = "/usr/bin/python3";  // Debian's, with its packages
const std::string kCheck = std::string(COHORT_SOURCE_DIR) + "/tests/integration/prometheus_check.py";

bool HasPrometheusClient() {
  return Sh(ShellQuote(kSystemPython) + " -c 'import prometheus_client'", 30).code == 0;
}

TEST(MetricsTest, HeadAndAgentExposePrometheusText) {
  if (!HasPrometheusClient())
    GTEST_SKIP() << "python3-prometheus-client is not installed for " << kSystemPython
                 << " (scripts/setup installs it); the Prometheus parser test needs it";
  LocalCluster c;
  ASSERT_TRUE(c.StartHead());
  const int metrics_port = FreePort();
  ASSERT_TRUE(c.StartAgent("a1", 2, {"--metrics-port", std::to_string(metrics_port)}));
  const std::string agent_url = "http://127.0.0.1:" + std::to_string(metrics_port) + "/metrics";

  const std::string id = c.Submit(
      {{"entrypoint", "python3 -c 'import cohort; cohort.report(epoch=1, train_loss=0.5)'"}});
  ASSERT_FALSE(id.empty());
  json done = c.WaitStatus(id, "SUCCEEDED", 60s);
  ASSERT_EQ(done.value("status", ""), "SUCCEEDED") << done.dump(2) << "\n" << c.Logs(id);

  // Public: no token needed (Prometheus scrapes without one); the values the
  // trainer reported arrive shortly after (the agent flushes every 100 ms).
  HttpReply head;
  ASSERT_TRUE(WaitFor(
      [&] {
        head = Http("GET", c.url() + "/metrics");
        return head.status == 200 && head.body.find("name=\"train_loss\"} 0.5\n") != std::string::npos;
      },
      20s))
      << head.status << " " << head.error << "\n" << head.body;
  HttpReply agent = Http("GET", agent_url);
  ASSERT_EQ(agent.status, 200) << agent.error;
  EXPECT_NE(agent.body.find("cohort_node_workers_running "), std::string::npos) << agent.body;

  CmdResult check = Sh(ShellQuote(kSystemPython) + " " + ShellQuote(kCheck) + " " + ShellQuote(c.url() + "/metrics") +
                           " " + ShellQuote(agent_url) + " " + ShellQuote(id),
                       60);
  EXPECT_EQ(check.code, 0) << check.out << "\n---- head /metrics:\n"
                           << Http("GET", c.url() + "/metrics").body << "\n---- agent /metrics:\n"
                           << Http("GET", agent_url).body;
  std::printf("%s", check.out.c_str());

  // The head refuses --metrics-port (its /metrics is on the dashboard port).
  CmdResult refused = c.Cli("start --head --block --metrics-port 9999 --state-dir " + ShellQuote(c.dir() + "/x"), 30);
  EXPECT_NE(refused.code, 0);
  EXPECT_NE(refused.out.find("--dashboard-port"), std::string::npos) << refused.out;
}

}  // namespace
}  // namespace cohort::itest
