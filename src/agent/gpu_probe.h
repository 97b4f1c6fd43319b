// What the agent sees of its GPUs for the head, the dashboard and /metrics:
// model, memory and utilization per device. NVML (libnvidia-ml.so.1, part
// of the NVIDIA driver) is loaded at run time when present, so the agent
// neither links against nor needs the driver; without it the models come
// from /proc/driver/nvidia/gpus/*/information and usage is unknown.
//
// Thread-safety: a GpuProbe is used from one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cohort/agent/agent.h"  // GpuStatus

namespace cohort::agent {

class GpuProbe {
 public:
  virtual ~GpuProbe() = default;
  virtual std::vector<GpuStatus> Sample() = 0;
};

// For the devices `visible` (DetectGpuDevices()' entries: indices, or
// GPU-UUIDs as CUDA_VISIBLE_DEVICES may hold): NVML when it loads and
// initializes, else the /proc names, else nameless entries. Never null;
// an empty `visible` samples nothing.
std::unique_ptr<GpuProbe> NewGpuProbe(const std::vector<std::string>& visible);

// The "Model:" of a /proc/driver/nvidia/gpus/<bus id>/information file, "" if none.
std::string ParseNvidiaModel(const std::string& information);
// The models under `root` (one directory per GPU, named by PCI bus id), in
// bus-id order, which is nvidia-smi's and NVML's device order.
std::vector<std::string> ReadProcGpuModels(const std::string& root = "/proc/driver/nvidia/gpus");

}  // namespace cohort::agent
