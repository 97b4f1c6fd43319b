"""All-reduce peer for bench/allreduce.sh: torch.distributed with the gloo
backend, same sizes and output format as bench/allreduce_bench.cc.
Run under `cohort launch -n N` (torchrun env contract)."""
import argparse
import os
import time

import torch
import torch.distributed as dist


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    dist.init_process_group("gloo", init_method="env://")
    rank = dist.get_rank()
    for size in (4096, 262144, 2700000, 64 << 20):
        t = torch.ones(size // 4, dtype=torch.float32)
        warm = 3 if size >= (8 << 20) else 50
        start = time.perf_counter()
        for _ in range(warm):
            dist.all_reduce(t)
        per_op = (time.perf_counter() - start) / warm
        iters = torch.tensor([max(5, min(int(args.seconds / per_op), 200000))])
        dist.broadcast(iters, 0)
        iters = int(iters.item())
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        elapsed = time.perf_counter() - start
        if rank == 0:
            lat = elapsed / iters
            print(f"gloo size={size} buffer=plain transport=tcp iters={iters} "
                  f"lat_us={lat * 1e6:.2f} algbw_gbs={size / lat / 1e9:.3f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
