#!/usr/bin/env bash
# Runs the README's quickstart block as a user would, line by line, in a
# scratch copy of the checkout's layout (build/ and examples/ link to the
# real ones), then checks what it promised: a model in
# ./cohort_results/<job id>/ from the C++ trainer and from the PyTorch script,
# and one at the results URI.
#   tests/readme/quickstart_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src="$1"
build="$2"
fail() { echo "FAILED: $*" >&2; exit 1; }
block="$(sed -n '/<!-- quickstart:/,/<!-- \/quickstart -->/p' "$src/README.md" | sed '1,2d;$d' | sed '$d')"
[[ -n "$block" ]] || fail "no quickstart block in README.md"
grep -q "cohort run" <<<"$block" || fail "the quickstart block has no cohort run: $block"
work="$(mktemp -d)"
bucket=/tmp/cohort-quickstart
trap 'rm -rf "$work" "$bucket"' EXIT
rm -rf "$bucket"
ln -s "$build" "$work/build"
ln -s "$src/examples" "$work/examples"
cd "$work" || exit 1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
n=0
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  n=$((n + 1))
  echo "\$ $line"
  # `cohort run` binds the dashboard's port 8265 when free: any port will do here.
  cmd="${line/cohort run /cohort run --dashboard-port 0 }"
  if ! out="$(bash -c "$cmd" 2>&1)"; then
    echo "$out" | tail -n 30
    fail "README quickstart line $n failed: $line"
  fi
  echo "$out" | tail -n 4
done <<<"$block"
models=(cohort_results/*/model.pt)
[[ ${#models[@]} -eq 2 && -f "${models[0]}" && -f "${models[1]}" ]] ||
  fail "expected two models in ./cohort_results (C++ and PyTorch), found: $(ls -R cohort_results 2>&1)"
[[ -f "$bucket/run1/model.pt" ]] || fail "no model at the results URI: $(ls -R "$bucket" 2>&1)"
echo "quickstart: $n commands ran; models: ${models[*]} and $bucket/run1/model.pt"
