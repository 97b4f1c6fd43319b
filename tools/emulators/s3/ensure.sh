#!/usr/bin/env bash
# Installs the S3 test tools (s3rver 3.7.1, @aws-sdk/signature-v4) pinned in
# package.json next to this script into a cache outside the source tree,
#   ${COHORT_NPM_CACHE:-$HOME/.cache/cohort/npm}/s3
# and prints that directory on stdout (npm's chatter goes to stderr).
# Runs `npm install` only when the cache is missing or package.json /
# package-lock.json changed.
# Called by tests/storage/{s3_store,sigv4}_test.cc; safe to run concurrently
# (flock). Exit status: 0 ready; 2 node/npm missing; 3 install failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${COHORT_NPM_CACHE:-${HOME:-/tmp}/.cache/cohort/npm}/s3"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "ensure.sh: node/npm not found on PATH" >&2
  exit 2
fi

ready() {
  [[ -f "$cache/node_modules/s3rver/bin/s3rver.js" ]] &&
    [[ -f "$cache/node_modules/@aws-sdk/signature-v4/package.json" ]] &&
    [[ -f "$cache/node_modules/@aws-crypto/sha256-js/package.json" ]] &&
    cmp -s "$here/package.json" "$cache/package.json" &&
    { [[ ! -f "$here/package-lock.json" ]] || cmp -s "$here/package-lock.json" "$cache/package-lock.json"; }
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if ! ready; then
  cp "$here/package.json" "$cache/package.json"
  if [[ -f "$here/package-lock.json" ]]; then
    cp "$here/package-lock.json" "$cache/package-lock.json"
  fi
  if ! (cd "$cache" && npm install --no-audit --no-fund >&2); then
    echo "ensure.sh: npm install failed in $cache (is the npm registry reachable?)" >&2
    exit 3
  fi
  if ! ready; then
    echo "ensure.sh: npm install in $cache did not produce the expected packages" >&2
    exit 3
  fi
fi
echo "$cache"
