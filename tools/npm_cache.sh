# Sourced by the tools/*/ensure.sh scripts: installs the npm packages pinned
# in a package.json (+ package-lock.json) into a cache outside the source tree,
#   ${COHORT_NPM_CACHE:-$HOME/.cache/cohort/npm}/<name>
# Only when the cache is missing or the pinned files changed (compared by a
# hash: npm may rewrite the lockfile in the cache). Safe to run concurrently:
# everything happens under a lock on <cache>/.lock (fd 9). A failed install
# (npm retries an unreachable registry for over a minute) is remembered for
# 10 minutes in <cache>/.failed, so the next callers (one per test process
# under ctest) fail fast; delete that file to retry now.
# npm's chatter goes to stderr. Exit status of the callers: 2 node/npm
# missing; 3 npm install failed.

# npm_cache_init NAME: sets $cache, checks node/npm, takes the lock.
npm_cache_init() {
  cache="${COHORT_NPM_CACHE:-${HOME:-/tmp}/.cache/cohort/npm}/$1"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "ensure.sh: node/npm not found on PATH" >&2
    exit 2
  fi
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
}

# npm_cache_recently_failed WHAT: true if WHAT failed less than 10 minutes ago.
npm_cache_recently_failed() {
  [[ -f "$cache/.failed" && "$(cat "$cache/.failed")" == "$1" ]] &&
    (( $(date +%s) - $(stat -c %Y "$cache/.failed") < 600 ))
}

# npm_cache_install DIR FILE...: installs DIR/package.json (and its lockfile)
# unless every node_modules/FILE exists and the pinned files are unchanged.
# $NPM_INSTALL_FLAGS are added to `npm install` (and to the stamp), e.g.
# --omit=optional to skip optional native modules that compile from source.
# REQUIRES: npm_cache_init.
npm_cache_install() {
  local here="$1" f ok=1
  shift
  local stamp
  stamp="$({ cat "$here/package.json"; [[ ! -f "$here/package-lock.json" ]] || cat "$here/package-lock.json";
    echo "${NPM_INSTALL_FLAGS:-}"; } | sha256sum | cut -d' ' -f1)"
  for f in "$@"; do [[ -f "$cache/node_modules/$f" ]] || ok=0; done
  if (( ok )) && [[ "$(cat "$cache/.installed" 2>/dev/null)" == "$stamp" ]]; then
    return 0
  fi
  if npm_cache_recently_failed "$stamp"; then
    echo "ensure.sh: npm install failed in $cache less than 10 minutes ago; not retrying yet (rm $cache/.failed to force)" >&2
    exit 3
  fi
  cp "$here/package.json" "$cache/package.json"
  if [[ -f "$here/package-lock.json" ]]; then
    cp "$here/package-lock.json" "$cache/package-lock.json"
  else
    rm -f "$cache/package-lock.json"
  fi
  # shellcheck disable=SC2086  # flags are words
  if ! (cd "$cache" && npm install --no-audit --no-fund --fetch-retries=1 --fetch-timeout=60000 \
    ${NPM_INSTALL_FLAGS:-} >&2); then
    echo "$stamp" >"$cache/.failed"
    echo "ensure.sh: npm install failed in $cache (is the npm registry reachable?)" >&2
    exit 3
  fi
  rm -f "$cache/.failed"
  echo "$stamp" >"$cache/.installed"
  for f in "$@"; do
    if [[ ! -f "$cache/node_modules/$f" ]]; then
      echo "ensure.sh: npm install in $cache did not produce node_modules/$f" >&2
      exit 3
    fi
  done
}
