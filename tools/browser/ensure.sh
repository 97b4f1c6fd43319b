#!/usr/bin/env bash
# Makes the browser tests runnable: Debian's Chromium (/usr/bin/chromium, or
# $COHORT_CHROMIUM) and playwright-core (pinned in package.json next to this
# script, without a browser download of its own) installed into a cache
# outside the source tree,
#   ${COHORT_NPM_CACHE:-$HOME/.cache/cohort/npm}/browser
# Prints that directory on stdout (chatter goes to stderr); a test runs
#   NODE_PATH="$(ensure.sh)/node_modules" node tests/dashboard/browser_e2e.mjs
# Chromium comes from apt (`scripts/setup` lists it) when missing and this
# runs as root or with password-less sudo. Runs `npm install` only when the
# cache is missing or package.json / package-lock.json changed. Safe to run
# concurrently (flock). A failed install is remembered for 10 minutes in
# $cache/.failed so that the next callers fail fast; delete it to retry now.
# Exit status: 0 ready; 2 node/npm missing; 3 npm install failed;
# 4 Chromium missing and could not be installed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chromium="${COHORT_CHROMIUM:-/usr/bin/chromium}"
source "$here/../npm_cache.sh"
npm_cache_init browser

if [[ ! -x "$chromium" ]]; then
  if npm_cache_recently_failed chromium; then
    echo "ensure.sh: installing chromium failed less than 10 minutes ago; not retrying yet (rm $cache/.failed to force)" >&2
    exit 4
  fi
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "ensure.sh: $chromium is missing and this user cannot run apt-get (run scripts/setup as root)" >&2
      echo chromium >"$cache/.failed"
      exit 4
    fi
  fi
  echo "ensure.sh: installing Debian's chromium with apt-get" >&2
  if ! { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium >&2 ||
         { DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >&2 &&
           DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium >&2; }; } ||
     [[ ! -x "$chromium" ]]; then
    echo chromium >"$cache/.failed"
    echo "ensure.sh: could not install chromium with apt-get (is the Debian mirror reachable?)" >&2
    exit 4
  fi
fi

# playwright-core never downloads a browser; this only fetches the package.
npm_cache_install "$here" playwright-core/package.json
echo "$cache"
