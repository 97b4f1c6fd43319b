#!/usr/bin/env bash
# The head's locking contract, checked by the compiler: clang's
# -Wthread-safety over every source of src/head (GUARDED_BY / REQUIRES /
# EXCLUDES in cluster.h, work_pool.h, results_finalizer.h ...). A member
# touched without its lock fails this test. Usage: thread_safety.sh BUILD_DIR
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:?usage: thread_safety.sh BUILD_DIR}"
cxx="$(command -v clang++-14 || command -v clang++ || true)"
if [[ -z "$cxx" ]]; then
  echo "SKIP: clang++ is not installed (scripts/setup installs clang-14)"
  exit 77
fi
if [[ ! -f "$build/proto/cohort.pb.h" ]]; then
  echo "SKIP: $build/proto/cohort.pb.h is not generated yet (build the cohort_rpc target)"
  exit 77
fi
status=0
for f in "$src"/src/head/*.cc; do
  if ! "$cxx" -std=c++20 -fsyntax-only -Wthread-safety -Wthread-safety-beta -Werror=thread-safety \
      -Wno-unknown-warning-option -I"$src/include" -I"$src/src/head" -I"$build/proto" \
      -DCOHORT_PYTHON_DIR='""' "$f"; then
    echo "FAILED: $f"
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "thread-safety analysis: $(ls "$src"/src/head/*.cc | wc -l) files clean"
exit $status
