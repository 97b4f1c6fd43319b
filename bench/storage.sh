#!/usr/bin/env bash
# Object storage transfers, cohort vs `gcloud storage cp`, against one local
# Cloud Storage JSON API endpoint.
#
#   bench/storage.sh                  # SIZE_MB=512 REPEAT=2
#   SIZE_MB=128 REPEAT=1 bench/storage.sh
#   PEER=curl bench/storage.sh        # force the curl peer
#
# The endpoint is build/bin/fake_gcs_server_bench (in memory, 127.0.0.1; see
# its header): the firebase emulator refuses bodies over ~130 MiB and chunked
# resumable uploads (spec storage.md §5), and this moves SIZE_MB MiB. It
# starts once; every client below talks to it:
#   cohort  build/bin/cohort storage cp, with STORAGE_EMULATOR_HOST
#   gcloud  gcloud storage cp, with api_endpoint_overrides/storage pointed at
#           the endpoint (CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE), a fake
#           access token and a private CLOUDSDK_CONFIG. Uploads run twice:
#           gcloud's default (over 150 MiB a parallel composite upload:
#           resumable parts, then compose) and with
#           parallel_composite_upload_enabled=False (one resumable PUT); the
#           faster counts. Downloads are gcloud's default
#           (sliced ranged GETs).
#   curl    the peer when gcloud is missing or cannot talk to the endpoint (or
#           PEER=curl): one media upload POST (uploadType=media, -T FILE) and
#           one GET ...?alt=media.
# A SIZE_MB random file is uploaded by each client; both clients then
# download the same object (the one cohort uploaded). Every download's
# SHA-256 is checked against the source, and every upload's CRC32C (as the
# endpoint computed it) against cohort's. Times are wall clock of the whole
# command (process start included), best of REPEAT runs per direction.
# Prints MB/s (10^6 bytes per second) per client and direction, then
#   ratio=X.XX   cohort's mean MB/s (upload, download) / the peer's (higher is better)
# Raw output of the runs is kept in $BUILD_DIR/bench/storage.*.log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SIZE_MB="${SIZE_MB:-512}"
REPEAT="${REPEAT:-2}"
PEER="${PEER:-auto}"
[[ "$SIZE_MB" =~ ^[1-9][0-9]*$ ]] || die "SIZE_MB must be a positive integer (got '$SIZE_MB')"
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer (got '$REPEAT')"
[[ "$PEER" == auto || "$PEER" == gcloud || "$PEER" == curl ]] || die "PEER must be auto, gcloud or curl"

ensure_build fake_gcs_server_bench
command -v curl >/dev/null || die "curl not found (apt-get install curl)"
cd "$ROOT"
print_machine
SERVER_LOG="$LOG_DIR/storage.server.log"
RUN_LOG="$LOG_DIR/storage.runs.log"
: >"$RUN_LOG"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cohort-storage-bench.XXXXXX")"
FAKE_GCS_PID=""
cleanup() {
  if [[ -n "$FAKE_GCS_PID" ]]; then
    kill "$FAKE_GCS_PID" 2>/dev/null || true
    wait "$FAKE_GCS_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the endpoint --------------------------------------------------------------
start_fake_gcs "$WORK/server.out" "$SERVER_LOG"
ENDPOINT="$FAKE_GCS_ENDPOINT"
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
BUCKET="bench"

# --- the file --------------------------------------------------------------------
SRC="$WORK/src.bin"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$SRC"
BYTES="$(stat -c %s "$SRC")"
SRC_SHA="$(sha256sum "$SRC" | cut -d' ' -f1)"
echo "# storage: $SIZE_MB MiB random file, endpoint $ENDPOINT (fake_gcs_server_bench), best of $REPEAT"

# seconds CMD...: runs CMD (output appended to RUN_LOG) and prints its wall time in seconds.
seconds() {
  local t0 t1 rc=0
  echo "# running: $*" >>"$RUN_LOG"
  t0=$(date +%s%N)
  "$@" >>"$RUN_LOG" 2>&1 || rc=$?
  t1=$(date +%s%N)
  if ((rc != 0)); then
    echo "---- last lines of $RUN_LOG ----" >&2
    tail -n 30 "$RUN_LOG" >&2
    die "'$*' failed with exit code $rc"
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}
mbps() { calc 'b / s / 1e6' b="$BYTES" s="$1"; }
best() { calc '(a > b ? a : b)' a="$1" b="$2"; }

# verify FILE WHAT: the file's SHA-256 must be the source's; removes it.
verify() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  rm -f "$1"
  [[ "$got" == "$SRC_SHA" ]] || die "$2: the downloaded file's SHA-256 is $got, the source's $SRC_SHA"
}

# crc_of OBJECT: the CRC32C the endpoint reports for gs://$BUCKET/OBJECT.
crc_of() {
  STORAGE_EMULATOR_HOST="$ENDPOINT" "$COHORT" storage ls "gs://$BUCKET/$1" 2>>"$RUN_LOG" | awk 'NR == 1 { print $2 }'
}

cohort_cp() { STORAGE_EMULATOR_HOST="$ENDPOINT" "$COHORT" storage cp "$@"; }

GCLOUD_CONFIG="$WORK/gcloud-config"
gcloud_cp() {
  CLOUDSDK_CONFIG="$GCLOUD_CONFIG" CLOUDSDK_AUTH_ACCESS_TOKEN=fake CLOUDSDK_CORE_PROJECT=cohort-bench \
    CLOUDSDK_CORE_DISABLE_PROMPTS=1 CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=1 \
    CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1 \
    CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE="$ENDPOINT/" gcloud storage cp "$@"
}
gcloud_cp_single() { CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_ENABLED=False gcloud_cp "$@"; }

curl_up() {  # curl_up FILE OBJECT
  curl -sS --fail-with-body -o /dev/null -X POST -T "$1" -H 'Content-Type: application/octet-stream' \
    "$ENDPOINT/upload/storage/v1/b/$BUCKET/o?uploadType=media&name=$2"
}
curl_down() {  # curl_down OBJECT FILE
  curl -sS --fail -o "$2" "$ENDPOINT/storage/v1/b/$BUCKET/o/$1?alt=media"
}

# --- which peer: gcloud if it can round-trip a small file through the endpoint --
if [[ "$PEER" != curl ]]; then
  why=""
  if ! command -v gcloud >/dev/null; then
    why="gcloud not found"
  else
    head -c 1000 /dev/urandom >"$WORK/probe.bin"
    if ! gcloud_cp "$WORK/probe.bin" "gs://$BUCKET/probe.bin" >>"$RUN_LOG" 2>&1 ||
       ! gcloud_cp "gs://$BUCKET/probe.bin" "$WORK/probe.out" >>"$RUN_LOG" 2>&1 ||
       ! cmp -s "$WORK/probe.bin" "$WORK/probe.out"; then
      why="gcloud storage cp could not round-trip a file through $ENDPOINT (see $RUN_LOG)"
    fi
  fi
  if [[ -z "$why" ]]; then
    PEER=gcloud
  elif [[ "$PEER" == gcloud ]]; then
    die "$why"
  else
    echo "# $why: the peer is curl"
    PEER=curl
  fi
fi
if [[ "$PEER" == gcloud ]]; then
  echo "# peer: gcloud storage cp ($(gcloud --version 2>/dev/null | head -n 1)), api_endpoint_overrides/storage=$ENDPOINT/"
else
  echo "# peer: curl $(curl --version | head -n 1 | cut -d' ' -f2) (one media upload POST, one GET alt=media)"
fi

# --- runs -----------------------------------------------------------------------
C_UP=0 C_DOWN=0 P_UP=0 P_DOWN=0 G_UP_DEFAULT=0 G_UP_SINGLE=0
for run in $(seq "$REPEAT"); do
  s=$(seconds cohort_cp "$SRC" "gs://$BUCKET/cohort.bin")
  C_UP=$(best "$C_UP" "$(mbps "$s")")
  echo "cohort upload run=$run seconds=$s mb_per_s=$(mbps "$s")"
  want_crc="$(crc_of cohort.bin)"
  s=$(seconds cohort_cp "gs://$BUCKET/cohort.bin" "$WORK/cohort.out")
  verify "$WORK/cohort.out" "cohort download"
  C_DOWN=$(best "$C_DOWN" "$(mbps "$s")")
  echo "cohort download run=$run seconds=$s mb_per_s=$(mbps "$s")"

  if [[ "$PEER" == gcloud ]]; then
    s=$(seconds gcloud_cp "$SRC" "gs://$BUCKET/gcloud.bin")
    [[ "$(crc_of gcloud.bin)" == "$want_crc" ]] || die "gcloud's upload has the wrong CRC32C"
    G_UP_DEFAULT=$(best "$G_UP_DEFAULT" "$(mbps "$s")")
    echo "gcloud upload run=$run mode=default seconds=$s mb_per_s=$(mbps "$s")"
    s=$(seconds gcloud_cp_single "$SRC" "gs://$BUCKET/gcloud-single.bin")
    [[ "$(crc_of gcloud-single.bin)" == "$want_crc" ]] || die "gcloud's single-stream upload has the wrong CRC32C"
    G_UP_SINGLE=$(best "$G_UP_SINGLE" "$(mbps "$s")")
    echo "gcloud upload run=$run mode=single-stream seconds=$s mb_per_s=$(mbps "$s")"
    P_UP=$(best "$G_UP_DEFAULT" "$G_UP_SINGLE")
    s=$(seconds gcloud_cp "gs://$BUCKET/cohort.bin" "$WORK/gcloud.out")
    verify "$WORK/gcloud.out" "gcloud download"
  else
    s=$(seconds curl_up "$SRC" curl.bin)
    [[ "$(crc_of curl.bin)" == "$want_crc" ]] || die "curl's upload has the wrong CRC32C"
    P_UP=$(best "$P_UP" "$(mbps "$s")")
    echo "curl upload run=$run seconds=$s mb_per_s=$(mbps "$s")"
    s=$(seconds curl_down cohort.bin "$WORK/curl.out")
    verify "$WORK/curl.out" "curl download"
  fi
  P_DOWN=$(best "$P_DOWN" "$(mbps "$s")")
  echo "$PEER download run=$run seconds=$s mb_per_s=$(mbps "$s")"
done

echo
printf '%-8s | %12s | %12s | %12s\n' "" "upload MB/s" "download MB/s" "mean MB/s"
C_MEAN=$(calc '(u + d) / 2' u="$C_UP" d="$C_DOWN")
P_MEAN=$(calc '(u + d) / 2' u="$P_UP" d="$P_DOWN")
printf '%-8s | %12s | %12s | %12s\n' cohort "$C_UP" "$C_DOWN" "$C_MEAN"
printf '%-8s | %12s | %12s | %12s\n' "$PEER" "$P_UP" "$P_DOWN" "$P_MEAN"
if [[ "$PEER" == gcloud ]]; then
  echo "# gcloud upload: default $G_UP_DEFAULT MB/s, single stream $G_UP_SINGLE MB/s; the faster counts"
fi
echo "upload_ratio=$(calc 'c / p' c="$C_UP" p="$P_UP")"
echo "download_ratio=$(calc 'c / p' c="$C_DOWN" p="$P_DOWN")"
echo "peer=$PEER"
echo "ratio=$(calc 'c / p' c="$C_MEAN" p="$P_MEAN")"
