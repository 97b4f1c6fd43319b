#!/usr/bin/env bash
# The dashboard's end-to-end browser test (ctest: dashboard_browser_e2e).
#   tests/dashboard/browser_e2e.sh BUILD_DIR
# Starts `cohort run` (an embedded head + agent) training the seed model with
# 2 workers, reads the token and port it prints, and runs browser_e2e.mjs in
# headless Chromium against it; then checks that the job succeeded. The
# screenshots land in BUILD_DIR/test-artifacts/. Exit 77 with "SKIPPED: ..."
# when Chromium or playwright-core cannot be installed (tools/browser/ensure.sh)
# or fashion_mnist was not built (COHORT_TRAINER=OFF).
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build="$(cd "$1" && pwd)"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cohort="$build/bin/cohort"
trainer="$build/bin/fashion_mnist"
artifacts="${COHORT_E2E_SCREENSHOT_DIR:-$build/test-artifacts}"
# A short run of the seed model (~0.5-2.5 s an epoch on 2 ranks). The docs'
# screenshots come from this script with `make run`'s arguments (--resume, the
# defaults) and COHORT_E2E_MIN_POINTS=8; see docs/dashboard.md.
read -r -a train_args <<<"${COHORT_E2E_TRAIN_ARGS:---epochs 6 --train-subset 16384 --lr 0.05 --threads 1}"

[[ -x "$cohort" ]] || { echo "FAILED: $cohort is not built"; exit 1; }
if [[ ! -x "$trainer" ]]; then
  echo "SKIPPED: $trainer is not built (configured with COHORT_TRAINER=OFF)"
  exit 77
fi
if ! playwright="$("$src/tools/browser/ensure.sh")"; then
  echo "SKIPPED: headless Chromium or playwright-core could not be installed (see tools/browser/ensure.sh above)"
  exit 77
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/cohort-browser-e2e-XXXXXX")"
run_pid=""
cleanup() {
  if [[ -n "$run_pid" ]] && kill -0 "$run_pid" 2>/dev/null; then
    kill -TERM "$run_pid" 2>/dev/null
    wait "$run_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The workers wait for $work/go, which the browser creates once it shows the
# job's page and has read the log, so the page sees every chart point and log
# line arrive live however fast this machine trains; and after training they
# wait for $work/end, which the browser creates when it is done, so that the
# embedded cluster (which ends with the job) serves the page until then.
# (At most 60 s of waiting each. COHORT_E2E_GATE=0 runs the trainer as is,
# for screenshots of a plain run; the browser must then finish in time.)
cat >"$work/gated.sh" <<GATE
#!/bin/sh
i=0
while [ ! -e "$work/go" ] && [ \$i -lt 600 ]; do sleep 0.1; i=\$((i + 1)); done
"\$@"
rc=\$?
i=0
while [ ! -e "$work/end" ] && [ \$i -lt 600 ]; do sleep 0.1; i=\$((i + 1)); done
exit \$rc
GATE
chmod +x "$work/gated.sh"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
gate=("$work/gated.sh")
[[ "${COHORT_E2E_GATE:-1}" == 0 ]] && gate=()
"$cohort" run --dashboard-port "$port" --workers 2 --state-dir "$work/state" -- \
  "${gate[@]}" "$trainer" "${train_args[@]}" >"$work/run.out" 2>&1 &
run_pid=$!

# "Dashboard: http://127.0.0.1:PORT (token: TOKEN)" and "  this job: .../#/jobs/ID".
line=""
for _ in $(seq 1 300); do
  line="$(grep -m1 '^Dashboard: ' "$work/run.out" || true)"
  [[ -n "$line" ]] && grep -q 'this job: ' "$work/run.out" && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$line" ]]; then
  echo "FAILED: cohort run did not print the dashboard address:"
  cat "$work/run.out"
  exit 1
fi
url="$(sed -E 's/^Dashboard: (http[^ ]+) .*/\1/' <<<"$line")"
token="$(sed -E 's/.*\(token: ([^)]*)\).*/\1/' <<<"$line")"
job="$(grep -m1 'this job: ' "$work/run.out" | sed -E 's|.*#/jobs/||')"
echo "browser_e2e: $url job $job"

COHORT_URL="$url" COHORT_TOKEN="$token" COHORT_JOB_ID="$job" PLAYWRIGHT_DIR="$playwright" \
  COHORT_E2E_GO_FILE="$work/go" COHORT_E2E_END_FILE="$work/end" \
  SCREENSHOT_DIR="$artifacts" timeout 150 node "$src/tests/dashboard/browser_e2e.mjs"
browser_rc=$?
touch "$work/go" "$work/end"

wait "$run_pid"
run_rc=$?
run_pid=""
echo "---- cohort run output ----"
cat "$work/run.out"
echo "---------------------------"
if [[ $browser_rc -ne 0 ]]; then
  echo "FAILED: the browser checks failed (exit $browser_rc)"
  exit 1
fi
if [[ $run_rc -ne 0 ]] || ! grep -q "Job $job succeeded" "$work/run.out"; then
  echo "FAILED: the training job did not succeed (cohort run exit $run_rc)"
  exit 1
fi
echo "PASSED: screenshots in $artifacts"
