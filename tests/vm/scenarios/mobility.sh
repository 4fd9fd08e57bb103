#!/bin/bash
# Guest scenario (run by tests/vm/run.sh mobility, with
# VM_CARGO_PACKAGES="mobike-agent ipsec-backend trigger-db"): mobike-agent
# follows the mobile host's links and moves its SAs (RFC 4555, kernel ESP
# moved by XFRM_MIGRATE) with charon as the gateway, on the topology of
# tests/vm/lib/mobility.sh: two uplinks u1/u2 in A, pings every 10 ms from
# 10.1.0.1 to 10.2.0.1 through the tunnel, trigger-db in A.
#
#   1. the agent ([mobility] source = "trigger-db") brings up the IKE SA and
#      CHILD_SA over u1
#   2. break: u1 set down -> the pings pass again on u2 with the same SPIs,
#      the gateway lists the new address
#   3. replace: the current address deleted (its link stays up) -> likewise
#   4. make-before-break: Link_Going_Down for the current uplink, 500 ms
#      ahead (`triggerctl add`), then the link set down -> the SAs were on
#      the other uplink before the link went down; the three moves are in
#      trigger-db's history (LINK_HANDOVER_COMPLETE)
#   5. flapping: the current uplink changes state every 200 ms for 10 s ->
#      the same IKE SA and SPIs, pings pass, at most 6 moves
#   6. IPv4 -> IPv6: u1 IPv4 only, u2 IPv6 only, the agent restarted with
#      source = "automatic" (trigger-db running); u1 set down -> the SAs are
#      on IPv6 (2001:db8:2::1 -> 2001:db8:ff::1), same SPIs
#   7. trigger-db stopped: the agent follows the links by its own rtnetlink
#      watch; the uplink in use set down -> the SAs on the other one, same
#      SPIs
#   8. SIGKILL of the agent with its SAs installed: its SAs, policies and
#      routes stay in the kernel; the agent started again removes them
#      (none of the old SPIs remain, as many policies and routes as one run
#      makes) and the tunnel comes back
# Needs strongSwan on the host (as mobike-charon). The logs are kept in
# $VM_OUT/mobility/. Prints MOBILITY-VM-OK and
# exits 0 on success. No timing is asserted: handover times are the
# benchmark's (tests/vm/scenarios/mobility-bench.sh, docs/benchmarks.md).
set -euo pipefail
LIB=$(cd "$(dirname "$0")/../lib" && pwd)
D=$(mktemp -d /tmp/mobvm.XXXXXX)
# shellcheck source=../lib/common.sh
. "$LIB/common.sh"
# shellcheck source=../lib/mobility.sh
. "$LIB/mobility.sh"
trap 'mob_cleanup mobility; rm -rf "$D"' EXIT
mob_setup
triggerdb_start
ts "topology, gateway and trigger-db up"

# ---- 1. the agent brings the SAs up over u1 ----
agent_initiator_start trigger-db
read -r src _ _ < <(out_sa) || true
[ "${src:-}" = 192.0.2.1 ] || fail "1: the outbound SA is not from u1's 192.0.2.1: ${src:-none}"
ts "1: IKE SA + CHILD_SA up over u1 (mobility source trigger-db)"

# check_moved STEP [replace]: after measure_move, the SAs left the uplink of
# the event (replace: the deleted address) with their SPIs, the pings flow
# again, the gateway follows
check_moved() {
  if [ "${2:-}" = replace ]; then
    [ -n "${MOVE_TO:-}" ] && [ "$MOVE_TO" != "$MOVE_FROM" ] ||
      fail "$1: the outbound SA is still from the deleted $MOVE_FROM (now from ${MOVE_TO:-nowhere})"
  else
    [ -n "${MOVE_TO:-}" ] && [ "$(uplink_of "$MOVE_TO")" != "$(uplink_of "$MOVE_FROM")" ] ||
      fail "$1: the outbound SA did not leave $MOVE_FROM's uplink (now from ${MOVE_TO:-nowhere})"
  fi
  [ "$MOVE_SPI_AFTER" = "$MOVE_SPI" ] || fail "$1: outbound SPI $MOVE_SPI became $MOVE_SPI_AFTER"
  [ "$(in_spi)" = "$IN_SPI" ] || fail "$1: inbound SPI $IN_SPI became $(in_spi)"
  [ "$MOVE_REPLIES" -ge 30 ] || fail "$1: the pings did not pass again after the move ($MOVE_REPLIES replies)"
  # The gateway follows the SAs to wherever they are now: after the
  # uplink's return the agent may have moved on already (step 6: back to
  # IPv4, preferred, once min_dwell is over).
  wait_for 10 gw_follows || fail "$1: the gateway does not list the agent at $(out_sa | awk '{print $1}') (moved to $MOVE_TO)"
  echo "  $1: $MOVE_FROM -> $MOVE_TO, SPIs $MOVE_SPI/$IN_SPI kept; handover/lost/silence/pinger pause $MOVE (ms, pings)"
}
IN_SPI=$(in_spi)
# gw_follows: the gateway lists the agent at the address of A's outbound SA
gw_follows() { local s; read -r s _ _ < <(out_sa) || return 1; [ -n "$s" ] && gw_peer "$s"; }

# ---- 2. break ----
measure_move ci-break break
check_moved 2
ts "2: break (uplink down): the SAs moved with their SPIs"

# ---- 3. replace ----
measure_move ci-replace replace
check_moved 3 replace
ts "3: replace (address deleted): the SAs moved with their SPIs"

# ---- 4. make-before-break ----
measure_move ci-lgd break 500
check_moved 4
[ -n "${MOVE_BEFORE_DOWN:-}" ] && [ "$(uplink_of "$MOVE_BEFORE_DOWN")" != "$(uplink_of "$MOVE_FROM")" ] ||
  fail "4: Link_Going_Down 500 ms ahead, but the SAs were still from $MOVE_FROM when the link went down"
triggerctl history --type link-going-down | has "u$(uplink_of "$MOVE_FROM")" || fail "4: trigger-db has no link-going-down"
# The moves so far are in trigger-db's history beside the link events (each
# written once its first ESP packet on the new path was counted).
n=0
for _ in $(seq 60); do
  n=$(triggerctl history --type link-handover-complete --all --json 2>/dev/null | grep -c '"id"' || true)
  [ "$n" -ge 3 ] && break
  sleep 0.25
done
[ "$n" -ge 3 ] || fail "4: trigger-db has $n LINK_HANDOVER_COMPLETE triggers after 3 moves"
ts "4: Link_Going_Down 500 ms ahead: the SAs moved before the link went down; $n handovers in trigger-db"

# ---- 5. flapping ----
ike_before=$(gw --list-sas | grep -o '^a: #[0-9]*')
read -r src _ spi < <(out_sa) || true
moves_before=$(agent_moves)
ping_start "$D/ping-flap.log"
flap "$(uplink_of "$src")" 10
sleep 2
ping_stop
moves=$(( $(agent_moves) - moves_before ))
echo "  5: $moves moves in 10 s of flapping (25 link-downs); pings: $(handover "$D/ping-flap.log" 0 | awk '{print $2}') lost"
[ "$moves" -ge 1 ] || fail "5: the agent stayed on the flapping uplink"
[ "$moves" -le 6 ] || fail "5: $moves moves in 10 s of flapping (at most 6)"
[ "$(gw --list-sas | grep -o '^a: #[0-9]*')" = "$ike_before" ] || fail "5: the gateway's IKE SA changed ($ike_before)"
read -r src _ spi_after < <(out_sa) || true
[ "${spi_after:-}" = "$spi" ] && [ "$(in_spi)" = "$IN_SPI" ] || fail "5: the SPIs changed in the flapping"
wait_for 10 gw_peer "$src" || fail "5: the gateway does not list the agent at $src"
ip netns exec A ping -c 5 -i 0.2 -W 2 -I 10.1.0.1 10.2.0.1 >/dev/null || fail "5: pings after the flapping"
ts "5: flapping every 200 ms for 10 s: the same SAs, $moves moves"

# ---- 6. IPv4 -> IPv6, the agent with source = "automatic" ----
initiator_stop
uplinks_set "4" "6"
agent_initiator_start automatic
IN_SPI=$(in_spi)
read -r src _ _ < <(out_sa) || true
[ "${src:-}" = 192.0.2.1 ] || fail "6: the outbound SA is not from u1's 192.0.2.1: ${src:-none}"
measure_move ci-v4v6 break
check_moved 6
case $MOVE_TO in *:*) ;; *) fail "6: the SAs are not on IPv6: $MOVE_TO";; esac
ts "6: IPv4 -> IPv6: u1 (IPv4) down, the SAs moved to u2 (IPv6) with their SPIs"

# ---- 7. trigger-db stopped: the agent's own rtnetlink watch ----
# u1 is back since step 6; whether the SAs return to it (IPv4 preferred)
# or stay on u2 (u1 flapped in step 5: the flap penalty) is the policy's
# call, made once min_dwell is over. Then the uplink in use goes, which
# only the agent's own watch can tell it now.
stop_pid "$TRIGGERDB_PID"; TRIGGERDB_PID=""
sleep 7
measure_move ci-netlink break
check_moved 7
grep -iE 'netlink|trigger-db' "$D/agent.log" | tail -n 3 || true
grep -q "own rtnetlink watch" "$D/agent.log" || fail "7: the agent did not switch to its own watch"
ts "7: trigger-db stopped: the agent's own watch moved the SAs off the uplink that went ($MOVE_FROM -> $MOVE_TO)"
"$BIN_DIR/mobike-agent" status --control-socket "$D/agent.sock" || true

# ---- 8. SIGKILL of the agent with its SAs installed ----
# ours: policies and routes of one agent run (reqids 0x6d000001 on, route
# protocol 167)
policies() { ip -n A xfrm policy | awk '/reqid/ { r = $4 + 0; if (r >= 1828716545 && r < 1845493760) n++ } END { print n + 0 }'; }
routes() { { ip -n A route show table all proto 167; ip -n A -6 route show table all proto 167; } | wc -l; }
read -r _ _ old_out < <(out_sa) || true
old_in=$(in_spi)
p0=$(policies); r0=$(routes)
[ "$p0" -gt 0 ] && [ "$r0" -gt 0 ] || fail "8: no policies ($p0) or routes ($r0) of the agent before the kill"
kill -KILL "$INITIATOR_PID"; wait "$INITIATOR_PID" 2>/dev/null || true; INITIATOR_PID=""
ip -n A xfrm state | grep -q "spi $old_out" || fail "8: the killed agent's outbound SA is gone already"
[ "$(policies)" = "$p0" ] && [ "$(routes)" = "$r0" ] || fail "8: the killed agent's policies or routes are gone already"
echo "  8: killed with SPIs $old_out/$old_in, $p0 policies and $r0 routes in the kernel"
installed_before=$(grep -c 'kernel: CHILD_SA installed' "$D/agent.log" || true)
ip netns exec A env MOBIKE_AGENT_LOG="${RUST_LOG:-info,mobike_agent=debug}" "$BIN_DIR/mobike-agent" \
  --config "$D/agent.toml" >>"$D/agent.log" 2>&1 &
INITIATOR_PID=$!
wait_for 60 bash -c "[ \$(grep -c 'kernel: CHILD_SA installed' '$D/agent.log') -gt $installed_before ]" ||
  fail "8: the restarted agent did not install a CHILD_SA"
grep -q 'removed kernel state an earlier run left behind' "$D/agent.log" || fail "8: the restart did not report removing the old state"
! ip -n A xfrm state | grep -qE "spi ($old_out|$old_in)( |$)" || fail "8: an SA of the killed run is still there"
[ "$(policies)" = "$p0" ] || fail "8: $(policies) policies after the restart, one run makes $p0"
[ "$(routes)" = "$r0" ] || fail "8: $(routes) routes of ours after the restart, one run makes $r0"
wait_for 20 ip netns exec A ping -c 1 -W 1 -I 10.1.0.1 10.2.0.1 >/dev/null || fail "8: no pings through the new tunnel"
ts "8: SIGKILL: the restarted agent removed the old SAs, policies and routes; the tunnel is back (SPIs $(out_sa | awk '{print $3}')/$(in_spi))"
initiator_stop
echo MOBILITY-VM-OK
