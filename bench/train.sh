#!/usr/bin/env bash
# Training speed and accuracy of the seed model (FashionMNIST MLP): cohort's
# C++ trainer vs PyTorch DDP (gloo), both 2 ranks with one thread each, and a
# single-process, single-thread libtorch run as the scaling baseline.
#
#   bench/train.sh                  # 1 epoch, global batch 64, lr 0.1, all 60k images
#   EPOCHS=2 SUBSET=20000 bench/train.sh
#
# Runs
#   (a) cohort launch -n 2 -- build/bin/fashion_mnist ...
#   (b) cohort launch -n 2 -- /usr/bin/python3 examples/fashion_mnist/train_ddp.py ...
#   (c) build/bin/fashion_mnist ... --threads 1          (no launcher)
# with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1, and prints a table, then
#   ratio_vs_ddp=X.XX         (a) / (b) samples/s                 (target >= 4)
#   scaling_efficiency=X.XX   (a) / (2 * (c)) samples/s           (target >= 0.80)
#   accuracy_cohort=, accuracy_ddp=, accuracy_gap_points= (|a - b| * 100)
#   ratio=X.XX                = ratio_vs_ddp (headline; higher is better)
# samples/s is the mean over the epochs of each run's samples_per_sec.
# Raw output of the runs is kept in $BUILD_DIR/bench/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

EPOCHS="${EPOCHS:-1}"
SUBSET="${SUBSET:-0}"  # 0 = all 60k training images
BATCH=64
LR=0.1
NRANKS=2

ensure_build fashion_mnist
ensure_torch_python
cd "$ROOT"
print_machine "$BIN/fashion_mnist"
echo "# train: epochs=$EPOCHS global_batch=$BATCH lr=$LR train_subset=$SUBSET" \
  "(0 = all), OMP_NUM_THREADS=1 per rank"

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
FLAGS=(--epochs "$EPOCHS" --lr "$LR" --batch-size "$BATCH" --train-subset "$SUBSET")
COHORT_LOG="$LOG_DIR/train.cohort.log"
DDP_LOG="$LOG_DIR/train.ddp.log"
SINGLE_LOG="$LOG_DIR/train.single.log"

run_logged "$COHORT_LOG" "$COHORT" launch -n "$NRANKS" -- "$BIN/fashion_mnist" "${FLAGS[@]}"
run_logged "$DDP_LOG" "$COHORT" launch -n "$NRANKS" -- \
  "$PY" "$ROOT/examples/fashion_mnist/train_ddp.py" "${FLAGS[@]}"
# Alone, without the launcher's (or a caller's) rendezvous environment.
run_logged "$SINGLE_LOG" env -u MASTER_ADDR -u MASTER_PORT -u RANK -u WORLD_SIZE \
  -u LOCAL_RANK -u LOCAL_WORLD_SIZE "$BIN/fashion_mnist" "${FLAGS[@]}" --threads 1

sps() { kv_mean "$1" samples_per_sec || die "no samples_per_sec= in $1"; }
acc() { kv_get "$1" test_accuracy || die "no test_accuracy= in $1"; }

a_sps=$(sps "$COHORT_LOG"); a_acc=$(acc "$COHORT_LOG")
b_sps=$(sps "$DDP_LOG"); b_acc=$(acc "$DDP_LOG")
c_sps=$(sps "$SINGLE_LOG"); c_acc=$(acc "$SINGLE_LOG")

printf '%-36s %5s %8s %15s %13s\n' "run" "ranks" "threads" "samples_per_sec" "test_accuracy"
printf '%-36s %5s %8s %15s %13s\n' "(a) cohort C++ (fashion_mnist)" "$NRANKS" 1 "$a_sps" "$a_acc"
printf '%-36s %5s %8s %15s %13s\n' "(b) PyTorch DDP gloo (train_ddp.py)" "$NRANKS" 1 "$b_sps" "$b_acc"
printf '%-36s %5s %8s %15s %13s\n' "(c) libtorch single process" 1 1 "$c_sps" "$c_acc"

ratio_vs_ddp=$(calc 'a / b' a="$a_sps" b="$b_sps")
echo "ratio_vs_ddp=$ratio_vs_ddp"
echo "scaling_efficiency=$(calc "a / ($NRANKS * c)" a="$a_sps" c="$c_sps")"
echo "accuracy_cohort=$a_acc"
echo "accuracy_ddp=$b_acc"
echo "accuracy_gap_points=$(calc '(a > b ? a - b : b - a) * 100' a="$a_acc" b="$b_acc")"
echo "ratio=$ratio_vs_ddp"
