#!/usr/bin/env python3
"""Plain PyTorch peers of bench/gpu.sh's cohort runs, on the same GPUs.

  gpu_reference.py mlp [--epochs 2] [--data-dir DIR]
      the seed model (784-512-512-256-10 MLP, SGD lr 1e-3, batch 64) on one
      GPU, the data set on the device: prints samples_per_sec=...
  gpu_reference.py allreduce [BYTES...]      (under torch.distributed.run)
      torch.distributed all_reduce over NCCL: prints the lines
      allreduce_nccl_bench prints
  gpu_reference.py resnet50 [--batch-size 32] [--steps 30] [--warmup 5]
      (under torch.distributed.run) DDP ResNet-50 on random images, the same
      layout as examples/resnet50: prints images_per_sec=...
"""
import argparse
import gzip
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def mlp(args):
    dev = torch.device("cuda:0")
    x = load_idx(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz")).reshape(-1, 784).float().div_(255).to(dev)
    y = load_idx(os.path.join(args.data_dir, "train-labels-idx1-ubyte.gz")).long().to(dev)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    best = 0.0
    for epoch in range(args.epochs):
        perm = torch.randperm(x.shape[0], device=dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        for b in range(0, x.shape[0], 64):
            idx = perm[b:b + 64]
            opt.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.detach().double()
        loss_sum.item()
        rate = x.shape[0] / (time.perf_counter() - t0)
        best = max(best, rate)
        print(f"epoch={epoch + 1} samples_per_sec={rate:.0f}", flush=True)
    print(f"samples_per_sec={best:.0f}")


def allreduce(args):
    import torch.distributed as dist
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    sizes = [int(s) for s in args.sizes] or [2_700_000, 64 << 20, 1 << 30]
    for nbytes in sizes:
        t = torch.zeros(nbytes // 4, device="cuda")
        iters = 20 if nbytes <= (64 << 20) else 5
        for _ in range(3):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        s = (time.perf_counter() - t0) / iters
        algbw = t.numel() * 4 / s / 1e9
        if rank == 0:
            print(f"nccl_allreduce bytes={t.numel() * 4} time_ms={s * 1e3:.3f} algbw_GBps={algbw:.2f} "
                  f"busbw_GBps={algbw * 2 * (world - 1) / world:.2f}", flush=True)
        del t
    dist.destroy_process_group()


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.down = None
        if stride != 1 or cin != width * 4:
            self.down = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.down(x) if self.down is not None else x))


class ResNet50(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.stem_bn = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for stage, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
            for b in range(blocks):
                layers.append(Bottleneck(cin, width, 2 if (b == 0 and stage > 0) else 1))
                cin = width * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        out = F.max_pool2d(F.relu(self.stem_bn(self.stem(x))), 3, 2, 1)
        out = F.adaptive_avg_pool2d(self.layers(out), 1).flatten(1)
        return self.fc(out)


def resnet50(args):
    import torch.distributed as dist
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
    torch.cuda.set_device(local)
    torch.manual_seed(1)
    model = ResNet50(args.classes).cuda()
    # Buffers are broadcast once at the start, as cohort does (not every step).
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local], broadcast_buffers=False)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    torch.manual_seed(100 + rank)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device="cuda")
    y = torch.randint(0, args.classes, (args.batch_size,), device="cuda")
    ddp.train()
    t0 = None
    for s in range(args.warmup + args.steps):
        if s == args.warmup:
            torch.cuda.synchronize()
            dist.barrier()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
    last = loss.item()
    dist.barrier()
    seconds = time.perf_counter() - t0
    if rank == 0:
        print(f"loss={last:.4f} steps={args.steps} seconds={seconds:.3f} "
              f"images_per_sec={args.steps * args.batch_size * world / seconds:.1f}", flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mlp")
    m.add_argument("--epochs", type=int, default=2)
    m.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    a = sub.add_parser("allreduce")
    a.add_argument("sizes", nargs="*")
    r = sub.add_parser("resnet50")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--steps", type=int, default=30)
    r.add_argument("--warmup", type=int, default=5)
    r.add_argument("--image-size", type=int, default=224)
    r.add_argument("--classes", type=int, default=1000)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_reference.py: this torch sees no CUDA device")
    {"mlp": mlp, "allreduce": allreduce, "resnet50": resnet50}[args.cmd](args)


if __name__ == "__main__":
    main()
