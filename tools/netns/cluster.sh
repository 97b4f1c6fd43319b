#!/usr/bin/env bash
# N "hosts" on one machine: a network, UTS and mount namespace per host,
# joined by one shaped link each to a bridge, so that nothing but the link
# joins two hosts.
#
#   tools/netns/cluster.sh up N [RATE]         # e.g. up 3 1gbit (default: unshaped)
#   tools/netns/cluster.sh exec I -- CMD...    # run CMD on host I (0-based)
#   tools/netns/cluster.sh link I up|down      # cut or restore host I's link
#   tools/netns/cluster.sh addr I              # host I's address
#   tools/netns/cluster.sh down                # remove everything (idempotent)
#   tools/netns/cluster.sh check               # exit 0 if this machine can, else 77 + why
#
# Host I: network namespace "$NAME-h$I" (ip netns), its own host name
# ("$NAME-h$I", a UTS namespace) and its own /dev/shm (a private tmpfs in a
# mount namespace), interface eth0 with 10.$NET.0.(I+1)/24. The bridge lives in
# a namespace of its own ("$NAME-sw"), so the machine's own network is never
# touched and only addresses inside these namespaces are used. RATE shapes
# each link in both directions with `tc qdisc ... tbf` (host egress on eth0,
# and the switch port toward the host).
#
# Environment: NAME (default cohort-tb) and NET (the second octet, default
# 77) tell clusters apart; STATE_DIR (default /run/$NAME) holds the
# namespace files. `up` first removes a cluster of the same NAME left by a
# killed run; `down` kills every process still inside its namespaces.
# Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), iproute2 and util-linux; `check`
# says what is missing, and the tests skip with exit code 77 on it.
set -euo pipefail

NAME="${NAME:-cohort-tb}"
NET="${NET:-77}"
STATE_DIR="${STATE_DIR:-/run/$NAME}"
SW="$NAME-sw"

die() { echo "netns/cluster.sh: $*" >&2; exit 1; }

check() {
  local why=""
  [[ "$(id -u)" == 0 ]] || why="not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
  for tool in ip tc unshare nsenter mount; do
    [[ -n "$why" ]] || command -v "$tool" >/dev/null || why="$tool not found (iproute2 / util-linux)"
  done
  if [[ -z "$why" ]]; then
    local probe="$NAME-probe$$"
    if ! ip netns add "$probe" 2>/dev/null; then
      why="cannot create a network namespace (ip netns add failed)"
    else
      ip -n "$probe" link add p0 type veth peer name p1 2>/dev/null || why="cannot create veth pairs"
      [[ -n "$why" ]] || ip -n "$probe" link add b0 type bridge 2>/dev/null || why="cannot create a bridge"
      [[ -n "$why" ]] || tc -n "$probe" qdisc add dev p0 root tbf rate 1gbit burst 256kb latency 50ms \
        2>/dev/null || why="tc tbf is not available"
      ip netns del "$probe" 2>/dev/null || true
    fi
  fi
  if [[ -n "$why" ]]; then
    echo "$why"
    return 77
  fi
}

host_ns() { echo "$NAME-h$1"; }
host_addr() { echo "10.$NET.0.$(($1 + 1))"; }

# The hosts that exist, by index.
hosts() {
  ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^$NAME-h\([0-9][0-9]*\)$/\1/p" | sort -n
}

down() {
  local i ns
  for i in $(hosts); do
    ns="$(host_ns "$i")"
    # Everything still running on that host (its agent, workers, a head).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  if [[ -d "$STATE_DIR" ]]; then
    for f in "$STATE_DIR"/*.uts "$STATE_DIR"/*.mnt; do
      [[ -e "$f" ]] || continue
      umount "$f" 2>/dev/null || umount -l "$f" 2>/dev/null || true
      rm -f "$f"
    done
    umount "$STATE_DIR" 2>/dev/null || umount -l "$STATE_DIR" 2>/dev/null || true
    rmdir "$STATE_DIR" 2>/dev/null || true
  fi
  for i in $(hosts); do ip netns del "$(host_ns "$i")" 2>/dev/null || true; done
  ip netns del "$SW" 2>/dev/null || true
}

shape() {  # shape NETNS DEV RATE
  [[ -z "$3" ]] && return 0
  tc -n "$1" qdisc replace dev "$2" root tbf rate "$3" burst 256kb latency 50ms
}

up() {
  local n="$1" rate="${2:-}" i ns
  [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 200)) || die "up: N must be 1..200, got '$n'"
  local why
  if ! why="$(check)"; then die "cannot make hosts here: $why"; fi
  down
  mkdir -p "$STATE_DIR"
  # Namespace files must sit on a private mount.
  mount --bind "$STATE_DIR" "$STATE_DIR"
  mount --make-private "$STATE_DIR"
  ip netns add "$SW"
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set br0 up
  ip -n "$SW" link set lo up
  for ((i = 0; i < n; i++)); do
    ns="$(host_ns "$i")"
    ip netns add "$ns"
    ip -n "$SW" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$SW" link set "p$i" master br0
    ip -n "$SW" link set "p$i" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    shape "$ns" eth0 "$rate"
    shape "$SW" "p$i" "$rate"
    # Its own host name and /dev/shm, kept by bind-mounting the namespaces.
    touch "$STATE_DIR/h$i.uts" "$STATE_DIR/h$i.mnt"
    nsenter --net="/run/netns/$ns" unshare --uts="$STATE_DIR/h$i.uts" --mount="$STATE_DIR/h$i.mnt" \
      --propagation private sh -c "hostname '$ns' && mount -t tmpfs -o mode=1777,size=1g tmpfs /dev/shm"
  done
  echo "netns/cluster.sh: $n host(s) up ($NAME, 10.$NET.0.1-$n, link ${rate:-unshaped})"
}

exec_on() {
  local i="$1"
  shift
  [[ "${1:-}" == "--" ]] && shift
  [[ -e "$STATE_DIR/h$i.uts" ]] || die "no host $i in $NAME (run: $0 up N)"
  # Same working directory as the caller: relative paths keep working.
  exec nsenter --net="/run/netns/$(host_ns "$i")" --uts="$STATE_DIR/h$i.uts" --mount="$STATE_DIR/h$i.mnt" \
    --wd="$PWD" -- "$@"
}

link() {
  local i="$1" state="$2"
  [[ "$state" == up || "$state" == down ]] || die "link: up or down, got '$state'"
  ip -n "$SW" link set "p$i" "$state"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up) up "${1:?usage: up N [RATE]}" "${2:-}" ;;
  down) down ;;
  exec) exec_on "${1:?usage: exec I -- CMD}" "${@:2}" ;;
  link) link "${1:?usage: link I up|down}" "${2:?usage: link I up|down}" ;;
  addr) host_addr "${1:?usage: addr I}" ;;
  check) check ;;
  *) die "usage: $0 up N [RATE] | exec I -- CMD... | link I up|down | addr I | down | check" ;;
esac
