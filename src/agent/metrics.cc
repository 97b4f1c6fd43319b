// The node agent's /metrics text; see cohort/agent/metrics.h.
#include "cohort/agent/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "cohort/common/prometheus.h"

namespace cohort::agent {

using prom::Type;

NodeMetrics::NodeMetrics(const Agent& agent)
    : agent_(agent), last_cpu_(prom::ReadHostCpuSeconds()), last_busy_(std::nan("")) {}

std::string NodeMetrics::Text() {
  std::vector<std::pair<std::string, double>> cpu = prom::ReadHostCpuSeconds();
  double busy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy = prom::CpuBusyRatio(last_cpu_, cpu);
    if (std::isnan(busy)) {
      busy = last_busy_;  // no tick since the last scrape: keep the older reading
    } else {
      last_cpu_ = cpu;
      last_busy_ = busy;
    }
  }
  const prom::HostMemory mem = prom::ReadHostMemory();
  const std::string node = agent_.node_id();

  prom::Writer w;
  if (w.Family("cohort_node_info", Type::kGauge, "This node agent (value 1)."))
    w.Sample({{"node", node}, {"address", agent_.advertise_address()}}, 1);
  if (w.Family("cohort_node_connected", Type::kGauge, "1 while the agent holds a registered session with the head."))
    w.Sample({}, agent_.connected() ? 1 : 0);
  if (w.Family("cohort_node_workers_running", Type::kGauge, "Worker processes this agent runs."))
    w.Sample({}, static_cast<double>(agent_.num_running_workers()));
  if (w.Family("cohort_node_resources", Type::kGauge,
               "What this node offers the scheduler (CPU in cores, GPU in devices, memory in bytes).")) {
    for (const auto& [name, amount] : agent_.resources()) w.Sample({{"resource", name}}, amount);
  }
  if (w.Family("cohort_node_cpu_cores", Type::kGauge, "CPU cores online on this machine."))
    w.Sample({}, static_cast<double>(std::max(0L, ::sysconf(_SC_NPROCESSORS_ONLN))));
  if (w.Family("cohort_node_cpu_seconds_total", Type::kCounter,
               "CPU time of the whole machine by mode, summed over cores (/proc/stat).")) {
    for (const auto& [mode, seconds] : cpu) w.Sample({{"mode", mode}}, seconds);
  }
  if (w.Family("cohort_node_cpu_usage_ratio", Type::kGauge,
               "Busy share (0-1) of all CPUs of the machine since the previous scrape."))
    w.Sample({}, busy);
  if (w.Family("cohort_node_memory_total_bytes", Type::kGauge, "Memory of the machine (MemTotal)."))
    w.Sample({}, mem.total_bytes);
  if (w.Family("cohort_node_memory_available_bytes", Type::kGauge, "Memory available for new work (MemAvailable)."))
    w.Sample({}, mem.available_bytes);
  if (w.Family("cohort_node_memory_used_bytes", Type::kGauge, "MemTotal - MemAvailable."))
    w.Sample({}, std::max(0.0, mem.total_bytes - mem.available_bytes));
  if (w.Family("cohort_node_gpus", Type::kGauge,
               "GPU devices on this machine (CUDA_VISIBLE_DEVICES, else /dev/nvidia<N>)."))
    w.Sample({}, static_cast<double>(DetectGpuDevices().size()));
  std::vector<prom::GpuGauge> gauges;
  for (const GpuStatus& g : agent_.gpus())
    gauges.push_back({{{"gpu", std::to_string(g.index)}, {"model", g.name}},
                      g.utilization_percent,
                      static_cast<double>(g.memory_used_bytes),
                      static_cast<double>(g.memory_total_bytes)});
  prom::WriteGpuFamilies(w, gauges);
  prom::WriteProcessFamilies(w, prom::ReadProcessStats());
  return w.Take();
}

}  // namespace cohort::agent
