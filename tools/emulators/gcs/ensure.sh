#!/usr/bin/env bash
# Installs the GCS test emulator (firebase-tools 15.34.2, pinned in
# package.json next to this script; the first install takes ~2 min and
# ~310 MB) into ${COHORT_NPM_CACHE:-~/.cache/cohort/npm}/gcs (see
# tools/npm_cache.sh), copies the gcs-emu.js launcher there, and prints that
# directory on stdout. Start the emulator with
#   cd "$(ensure.sh)" && PORT=9199 TMPDIR=$(mktemp -d) node gcs-emu.js
# Called by tests/storage/gcs_emulator_test.cc.
# Exit status: 0 ready; 2 node/npm missing; 3 install failed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../npm_cache.sh"
npm_cache_init gcs
# re2 (an optional dependency of firebase-tools' hosting server, unused by the
# storage emulator) compiles C++ from source for minutes: skip optionals.
NPM_INSTALL_FLAGS=--omit=optional npm_cache_install "$here" firebase-tools/lib/emulator/storage/index.js firebase-tools/lib/emulator/registry.js
# The launcher must sit next to node_modules so require() finds firebase-tools.
if ! cmp -s "$here/gcs-emu.js" "$cache/gcs-emu.js"; then
  cp "$here/gcs-emu.js" "$cache/gcs-emu.js.tmp.$$" && mv -f "$cache/gcs-emu.js.tmp.$$" "$cache/gcs-emu.js"
fi
echo "$cache"
