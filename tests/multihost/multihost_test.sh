#!/usr/bin/env bash
# Multi-host tests on the network-namespace test bed (tools/netns/cluster.sh):
# a head on host 0, one agent (1 CPU) on each other host, every link shaped.
#
#   tests/multihost/multihost_test.sh BUILD_DIR CASE
#
# CASE:
#   two_hosts   2 workers SPREAD over 2 hosts: the seed model trains (TCP between
#               the hosts: each has its own host name and /dev/shm), each worker
#               gets GLOO_SOCKET_IFNAME etc. naming the interface toward the head
#   four_hosts  4 workers SPREAD over 4 hosts
#   link_cut    3 agents, 2 workers; the link of rank 1's host is cut after the
#               first checkpoint: rank 0's collective fails within the comm
#               timeout naming its peer, the head declares that node dead, and
#               the job restarts on the two hosts left from its checkpoint
#   link_flap   a link down for 3 s (< the 10 s node timeout): the node stays
#               ALIVE and the job finishes in its first attempt
# Exit 77 (ctest: skipped) with the reason when this machine cannot make
# namespaces (not root, no tc tbf, ...).
set -euo pipefail

BUILD="$(cd "${1:?usage: multihost_test.sh BUILD_DIR CASE}" && pwd)"
CASE="${2:?usage: multihost_test.sh BUILD_DIR CASE}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TB="$ROOT/tools/netns/cluster.sh"
COHORT="$BUILD/bin/cohort"
TRAINER="$BUILD/bin/fashion_mnist"
DATA_DIR="/usr/share/datasets/fashion-mnist"
RATE="${RATE:-1gbit}"

# One cluster per case, apart from the others (ctest also serializes them).
case "$CASE" in
  two_hosts) export NAME=cohort-mh2 NET=78 ;;
  four_hosts) export NAME=cohort-mh4 NET=79 ;;
  link_cut) export NAME=cohort-mhc NET=80 ;;
  link_flap) export NAME=cohort-mhf NET=81 ;;
  *) echo "unknown case '$CASE'" >&2; exit 2 ;;
esac

if ! why="$("$TB" check)"; then
  echo "SKIP: $why"
  exit 77
fi
[[ -x "$COHORT" ]] || { echo "no $COHORT (build first)" >&2; exit 1; }
if [[ ! -x "$TRAINER" ]]; then echo "SKIP: no $TRAINER (COHORT_TRAINER=OFF)"; exit 77; fi
[[ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]] || { echo "no FashionMNIST in $DATA_DIR" >&2; exit 1; }

STATE="$(mktemp -d "${TMPDIR:-/tmp}/cohort-$NAME.XXXXXX")"
chmod 755 "$STATE"
fail() {
  echo "FAIL: $*" >&2
  for f in "$STATE"/*.log; do
    [[ -f "$f" ]] || continue
    echo "--- $f (last 30 lines)" >&2
    tail -n 30 "$f" >&2
  done
  exit 1
}
cleanup() {
  "$TB" down || true
  [[ "${KEEP_STATE:-0}" == 1 ]] && echo "state kept in $STATE" || rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

on() { local h="$1"; shift; "$TB" exec "$h" -- "$@"; }

# start_cluster AGENTS: the head on host 0, agents on hosts 1..AGENTS.
start_cluster() {
  local agents="$1" i
  "$TB" up $((agents + 1)) "$RATE"
  HEAD_ADDR="$("$TB" addr 0)"
  # The log exists before it is polled: the background job opens it later.
  : >"$STATE/head.log"
  on 0 "$COHORT" start --head --block --host "$HEAD_ADDR" --port 0 --dashboard-port 0 \
    --state-dir "$STATE/head" >"$STATE/head.log" 2>&1 &
  API_PORT="" AGENT_PORT=""
  for ((i = 0; i < 100; i++)); do
    API_PORT=$(sed -n 's|.*API and dashboard: *http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$STATE/head.log" | head -n 1)
    AGENT_PORT=$(sed -n 's|.*Agents join with: *cohort start --address [^ ]*:\([0-9][0-9]*\).*|\1|p' "$STATE/head.log" | head -n 1)
    [[ -n "$API_PORT" && -n "$AGENT_PORT" ]] && break
    sleep 0.1
  done
  [[ -n "$API_PORT" ]] || fail "the head did not start"
  URL="http://$HEAD_ADDR:$API_PORT"
  for ((i = 1; i <= agents; i++)); do
    on "$i" "$COHORT" start --address "$HEAD_ADDR:$AGENT_PORT" --block --state-dir "$STATE/a$i" \
      --num-cpus 1 --join-token-file "$STATE/head/join_token" >"$STATE/agent$i.log" 2>&1 &
  done
  for ((i = 0; i < 100; i++)); do
    [[ "$(nodes_alive)" -ge "$agents" ]] && return 0
    sleep 0.2
  done
  fail "only $(nodes_alive) of $agents agents joined"
}

api() { on 0 curl -sf --noproxy '*' -H "Authorization: Bearer $(cat "$STATE/head/token")" "$URL$1"; }
nodes_alive() {
  local s
  s="$(api /api/cluster/status 2>/dev/null || true)"
  grep -o '"state":"ALIVE"' <<<"$s" | wc -l || true
}
job_field() { api "/api/jobs/$1" | python3 -c "import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))" "$2"; }
logs() { api "/api/jobs/$1/logs" | python3 -c "import json,sys; print(json.load(sys.stdin).get('logs',''))"; }

# submit ARGS... -- COMMAND: prints the job id.
submit() {
  on 0 env COHORT_TOKEN_FILE="$STATE/head/token" "$COHORT" job submit --address "$URL" --no-wait "$@" |
    sed -n "s/^Job '\([^']*\)' submitted successfully$/\1/p" | head -n 1
}

wait_status() {  # wait_status ID SECONDS: prints the final status
  local id="$1" until=$((SECONDS + $2)) st=""
  while ((SECONDS < until)); do
    st="$(job_field "$id" "j['status']" 2>/dev/null || true)"
    case "$st" in SUCCEEDED | FAILED | STOPPED) break ;; esac
    sleep 0.5
  done
  echo "$st"
}

train_cmd() {  # the seed model, briefly
  echo "$TRAINER --epochs ${1:-2} --train-subset 2048 --threads 1 --lr 0.05 --resume"
}

check_spread() {  # check_spread ID N: N workers on N distinct nodes
  local nodes
  nodes="$(job_field "$1" "len(set(w['node_id'] for w in j['workers']))")"
  [[ "$nodes" == "$2" ]] || fail "job $1 ran on $nodes node(s), expected $2"
}

case "$CASE" in
  two_hosts | four_hosts)
    n=2
    [[ "$CASE" == four_hosts ]] && n=4
    start_cluster "$n"
    # What each worker sees: its host, its interface variables, its /dev/shm.
    id="$(submit --workers "$n" --placement-strategy SPREAD -- \
      sh -c 'echo "host=$(hostname) gloo=$GLOO_SOCKET_IFNAME nccl=$NCCL_SOCKET_IFNAME shm=$(ls /dev/shm | wc -l)"')"
    [[ -n "$id" ]] || fail "submit printed no job id"
    [[ "$(wait_status "$id" 60)" == SUCCEEDED ]] || fail "the probe job did not succeed: $(logs "$id")"
    out="$(logs "$id")"
    for ((r = 0; r < n; r++)); do
      grep -q "^\[rank $r\] host=$NAME-h[1-9][0-9]* gloo=eth0 nccl=eth0" <<<"$out" ||
        fail "rank $r did not report its own host and gloo=eth0: $out"
    done
    hosts="$(grep -o "host=$NAME-h[0-9]*" <<<"$out" | sort -u | wc -l)"
    [[ "$hosts" == "$n" ]] || fail "workers ran on $hosts host(s), expected $n: $out"
    check_spread "$id" "$n"

    id="$(submit --workers "$n" --placement-strategy SPREAD --env COHORT_COMM_TIMEOUT_MS=30000 -- $(train_cmd 2))"
    st="$(wait_status "$id" 240)"
    out="$(logs "$id")"
    [[ "$st" == SUCCEEDED ]] || fail "training ended $st: $(tail -n 30 <<<"$out")"
    check_spread "$id" "$n"
    grep -q "val_loss=" <<<"$out" || fail "no validation loss in the log: $out"
    echo "PASS $CASE: $n workers on $n hosts over $RATE links"
    ;;

  link_cut)
    start_cluster 3
    id="$(submit --workers 2 --placement-strategy SPREAD --max-failures 2 \
      --env COHORT_COMM_TIMEOUT_MS=8000 -- $(train_cmd 8))"
    [[ -n "$id" ]] || fail "submit printed no job id"
    # After the first epoch's checkpoint, cut the link of rank 1's host.
    for ((i = 0; i < 240; i++)); do
      grep -q "epoch=1/" <<<"$(logs "$id")" && break
      sleep 0.5
    done
    rank1_node="$(job_field "$id" "j['workers'][1]['node_id']")"
    victim=""
    for h in 1 2 3; do
      grep -q "node $rank1_node\|$rank1_node" "$STATE/agent$h.log" && victim="$h"
    done
    [[ -n "$victim" ]] || fail "cannot tell which host runs rank 1 (node $rank1_node)"
    [[ "$(job_field "$id" "j['status']")" == RUNNING ]] || fail "the job was not running when the link was cut"
    "$TB" link "$victim" down
    st="$(wait_status "$id" 240)"
    out="$(logs "$id")"
    [[ "$st" == SUCCEEDED ]] || fail "after the cut the job ended $st: $(tail -n 40 <<<"$out")"
    attempt="$(job_field "$id" "j['attempt']")"
    [[ "$attempt" == 1 ]] || fail "expected one restart on the hosts left, got attempt $attempt"
    grep -q "resuming from checkpoint" <<<"$out" || fail "the restart did not resume from a checkpoint: $out"
    grep -q "\[rank 0\].*rank 1" <<<"$out" || fail "rank 0's failure does not name rank 1: $out"
    for w in 0 1; do
      [[ "$(job_field "$id" "j['workers'][$w]['node_id']")" != "$rank1_node" ]] ||
        fail "the restarted group used the cut node"
    done
    echo "PASS link_cut: host $victim cut, job restarted (attempt $attempt) from its checkpoint"
    ;;

  link_flap)
    start_cluster 2
    id="$(submit --workers 2 --placement-strategy SPREAD --env COHORT_COMM_TIMEOUT_MS=30000 -- $(train_cmd 8))"
    for ((i = 0; i < 240; i++)); do
      grep -q "epoch=1/" <<<"$(logs "$id")" && break
      sleep 0.5
    done
    [[ "$(job_field "$id" "j['status']")" == RUNNING ]] || fail "the job was not running when the link went down"
    "$TB" link 2 down
    sleep 3
    "$TB" link 2 up
    st="$(wait_status "$id" 240)"
    out="$(logs "$id")"
    [[ "$st" == SUCCEEDED ]] || fail "the job ended $st: $(tail -n 30 <<<"$out")"
    attempt="$(job_field "$id" "j['attempt']")"
    [[ "$attempt" == 0 ]] || fail "a 3 s flap restarted the job (attempt $attempt)"
    [[ "$(nodes_alive)" == 2 ]] || fail "a node did not stay ALIVE through the flap"
    echo "PASS link_flap: a 3 s flap kept the node and its job"
    ;;
esac
