#!/usr/bin/env bash
# Builds the libFuzzer targets in a separate clang tree and runs them.
#
#   fuzz/run.sh [options] SECONDS [TARGET...]   fuzz each target (default: all
#                                               of fuzz/targets.txt) for SECONDS
#   fuzz/run.sh --build-only                    configure + build the tree only
#
# Options:
#   --build-only   configure and build, run nothing
#   --no-build     use the tree as it is (exit 77 when it was never built)
#   --replay-only  only replay fuzz/regressions/<target>/ (SECONDS may be omitted)
#   --merge        afterwards, merge the inputs that add coverage back into
#                  fuzz/corpus/<target>/ (writes to the repository: never in `make test`)
#
# For each target: first every file in fuzz/regressions/<target>/ is run once
# (no fuzzing); a crash there fails the target, except for the files listed in
# fuzz/regressions/KNOWN_CRASHES (replayed for information only). Then
# libFuzzer runs for SECONDS over fuzz/corpus/<target>/ (read only) plus a
# scratch corpus in the build tree, where new inputs go. A crash, a timeout
# (> 10 s per input) or running out of memory (> 2 GiB) fails the target and
# prints the reproducer's path.
#
# Environment:
#   COHORT_FUZZ_BUILD_DIR  the clang tree (default: build/fuzz)
#   FUZZ_JOBS              build parallelism (default 2)
#   FUZZ_CC, FUZZ_CXX      compilers (default clang-14, clang++-14)
#   FUZZ_ARGS              extra libFuzzer flags, e.g. "-max_len=8192"
#   FUZZ_OPT               optimization flag of the tree (default -O1)
#
# Exit status: 0 all passed; 1 a crash or a failed build; 77 clang or the
# libFuzzer runtime is missing (apt-get install clang-14 libclang-rt-14-dev,
# or scripts/setup).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${COHORT_FUZZ_BUILD_DIR:-$ROOT/build/fuzz}
case "$B" in /*) ;; *) B=$ROOT/$B ;; esac
JOBS=${FUZZ_JOBS:-2}
CC_BIN=${FUZZ_CC:-clang-14}
CXX_BIN=${FUZZ_CXX:-clang++-14}
# -O1: Beast-heavy sources take minutes at -O2 under the sanitizers. The
# ctest smoke runs use FUZZ_OPT=-O0 (a separate tree): 2-3x faster to build,
# slower to run, and they run for seconds.
FUZZ_OPT=${FUZZ_OPT:--O1}
SAN_FLAGS="$FUZZ_OPT -gline-tables-only -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -D_GLIBCXX_ASSERTIONS"
KNOWN="$ROOT/fuzz/regressions/KNOWN_CRASHES"

build=1 run=1 replay_only=0 merge=0
while [[ $# -gt 0 && $1 == --* ]]; do
  case "$1" in
    --build-only) run=0 ;;
    --no-build) build=0 ;;
    --replay-only) replay_only=1 ;;
    --merge) merge=1 ;;
    *) echo "fuzz/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
seconds=0
if [[ $run -eq 1 && $replay_only -eq 0 ]]; then
  if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run.sh [--build-only|--no-build|--replay-only|--merge] SECONDS [TARGET...]" >&2
    exit 2
  fi
  seconds=$1
  shift
elif [[ $# -ge 1 && $1 =~ ^[0-9]+$ ]]; then
  shift
fi

mapfile -t all_targets < <(awk '/^fuzz_/ {print $1}' "$ROOT/fuzz/targets.txt")
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
  if ! printf '%s\n' "${all_targets[@]}" | grep -qx "$t"; then
    echo "fuzz/run.sh: unknown target '$t' (fuzz/targets.txt lists: ${all_targets[*]})" >&2
    exit 2
  fi
done

skip() { echo "fuzz/run.sh: SKIP: $*" >&2; exit 77; }

# --- the toolchain --------------------------------------------------------------
check_toolchain() {
  command -v "$CXX_BIN" >/dev/null 2>&1 || skip "$CXX_BIN not found (apt-get install clang-14 libclang-rt-14-dev, or scripts/setup)"
  command -v "$CC_BIN" >/dev/null 2>&1 || skip "$CC_BIN not found (apt-get install clang-14)"
  command -v cmake >/dev/null 2>&1 || skip "cmake not found (scripts/setup)"
  command -v ninja >/dev/null 2>&1 || skip "ninja not found (scripts/setup)"
  local tmp
  tmp=$(mktemp -d)
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' >"$tmp/probe.cc"
  if ! "$CXX_BIN" -fsanitize=fuzzer,address,undefined "$tmp/probe.cc" -o "$tmp/probe" >"$tmp/log" 2>&1; then
    cat "$tmp/log" >&2
    rm -rf "$tmp"
    skip "$CXX_BIN cannot link -fsanitize=fuzzer,address,undefined (apt-get install libclang-rt-14-dev)"
  fi
  rm -rf "$tmp"
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for s in /usr/lib/llvm-14/bin/llvm-symbolizer "$(command -v llvm-symbolizer-14 || true)"; do
  if [[ -n "$s" && -x "$s" ]]; then export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$s}; break; fi
done

# --- build ----------------------------------------------------------------------
if [[ $build -eq 1 ]]; then
  check_toolchain
  mkdir -p "$B"
  exec 9>"$B/.lock"
  flock 9 2>/dev/null || true  # one build of this tree at a time
  start=$(date +%s)
  # Build type "Fuzz" (no per-type flags): only SAN_FLAGS apply, not Release's -O2.
  if ! cmake -S "$ROOT" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Fuzz \
      -DCMAKE_C_COMPILER="$CC_BIN" -DCMAKE_CXX_COMPILER="$CXX_BIN" \
      "-DCMAKE_C_FLAGS=$SAN_FLAGS" "-DCMAKE_CXX_FLAGS=$SAN_FLAGS" \
      -DCOHORT_TRAINER=OFF -DCOHORT_TESTS=OFF -DCOHORT_FUZZ=ON >"$B/configure.log" 2>&1; then
    cat "$B/configure.log" >&2
    echo "fuzz/run.sh: configuring the fuzz tree $B failed" >&2
    exit 1
  fi
  if ! cmake --build "$B" --target fuzz_all -j "$JOBS" >"$B/build.log" 2>&1; then
    grep -E -B2 -A12 'error|FAILED' "$B/build.log" | head -150 >&2
    echo "fuzz/run.sh: building the fuzz tree failed (log: $B/build.log)" >&2
    exit 1
  fi
  exec 9>&-
  echo "fuzz/run.sh: fuzz tree $B built in $(($(date +%s) - start)) s"
fi
[[ $run -eq 1 ]] || exit 0

if [[ $build -eq 0 ]]; then
  for t in "${targets[@]}"; do
    [[ -x "$B/fuzzers/$t" ]] || {
      command -v "$CXX_BIN" >/dev/null 2>&1 || skip "$CXX_BIN not found"
      echo "fuzz/run.sh: $B/fuzzers/$t is not built (run fuzz/run.sh --build-only)" >&2
      exit 1
    }
  done
fi

# --- replay + fuzz ----------------------------------------------------------------
failed=()

is_known() {  # is_known TARGET/FILE
  [[ -f "$KNOWN" ]] && grep -qE "^$1([[:space:]]|$)" "$KNOWN"
}

replay() {  # replay TARGET: 0 when every (not known) regression passes
  local t=$1 bin=$B/fuzzers/$1 dir=$ROOT/fuzz/regressions/$1 ok=0 n=0 known=0 f rel
  [[ -d "$dir" ]] || return 0
  for f in "$dir"/*; do
    [[ -f "$f" ]] || continue
    case "$(basename "$f")" in README* | .*) continue ;; esac
    rel="$t/$(basename "$f")"
    if is_known "$rel"; then
      # Without the target's guards, so the bug itself runs.
      if COHORT_FUZZ_NO_GUARDS=1 "$bin" -timeout=25 -rss_limit_mb=2048 "$f" >"$B/logs/replay.log" 2>&1; then
        echo "  $rel: listed in fuzz/regressions/KNOWN_CRASHES but no longer crashes: remove its line and guard"
      else
        known=$((known + 1))
      fi
      # With the guards (as while fuzzing) it must pass.
      if ! env -u COHORT_FUZZ_NO_GUARDS "$bin" -timeout=25 -rss_limit_mb=2048 "$f" >"$B/logs/replay.log" 2>&1; then
        echo "  REGRESSION: $rel crashes even with the target's guards:"
        grep -E -A30 'ERROR: |FUZZ_CHECK|runtime error|==ERROR|deadly signal|timeout' "$B/logs/replay.log" | head -60 | sed 's/^/    /'
        ok=1
      fi
      continue
    fi
    n=$((n + 1))
    if ! env -u COHORT_FUZZ_NO_GUARDS "$bin" -timeout=25 -rss_limit_mb=2048 "$f" >"$B/logs/replay.log" 2>&1; then
      echo "  REGRESSION: $rel crashes again:"
      grep -E -A30 'ERROR: |FUZZ_CHECK|runtime error|==ERROR|deadly signal|timeout' "$B/logs/replay.log" | head -60 | sed 's/^/    /'
      echo "    reproduce: $bin $f"
      ok=1
    fi
  done
  [[ $n -eq 0 ]] || echo "  replayed $n regression input(s) from fuzz/regressions/$t/"
  [[ $known -eq 0 ]] || echo "  $known known crash(es) still reproduce (fuzz/regressions/KNOWN_CRASHES; not counted)"
  return $ok
}

mkdir -p "$B/logs"
for t in "${targets[@]}"; do
  bin=$B/fuzzers/$t
  echo "== $t"
  if ! replay "$t"; then failed+=("$t"); continue; fi
  [[ $replay_only -eq 1 ]] && continue

  work=$B/corpus/$t
  artifacts=$B/artifacts/$t
  log=$B/logs/$t.log
  mkdir -p "$work" "$artifacts"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/")
  [[ -f "$ROOT/fuzz/dict/$t.dict" ]] && args+=(-dict="$ROOT/fuzz/dict/$t.dict")
  # shellcheck disable=SC2206
  [[ -n "${FUZZ_ARGS:-}" ]] && args+=($FUZZ_ARGS)
  # New inputs go to the first directory (scratch); the repository's seeds are only read.
  env -u COHORT_FUZZ_NO_GUARDS "$bin" "${args[@]}" "$work" "$ROOT/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  echo "  ${seconds} s: ${execs:-?} execs (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?} (log: $log)"
  if [[ $rc -ne 0 ]]; then
    repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "  CRASH in $t (exit $rc):"
    grep -E -A40 '==ERROR|ERROR: libFuzzer|FUZZ_CHECK|runtime error|terminate called|deadly signal' "$log" | head -70 | sed 's/^/    /'
    if [[ -n "$repro" ]]; then
      echo "  reproducer: $repro"
      echo "  replay it:  $bin $repro"
      echo "  keep it as a regression test: cp $repro fuzz/regressions/$t/  (docs/fuzzing.md)"
    fi
    failed+=("$t")
    continue
  fi
  if [[ $merge -eq 1 ]]; then
    "$bin" -merge=1 "$ROOT/fuzz/corpus/$t" "$work" >"$B/logs/$t.merge.log" 2>&1 &&
      echo "  merged new coverage into fuzz/corpus/$t/ ($(find "$ROOT/fuzz/corpus/$t" -type f | wc -l) files)"
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz/run.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz/run.sh: passed: ${targets[*]}"
