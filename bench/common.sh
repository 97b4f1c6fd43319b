# Shared helpers for bench/*.sh; source it, do not run it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# Sets ROOT (the repository root), BUILD (absolute build dir; BUILD_DIR
# overrides, default "build", relative paths are taken from ROOT), BIN,
# COHORT (the launcher), PY (Debian's python3: the one with torch; the python3
# first on PATH may be a pyenv one without it) and LOG_DIR (where the runs'
# raw output is kept, $BUILD/bench).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
if [[ "$BUILD_DIR" = /* ]]; then BUILD="$BUILD_DIR"; else BUILD="$ROOT/$BUILD_DIR"; fi
BIN="$BUILD/bin"
COHORT="$BIN/cohort"
PY="/usr/bin/python3"
LOG_DIR="$BUILD/bench"

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

# Starts fake_gcs_server_bench (an in-memory Cloud Storage endpoint where
# every bucket exists), its stdout in OUT and stderr in ERR; sets FAKE_GCS_PID
# (the caller kills it) and FAKE_GCS_ENDPOINT (http://127.0.0.1:PORT).
#   start_fake_gcs "$WORK/server.out" "$LOG_DIR/server.log"
start_fake_gcs() {
  local out="$1" err="$2" port=""
  "$BIN/fake_gcs_server_bench" >"$out" 2>"$err" &
  FAKE_GCS_PID=$!
  for _ in $(seq 100); do
    port="$(sed -n 's/^port=//p' "$out")"
    [[ -n "$port" ]] && break
    kill -0 "$FAKE_GCS_PID" 2>/dev/null || die "fake_gcs_server_bench exited: $(cat "$err")"
    sleep 0.05
  done
  [[ -n "$port" ]] || die "fake_gcs_server_bench did not report its port"
  FAKE_GCS_ENDPOINT="http://127.0.0.1:$port"
}

# Builds the project (make build) unless every named binary of $BIN exists.
#   ensure_build cohort allreduce_bench
ensure_build() {
  local missing=() b
  for b in cohort "$@"; do
    [[ -x "$BIN/$b" ]] || missing+=("$b")
  done
  if ((${#missing[@]})); then
    echo "# $BIN lacks ${missing[*]}: running make -C $ROOT build BUILD_DIR=$BUILD" >&2
    make -C "$ROOT" build BUILD_DIR="$BUILD" >&2 || die "make build failed"
    for b in "${missing[@]}"; do
      [[ -x "$BIN/$b" ]] || die "make build did not produce $BIN/$b"
    done
  fi
  mkdir -p "$LOG_DIR"
}

# Needs Debian's python3 with torch (for the PyTorch peers).
ensure_torch_python() {
  [[ -x "$PY" ]] || die "$PY not found (apt-get install python3-torch, or run scripts/setup)"
  "$PY" -c 'import torch' 2>/dev/null ||
    die "$PY cannot import torch (apt-get install python3-torch, or run scripts/setup)"
}

# One line about the machine: cores, and which BLAS libtorch ends up using.
print_machine() {
  local blas="" bin="${1:-}"
  if [[ -e /etc/alternatives/libblas.so.3-x86_64-linux-gnu ]]; then
    blas="$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu)"
  fi
  if [[ -z "$blas" && -n "$bin" && -x "$bin" ]]; then
    blas="$(ldd "$bin" 2>/dev/null | awk '/blas/ {print $3; exit}')"
  fi
  echo "# machine: nproc=$(nproc) blas=${blas:-unknown}"
}

# kv_get FILE FIELD [KEY=VALUE ...]
# The value of FIELD (from its FIELD=value token) on the last line of FILE
# that has every given KEY=VALUE token (a bare word matches a token exactly,
# e.g. the "cohort" / "gloo" prefix). Launcher prefixes ("[rank R] ") are
# ignored. Prints nothing, and fails, when no line matches.
kv_get() {
  local file="$1" field="$2"
  shift 2
  awk -v field="$field" -v want="$*" '
    BEGIN { n = split(want, w, " ") }
    {
      delete tok
      for (i = 1; i <= NF; i++) tok[$i] = 1
      ok = 1
      for (j = 1; j <= n; j++) if (!(w[j] in tok)) { ok = 0; break }
      if (!ok) next
      for (i = 1; i <= NF; i++)
        if (index($i, field "=") == 1) { val = substr($i, length(field) + 2); found = 1 }
    }
    END { if (found) print val; else exit 1 }
  ' "$file"
}

# kv_mean FILE FIELD: the mean of FIELD=value over every line of FILE that
# has it (e.g. samples_per_sec over the epochs); fails when none has it.
kv_mean() {
  awk -v field="$2" '
    { for (i = 1; i <= NF; i++)
        if (index($i, field "=") == 1) { sum += substr($i, length(field) + 2); n++ } }
    END { if (n) printf "%.1f\n", sum / n; else exit 1 }
  ' "$1"
}

# calc 'EXPR' [a=1 b=2 ...]: evaluates an awk expression over the given
# variables and prints it with two decimals; "n/a" when a variable is not a
# number (empty, or itself "n/a") or the expression fails (division by zero).
calc() {
  local expr="$1"
  shift
  local v args=()
  for v in "$@"; do
    [[ "${v#*=}" =~ ^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] || { echo "n/a"; return; }
    args+=(-v "$v")
  done
  local out
  out=$(awk "${args[@]}" "BEGIN { printf \"%.2f\", ($expr) }" 2>/dev/null) || out=""
  [[ "$out" =~ ^-?[0-9]+\.[0-9]+$ ]] || out="n/a"  # also inf / nan from mawk
  echo "$out"
}

# run_logged LOG CMD...: runs CMD with its output (stdout and stderr) in LOG,
# and on failure shows the log's tail and exits.
run_logged() {
  local log="$1"
  shift
  echo "# running: $*" >&2
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  if ((rc != 0)); then
    echo "---- last lines of $log ----" >&2
    tail -n 30 "$log" >&2
    die "'$*' failed with exit code $rc (full output in $log)"
  fi
}
