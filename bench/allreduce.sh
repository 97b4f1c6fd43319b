#!/usr/bin/env bash
# All-reduce, cohort vs torch.distributed gloo, 2 ranks on this machine.
#
#   bench/allreduce.sh            # SECONDS_PER_SIZE=1 by default
#   SECONDS_PER_SIZE=3 bench/allreduce.sh
#
# Runs build/bin/allreduce_bench (buffer=plain and buffer=shared) and
# bench/allreduce_gloo.py under `cohort launch -n 2`, one thread per rank,
# and prints a table per message size, then
#   latency_ratio_4KB=X.XX      gloo lat / cohort plain lat at 4096 B (target >= 20)
#   bandwidth_ratio_2.7MB=X.XX  cohort shared algbw / gloo algbw      (target >= 5)
#   bandwidth_ratio_64MB=X.XX   idem at 64 MiB                         (target >= 5)
#   ratio=X.XX                  min of the two bandwidth ratios (headline; higher is better)
# Raw output of the runs is kept in $BUILD_DIR/bench/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SECONDS_PER_SIZE="${SECONDS_PER_SIZE:-1}"
NRANKS=2
SIZES=(4096 262144 2700000 67108864)

ensure_build allreduce_bench
ensure_torch_python
cd "$ROOT"
print_machine "$BIN/allreduce_bench"
echo "# all-reduce: $NRANKS ranks, OMP_NUM_THREADS=1, ${SECONDS_PER_SIZE}s per size"

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
COHORT_LOG="$LOG_DIR/allreduce.cohort.log"
GLOO_LOG="$LOG_DIR/allreduce.gloo.log"
run_logged "$COHORT_LOG" "$COHORT" launch -n "$NRANKS" -- \
  "$BIN/allreduce_bench" --seconds "$SECONDS_PER_SIZE"
run_logged "$GLOO_LOG" "$COHORT" launch -n "$NRANKS" -- \
  "$PY" "$ROOT/bench/allreduce_gloo.py" --seconds "$SECONDS_PER_SIZE"

# get LOG PREFIX BUFFER SIZE FIELD
get() {
  kv_get "$1" "$5" "$2" "buffer=$3" "size=$4" ||
    die "no '$2 size=$4 buffer=$3 ... $5=' line in $1"
}

printf '%-10s | %-19s | %-19s | %-19s | %-10s %-10s\n' "" "cohort plain" "cohort shared" \
  "gloo" "bw ratio" "lat ratio"
printf '%-10s | %8s %10s | %8s %10s | %8s %10s | %-10s %-10s\n' "size" "lat_us" "algbw_gbs" \
  "lat_us" "algbw_gbs" "lat_us" "algbw_gbs" "best/gloo" "gloo/plain"
declare -A BW_RATIO LAT_RATIO
for size in "${SIZES[@]}"; do
  pl=$(get "$COHORT_LOG" cohort plain "$size" lat_us)
  pb=$(get "$COHORT_LOG" cohort plain "$size" algbw_gbs)
  sl=$(get "$COHORT_LOG" cohort shared "$size" lat_us)
  sb=$(get "$COHORT_LOG" cohort shared "$size" algbw_gbs)
  gl=$(get "$GLOO_LOG" gloo plain "$size" lat_us)
  gb=$(get "$GLOO_LOG" gloo plain "$size" algbw_gbs)
  best_bw_ratio=$(calc '(p > s ? p : s) / g' p="$pb" s="$sb" g="$gb")
  lat_ratio=$(calc 'g / p' g="$gl" p="$pl")
  BW_RATIO[$size]=$(calc 's / g' s="$sb" g="$gb")
  LAT_RATIO[$size]=$lat_ratio
  printf '%-10s | %8s %10s | %8s %10s | %8s %10s | %-10s %-10s\n' "$size" "$pl" "$pb" \
    "$sl" "$sb" "$gl" "$gb" "$best_bw_ratio" "$lat_ratio"
done

bw_27=${BW_RATIO[2700000]}
bw_64=${BW_RATIO[67108864]}
echo "latency_ratio_4KB=${LAT_RATIO[4096]}"
echo "bandwidth_ratio_2.7MB=$bw_27"
echo "bandwidth_ratio_64MB=$bw_64"
echo "ratio=$(calc '(a < b ? a : b)' a="$bw_27" b="$bw_64")"
