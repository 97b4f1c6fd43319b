// The Prometheus exposition writer: exact text, escaping, cumulative
// histogram buckets, value formatting, name rules; the histogram; /proc.
#include "cohort/common/prometheus.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <thread>

namespace cohort::prom {
namespace {

TEST(PrometheusWriter, ExactTextForASmallExample) {
  Writer w;
  ASSERT_TRUE(w.Family("cohort_jobs", Type::kGauge, "Jobs by status."));
  EXPECT_TRUE(w.Sample({{"status", "RUNNING"}}, 2));
  EXPECT_TRUE(w.Sample({{"status", "FAILED"}}, 0));
  ASSERT_TRUE(w.Family("cohort_jobs_submitted_total", Type::kCounter, "Jobs submitted."));
  EXPECT_TRUE(w.Sample({}, 7));
  ASSERT_TRUE(w.Family("cohort_wait_seconds", Type::kHistogram, "Waits."));
  HistogramData h;
  h.bounds = {0.5, 1, 2.5};
  h.counts = {1, 0, 2, 1};  // 0.5 | (0.5,1] | (1,2.5] | above
  h.sum = 9.25;
  h.count = 4;
  EXPECT_TRUE(w.Histogram({{"kind", "a"}}, h));
  EXPECT_EQ(w.text(),
            "# HELP cohort_jobs Jobs by status.\n"
            "# TYPE cohort_jobs gauge\n"
            "cohort_jobs{status=\"RUNNING\"} 2\n"
            "cohort_jobs{status=\"FAILED\"} 0\n"
            "# HELP cohort_jobs_submitted_total Jobs submitted.\n"
            "# TYPE cohort_jobs_submitted_total counter\n"
            "cohort_jobs_submitted_total 7\n"
            "# HELP cohort_wait_seconds Waits.\n"
            "# TYPE cohort_wait_seconds histogram\n"
            "cohort_wait_seconds_bucket{kind=\"a\",le=\"0.5\"} 1\n"
            "cohort_wait_seconds_bucket{kind=\"a\",le=\"1\"} 1\n"
            "cohort_wait_seconds_bucket{kind=\"a\",le=\"2.5\"} 3\n"
            "cohort_wait_seconds_bucket{kind=\"a\",le=\"+Inf\"} 4\n"
            "cohort_wait_seconds_sum{kind=\"a\"} 9.25\n"
            "cohort_wait_seconds_count{kind=\"a\"} 4\n");
}

TEST(PrometheusWriter, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeLabelValue("plain {}=,"), "plain {}=,");
  EXPECT_EQ(EscapeHelp("x\\y \"q\"\nz"), "x\\\\y \"q\"\\nz");
  Writer w;
  ASSERT_TRUE(w.Family("m", Type::kGauge, "line one\nline \\two"));
  ASSERT_TRUE(w.Sample({{"job", "we\"ird\\id\n"}, {"rank", "0"}}, 1.5));
  EXPECT_EQ(w.text(),
            "# HELP m line one\\nline \\\\two\n"
            "# TYPE m gauge\n"
            "m{job=\"we\\\"ird\\\\id\\n\",rank=\"0\"} 1.5\n");
}

TEST(PrometheusWriter, FormatsValues) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(-0.0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(25276510208.0), "25276510208");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(0.005), "0.005");
  EXPECT_EQ(FormatValue(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatValue(1e-7), "1e-07");
  EXPECT_EQ(FormatValue(1e300), "1e+300");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  for (double v : {0.1, 1.0 / 3, 2.5e-9, 123456.789, 1e21, -7.25})
    EXPECT_EQ(std::strtod(FormatValue(v).c_str(), nullptr), v) << FormatValue(v);
}

TEST(PrometheusWriter, NameRules) {
  EXPECT_TRUE(ValidMetricName("cohort_jobs"));
  EXPECT_TRUE(ValidMetricName("a:b_c9"));
  EXPECT_TRUE(ValidMetricName(":x"));
  EXPECT_FALSE(ValidMetricName(""));
  EXPECT_FALSE(ValidMetricName("9lives"));
  EXPECT_FALSE(ValidMetricName("train-loss"));
  EXPECT_FALSE(ValidMetricName("a b"));
  EXPECT_TRUE(ValidLabelName("job"));
  EXPECT_TRUE(ValidLabelName("_x1"));
  EXPECT_FALSE(ValidLabelName("__name__"));
  EXPECT_FALSE(ValidLabelName("a:b"));
  EXPECT_FALSE(ValidLabelName("1a"));
  EXPECT_FALSE(ValidLabelName(""));

  Writer w;
  EXPECT_FALSE(w.Family("bad-name", Type::kGauge, "x"));
  EXPECT_FALSE(w.Sample({}, 1)) << "samples of a refused family are dropped";
  EXPECT_FALSE(w.Family("jobs_submitted", Type::kCounter, "a counter must end in _total"));
  EXPECT_TRUE(w.Family("ok", Type::kGauge, "x"));
  EXPECT_FALSE(w.Sample({{"bad-label", "v"}}, 1));
  EXPECT_FALSE(w.Sample({{"a", "1"}, {"a", "2"}}, 1)) << "repeated label";
  EXPECT_FALSE(w.Histogram({}, HistogramData{{}, {0}, 0, 0})) << "not a histogram family";
  EXPECT_FALSE(w.Family("ok", Type::kGauge, "again")) << "a family is written once";
  EXPECT_TRUE(w.Family("h_seconds", Type::kHistogram, "x"));
  EXPECT_FALSE(w.Sample({}, 1)) << "a histogram takes Histogram()";
  EXPECT_FALSE(w.Histogram({{"le", "1"}}, HistogramData{{}, {0}, 0, 0})) << "le is reserved";
  EXPECT_FALSE(w.Histogram({}, HistogramData{{1}, {0}, 0, 0})) << "counts must be bounds + 1";
  EXPECT_EQ(w.text(),
            "# HELP ok x\n# TYPE ok gauge\n"
            "# HELP h_seconds x\n# TYPE h_seconds histogram\n");
}

TEST(PrometheusHistogram, BucketsAreCumulativeWithLeSemantics) {
  Histogram h({2.5, 0.5, 1, 1, std::numeric_limits<double>::infinity()});  // sorted, unique, finite
  for (double v : {0.1, 0.5, 0.7, 1.0, 2.0, 100.0}) h.Observe(v);
  h.Observe(std::nan(""));  // ignored
  HistogramData d = h.Snapshot();
  EXPECT_EQ(d.bounds, (std::vector<double>{0.5, 1, 2.5}));
  EXPECT_EQ(d.counts, (std::vector<uint64_t>{2, 2, 1, 1}));  // 0.5 is in le="0.5"
  EXPECT_EQ(d.count, 6u);
  EXPECT_NEAR(d.sum, 104.3, 1e-9);
  Writer w;
  ASSERT_TRUE(w.Family("x_seconds", Type::kHistogram, "x"));
  ASSERT_TRUE(w.Histogram({}, d));
  EXPECT_NE(w.text().find("x_seconds_bucket{le=\"0.5\"} 2\n"), std::string::npos) << w.text();
  EXPECT_NE(w.text().find("x_seconds_bucket{le=\"1\"} 4\n"), std::string::npos) << w.text();
  EXPECT_NE(w.text().find("x_seconds_bucket{le=\"2.5\"} 5\n"), std::string::npos) << w.text();
  EXPECT_NE(w.text().find("x_seconds_bucket{le=\"+Inf\"} 6\n"), std::string::npos) << w.text();
  EXPECT_NE(w.text().find("x_seconds_count 6\n"), std::string::npos) << w.text();
  auto latency = Histogram::LatencyBuckets();
  EXPECT_TRUE(std::is_sorted(latency.begin(), latency.end()));
}

TEST(PrometheusHistogram, ObserveIsThreadSafe) {
  Histogram h(Histogram::LatencyBuckets());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&h] {
      for (int i = 0; i < 10000; ++i) h.Observe(0.001 * (i % 100));
    });
  for (auto& t : threads) t.join();
  HistogramData d = h.Snapshot();
  EXPECT_EQ(d.count, 40000u);
  uint64_t total = 0;
  for (auto c : d.counts) total += c;
  EXPECT_EQ(total, 40000u);
}

TEST(PrometheusProc, ProcessStatsAreSane) {
  ProcessStats s = ReadProcessStats();
  EXPECT_GT(s.resident_memory_bytes, 1 << 20);
  EXPECT_GE(s.virtual_memory_bytes, s.resident_memory_bytes);
  EXPECT_GE(s.open_fds, 3);  // stdin, stdout, stderr
  const double before = s.open_fds;
  int fd = ::dup(1);
  EXPECT_EQ(ReadProcessStats().open_fds, before + 1);
  ::close(fd);
  EXPECT_GT(s.max_fds, 0);
  EXPECT_GE(s.cpu_seconds, 0);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_GT(s.start_time_seconds, now - 3600);
  EXPECT_LE(s.start_time_seconds, now + 2);
  Writer w;
  WriteProcessFamilies(w, s);
  for (const char* name : {"process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total",
                           "process_start_time_seconds", "process_max_fds", "process_virtual_memory_bytes"})
    EXPECT_NE(w.text().find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
}

TEST(PrometheusProc, HostCpuAndMemory) {
  auto a = ReadHostCpuSeconds();
  ASSERT_GE(a.size(), 4u);
  EXPECT_EQ(a[0].first, "user");
  EXPECT_EQ(a[3].first, "idle");
  // Burn some CPU so that at least one tick passes.
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(60);
  volatile double x = 0;
  while (std::chrono::steady_clock::now() < end) x = x + 1;
  auto b = ReadHostCpuSeconds();
  const double r = CpuBusyRatio(a, b);
  ASSERT_FALSE(std::isnan(r));
  EXPECT_GE(r, 0);
  EXPECT_LE(r, 1);
  EXPECT_TRUE(std::isnan(CpuBusyRatio(b, b)));
  EXPECT_DOUBLE_EQ(CpuBusyRatio({{"user", 1}, {"idle", 1}}, {{"user", 4}, {"idle", 2}}), 0.75);
  HostMemory m = ReadHostMemory();
  EXPECT_GT(m.total_bytes, 0);
  EXPECT_GT(m.available_bytes, 0);
  EXPECT_LE(m.available_bytes, m.total_bytes);
}

}  // namespace
}  // namespace cohort::prom
