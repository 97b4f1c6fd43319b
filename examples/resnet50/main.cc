// ResNet-50 (He et al., 2015; the torchvision layout) trained data-parallel
// on random images: the larger model of bench/gpu.sh, measured in images/s
// against PyTorch DDP on the same GPUs (bench/gpu_reference.py resnet50).
// Launched like any worker (cohort launch / a cohort job / torchrun's
// environment); gradients go through GradientSync (NCCL on GPUs when each
// rank has its own, else host-staged; shm/TCP on CPUs).
//
//   resnet50 [--device auto|cpu|cuda|cuda:N] [--batch-size 32] [--steps 30]
//            [--warmup 5] [--image-size 224] [--classes 1000]
//
// Prints, on rank 0: images_per_sec=<global images per second over the
// measured steps>, and the device, gradient path and bucket count.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cohort/comm/communicator.h"
#include "cohort/train/context.h"
#include "cohort/train/torch.h"

namespace {

namespace nn = torch::nn;
namespace train = cohort::train;

[[noreturn]] void Die(const std::string& what, int code = 1) {
  std::fprintf(stderr, "resnet50: %s\n", what.c_str());
  std::exit(code);
}

nn::Conv2d Conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = 0) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false));
}

struct BottleneckImpl : nn::Module {
  BottleneckImpl(int64_t in, int64_t width, int64_t stride)
      : conv1(register_module("conv1", Conv(in, width, 1))),
        bn1(register_module("bn1", nn::BatchNorm2d(width))),
        conv2(register_module("conv2", Conv(width, width, 3, stride, 1))),
        bn2(register_module("bn2", nn::BatchNorm2d(width))),
        conv3(register_module("conv3", Conv(width, width * 4, 1))),
        bn3(register_module("bn3", nn::BatchNorm2d(width * 4))) {
    if (stride != 1 || in != width * 4) {
      down_conv = register_module("down_conv", Conv(in, width * 4, 1, stride));
      down_bn = register_module("down_bn", nn::BatchNorm2d(width * 4));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = torch::relu(bn1(conv1(x)));
    out = torch::relu(bn2(conv2(out)));
    out = bn3(conv3(out));
    auto identity = down_conv ? down_bn(down_conv(x)) : x;
    return torch::relu(out + identity);
  }
  nn::Conv2d conv1, conv2, conv3;
  nn::BatchNorm2d bn1, bn2, bn3;
  nn::Conv2d down_conv{nullptr};
  nn::BatchNorm2d down_bn{nullptr};
};
TORCH_MODULE(Bottleneck);

struct ResNet50Impl : nn::Module {
  explicit ResNet50Impl(int64_t classes)
      : stem(register_module("stem", Conv(3, 64, 7, 2, 3))), stem_bn(register_module("stem_bn", nn::BatchNorm2d(64))) {
    const int64_t blocks[4] = {3, 4, 6, 3}, widths[4] = {64, 128, 256, 512};
    int64_t in = 64;
    for (int stage = 0; stage < 4; ++stage) {
      for (int64_t b = 0; b < blocks[stage]; ++b) {
        const int64_t stride = (b == 0 && stage > 0) ? 2 : 1;
        layers->push_back(Bottleneck(in, widths[stage], stride));
        in = widths[stage] * 4;
      }
    }
    register_module("layers", layers);
    fc = register_module("fc", nn::Linear(in, classes));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = torch::relu(stem_bn(stem(x)));
    out = torch::max_pool2d(out, 3, 2, 1);
    out = layers->forward(out);
    out = torch::adaptive_avg_pool2d(out, {1, 1}).flatten(1);
    return fc(out);
  }
  nn::Conv2d stem;
  nn::BatchNorm2d stem_bn;
  nn::Sequential layers;
  nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNet50);

}  // namespace

int main(int argc, char** argv) {
  std::string device_flag = "auto";
  int batch = 32, steps = 30, warmup = 5, image = 224, classes = 1000, threads = 0;
  CLI::App app{"ResNet-50 on random images, data-parallel: images per second."};
  app.add_option("--device", device_flag, "auto, cpu, cuda (cuda:LOCAL_RANK) or cuda:N");
  app.add_option("--batch-size", batch, "Images per rank per step")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "Measured steps")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "Steps before measuring")->check(CLI::NonNegativeNumber);
  app.add_option("--image-size", image, "Image height and width")->check(CLI::Range(32, 1024));
  app.add_option("--classes", classes, "Output classes")->check(CLI::Range(2, 100000));
  app.add_option("--threads", threads, "Intra-op threads (0 = cores / local ranks)")->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  auto ctx = train::WorkerContext::FromEnv();
  if (!ctx.ok()) Die(ctx.status().ToString(), 2);
  const int count = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  torch::Device device = torch::kCPU;
  if (device_flag == "cuda" || (device_flag == "auto" && count > 0)) {
    if (count == 0) Die("--device cuda: this libtorch sees no CUDA device", 2);
    device = torch::Device(torch::kCUDA, ctx->local_rank % count);
  } else if (device_flag.rfind("cuda:", 0) == 0) {
    const int index = std::atoi(device_flag.c_str() + 5);
    if (index < 0 || index >= count) Die("--device " + device_flag + ": " + std::to_string(count) + " device(s) visible", 2);
    device = torch::Device(torch::kCUDA, index);
  } else if (device_flag != "cpu" && device_flag != "auto") {
    Die("--device " + device_flag + ": expected auto, cpu, cuda or cuda:N", 2);
  }
  torch::set_num_threads(threads > 0 ? threads : train::DefaultThreadsPerWorker(ctx->local_world_size));

  auto comm = cohort::comm::Communicator::FromEnv();
  if (!comm.ok()) Die(comm.status().ToString());
  torch::manual_seed(1);
  ResNet50 model(classes);
  model->to(device);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  auto sync = train::GradientSync::Create(**comm, *model);
  if (!sync.ok()) Die(sync.status().ToString());

  // One random batch, reused: this measures the training step, not a loader.
  torch::manual_seed(100 + ctx->rank);
  auto x = torch::randn({batch, 3, image, image}, torch::TensorOptions().device(device));
  auto y = torch::randint(0, classes, {batch}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  if (ctx->is_chief())
    std::printf("resnet50: %d rank(s), device %s, gradients %s, %zu bucket(s), batch %d per rank, %dx%d images\n",
                ctx->world_size, device.str().c_str(), (*sync)->path().c_str(), (*sync)->num_buckets(), batch, image,
                image);
  std::fflush(stdout);

  model->train();
  std::chrono::steady_clock::time_point t0;
  torch::Tensor loss;
  for (int s = 0; s < warmup + steps; ++s) {
    if (s == warmup) {
      if (loss.defined()) (void)loss.item<float>();  // the warm-up's work is done
      if (auto st = (*comm)->Barrier(); !st.ok()) Die(st.ToString());
      t0 = std::chrono::steady_clock::now();
    }
    (*sync)->ZeroGrad();
    loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    if (auto st = (*sync)->Synchronize(); !st.ok()) Die(st.ToString());
    optimizer.step();
  }
  const float last = loss.item<float>();  // waits for the last step
  if (auto st = (*comm)->Barrier(); !st.ok()) Die(st.ToString());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (ctx->is_chief()) {
    std::printf("loss=%.4f steps=%d seconds=%.3f images_per_sec=%.1f\n", last, steps, seconds,
                static_cast<double>(steps) * batch * ctx->world_size / seconds);
    std::fflush(stdout);
  }
  return 0;
}
