#!/usr/bin/env bash
# cohort on NVIDIA GPUs against PyTorch on the same GPUs. For a machine with
# GPUs, the CUDA toolkit with NCCL, and a CUDA torch: a pip wheel (found
# through python3) or a libtorch archive (TORCH_PREFIX=/path/to/libtorch).
# Nothing is installed: what is missing is named.
#
#   bench/gpu.sh
#
# Builds the data plane and the trainer only (-DCOHORT_CONTROL_PLANE=OFF
# -DCOHORT_CUDA=ON, in $GPU_BUILD_DIR, default build-gpu/), runs the GPU
# tests, then prints, each with a ratio against its PyTorch peer:
#   1. the seed model (FashionMNIST MLP) on 1 GPU: samples/s, cohort vs a
#      plain PyTorch loop (bench/gpu_reference.py mlp);
#   2. 2 ranks sharing GPU 0: gradients through the host-staged path;
#   3. with >= 2 GPUs: NCCL all-reduce algbw at 2.7 MB, 64 MB and 1 GB,
#      cohort's DeviceCommunicator vs torch.distributed;
#   4. ResNet-50 on random images, every GPU: images/s vs PyTorch DDP.
# What it skips is said, with the reason. About 5 minutes on one GPU.
#
# Environment: TORCH_PREFIX (default: torch.utils.cmake_prefix_path of
# python3's torch), CUDA_HOME (default /usr/local/cuda), GPU_BUILD_DIR,
# GPU_JOBS (build parallelism, default nproc), FASHION_MNIST_DIR (default
# /usr/share/datasets/fashion-mnist).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${GPU_BUILD_DIR:-$ROOT/build-gpu}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
JOBS=${GPU_JOBS:-$(nproc)}
DATA=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
START=$SECONDS
SKIPPED=()
say() { printf '\n== %s\n' "$*"; }
skip() { SKIPPED+=("$1"); echo "skipped: $1"; }
die() { echo "bench/gpu.sh: $*" >&2; exit 1; }
# ratio A B: A / B with 2 decimals, or n/a
ratio() { python3 -c "import sys; a, b = float(sys.argv[1] or 0), float(sys.argv[2] or 0); print(f'{a / b:.2f}' if a and b else 'n/a')" "$1" "$2"; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | tail -n 1; }

# --- what the machine has -------------------------------------------------------
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script is for a machine with NVIDIA GPUs"
GPUS=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
[[ $GPUS -ge 1 ]] || die "nvidia-smi lists no GPU"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
[[ -x $CUDA_HOME/bin/nvcc || -f $CUDA_HOME/include/cuda_runtime_api.h ]] || die "no CUDA toolkit at CUDA_HOME=$CUDA_HOME"
for tool in cmake g++ python3; do command -v $tool >/dev/null || die "$tool is missing"; done
HAVE_TORCH_PY=0
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && HAVE_TORCH_PY=1
if [[ -z ${TORCH_PREFIX:-} ]]; then
  [[ $HAVE_TORCH_PY == 1 ]] || die "no TORCH_PREFIX and python3's torch is missing or sees no GPU (pip install torch, or TORCH_PREFIX=/path/to/libtorch)"
  TORCH_PREFIX=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
fi
echo "torch: $TORCH_PREFIX; python3 torch with CUDA: $([[ $HAVE_TORCH_PY == 1 ]] && echo yes || echo no); GPUs: $GPUS"

# --- build -----------------------------------------------------------------------
say "build (data plane + trainer, CUDA) in $B"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$ROOT" -B "$B" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCOHORT_CONTROL_PLANE=OFF -DCOHORT_CUDA=ON \
  -DCOHORT_RESNET50=ON -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DCUDAToolkit_ROOT="$CUDA_HOME" >"$B.configure.log" 2>&1 ||
  { tail -n 40 "$B.configure.log"; die "configure failed (log: $B.configure.log)"; }
cmake --build "$B" -j "$JOBS" --target cohort fashion_mnist resnet50 allreduce_nccl_bench nccl_test staged_test \
  grad_sync_test >"$B.build.log" 2>&1 || { grep -E -A8 'error|FAILED' "$B.build.log" | head -60; die "build failed (log: $B.build.log)"; }
echo "built in $((SECONDS - START)) s"
BIN=$B/bin

# --- GPU tests -------------------------------------------------------------------
say "GPU tests"
(cd "$B" && ctest --output-on-failure --timeout 300 -R 'OnGpus|StagedTest|GradSync') | tail -n 15 ||
  echo "SOME GPU TESTS FAILED (above)"

# --- 1. the seed model on one GPU ----------------------------------------------------
say "1. seed model, 1 GPU, 2 epochs: cohort vs plain PyTorch"
if [[ ! -f $DATA/train-images-idx3-ubyte.gz ]]; then
  skip "1 and 2: FashionMNIST not at $DATA (FASHION_MNIST_DIR)"
else
  out=$(CUDA_VISIBLE_DEVICES=0 "$BIN/cohort" launch -n 1 -- "$BIN/fashion_mnist" --device cuda --epochs 2 \
    --data-dir "$DATA" --seed 0 2>&1)
  echo "$out" | grep -E "training:|epoch=" | sed 's/^/  /'
  cohort_mlp=$(echo "$out" | grep -o "samples_per_sec=[0-9.]*" | sed 's/.*=//' | sort -n | tail -n 1)
  if [[ $HAVE_TORCH_PY == 1 ]]; then
    torch_mlp=$(CUDA_VISIBLE_DEVICES=0 python3 "$ROOT/bench/gpu_reference.py" mlp --epochs 2 --data-dir "$DATA" | field samples_per_sec)
  else
    torch_mlp=""; skip "1: PyTorch peer (python3 torch with CUDA missing)"
  fi
  echo "seed_mlp_1gpu cohort_samples_per_sec=${cohort_mlp:-?} pytorch_samples_per_sec=${torch_mlp:-?} ratio=$(ratio "$cohort_mlp" "$torch_mlp")"

  # --- 2. two ranks on one GPU: host-staged ------------------------------------------
  say "2. 2 ranks sharing GPU 0 (host-staged gradients), 1 epoch"
  out=$(CUDA_VISIBLE_DEVICES=0 "$BIN/cohort" launch -n 2 -- "$BIN/fashion_mnist" --device cuda --epochs 1 \
    --data-dir "$DATA" 2>&1)
  echo "$out" | grep -E "training:|epoch=|test_accuracy" | sed 's/^/  /'
  echo "$out" | grep -q "gradients host-staged from cuda:0" || echo "  UNEXPECTED: the run did not report the host-staged path"
  staged=$(echo "$out" | field samples_per_sec)
  echo "seed_mlp_2ranks_1gpu_staged samples_per_sec=${staged:-?} vs_1_rank=$(ratio "$staged" "$cohort_mlp")"
fi

# --- 3. NCCL all-reduce -----------------------------------------------------------------
say "3. NCCL all-reduce bandwidth"
if [[ $GPUS -lt 2 ]]; then
  skip "3: NCCL all-reduce needs >= 2 GPUs ($GPUS here)"
else
  c=$("$BIN/cohort" launch -n "$GPUS" -- "$BIN/allreduce_nccl_bench" 2>&1 | grep "nccl_allreduce" | sed 's/^\[rank 0\] //')
  echo "$c" | sed 's/^/  cohort /'
  if [[ $HAVE_TORCH_PY == 1 ]]; then
    t=$(python3 -m torch.distributed.run --standalone --nproc-per-node "$GPUS" "$ROOT/bench/gpu_reference.py" allreduce 2>&1 |
      grep "nccl_allreduce")
    echo "$t" | sed 's/^/  torch  /'
    for bytes in $(echo "$c" | sed -n 's/.*bytes=\([0-9]*\).*/\1/p'); do
      a=$(echo "$c" | grep "bytes=$bytes " | field algbw_GBps)
      b=$(echo "$t" | grep "bytes=$bytes " | field algbw_GBps)
      echo "nccl_allreduce bytes=$bytes cohort_algbw_GBps=$a torch_algbw_GBps=$b ratio=$(ratio "$a" "$b")"
    done
  else
    skip "3: torch.distributed peer (python3 torch with CUDA missing)"
  fi
fi

# --- 4. ResNet-50 ----------------------------------------------------------------------
say "4. ResNet-50, random 224x224 images, batch 32 per GPU, $GPUS GPU(s)"
r=$("$BIN/cohort" launch -n "$GPUS" -- "$BIN/resnet50" --device cuda --batch-size 32 --steps 30 --warmup 5 2>&1)
echo "$r" | grep -E "resnet50:|images_per_sec" | sed 's/^/  /'
cohort_img=$(echo "$r" | field images_per_sec)
if [[ $HAVE_TORCH_PY == 1 ]]; then
  torch_img=$(python3 -m torch.distributed.run --standalone --nproc-per-node "$GPUS" "$ROOT/bench/gpu_reference.py" \
    resnet50 --batch-size 32 --steps 30 --warmup 5 2>&1 | field images_per_sec)
else
  torch_img=""; skip "4: PyTorch DDP peer (python3 torch with CUDA missing)"
fi
echo "resnet50_${GPUS}gpu cohort_images_per_sec=${cohort_img:-?} ddp_images_per_sec=${torch_img:-?} ratio=$(ratio "$cohort_img" "$torch_img")"

say "done in $((SECONDS - START)) s"
if [[ ${#SKIPPED[@]} -gt 0 ]]; then
  echo "skipped:"
  printf '  %s\n' "${SKIPPED[@]}"
fi
