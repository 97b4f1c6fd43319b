#!/usr/bin/env bash
# Runs the README's quickstart block as a user would, line by line, in a
# scratch copy of the checkout's layout (build/ and examples/ link to the
# real ones), then checks what it promised: a model in
# ./cohort_results/<job id>/ from the C++ trainer and from the PyTorch script,
# and one (with checkpoints) in a bucket on a local GCS stand-in, copied back.
#   tests/readme/quickstart_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src="$1"
build="$2"
fail() { echo "FAILED: $*" >&2; exit 1; }
block="$(sed -n '/<!-- quickstart:/,/<!-- \/quickstart -->/p' "$src/README.md" | sed '1,2d;$d' | sed '$d')"
[[ -n "$block" ]] || fail "no quickstart block in README.md"
grep -q "cohort run" <<<"$block" || fail "the quickstart block has no cohort run: $block"
work="$(mktemp -d)"
FAKE_GCS_PID=""
trap 'rm -rf "$work"; [[ -n "$FAKE_GCS_PID" ]] && kill "$FAKE_GCS_PID" 2>/dev/null' EXIT
# The bucket: the in-memory GCS endpoint the storage benchmark uses (every
# bucket exists), as STORAGE_EMULATOR_HOST; BUCKET in the README becomes "quickstart".
BUILD_DIR="$build" source "$src/bench/common.sh"
[[ -x "$BIN/fake_gcs_server_bench" ]] || fail "no $BIN/fake_gcs_server_bench (build the bench targets)"
start_fake_gcs "$work/gcs.out" "$work/gcs.err"
export STORAGE_EMULATOR_HOST="$FAKE_GCS_ENDPOINT" NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
mkdir "$work/checkout"
ln -s "$build" "$work/checkout/build"
ln -s "$src/examples" "$work/checkout/examples"
cd "$work/checkout" || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
n=0
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  n=$((n + 1))
  echo "\$ $line"
  # `cohort run` binds the dashboard's port 8265 when free: any port will do here.
  cmd="${line/cohort run /cohort run --dashboard-port 0 }"
  cmd="${cmd//BUCKET/quickstart}"
  if ! out="$(bash -c "$cmd" 2>&1)"; then
    echo "$out" | tail -n 30
    fail "README quickstart line $n failed: $line"
  fi
  echo "$out" | tail -n 4
  [[ "$line" == *"storage ls"* ]] && listing="$out"
done <<<"$block"
models=(cohort_results/*/model.pt)
[[ ${#models[@]} -eq 2 && -f "${models[0]}" && -f "${models[1]}" ]] ||
  fail "expected two models in ./cohort_results (C++ and PyTorch), found: $(ls -R cohort_results 2>&1)"
grep -q "gs://quickstart/run1/model.pt" <<<"${listing:-}" || fail "the bucket listing has no model.pt: ${listing:-}"
grep -q "gs://quickstart/run1/checkpoints/" <<<"${listing:-}" || fail "the bucket listing has no checkpoints: ${listing:-}"
[[ -s model.pt ]] || fail "the model was not copied down from the bucket"
echo "quickstart: $n commands ran; models: ${models[*]}, gs://quickstart/run1/model.pt and ./model.pt"
