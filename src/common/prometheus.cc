// Prometheus text exposition writer, histogram and /proc readers; see
// cohort/common/prometheus.h.
#include "cohort/common/prometheus.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace cohort::prom {
namespace {

bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string ReadWholeFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double ClockTicksPerSecond() {
  const long t = ::sysconf(_SC_CLK_TCK);
  return t > 0 ? static_cast<double>(t) : 100.0;
}

// btime from /proc/stat: the boot time in unix seconds (0 when unknown).
double BootTimeSeconds() {
  std::istringstream in(ReadWholeFile("/proc/stat"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("btime ", 0) == 0) return std::strtod(line.c_str() + 6, nullptr);
  return 0;
}

}  // namespace

std::string_view TypeName(Type type) {
  switch (type) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
    case Type::kUntyped:
      break;
  }
  return "untyped";
}

bool ValidMetricName(std::string_view name) {
  if (name.empty() || !(IsNameStart(name[0]) || name[0] == ':')) return false;
  for (char c : name)
    if (!(IsNameStart(c) || IsDigit(c) || c == ':')) return false;
  return true;
}

bool ValidLabelName(std::string_view name) {
  if (name.empty() || !IsNameStart(name[0]) || name.rfind("__", 0) == 0) return false;
  for (char c : name)
    if (!(IsNameStart(c) || IsDigit(c))) return false;
  return true;
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[40];
  if (value == std::trunc(value) && std::fabs(value) <= 9007199254740992.0) {  // 2^53
    std::snprintf(buf, sizeof(buf), "%.0f", value == 0 ? 0.0 : value);  // no "-0"
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  return buf;
}

// ---------------------------------------------------------------------------
// Writer

bool Writer::Family(std::string_view name, Type type, std::string_view help) {
  name_.clear();
  type_ = type;
  if (!ValidMetricName(name)) return false;
  if (type == Type::kCounter && !EndsWith(name, "_total")) return false;
  if (std::find(families_.begin(), families_.end(), name) != families_.end()) return false;
  families_.emplace_back(name);
  name_ = std::string(name);
  out_ += "# HELP ";
  out_ += name_;
  out_ += ' ';
  out_ += EscapeHelp(help);
  out_ += "\n# TYPE ";
  out_ += name_;
  out_ += ' ';
  out_ += TypeName(type);
  out_ += '\n';
  return true;
}

bool Writer::LabelsValid(const Labels& labels, bool histogram) const {
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& n = labels[i].first;
    if (!ValidLabelName(n) || (histogram && n == "le")) return false;
    for (size_t j = 0; j < i; ++j)
      if (labels[j].first == n) return false;
  }
  return true;
}

void Writer::Line(std::string_view suffix, const Labels& labels,
                  const std::pair<std::string, std::string>* extra, double value) {
  out_ += name_;
  out_ += suffix;
  if (!labels.empty() || extra != nullptr) {
    out_ += '{';
    bool first = true;
    auto add = [&](const std::pair<std::string, std::string>& l) {
      if (!first) out_ += ',';
      first = false;
      out_ += l.first;
      out_ += "=\"";
      out_ += EscapeLabelValue(l.second);
      out_ += '"';
    };
    for (const auto& l : labels) add(l);
    if (extra != nullptr) add(*extra);
    out_ += '}';
  }
  out_ += ' ';
  out_ += FormatValue(value);
  out_ += '\n';
}

bool Writer::Sample(const Labels& labels, double value) {
  if (name_.empty() || type_ == Type::kHistogram || !LabelsValid(labels, false)) return false;
  Line("", labels, nullptr, value);
  return true;
}

bool Writer::Histogram(const Labels& labels, const HistogramData& data) {
  if (name_.empty() || type_ != Type::kHistogram || !LabelsValid(labels, true) ||
      data.counts.size() != data.bounds.size() + 1)
    return false;
  uint64_t cumulative = 0;
  std::pair<std::string, std::string> le{"le", ""};
  for (size_t i = 0; i < data.bounds.size(); ++i) {
    cumulative += data.counts[i];
    le.second = FormatValue(data.bounds[i]);
    Line("_bucket", labels, &le, static_cast<double>(cumulative));
  }
  cumulative += data.counts.back();
  le.second = "+Inf";
  Line("_bucket", labels, &le, static_cast<double>(cumulative));
  Line("_sum", labels, nullptr, data.sum);
  Line("_count", labels, nullptr, static_cast<double>(cumulative));
  return true;
}

// ---------------------------------------------------------------------------
// Histogram

Histogram::Histogram(std::vector<double> bounds) {
  bounds.erase(std::remove_if(bounds.begin(), bounds.end(), [](double b) { return !std::isfinite(b); }),
               bounds.end());
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  data_.bounds = std::move(bounds);
  data_.counts.assign(data_.bounds.size() + 1, 0);
}

std::vector<double> Histogram::LatencyBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // The first bucket whose bound is >= value (le: "less than or equal").
  std::lock_guard<std::mutex> lock(mu_);
  const size_t i = static_cast<size_t>(
      std::lower_bound(data_.bounds.begin(), data_.bounds.end(), value) - data_.bounds.begin());
  ++data_.counts[i];
  data_.sum += value;
  ++data_.count;
}

HistogramData Histogram::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_;
}

// ---------------------------------------------------------------------------
// /proc

ProcessStats ReadProcessStats() {
  ProcessStats s;
  // /proc/self/stat: "pid (comm) state ppid ..."; comm may hold spaces and
  // parentheses, so fields are counted from the last ')'.
  const std::string stat = ReadWholeFile("/proc/self/stat");
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream in(stat.substr(close + 1));
    std::vector<std::string> f;  // f[0] is field 3 (state)
    std::string tok;
    while (in >> tok) f.push_back(tok);
    auto field = [&](size_t n) { return n - 3 < f.size() ? std::strtod(f[n - 3].c_str(), nullptr) : 0.0; };
    const double ticks = ClockTicksPerSecond();
    s.cpu_seconds = (field(14) + field(15)) / ticks;
    const double boot = BootTimeSeconds();
    if (boot > 0) s.start_time_seconds = boot + field(22) / ticks;
    s.virtual_memory_bytes = field(23);
    const long page = ::sysconf(_SC_PAGESIZE);
    s.resident_memory_bytes = field(24) * static_cast<double>(page > 0 ? page : 4096);
  }
  if (DIR* d = ::opendir("/proc/self/fd")) {
    const std::string own = std::to_string(::dirfd(d));
    double n = 0;
    while (const dirent* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      if (name == "." || name == ".." || name == own) continue;
      ++n;
    }
    ::closedir(d);
    s.open_fds = n;
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    s.max_fds = static_cast<double>(rl.rlim_cur);
  return s;
}

void WriteGpuFamilies(Writer& w, const std::vector<GpuGauge>& gpus) {
  if (gpus.empty()) return;
  struct Field {
    const char* name;
    const char* help;
    double GpuGauge::*value;
  };
  const Field fields[] = {
      {"cohort_node_gpu_utilization_percent",
       "Share of the last sample period (0-100) in which a kernel ran on the GPU (NVML).",
       &GpuGauge::utilization_percent},
      {"cohort_node_gpu_memory_used_bytes", "GPU memory in use, every process together (NVML).",
       &GpuGauge::memory_used_bytes},
      {"cohort_node_gpu_memory_total_bytes", "GPU memory in all (NVML).", &GpuGauge::memory_total_bytes},
  };
  for (const Field& f : fields) {
    bool any = false;
    for (const GpuGauge& g : gpus) any = any || (g.*f.value >= 0 && std::isfinite(g.*f.value));
    if (!any || !w.Family(f.name, Type::kGauge, f.help)) continue;
    for (const GpuGauge& g : gpus)
      if (g.*f.value >= 0 && std::isfinite(g.*f.value)) w.Sample(g.labels, g.*f.value);
  }
}

void WriteProcessFamilies(Writer& w, const ProcessStats& s) {
  if (w.Family("process_resident_memory_bytes", Type::kGauge, "Resident memory size in bytes.")) w.Sample({}, s.resident_memory_bytes);
  if (w.Family("process_virtual_memory_bytes", Type::kGauge, "Virtual memory size in bytes.")) w.Sample({}, s.virtual_memory_bytes);
  if (w.Family("process_open_fds", Type::kGauge, "Number of open file descriptors.")) w.Sample({}, s.open_fds);
  if (w.Family("process_max_fds", Type::kGauge, "Maximum number of open file descriptors.")) w.Sample({}, s.max_fds);
  if (w.Family("process_cpu_seconds_total", Type::kCounter, "Total user and system CPU time spent in seconds."))
    w.Sample({}, s.cpu_seconds);
  if (w.Family("process_start_time_seconds", Type::kGauge, "Start time of the process since unix epoch in seconds."))
    w.Sample({}, s.start_time_seconds);
}

std::vector<std::pair<std::string, double>> ReadHostCpuSeconds() {
  std::vector<std::pair<std::string, double>> out;
  std::istringstream in(ReadWholeFile("/proc/stat"));
  std::string line;
  if (!std::getline(in, line) || line.rfind("cpu ", 0) != 0) return out;
  std::istringstream fields(line.substr(4));
  const double ticks = ClockTicksPerSecond();
  // guest and guest_nice are already counted in user and nice.
  for (const char* mode : {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}) {
    double v = 0;
    if (!(fields >> v)) break;
    out.emplace_back(mode, v / ticks);
  }
  return out;
}

double CpuBusyRatio(const std::vector<std::pair<std::string, double>>& before,
                    const std::vector<std::pair<std::string, double>>& after) {
  double total = 0, idle = 0;
  for (const auto& [mode, v] : after) {
    double prev = 0;
    for (const auto& [m, p] : before)
      if (m == mode) prev = p;
    const double d = std::max(0.0, v - prev);
    total += d;
    if (mode == "idle" || mode == "iowait") idle += d;
  }
  if (total <= 0) return std::nan("");
  return std::clamp((total - idle) / total, 0.0, 1.0);
}

HostMemory ReadHostMemory() {
  HostMemory m;
  std::istringstream in(ReadWholeFile("/proc/meminfo"));
  std::string line;
  auto kib = [](const std::string& l) { return std::strtod(l.c_str() + l.find(':') + 1, nullptr) * 1024.0; };
  while (std::getline(in, line)) {
    if (line.rfind("MemTotal:", 0) == 0) m.total_bytes = kib(line);
    else if (line.rfind("MemAvailable:", 0) == 0) m.available_bytes = kib(line);
  }
  return m;
}

}  // namespace cohort::prom
