// GpuProbe over NVML, loaded with dlopen; see gpu_probe.h.
#include "gpu_probe.h"

#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace cohort::agent {
namespace {

// The few NVML declarations used (nvml.h, stable since NVML 5; the _v2
// entry points since driver 325).
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlMemory_t {
  unsigned long long total, free, used;
};
struct nvmlUtilization_t {
  unsigned int gpu, memory;
};
constexpr nvmlReturn_t kNvmlSuccess = 0;

class NvmlProbe final : public GpuProbe {
 public:
  ~NvmlProbe() override {
    if (shutdown_ != nullptr) shutdown_();
    if (lib_ != nullptr) ::dlclose(lib_);
  }

  // False when the library or the driver is missing (then nothing is held).
  bool Load(const std::vector<std::string>& visible) {
    lib_ = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib_ == nullptr) return false;
    auto sym = [&](const char* name) { return ::dlsym(lib_, name); };
    auto init = reinterpret_cast<nvmlReturn_t (*)()>(sym("nvmlInit_v2"));
    shutdown_ = reinterpret_cast<nvmlReturn_t (*)()>(sym("nvmlShutdown"));
    by_index_ = reinterpret_cast<nvmlReturn_t (*)(unsigned, nvmlDevice_t*)>(sym("nvmlDeviceGetHandleByIndex_v2"));
    by_uuid_ = reinterpret_cast<nvmlReturn_t (*)(const char*, nvmlDevice_t*)>(sym("nvmlDeviceGetHandleByUUID"));
    name_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned)>(sym("nvmlDeviceGetName"));
    memory_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_t*)>(sym("nvmlDeviceGetMemoryInfo"));
    utilization_ =
        reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, nvmlUtilization_t*)>(sym("nvmlDeviceGetUtilizationRates"));
    if (!init || !shutdown_ || !by_index_ || !by_uuid_ || !name_ || !memory_ || !utilization_ ||
        init() != kNvmlSuccess) {
      shutdown_ = nullptr;
      ::dlclose(lib_);
      lib_ = nullptr;
      return false;
    }
    for (const std::string& v : visible) {
      nvmlDevice_t device = nullptr;
      const bool numeric = !v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); });
      nvmlReturn_t r = numeric ? by_index_(static_cast<unsigned>(std::strtoul(v.c_str(), nullptr, 10)), &device)
                               : by_uuid_(v.c_str(), &device);
      devices_.push_back(r == kNvmlSuccess ? device : nullptr);
    }
    return true;
  }

  std::vector<GpuStatus> Sample() override {
    std::vector<GpuStatus> out;
    for (size_t i = 0; i < devices_.size(); ++i) {
      GpuStatus s;
      s.index = static_cast<int>(i);
      if (nvmlDevice_t d = devices_[i]) {
        char name[96] = {0};
        if (name_(d, name, sizeof(name) - 1) == kNvmlSuccess) s.name = name;
        nvmlMemory_t mem{};
        if (memory_(d, &mem) == kNvmlSuccess) {
          s.memory_used_bytes = static_cast<int64_t>(mem.used);
          s.memory_total_bytes = static_cast<int64_t>(mem.total);
        }
        nvmlUtilization_t util{};
        if (utilization_(d, &util) == kNvmlSuccess) s.utilization_percent = util.gpu;
      }
      out.push_back(std::move(s));
    }
    return out;
  }

 private:
  void* lib_ = nullptr;
  nvmlReturn_t (*shutdown_)() = nullptr;
  nvmlReturn_t (*by_index_)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*by_uuid_)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name_)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*memory_)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*utilization_)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  std::vector<nvmlDevice_t> devices_;  // null where the handle was not found
};

// Names only, read once.
class StaticProbe final : public GpuProbe {
 public:
  explicit StaticProbe(std::vector<GpuStatus> gpus) : gpus_(std::move(gpus)) {}
  std::vector<GpuStatus> Sample() override { return gpus_; }

 private:
  std::vector<GpuStatus> gpus_;
};

}  // namespace

std::string ParseNvidiaModel(const std::string& information) {
  std::istringstream in(information);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Model:", 0) != 0) continue;
    std::string model = line.substr(6);
    const size_t b = model.find_first_not_of(" \t");
    const size_t e = model.find_last_not_of(" \t\r");
    return b == std::string::npos ? "" : model.substr(b, e - b + 1);
  }
  return "";
}

std::vector<std::string> ReadProcGpuModels(const std::string& root) {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
    dirs.push_back(it->path().filename().string());
  std::sort(dirs.begin(), dirs.end());
  std::vector<std::string> models;
  for (const std::string& d : dirs) {
    std::ifstream f(root + "/" + d + "/information");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    models.push_back(ParseNvidiaModel(text.substr(0, 64 * 1024)));
  }
  return models;
}

std::unique_ptr<GpuProbe> NewGpuProbe(const std::vector<std::string>& visible) {
  if (visible.empty()) return std::make_unique<StaticProbe>(std::vector<GpuStatus>{});
  auto nvml = std::make_unique<NvmlProbe>();
  if (nvml->Load(visible)) return nvml;
  const std::vector<std::string> models = ReadProcGpuModels();
  std::vector<GpuStatus> gpus;
  for (size_t i = 0; i < visible.size(); ++i) {
    GpuStatus s;
    s.index = static_cast<int>(i);
    const bool numeric = !visible[i].empty() && std::all_of(visible[i].begin(), visible[i].end(),
                                                             [](unsigned char c) { return std::isdigit(c); });
    if (numeric) {
      const size_t physical = std::strtoul(visible[i].c_str(), nullptr, 10);
      if (physical < models.size()) s.name = models[physical];
    }
    gpus.push_back(std::move(s));
  }
  return std::make_unique<StaticProbe>(std::move(gpus));
}

}  // namespace cohort::agent
