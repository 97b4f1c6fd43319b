#!/usr/bin/env bash
# Chaos soak: kill -9 at a random moment of a 2-worker training job, TRIALS times,
# and check that nothing the cluster had acknowledged was lost.
#
#   bench/chaos.sh
#   TRIALS=3 SEED=42 bench/chaos.sh
#   VICTIMS=head TRIALS=5 bench/chaos.sh          # only kill the head
#
# A local cluster on 127.0.0.1 (free ports, state in a temp dir): a head
# (`cohort start --head --block`) and two agents (`cohort start --address ...
# --block --num-cpus 1`, each with its own --state-dir). First one job runs
# without a kill (the baseline: it must succeed; its run time sets the window
# the kills fall in). Then each trial
#   1. submits the seed model as a 2-worker job with restarts and file:// results:
#        cohort job submit --no-wait --workers 2 --max-failures $MAX_FAILURES \
#          --results-uri file://$STATE/results/trial-N -- fashion_mnist --resume \
#          --epochs $EPOCHS --train-subset $TRAIN_SUBSET --threads 1 --lr 0.05
#      wrapped (LOG_TICK_S, default 0.2; 0: the bare trainer) so that a ticker
#      beside the trainer prints `tick rank=R attempt=A n=1,2,...` while it
#      lives: the log then has lines in flight at every kill, and numbered;
#   2. waits a random delay within 0.9 x the baseline's run time;
#   3. records the job's log (GET /api/jobs/ID/logs), every job record
#      (GET /api/jobs/) and the job's trainer processes, then kill -9s the
#      victim: the head (restarted on the same state dir and ports; the agents
#      reconnect by themselves), one agent (restarted on its state dir), or one
#      worker (a fashion_mnist process under an agent). Victims are dealt from
#      shuffled rounds of head/agent/worker (VICTIMS= narrows them);
#   4. waits up to $BOUND_S for the job to end (stopping it otherwise), then checks
#        - every log line seen before the kill is in the final log, in order
#          (lines_lost), and no rank's tick series has a hole (tick_lost);
#        - a head kill did not cost an attempt: the head writes "did not
#          re-attach within 15 s" when a worker of a RUNNING job was never
#          reported again by its agent (reattach_failed);
#        - after an agent kill, that the head noticed its worker was gone
#          (agent_restart_unnoticed counts the trials where the attempt only
#          failed on a survivor's 60 s rendezvous deadline, or never: reported,
#          and a failure only when the job did not end);
#        - every job record listed before the kill is still listed, and the
#          finished ones kept their status and end time;
#        - every checkpoint under the job's checkpoint_dir (<results_uri>/checkpoints):
#          committed ones (MANIFEST.json, written last) must have every listed
#          file with its size and CRC32C, a state.json for their epoch, and
#          model.pt / optimizer.pt readable as archives (zip, member CRCs);
#          directories without a manifest are uncommitted leftovers of a kill
#          mid-upload (resume skips them): counted as partial, not corrupt;
#        - for a SUCCEEDED job, the results the head listed match the files;
#        - no trainer process seen before the kill outlives the job (orphans).
# Prints a row per trial and
#   trials=N finished_or_cleanly_failed=N records_lost=0 log_lines_lost=0 corrupt_checkpoints=0
# ("cleanly failed": FAILED with a message), then a line with the other counts.
# Exits 1 when a line, record or worker report was lost, a checkpoint or result
# is corrupt, a job did not end (or ended without a message), a trainer
# outlived its job, or the head or an agent died without being killed.
#
# Knobs: TRIALS (20), SEED (the time), BOUND_S (180), EPOCHS (3), TRAIN_SUBSET
# (2048), MAX_FAILURES (3), LOG_TICK_S (0.2), VICTIMS (head,agent,worker),
# NODE_TIMEOUT_S (the head's default when empty), WINDOW_S (the baseline's run
# time when empty), KEEP_STATE=1 (keep the temp dir; it is kept anyway when
# the run fails). Raw output: $BUILD_DIR/bench/chaos.{head,agent1,agent2}.log
# (the processes, with a "# ... chaos: kill -9" line at each kill),
# chaos.trials.log (per trial: the job and its log before and after, findings)
# and chaos.report.log (the table).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TRIALS="${TRIALS:-20}"
SEED="${SEED:-$(date +%s)}"
BOUND_S="${BOUND_S:-180}"
EPOCHS="${EPOCHS:-3}"
TRAIN_SUBSET="${TRAIN_SUBSET:-2048}"
LOG_TICK_S="${LOG_TICK_S:-0.2}"
MAX_FAILURES="${MAX_FAILURES:-3}"
VICTIMS="${VICTIMS:-head,agent,worker}"
NODE_TIMEOUT_S="${NODE_TIMEOUT_S:-}"
WINDOW_S="${WINDOW_S:-}"
DATA_DIR="/usr/share/datasets/fashion-mnist"

ensure_build fashion_mnist
[[ -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]] || die "the FashionMNIST data set is not in $DATA_DIR"
cd "$ROOT"
DRIVER_PY="$ROOT/bench/chaos_driver.py"
STATE="$(mktemp -d "${TMPDIR:-/tmp}/cohort-chaos.XXXXXX")"
HEAD_LOG="$LOG_DIR/chaos.head.log"
DETAILS="$LOG_DIR/chaos.trials.log"
REPORT="$LOG_DIR/chaos.report.log"
ORPHANS="$STATE/orphans"
: >"$HEAD_LOG" && : >"$LOG_DIR/chaos.agent1.log" && : >"$LOG_DIR/chaos.agent2.log" && : >"$DETAILS" && : >"$ORPHANS"
mkdir -p "$STATE/trials"

HEAD_PID=""
declare -a AGENT_PID=([1]="" [2]="")
CHILD=""  # the driver call in flight
HEAD_CRASHES=0
AGENT_CRASHES=0

running() { [[ -r "/proc/$1/stat" && "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
stop_pid() {
  local pid="$1" i
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    running "$pid" || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# Every process below the given pids.
descendants() {
  ps -e -o pid=,ppid= | awk -v roots="$*" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      do { added = 0
        for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; out[p] = 1; added = 1 }
      } while (added)
      for (p in out) print p
    }'
}
cleanup() {
  local rc=$? pid leftovers
  trap - EXIT INT TERM
  [[ -n "$CHILD" ]] && { kill -TERM "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; }
  leftovers="$(descendants "${AGENT_PID[@]}" "$HEAD_PID") $(cat "$ORPHANS" 2>/dev/null)"
  # Agents first (they stop their workers), then the head; then whatever of
  # theirs outlived them (trainers, by pid, only if still a cohort/fashion_mnist).
  for pid in "${AGENT_PID[@]}"; do stop_pid "$pid"; done
  stop_pid "$HEAD_PID"
  for pid in $leftovers; do
    if running "$pid" && grep -qaE 'fashion_mnist|cohort' "/proc/$pid/cmdline" 2>/dev/null; then
      echo "# killing leftover process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [[ "${KEEP_STATE:-0}" == 1 || $rc -ne 0 ]]; then
    echo "# state kept in $STATE" >&2
  else
    rm -rf "$STATE"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# driver ARGS...: bench/chaos_driver.py against this head, in the background so
# that a signal interrupts the wait.
driver() {
  local rc=0
  "$PY" "$DRIVER_PY" --url "$URL" --token-file "$STATE/head/token" "$@" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

read -r API_PORT AGENT_PORT < <("$PY" "$DRIVER_PY" ports 2)
URL="http://127.0.0.1:$API_PORT"

start_head() {
  echo "# $(date +%T.%N | cut -c1-12) starting the head" >>"$HEAD_LOG"
  "$COHORT" start --head --block --host 127.0.0.1 --port "$AGENT_PORT" --dashboard-port "$API_PORT" \
    --state-dir "$STATE/head" ${NODE_TIMEOUT_S:+--node-timeout-s "$NODE_TIMEOUT_S"} >>"$HEAD_LOG" 2>&1 &
  HEAD_PID=$!
  driver wait-head --timeout 30 || { tail -n 20 "$HEAD_LOG" >&2; die "the head did not come up (log: $HEAD_LOG)"; }
}
start_agent() {
  local i="$1" log="$LOG_DIR/chaos.agent$1.log"
  echo "# $(date +%T.%N | cut -c1-12) starting agent $i" >>"$log"
  "$COHORT" start --address "127.0.0.1:$AGENT_PORT" --block --num-cpus 1 --num-gpus 0 \
    --state-dir "$STATE/a$i" --advertise-address 127.0.0.1 --join-token-file "$STATE/head/join_token" >>"$log" 2>&1 &
  AGENT_PID[i]=$!
}
# Restarts whatever died without being killed (a crash: counted).
revive() {
  if ! running "$HEAD_PID"; then
    HEAD_CRASHES=$((HEAD_CRASHES + 1))
    echo "# CRASH: the head (pid $HEAD_PID) died by itself; its log ends:" >&2
    tail -n 15 "$HEAD_LOG" >&2
    wait "$HEAD_PID" 2>/dev/null || true
    start_head
  fi
  local i
  for i in 1 2; do
    if ! running "${AGENT_PID[i]}"; then
      AGENT_CRASHES=$((AGENT_CRASHES + 1))
      echo "# CRASH: agent $i (pid ${AGENT_PID[i]}) died by itself; its log ends:" >&2
      tail -n 15 "$LOG_DIR/chaos.agent$i.log" >&2
      wait "${AGENT_PID[i]}" 2>/dev/null || true
      start_agent "$i"
    fi
  done
}
wait_cluster() {
  driver wait-cluster "$STATE/a1/node_id" "$STATE/a2/node_id" --timeout "${1:-60}"
}

# The job: the seed model, resuming from its newest checkpoint. With a tick,
# a ticker beside it prints `tick rank=R attempt=A n=1, 2, ...` every
# LOG_TICK_S while the trainer lives, so the log has lines in flight at every
# kill, numbered: a hole in a rank's series is a line lost.
TRAIN=("$BIN/fashion_mnist" --resume --epochs "$EPOCHS" --train-subset "$TRAIN_SUBSET" --threads 1 --lr 0.05)
if [[ "$LOG_TICK_S" != 0 ]]; then
  TICKER='n=0; while kill -0 $$ 2>/dev/null; do n=$((n + 1)); echo "tick rank=$RANK attempt=$TORCHELASTIC_RESTART_COUNT n=$n"; sleep '"$LOG_TICK_S"'; done & exec "$@"'
  ENTRYPOINT=(/bin/sh -c "$TICKER" fashion_mnist "${TRAIN[@]}")
else
  ENTRYPOINT=("${TRAIN[@]}")
fi

# submit N: submits trial N's job; prints its id.
submit() {
  local out
  out=$("$COHORT" job submit --address "$URL" --token "$(cat "$STATE/head/token")" --no-wait \
    --workers 2 --max-failures "$MAX_FAILURES" --results-uri "file://$STATE/results/trial-$1" -- \
    "${ENTRYPOINT[@]}" 2>&1) || { echo "$out" >&2; return 1; }
  sed -n "s/^Job '\([^']*\)' submitted successfully.*/\1/p" <<<"$out"
}

# --- cluster ----------------------------------------------------------------------
print_machine "$BIN/fashion_mnist"
echo "# chaos: $TRIALS trial(s), seed $SEED, victims $VICTIMS; job: 2 workers x 1 CPU, $EPOCHS epochs of" \
  "$TRAIN_SUBSET samples, max_failures $MAX_FAILURES; bound ${BOUND_S}s; state in $STATE"
echo "# binaries: cohort $(stat -c %y "$COHORT" | cut -c1-19), fashion_mnist $(stat -c %y "$BIN/fashion_mnist" | cut -c1-19)"
start_head
start_agent 1
start_agent 2
wait_cluster 60 || die "the agents did not join (logs: $LOG_DIR/chaos.agent*.log)"
echo "# head pid $HEAD_PID ($URL, agents' port $AGENT_PORT), agents ${AGENT_PID[1]} ${AGENT_PID[2]}"

# --- baseline: one run without a kill ---------------------------------------------
: >"$STATE/trials/baseline.before"
t0=$(now)
JOB=$(submit 0) && [[ -n "$JOB" ]] || die "cohort job submit failed"
driver finish "$JOB" --before "$STATE/trials/baseline.before" --out "$STATE/trials/baseline.json" \
  --details "$DETAILS" --orphans-file "$ORPHANS" --bound "$BOUND_S" --trial base --victim none \
  --submitted-at "$t0" --epochs "$EPOCHS" >"$STATE/trials/baseline.row"
# Submission -> the job seen ended (the checks after it do not count).
BASE_S=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["end_s"] or 0)' "$STATE/trials/baseline.json")
grep -q '"status": "SUCCEEDED"' "$STATE/trials/baseline.json" ||
  { cat "$STATE/trials/baseline.row" >&2; die "the baseline job (no kill) did not succeed (details: $DETAILS)"; }
WINDOW_S="${WINDOW_S:-$BASE_S}"
echo "# baseline job $JOB: SUCCEEDED in ${BASE_S}s; kills fall in 0.3 .. $(calc '0.9 * w' w="$WINDOW_S") s after submission"
echo

# --- trials -------------------------------------------------------------------------
mapfile -t PLAN < <("$PY" "$DRIVER_PY" plan --trials "$TRIALS" --seed "$SEED" --victims "$VICTIMS")
"$PY" "$DRIVER_PY" header
ROWS=()
for ((t = 1; t <= TRIALS; t++)); do
  read -r victim agent_i rank frac <<<"${PLAN[t - 1]}"
  revive
  if ! wait_cluster 90; then
    echo "# trial $t: the cluster did not recover from the previous trial; going on" >&2
  fi
  dir="$STATE/trials/$t"
  mkdir -p "$dir"
  submitted=$(now)
  JOB=$(submit "$t") && [[ -n "$JOB" ]] || die "trial $t: cohort job submit failed"
  delay=$(awk -v f="$frac" -v w="$WINDOW_S" 'BEGIN { d = 0.3 + f * (0.9 * w - 0.3); if (d < 0.3) d = 0.3; printf "%.3f", d }')
  sleep "$(awk -v s="$submitted" -v d="$delay" -v n="$(now)" 'BEGIN { x = s + d - n; printf "%.3f", (x > 0 ? x : 0) }')"

  vpid=""
  case "$victim" in
    head) vpid="$HEAD_PID" ;;
    agent) vpid="${AGENT_PID[agent_i]}" victim="agent" ;;
    worker)
      # A trainer under an agent (waiting, bounded, for one to run); the plan's rank when both do.
      mapfile -t trainers < <(driver workers "${AGENT_PID[1]}" "${AGENT_PID[2]}" --job "$JOB" --wait 15 --min 1 || true)
      if ((${#trainers[@]})); then
        pick=$((rank < ${#trainers[@]} ? rank : 0))
        vpid="${trainers[pick]%% *}"
      fi
      ;;
    *) die "unknown victim $victim" ;;
  esac
  at_kill=$(driver snapshot "$JOB" --out "$dir/before.json" --roots "${AGENT_PID[1]}" "${AGENT_PID[2]}") ||
    echo "# trial $t: snapshot failed" >&2
  killed=$(now)
  if [[ -n "$vpid" ]] && { kill -KILL "$vpid"; } 2>/dev/null; then
    kill_s=$(elapsed "$submitted" "$killed")
  else
    kill_s="none"  # the job had no trainer left to kill (ended early)
  fi
  case "$victim" in
    head)
      { wait "$HEAD_PID"; } 2>/dev/null || true
      echo "# $(date +%T.%N | cut -c1-12) chaos: kill -9 head pid $HEAD_PID (trial $t, job $JOB)" >>"$HEAD_LOG"
      start_head
      ;;
    agent)
      { wait "$vpid"; } 2>/dev/null || true
      echo "# $(date +%T.%N | cut -c1-12) chaos: kill -9 agent $agent_i pid $vpid (trial $t, job $JOB)" |
        tee -a "$HEAD_LOG" >>"$LOG_DIR/chaos.agent$agent_i.log"
      start_agent "$agent_i"
      victim="agent$agent_i"
      ;;
    worker) echo "# $(date +%T.%N | cut -c1-12) chaos: kill -9 trainer pid ${vpid:-none} (trial $t, job $JOB)" >>"$HEAD_LOG" ;;
  esac
  driver finish "$JOB" --before "$dir/before.json" --out "$dir/row.json" --details "$DETAILS" \
    --orphans-file "$ORPHANS" --bound "$BOUND_S" --trial "$t" --victim "$victim" --kill-s "$kill_s" \
    --submitted-at "$submitted" --epochs "$EPOCHS" || echo "# trial $t: the check failed to run" >&2
  [[ -f "$dir/row.json" ]] && ROWS+=("$dir/row.json")
  read -r at_status ran_s <<<"$at_kill"
  if [[ "$at_status" =~ ^(SUCCEEDED|FAILED|STOPPED)$ ]]; then
    # The job ended before the kill: jobs run faster now than the baseline did.
    WINDOW_S=$(calc '(r > 2 && r < w) ? r : 0.75 * w' r="${ran_s:-0}" w="$WINDOW_S")
    echo "# trial $t: the job had ended before the kill (it ran ${ran_s}s); kills now fall in 0.3 .. $(calc '0.9 * w' w="$WINDOW_S") s"
  fi
done

echo
rc=0
driver report "${ROWS[@]}" --expected "$TRIALS" --head-crashes "$HEAD_CRASHES" \
  --agent-crashes "$AGENT_CRASHES" >"$REPORT" || rc=$?
cat "$REPORT"
echo "wall_s=$SECONDS"
echo "# raw logs: $LOG_DIR/chaos.{head,agent1,agent2,trials,report}.log"
exit "$rc"
