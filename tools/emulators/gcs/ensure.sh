#!/usr/bin/env bash
# Installs the GCS test emulator (firebase-tools 15.34.2, pinned in
# package.json next to this script) into a cache outside the source tree,
#   ${COHORT_NPM_CACHE:-$HOME/.cache/cohort/npm}/gcs
# copies the gcs-emu.js launcher there, and prints that directory on stdout
# (npm's chatter goes to stderr). Start the emulator with
#   cd "$(ensure.sh)" && PORT=9199 TMPDIR=$(mktemp -d) node gcs-emu.js
# Runs `npm install --no-audit --no-fund` only when the cache is missing or
# package.json / package-lock.json changed (the first install takes ~2 min
# and ~310 MB). Called by tests/storage/gcs_emulator_test.cc; safe to run
# concurrently (flock). Exit status: 0 ready; 2 node/npm missing; 3 install failed.
# A failed install (npm retries an unreachable registry for over a minute)
# is remembered for 10 minutes in $cache/.failed, so that the next callers
# (one per test process under ctest) fail fast; delete that file to retry now.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${COHORT_NPM_CACHE:-${HOME:-/tmp}/.cache/cohort/npm}/gcs"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "ensure.sh: node/npm not found on PATH" >&2
  exit 2
fi

# What was installed: package.json and package-lock.json as given here (npm
# may rewrite the lockfile in the cache, so compare a stamp, not the copy).
stamp() {
  { cat "$here/package.json"; [[ ! -f "$here/package-lock.json" ]] || cat "$here/package-lock.json"; } |
    sha256sum | cut -d' ' -f1
}

ready() {
  [[ -f "$cache/node_modules/firebase-tools/lib/emulator/storage/index.js" ]] &&
    [[ -f "$cache/node_modules/firebase-tools/lib/emulator/registry.js" ]] &&
    [[ "$(cat "$cache/.installed" 2>/dev/null)" == "$(stamp)" ]]
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if ! ready; then
  if [[ -f "$cache/.failed" && "$(cat "$cache/.failed")" == "$(stamp)" ]] &&
     (( $(date +%s) - $(stat -c %Y "$cache/.failed") < 600 )); then
    echo "ensure.sh: npm install failed in $cache less than 10 minutes ago; not retrying yet (rm $cache/.failed to force)" >&2
    exit 3
  fi
  cp "$here/package.json" "$cache/package.json"
  if [[ -f "$here/package-lock.json" ]]; then
    cp "$here/package-lock.json" "$cache/package-lock.json"
  else
    rm -f "$cache/package-lock.json"
  fi
  if ! (cd "$cache" && npm install --no-audit --no-fund >&2); then
    stamp >"$cache/.failed"
    echo "ensure.sh: npm install failed in $cache (is the npm registry reachable?)" >&2
    exit 3
  fi
  rm -f "$cache/.failed"
  stamp >"$cache/.installed"
  if ! ready; then
    echo "ensure.sh: npm install in $cache did not produce the expected packages" >&2
    exit 3
  fi
fi
# The launcher must sit next to node_modules so require() finds firebase-tools.
if ! cmp -s "$here/gcs-emu.js" "$cache/gcs-emu.js"; then
  cp "$here/gcs-emu.js" "$cache/gcs-emu.js.tmp.$$" && mv -f "$cache/gcs-emu.js.tmp.$$" "$cache/gcs-emu.js"
fi
echo "$cache"
