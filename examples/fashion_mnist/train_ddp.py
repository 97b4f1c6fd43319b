#!/usr/bin/env python3
# The seed model as plain PyTorch DDP: the reference that cohort's C++
# trainer (examples/fashion_mnist) is compared with, for accuracy and speed.
#
# Started like torchrun would start it: MASTER_ADDR, MASTER_PORT, RANK and
# WORLD_SIZE in the environment (LOCAL_RANK, LOCAL_WORLD_SIZE optional); with
# WORLD_SIZE unset or 1 it runs alone without a process group. Needs only
# Debian's python3-torch (1.13) and numpy, and the data of Debian's
# dataset-fashion-mnist package; a python3 that lacks them (pyenv, a venv)
# re-executes the script under /usr/bin/python3. Single-threaded per rank
# unless --threads or OMP_NUM_THREADS says otherwise.
#
#   python3 examples/fashion_mnist/train_ddp.py --epochs 1 --train-subset 2000
#
# Rank 0 prints one line per epoch,
#   epoch=E train_loss=... val_loss=... val_accuracy=... samples_per_sec=...
# (samples_per_sec: all ranks' training samples / wall time of the epoch's
# training loop), and finally test_accuracy=0.xxxx.
#
# Run as a cohort job it uses python/cohort.py (from PYTHONPATH, else
# ../../python next to this script): rank 0 reports each epoch's metrics to
# COHORT_REPORT_PATH (the progress line of `cohort job submit`); with
# COHORT_CHECKPOINT_DIR it saves {model, optimizer, epoch} as
# checkpoint_NNNNNN/checkpoint.pt after every epoch (atomically) and resumes
# from the newest one; with COHORT_RESULTS_DIR it writes model.pt and
# metrics.json there at the end. Without these variables (or without
# cohort.py) it behaves as plain DDP.
import argparse
import gzip
import json
import os
import sys
import time

try:
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler
except ImportError as e:
    # A python3 other than Debian's (pyenv, a venv) usually lacks the packages:
    # run again under /usr/bin/python3 if that is a different interpreter.
    debian = "/usr/bin/python3"
    if (os.path.exists(debian) and os.path.realpath(sys.executable) != os.path.realpath(debian)
            and not os.environ.get("COHORT_TRAIN_DDP_REEXEC")):
        os.environ["COHORT_TRAIN_DDP_REEXEC"] = "1"
        os.execv(debian, [debian] + sys.argv)
    sys.exit(f"error: cannot import {e.name} in {sys.executable}: install Debian's "
             "python3-torch and python3-numpy (apt-get install python3-torch) "
             "and run it with /usr/bin/python3")

PACKAGE_HINT = ("install Debian's dataset-fashion-mnist package "
                "(apt-get install dataset-fashion-mnist) or pass --data-dir")
REINSTALL_HINT = ("reinstall Debian's dataset-fashion-mnist package "
                  "(apt-get install --reinstall dataset-fashion-mnist)")


CHECKPOINT_FILE = "checkpoint.pt"
MODEL_NAME = "mlp-784-512-512-256-10"


class DataError(Exception):
    pass


def import_cohort():
    """python/cohort.py from PYTHONPATH, else from ../../python next to this
    script; None when neither has it (nothing is reported or checkpointed)."""
    try:
        import cohort
        return cohort
    except ImportError:
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.append(os.path.normpath(os.path.join(here, "..", "..", "python")))
    try:
        import cohort
        return cohort
    except ImportError:
        if any(os.environ.get(v) for v in
               ("COHORT_REPORT_PATH", "COHORT_CHECKPOINT_DIR", "COHORT_RESULTS_DIR")):
            print("warning: cohort.py not found (put cohort's python/ directory on PYTHONPATH): "
                  "no metric reports, checkpoints or results", file=sys.stderr)
        return None


def save_file_atomic(path, save):
    """save(tmp_path), then rename tmp_path over path."""
    tmp = f"{path}.tmp.{os.getpid()}"
    save(tmp)
    os.replace(tmp, path)


def read_idx_ubyte(path, ndims):
    """An unsigned-byte IDX file (gzip or plain) as a numpy array."""
    if not os.path.exists(path):
        raise DataError(f"Fashion-MNIST file {path} not found: {PACKAGE_HINT}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); {REINSTALL_HINT}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndims:
        raise DataError(f"{path}: corrupt IDX file: bad magic; {REINSTALL_HINT}")
    header = 4 + 4 * ndims
    if len(raw) < header:
        raise DataError(f"{path}: corrupt IDX file: truncated header; {REINSTALL_HINT}")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndims)]
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise DataError(f"{path}: corrupt IDX file: header promises {size} data bytes, "
                        f"file has {len(raw) - header}; {REINSTALL_HINT}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(data_dir, train):
    prefix = "train" if train else "t10k"
    images_path = os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")
    images = read_idx_ubyte(images_path, 3)
    labels = read_idx_ubyte(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} holds {images.shape[0]} images but {labels_path} "
                        f"holds {labels.shape[0]} labels; {REINSTALL_HINT}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9; "
                        f"{REINSTALL_HINT}")
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0))
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def make_model():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )


def evaluate(model, x, y, batch=1000):
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            logits = model(x[i:i + batch])
            loss_sum += loss_fn(logits, y[i:i + batch]).item()
            correct += (logits.argmax(dim=1) == y[i:i + batch]).sum().item()
    model.train()
    n = max(1, x.shape[0])
    return loss_sum / n, correct / n


def parse_args():
    p = argparse.ArgumentParser(description="Fashion-MNIST MLP with PyTorch DDP (reference for cohort).")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64,
                   help="global batch size; each rank takes batch-size / world-size")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=0,
                   help="train on the first N training images (0 = all)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 1),
                   help="torch.set_num_threads (default: OMP_NUM_THREADS or 1)")
    p.add_argument("--no-resume", action="store_true",
                   help="start from epoch 1 even when the checkpoint dir has checkpoints "
                        "(by default a run resumes from the newest one)")
    return p.parse_args()


def main():
    args = parse_args()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, args.threads))
    if args.batch_size < world or args.batch_size % world != 0:
        print(f"error: --batch-size {args.batch_size} must be a multiple of the world size "
              f"{world}", file=sys.stderr)
        return 2
    per_rank_batch = args.batch_size // world

    try:
        train_x, train_y = load_split(args.data_dir, train=True)
        test_x, test_y = load_split(args.data_dir, train=False) if rank == 0 else (None, None)
    except DataError as e:
        print(f"error (rank {rank}): {e}", file=sys.stderr)
        return 1
    if args.train_subset > 0:
        train_x, train_y = train_x[:args.train_subset], train_y[:args.train_subset]

    distributed = world > 1
    if distributed:
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)

    cohort = import_cohort()
    ckpt_root = cohort.checkpoint_dir() if cohort else None
    results = cohort.results_dir() if cohort and rank == 0 else None
    reporting = cohort is not None and bool(os.environ.get("COHORT_REPORT_PATH"))

    torch.manual_seed(args.seed)
    model = make_model()
    # Resume: every rank that sees the newest checkpoint loads it; rank 0's
    # epoch wins (DDP copies rank 0's weights to the others in any case).
    start_epoch, history, resumed = 0, [], None
    if ckpt_root and not args.no_resume:
        latest = cohort.latest_checkpoint(ckpt_root)
        if latest and os.path.exists(os.path.join(latest, CHECKPOINT_FILE)):
            resumed = torch.load(os.path.join(latest, CHECKPOINT_FILE), map_location="cpu")
        start = torch.tensor([resumed["epoch"] if resumed else 0], dtype=torch.int64)
        if distributed:
            dist.broadcast(start, 0)
        start_epoch = int(start.item())
        if resumed is not None and resumed["epoch"] != start_epoch:
            resumed = None
        if resumed is not None:
            model.load_state_dict(resumed["model"])
            history = list(resumed.get("history", []))
        if rank == 0 and start_epoch > 0:
            print(f"resuming from checkpoint after epoch {start_epoch} ({latest}; --no-resume starts over)",
                  flush=True)
    ddp = DistributedDataParallel(model) if distributed else model
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr)
    if resumed is not None:
        opt.load_state_dict(resumed["optimizer"])
    sampler = DistributedSampler(torch.utils.data.TensorDataset(train_x, train_y),
                                 num_replicas=world, rank=rank, shuffle=True, seed=args.seed)

    val_acc = None
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(sampler), dtype=torch.int64)
        if distributed:
            dist.barrier()
        start = time.perf_counter()
        loss_sum, seen = 0.0, 0
        for i in range(0, indices.numel(), per_rank_batch):
            idx = indices[i:i + per_rank_batch]
            xb, yb = train_x[idx], train_y[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(ddp(xb), yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * idx.numel()
            seen += idx.numel()
        totals = torch.tensor([loss_sum, float(seen)], dtype=torch.float64)
        if distributed:
            dist.all_reduce(totals)  # also waits for the slowest rank
        elapsed = time.perf_counter() - start
        train_loss = totals[0].item() / max(1.0, totals[1].item())
        samples_per_sec = totals[1].item() / elapsed if elapsed > 0 else 0.0
        if rank == 0:
            val_loss, val_acc = evaluate(model, test_x, test_y)
            print(f"epoch={epoch + 1} train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
                  f"val_accuracy={val_acc:.4f} samples_per_sec={samples_per_sec:.1f}",
                  flush=True)
            metrics = {"epoch": epoch + 1, "epochs": args.epochs, "train_loss": train_loss,
                       "val_loss": val_loss, "val_accuracy": val_acc,
                       "samples_per_sec": samples_per_sec, "epoch_time_s": elapsed}
            history.append(metrics)
            if reporting:
                cohort.report(**metrics)
            if ckpt_root:
                state = {"seed": args.seed, "world_size": world, "history": history}
                with cohort.new_checkpoint(epoch + 1, state=state, root=ckpt_root) as tmp:
                    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                "epoch": epoch + 1, "history": history},
                               os.path.join(tmp, CHECKPOINT_FILE))
        if ckpt_root and distributed:
            dist.barrier()  # a restart must find this epoch's checkpoint

    if rank == 0:
        if val_acc is None:
            if history:
                val_acc = history[-1]["val_accuracy"]
            else:
                _, val_acc = evaluate(model, test_x, test_y)
        if results:
            save_file_atomic(os.path.join(results, "model.pt"),
                             lambda p: torch.save(model.state_dict(), p))
            summary = {"model": MODEL_NAME, "world_size": world,
                       "global_batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                       "epochs": history, "test_accuracy": val_acc}

            def write_json(p):
                with open(p, "w") as f:
                    json.dump(summary, f, indent=2)

            save_file_atomic(os.path.join(results, "metrics.json"), write_json)
            print(f"results written to {results}", flush=True)
        print(f"test_accuracy={val_acc:.4f}", flush=True)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
