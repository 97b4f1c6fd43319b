// Prometheus text exposition (format 0.0.4): a small writer, a fixed-bucket
// histogram, and this process's (and host's) /proc statistics.
//
// Not a metrics registry: whoever serves /metrics gathers its numbers when
// scraped and writes them with a Writer, family by family:
//
//   prom::Writer w;
//   w.Family("cohort_jobs", prom::Type::kGauge, "Jobs by status.");
//   w.Sample({{"status", "RUNNING"}}, 3);
//   w.Family("cohort_job_submit_to_running_seconds", prom::Type::kHistogram, "...");
//   w.Histogram({}, histogram.Snapshot());
//   std::string body = w.Take();   // Content-Type: prom::kContentType
//
// Output rules (https://prometheus.io/docs/instrumenting/exposition_formats/):
//   - every family starts with "# HELP name text" and "# TYPE name type";
//     help text escapes '\' and newline, label values escape '\', '"' and
//     newline;
//   - metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
//     [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__"; a counter's name ends
//     in "_total"; "le" is not a user label of a histogram. A family with an
//     invalid name, or a sample with an invalid label name, is left out (and
//     Family/Sample return false) -- a scrape never breaks because of one bad
//     series;
//   - values: integers without exponent up to 2^53, others in the shortest
//     form that reads back exactly, "NaN", "+Inf", "-Inf";
//   - histograms: cumulative "_bucket" samples with le="<bound>" in ascending
//     order ending with le="+Inf", then "_sum" and "_count".
//
// Thread-compatible (Writer), thread-safe (Histogram); torch- and boost-free.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cohort::prom {

inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

enum class Type { kCounter, kGauge, kHistogram, kUntyped };
std::string_view TypeName(Type type);  // "counter", "gauge", "histogram", "untyped"

// Label name -> value, written in this order.
using Labels = std::vector<std::pair<std::string, std::string>>;

bool ValidMetricName(std::string_view name);
bool ValidLabelName(std::string_view name);
// '\' -> "\\", '"' -> "\"", newline -> "\n" (for label values).
std::string EscapeLabelValue(std::string_view value);
// '\' -> "\\", newline -> "\n" (for HELP text).
std::string EscapeHelp(std::string_view help);
std::string FormatValue(double value);

// A histogram's state: non-cumulative counts per bucket. counts has
// bounds.size() + 1 entries, the last one for values above every bound.
struct HistogramData {
  std::vector<double> bounds;  // ascending, finite
  std::vector<uint64_t> counts;
  double sum = 0;
  uint64_t count = 0;
};

class Writer {
 public:
  // Starts a family (HELP + TYPE lines). False, and the family's samples are
  // dropped, when the name is invalid (see the rules above) or was written
  // already.
  bool Family(std::string_view name, Type type, std::string_view help);
  // A sample of the current counter, gauge or untyped family:
  // name{labels} value. False (nothing written) without a valid current
  // family of one of those types, or with an invalid or repeated label name.
  bool Sample(const Labels& labels, double value);
  // The samples of the current histogram family.
  bool Histogram(const Labels& labels, const HistogramData& data);

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  bool LabelsValid(const Labels& labels, bool histogram) const;
  void Line(std::string_view suffix, const Labels& labels, const std::pair<std::string, std::string>* extra,
            double value);

  std::string out_;
  std::string name_;  // current family; empty when none or invalid
  Type type_ = Type::kUntyped;
  std::vector<std::string> families_;
};

// Fixed buckets chosen at construction; Observe from any thread.
class Histogram {
 public:
  // `bounds` are sorted and made unique; non-finite ones are dropped.
  explicit Histogram(std::vector<double> bounds);
  // Latency buckets in seconds: 5 ms ... 1 h.
  static std::vector<double> LatencyBuckets();

  void Observe(double value);  // NaN is ignored
  HistogramData Snapshot() const;

 private:
  mutable std::mutex mu_;
  HistogramData data_;  // GUARDED_BY(mu_)
};

// --- this process (/proc/self) -----------------------------------------------------

struct ProcessStats {
  double resident_memory_bytes = 0;
  double virtual_memory_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;             // RLIMIT_NOFILE soft limit
  double cpu_seconds = 0;         // user + system
  double start_time_seconds = 0;  // unix time
};
// Fields that cannot be read stay 0.
ProcessStats ReadProcessStats();
// The standard process_* families (as the official clients name them):
// process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_cpu_seconds_total,
// process_start_time_seconds.
void WriteProcessFamilies(Writer& w, const ProcessStats& stats);

// --- GPUs ------------------------------------------------------------------------

struct GpuGauge {
  Labels labels;                    // e.g. {{"node", id}, {"gpu", "0"}, {"model", "NVIDIA H200"}}
  double utilization_percent = -1;  // < 0: unknown, no sample
  double memory_used_bytes = -1;
  double memory_total_bytes = -1;
};
// cohort_node_gpu_utilization_percent, cohort_node_gpu_memory_used_bytes and
// cohort_node_gpu_memory_total_bytes, one sample per GPU whose value is known.
void WriteGpuFamilies(Writer& w, const std::vector<GpuGauge>& gpus);

// --- this machine (/proc/stat, /proc/meminfo) ------------------------------------------

// The "cpu" line of /proc/stat in seconds per mode (user, nice, system, idle,
// iowait, irq, softirq, steal); empty when unreadable.
std::vector<std::pair<std::string, double>> ReadHostCpuSeconds();
// Busy fraction (0..1) between two ReadHostCpuSeconds() readings (idle and
// iowait count as not busy); NaN when no time passed.
double CpuBusyRatio(const std::vector<std::pair<std::string, double>>& before,
                    const std::vector<std::pair<std::string, double>>& after);

struct HostMemory {
  double total_bytes = 0;      // MemTotal
  double available_bytes = 0;  // MemAvailable
};
HostMemory ReadHostMemory();  // zeros when unreadable

}  // namespace cohort::prom
