#!/usr/bin/env bash
# Installs the Kubernetes manifest validators (kubernetes-models 5.1.0, ajv 8) pinned in
# package.json next to this script into a cache outside the source tree,
#   ${COHORT_NPM_CACHE:-$HOME/.cache/cohort/npm}/k8s
# and prints that directory on stdout (npm's chatter goes to stderr).
# Runs `npm install` only when the cache is missing or package.json /
# package-lock.json changed; a failed install is not retried for 10 minutes.
# Called by tests/k8s_manifests/validate.sh; safe to run concurrently
# (flock). Exit status: 0 ready; 2 node/npm missing; 3 install failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${COHORT_NPM_CACHE:-${HOME:-/tmp}/.cache/cohort/npm}/k8s"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "ensure.sh: node/npm not found on PATH" >&2
  exit 2
fi

# What was installed: a hash of package.json + package-lock.json (npm may
# rewrite the lockfile in the cache, so compare the sources' hash instead).
want_stamp="$(cat "$here/package.json" "$here"/package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)"
ready() {
  [[ -f "$cache/node_modules/kubernetes-models/package.json" ]] &&
    [[ -f "$cache/node_modules/ajv/package.json" ]] &&
    [[ -f "$cache/node_modules/yaml/package.json" ]] &&
    [[ "$(cat "$cache/.installed-from" 2>/dev/null)" == "$want_stamp" ]]
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
failed_marker="$cache/.install-failed"
if ! ready; then
  # A failed install (registry unreachable) is not retried for 10 minutes, so
  # that a test run with many test processes skips quickly.
  if [[ -f "$failed_marker" ]] && (( $(date +%s) - $(stat -c %Y "$failed_marker") < 600 )); then
    echo "ensure.sh: npm install failed recently (see $failed_marker); not retrying yet" >&2
    exit 3
  fi
  cp "$here/package.json" "$cache/package.json"
  if [[ -f "$here/package-lock.json" ]]; then
    cp "$here/package-lock.json" "$cache/package-lock.json"
  fi
  if ! (cd "$cache" && npm install --no-audit --no-fund --fetch-retries=1 --fetch-timeout=60000 >&2); then
    date >"$failed_marker"
    echo "ensure.sh: npm install failed in $cache (is the npm registry reachable?)" >&2
    exit 3
  fi
  echo "$want_stamp" >"$cache/.installed-from"
  if ! ready; then
    echo "ensure.sh: npm install in $cache did not produce the expected packages" >&2
    exit 3
  fi
  rm -f "$failed_marker"
fi
echo "$cache"
