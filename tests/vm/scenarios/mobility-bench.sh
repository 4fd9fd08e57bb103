#!/bin/bash
# Guest benchmark (run by hand, not by tests/run.sh):
#
#   VM_CARGO_PACKAGES="mobike-agent ipsec-backend trigger-db" VM_CARGO_BENCHES= \
#     tests/vm/run.sh mobility-bench [--moves N] [--only charon|agent] [--sets "S ..."] [--verbose]
#
# Handover time and pings lost when the mobile host's current uplink goes,
# charon <-> charon against mobike-agent <-> charon in the same VM boot, on
# the topology of tests/vm/lib/mobility.sh (kernel ESP, two uplinks, charon
# as the gateway). Pings every 10 ms from 10.1.0.1 to 10.2.0.1 through the
# tunnel, kernel-timestamped (ping -D); per move:
#   handover  the event (just before its `ip` command) -> the reply that
#             ends the longest silence of the pings (the first reply through
#             the tunnel on the new path)
#   lost      sequence numbers never answered
#   pinger's longest pause  the pinger's own largest gap between two sends
#             in the window (10 ms when it kept its pace; it runs SCHED_FIFO)
# The event's time is the kernel's announcement of it (ip -ts monitor); the
# agent's own timeline of each move (its log line "mobility: moved": trigger
# observed by its source -> received -> update sent -> update answered) is
# tabled beside.
# Sets of N moves (default 10) per initiator, each move on the uplink of
# the current path, which is then restored:
#   break      the uplink set down (both uplinks dual-stack)
#   replace    the current address deleted, the link stays up
#   v4<->v6    u1 IPv4 only, u2 IPv6 only: each break changes the family
#   lgd-500 / lgd-100 (agent only; charon has no predictive trigger):
#              Link_Going_Down with 500 / 100 ms lead through trigger-db
#              (`triggerctl add`), then the uplink set down
#   break-netlink  (agent only) break, with the agent's own rtnetlink watch
#              ([mobility] source = "netlink") and no trigger-db running,
#              as charon runs
# The agent runs with [mobility] source = "trigger-db" (but in
# break-netlink), trigger-db in A. --sets runs only the sets named.
# After each set, the XFRM error counters (/proc/net/xfrm_stat) that grew
# in A and in B during it say on which side the lost pings were dropped
# (e.g. XfrmInNoStates: ESP for an SA that was not there).
# Prints a Markdown table (also $VM_OUT/mobility-bench.md; the raw moves in
# $VM_OUT/mobility-bench.raw).
set -euo pipefail
LIB=$(cd "$(dirname "$0")/../lib" && pwd)
D=$(mktemp -d /tmp/mobbench.XXXXXX)
MOVES=10; ONLY=""; SETS=""; VERBOSE=""
while [ $# -gt 0 ]; do
  case $1 in
    --moves) MOVES=$2; shift 2;;
    --only) ONLY=$2; shift 2;;
    --sets) SETS=$2; shift 2;;
    --verbose) VERBOSE=1; shift;;
    *) echo "mobility-bench: unknown argument $1" >&2; exit 2;;
  esac
done
# shellcheck source=../lib/common.sh
. "$LIB/common.sh"
# shellcheck source=../lib/mobility.sh
. "$LIB/mobility.sh"
trap 'mob_cleanup mobility-bench; rm -rf "$D"' EXIT
# Both charons log at charon's default level (CHARON_LOG_DETAIL=1 for the
# scenarios' level 2 of IKE and KNL)
CHARON_LOG_DETAIL=${CHARON_LOG_DETAIL:-0}
mob_setup
# Two machines' worth of CPU (pin_cpus), events from a long-lived `ip
# -batch` (events_start), and the harness idle for the first second after
# each event.
pin_cpus
events_start
QUIET=1
ts "topology and gateway up (gateway on vCPU $(($(nproc --all) - 1)), A on the rest)"
RAW=$D/raw; : > "$RAW"

# run_set IMPL NAME EVENT FAMILIES1 FAMILIES2 [LEAD_MS [SOURCE]]
run_set() {
  local impl=$1 name=$2 ev=$3 lead=${6:-} i
  [ -z "$SETS" ] || [[ " $SETS " == *" $name "* ]] || return 0
  uplinks_set "$4" "$5"
  local stat_a stat_b
  stat_a=$(ip netns exec A cat /proc/net/xfrm_stat); stat_b=$(ip netns exec B cat /proc/net/xfrm_stat)
  if [ "$impl" = charon ]; then charon_initiator_start; else agent_initiator_start "${7:-trigger-db}"; fi
  sleep 1
  local cpu_i cpu_t cpu_a
  cpu_i=$(cpu_ms "$INITIATOR_PID"); cpu_t=$(cpu_ms "$TRIGGERDB_PID"); cpu_a=$(vcpu_busy_ms 0)
  for i in $(seq "$MOVES"); do
    local before=0 timeline="- - -"
    [ "$impl" = charon ] || before=$(grep -c 'mobility: moved' "$D/agent.log" || true)
    measure_move "$impl-$name-$i" "$ev" "$lead"
    local moved=yes
    { [ -n "${MOVE_TO:-}" ] && [ "$MOVE_TO" != "$MOVE_FROM" ]; } || moved=no
    if [ "$impl" = agent ] && [ "$(grep -c 'mobility: moved' "$D/agent.log" || true)" -gt "$before" ]; then
      timeline=$(agent_timeline)
    fi
    echo "$impl $name $MOVE $EVENT_MS $moved $timeline $MOVE_FROM ${MOVE_TO:--}" >> "$RAW"
    echo "  $impl $name #$i: handover/lost/gap/pinger pause $MOVE (event cmd ${EVENT_MS} ms) $MOVE_FROM -> ${MOVE_TO:--}"
    if [ -n "$VERBOSE" ]; then
      ip -n A xfrm state | grep '^src' || true
      head -3 "$D/ping-$impl-$name-$i.log"; tail -4 "$D/monitor.log"
    fi
  done
  # CPU of A per move (the move, the restore and the settling after it)
  local per_i per_t per_a
  per_i=$(( ($(cpu_ms "$INITIATOR_PID") - cpu_i) / MOVES ))
  per_t=$(( ($(cpu_ms "$TRIGGERDB_PID") - cpu_t) / MOVES ))
  per_a=$(( ($(vcpu_busy_ms 0) - cpu_a) / MOVES ))
  initiator_stop
  ts "$impl $name: $MOVES moves"
  echo "$impl $name: CPU per move: initiator $per_i ms, trigger-db $per_t ms, A's vCPU busy $per_a ms" \
    | tee -a "$D/cpu"
  echo "$impl $name: xfrm_stat grew: A [$(stat_grew "$stat_a" A)] B [$(stat_grew "$stat_b" B)]" \
    | tee -a "$D/xfrm_stat"
}

# cpu_ms PID: user + system CPU of PID so far, in ms (0 without PID)
cpu_ms() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print int(($12 + $13) * 1000 / hz) }' "/proc/$1/stat"
}
# vcpu_busy_ms N: time vCPU N has not been idle so far, in ms
vcpu_busy_ms() {
  awk -v c="cpu$1" -v hz="$(getconf CLK_TCK)" '$1 == c { print int(($2 + $3 + $4 + $7 + $8) * 1000 / hz) }' /proc/stat
}

# stat_grew BEFORE NS: the /proc/net/xfrm_stat counters of NS above BEFORE.
stat_grew() {
  ip netns exec "$2" cat /proc/net/xfrm_stat | while read -r k v; do
    local was
    was=$(printf '%s\n' "$1" | awk -v k="$k" '$1 == k { print $2 }')
    [ "$v" -gt "${was:-0}" ] && printf ' %s+%d' "$k" $((v - ${was:-0}))
  done || true
}

for impl in charon agent; do
  [ -z "$ONLY" ] || [ "$ONLY" = "$impl" ] || continue
  [ "$impl" = agent ] && triggerdb_start
  run_set "$impl" break break "4 6" "4 6"
  run_set "$impl" replace replace "4 6" "4 6"
  run_set "$impl" "v4<->v6" break "4" "6"
  if [ "$impl" = agent ]; then
    run_set agent lgd-500 break "4 6" "4 6" 500
    run_set agent lgd-100 break "4 6" "4 6" 100
    # The agent alone, as charon runs: no trigger-db on the host.
    if [ -z "$SETS" ] || [[ " $SETS " == *" break-netlink "* ]]; then
      stop_pid "$TRIGGERDB_PID"; TRIGGERDB_PID=""
    fi
    run_set agent break-netlink break "4 6" "4 6" "" netlink
  fi
done
cp "$RAW" "$VM_OUT/mobility-bench.raw" 2>/dev/null || true
cp "$D/xfrm_stat" "$VM_OUT/mobility-bench.xfrm_stat" 2>/dev/null || true
cp "$D/cpu" "$VM_OUT/mobility-bench.cpu" 2>/dev/null || true

python3 - "$RAW" "$(uname -r)" <<'EOP' | tee "$VM_OUT/mobility-bench.md"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def num(x):
    return None if x == "-" else float(x)
sets = {}
for impl, name, h, lost, gap, stall, ev_ms, moved, upd, mv, obs, *_ in rows:
    sets.setdefault((name, impl), []).append((num(h), int(lost) if lost != "-" else None, num(gap), float(ev_ms),
                                              moved == "yes", num(upd), num(mv), num(obs), num(stall)))
def mmm(v, fmt):
    v = [x for x in v if x is not None]
    if not v:
        return "-"
    return (fmt + " (" + fmt + "-" + fmt + ")") % (statistics.median(v), min(v), max(v))
print(f"Kernel {sys.argv[2]}, TCG; pings every 10 ms; median (min-max) over the moves of a set.\n")
print("| set | initiator | moves | moved | handover ms | pings lost | longest silence ms | pinger's longest pause ms | agent: trigger observed -> received ms | agent: trigger received -> update sent ms | agent: -> update answered ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
names = []
for (name, impl) in sets:
    if name not in names:
        names.append(name)
for name in names:
    for impl in ("charon", "agent"):
        m = sets.get((name, impl))
        if not m:
            continue
        print(f"| {name} | {impl} | {len(m)} | {sum(x[4] for x in m)} | {mmm([x[0] for x in m], '%.1f')} | "
              f"{mmm([x[1] for x in m], '%d')} | {mmm([x[2] for x in m], '%.1f')} | {mmm([x[8] for x in m], '%.1f')} | "
              f"{mmm([x[7] for x in m], '%.1f')} | "
              f"{mmm([x[5] for x in m], '%.1f')} | {mmm([x[6] for x in m], '%.1f')} |")
print()
for name in names:
    a, c = sets.get((name, "agent")), sets.get((name, "charon"))
    if a and c:
        ha = [x[0] for x in a if x[0] is not None]; hc = [x[0] for x in c if x[0] is not None]
        if ha and hc:
            print(f"- {name}: agent / charon handover (medians) = {statistics.median(ha) / statistics.median(hc):.2f}")
EOP
ts "done"
echo MOBILITY-BENCH-OK
