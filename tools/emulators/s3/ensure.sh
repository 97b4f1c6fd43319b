#!/usr/bin/env bash
# Installs the S3 test tools (s3rver 3.7.1, @aws-sdk/signature-v4) pinned in
# package.json next to this script into ${COHORT_NPM_CACHE:-~/.cache/cohort/npm}/s3
# (see tools/npm_cache.sh) and prints that directory on stdout.
# Called by tests/storage/{s3_store,sigv4}_test.cc.
# Exit status: 0 ready; 2 node/npm missing; 3 install failed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../npm_cache.sh"
npm_cache_init s3
npm_cache_install "$here" s3rver/bin/s3rver.js @aws-sdk/signature-v4/package.json \
  @aws-crypto/sha256-js/package.json
echo "$cache"
