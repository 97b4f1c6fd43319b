// The agent's GPU probe without a GPU: the /proc/driver/nvidia parser, the
// bus-id order, and the probe's fallbacks (no NVML on this machine).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gpu_probe.h"

namespace cohort::agent {
namespace {

namespace fs = std::filesystem;

TEST(GpuProbeTest, ModelComesFromTheInformationFile) {
  EXPECT_EQ(ParseNvidiaModel("Model: \t NVIDIA H200\nIRQ:   140\nGPU UUID: GPU-1234\n"), "NVIDIA H200");
  EXPECT_EQ(ParseNvidiaModel("IRQ: 1\nModel:\t\tTesla T4  \r\n"), "Tesla T4");
  EXPECT_EQ(ParseNvidiaModel("IRQ: 1\n"), "");
  EXPECT_EQ(ParseNvidiaModel("Model:   \n"), "");
}

TEST(GpuProbeTest, ProcModelsAreInBusIdOrder) {
  const fs::path root = fs::temp_directory_path() / ("gpu_probe_test_" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (auto [bus, model] : {std::pair{"0000:c1:00.0", "NVIDIA L4"}, std::pair{"0000:41:00.0", "NVIDIA A100"}}) {
    fs::create_directories(root / bus);
    std::ofstream(root / bus / "information") << "Model: \t " << model << "\nIRQ: 7\n";
  }
  EXPECT_EQ(ReadProcGpuModels(root.string()), (std::vector<std::string>{"NVIDIA A100", "NVIDIA L4"}));
  EXPECT_TRUE(ReadProcGpuModels((root / "missing").string()).empty());
  fs::remove_all(root);
}

TEST(GpuProbeTest, ProbeSamplesOneEntryPerVisibleDevice) {
  EXPECT_TRUE(NewGpuProbe({})->Sample().empty());
  // Whatever this machine has (NVML or not), one entry per device, in order.
  auto gpus = NewGpuProbe({"0", "GPU-00000000-0000-0000-0000-000000000000"})->Sample();
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0].index, 0);
  EXPECT_EQ(gpus[1].index, 1);
  for (const auto& g : gpus) {
    EXPECT_GE(g.utilization_percent, -1);
    EXPECT_LE(g.utilization_percent, 100);
  }
}

}  // namespace
}  // namespace cohort::agent
