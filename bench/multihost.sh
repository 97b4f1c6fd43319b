#!/usr/bin/env bash
# Across hosts: the seed model and the raw all-reduce between two hosts of
# the network-namespace test bed (tools/netns/cluster.sh), over shaped links,
# cohort vs PyTorch DDP (gloo) launched the same way. Needs root.
#
#   bench/multihost.sh                       # RATE=1gbit, 2 hosts x 1 rank
#   RATE=10gbit RANKS_PER_HOST=2 bench/multihost.sh
#   EPOCHS=2 SUBSET=30000 bench/multihost.sh
#
# Rank r runs on host r / RANKS_PER_HOST with the torchrun environment
# (MASTER_ADDR = host 0, GLOO_SOCKET_IFNAME=eth0), one thread each:
#   (a) fashion_mnist --grad-compression none
#   (b) fashion_mnist --grad-compression bf16
#   (c) fashion_mnist --grad-compression bf16-ef
#   (c') fashion_mnist --grad-compression fp16
#   (d) examples/fashion_mnist/train_ddp.py (gloo)
#   (e) allreduce_bench (float32 and --wire bf16) and allreduce_gloo.py
# For (a)-(d): samples/s (rank 0's mean over the epochs), test accuracy, the
# bytes host 0 sent per step (its eth0 tx counter / steps), the samples/s the
# link allows at that many bytes per step (RATE / bytes per step x batch 64),
# and the run's fraction of it. Then
#   ratio_fp32=X.XX   (a) / (d) samples/s
#   ratio_fp16=X.XX   (c') / (d) samples/s
#   ratio=X.XX        (b) / (d) samples/s (headline; target >= 2)
#   link_fraction_fp32_allreduce=X.XX  64 MB float32 all-reduce algbw / what the link allows
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RATE="${RATE:-1gbit}"
RANKS_PER_HOST="${RANKS_PER_HOST:-1}"
EPOCHS="${EPOCHS:-1}"
SUBSET="${SUBSET:-16384}"
LR=0.1
BATCH=64
SECONDS_PER_SIZE="${SECONDS_PER_SIZE:-1}"
TB="$ROOT/tools/netns/cluster.sh"
export NAME="${NAME:-cohort-bench}" NET="${NET:-90}"

if ! why="$("$TB" check)"; then die "cannot make hosts here: $why"; fi
ensure_build fashion_mnist
ensure_build allreduce_bench
ensure_torch_python
cd "$ROOT"
print_machine "$BIN/fashion_mnist"

case "$RATE" in
  *gbit) RATE_BPS=$(calc 'r * 1e9 / 8' r="${RATE%gbit}") ;;
  *mbit) RATE_BPS=$(calc 'r * 1e6 / 8' r="${RATE%mbit}") ;;
  *) die "RATE must be Nmbit or Ngbit, got $RATE" ;;
esac
WORLD=$((2 * RANKS_PER_HOST))
STEPS=$((EPOCHS * SUBSET / BATCH))
echo "# multihost: 2 hosts x $RANKS_PER_HOST rank(s), links $RATE, $EPOCHS epoch(s) of $SUBSET samples" \
  "($STEPS steps of $BATCH), lr $LR"

trap '"$TB" down >/dev/null 2>&1 || true' EXIT
"$TB" up 2 "$RATE"
MASTER="$("$TB" addr 0)"

tx_bytes() {  # bytes host $1 has sent on eth0
  ip -n "$NAME-h$1" -s -j link show dev eth0 |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["bytes"])'
}

# run_ranks LOG CMD...: every rank on its host; rank 0's output in LOG; TX =
# bytes host 0 sent meanwhile.
run_ranks() {
  local log="$1" port=$((29500 + RANDOM % 2000)) r h pids=() tx0
  shift
  tx0="$(tx_bytes 0)"
  for ((r = 0; r < WORLD; r++)); do
    h=$((r / RANKS_PER_HOST))
    "$TB" exec "$h" -- env MASTER_ADDR="$MASTER" MASTER_PORT="$port" RANK="$r" WORLD_SIZE="$WORLD" \
      LOCAL_RANK=$((r % RANKS_PER_HOST)) LOCAL_WORLD_SIZE="$RANKS_PER_HOST" GROUP_RANK="$h" \
      OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 GLOO_SOCKET_IFNAME=eth0 PYTHONPATH="$ROOT/python" \
      "$@" >"$log.rank$r" 2>&1 &
    pids+=($!)
  done
  for r in "${!pids[@]}"; do
    wait "${pids[$r]}" || { tail -n 20 "$log.rank$r" >&2; die "rank $r failed (log: $log.rank$r)"; }
  done
  TX=$(($(tx_bytes 0) - tx0))
  cp "$log.rank0" "$log"
}

declare -A SPS ACC BPS BOUND FRAC
train() {  # train NAME CMD...
  local name="$1" log="$LOG_DIR/multihost.$1.log"
  shift
  echo "# running: $name" >&2
  run_ranks "$log" "$@"
  SPS[$name]="$(kv_mean "$log" samples_per_sec)" || die "no samples_per_sec in $log"
  ACC[$name]="$(kv_get "$log" test_accuracy)" || die "no test_accuracy in $log"
  BPS[$name]="$(calc 't / s' t="$TX" s="$STEPS")"
  BOUND[$name]="$(calc 'r / b * n' r="$RATE_BPS" b="${BPS[$name]}" n="$BATCH")"
  FRAC[$name]="$(calc 's / b' s="${SPS[$name]}" b="${BOUND[$name]}")"
}

COMMON=(--epochs "$EPOCHS" --train-subset "$SUBSET" --lr "$LR" --batch-size "$BATCH" --threads 1)
train cohort_fp32 "$BIN/fashion_mnist" "${COMMON[@]}" --grad-compression none
train cohort_bf16 "$BIN/fashion_mnist" "${COMMON[@]}" --grad-compression bf16
train cohort_bf16_ef "$BIN/fashion_mnist" "${COMMON[@]}" --grad-compression bf16-ef
train cohort_fp16 "$BIN/fashion_mnist" "${COMMON[@]}" --grad-compression fp16
train ddp_gloo "$PY" "$ROOT/examples/fashion_mnist/train_ddp.py" "${COMMON[@]}"

AR_LOG="$LOG_DIR/multihost.allreduce"
echo "# running: all-reduce" >&2
run_ranks "$AR_LOG.fp32.log" "$BIN/allreduce_bench" --seconds "$SECONDS_PER_SIZE"
run_ranks "$AR_LOG.bf16.log" "$BIN/allreduce_bench" --seconds "$SECONDS_PER_SIZE" --wire bf16
run_ranks "$AR_LOG.gloo.log" "$PY" "$ROOT/bench/allreduce_gloo.py" --seconds "$SECONDS_PER_SIZE"
# The link allows an all-reduce of S bytes in 2 (n-1)/n S / RATE seconds:
# algbw bound = RATE * n / (2 (n - 1)) over hosts (n = 2: RATE).
AR_BOUND_GBS="$(calc 'r / 1e9' r="$RATE_BPS")"

echo
printf '%-16s %12s %10s %14s %14s %10s\n' run samples/s accuracy "bytes/step" "link allows" fraction
for name in cohort_fp32 cohort_bf16 cohort_bf16_ef cohort_fp16 ddp_gloo; do
  printf '%-16s %12s %10s %14s %14s %10s\n' "$name" "${SPS[$name]}" "${ACC[$name]}" "${BPS[$name]}" \
    "${BOUND[$name]}" "${FRAC[$name]}"
done
echo
printf '%-26s %14s %14s %14s %12s\n' "all-reduce algbw (GB/s)" "cohort fp32" "cohort bf16" "gloo" "link allows"
for size in 2700000 67108864; do
  printf '%-26s %14s %14s %14s %12s\n' "size=$size" \
    "$(kv_get "$AR_LOG.fp32.log" algbw_gbs cohort "size=$size" buffer=plain)" \
    "$(kv_get "$AR_LOG.bf16.log" algbw_gbs cohort "size=$size" buffer=plain)" \
    "$(kv_get "$AR_LOG.gloo.log" algbw_gbs gloo "size=$size")" "$AR_BOUND_GBS"
done
AR64="$(kv_get "$AR_LOG.fp32.log" algbw_gbs cohort size=67108864 buffer=plain)"
echo
echo "accuracy_gap_bf16_points=$(calc '(a - b) * 100' a="${ACC[cohort_fp32]}" b="${ACC[cohort_bf16]}")"
echo "accuracy_gap_bf16_ef_points=$(calc '(a - b) * 100' a="${ACC[cohort_fp32]}" b="${ACC[cohort_bf16_ef]}")"
echo "accuracy_gap_fp16_points=$(calc '(a - b) * 100' a="${ACC[cohort_fp32]}" b="${ACC[cohort_fp16]}")"
echo "link_fraction_fp32_allreduce=$(calc 'a / b' a="$AR64" b="$AR_BOUND_GBS")"
echo "ratio_fp32=$(calc 'a / b' a="${SPS[cohort_fp32]}" b="${SPS[ddp_gloo]}")"
echo "ratio_fp16=$(calc 'a / b' a="${SPS[cohort_fp16]}" b="${SPS[ddp_gloo]}")"
echo "ratio=$(calc 'a / b' a="${SPS[cohort_bf16]}" b="${SPS[ddp_gloo]}")"
