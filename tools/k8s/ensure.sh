#!/usr/bin/env bash
# Installs the Kubernetes manifest validators (kubernetes-models 5.1.0, ajv 8)
# pinned in package.json next to this script into
# ${COHORT_NPM_CACHE:-~/.cache/cohort/npm}/k8s (see tools/npm_cache.sh) and
# prints that directory on stdout. Called by tests/k8s_manifests/validate.sh.
# Exit status: 0 ready; 2 node/npm missing; 3 install failed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../npm_cache.sh"
npm_cache_init k8s
npm_cache_install "$here" kubernetes-models/package.json ajv/package.json yaml/package.json
echo "$cache"
