#!/bin/bash
# Guest scenario (run by tests/vm/run.sh mobike-charon, with
# VM_CARGO_PACKAGES="mobike-agent ipsec-backend"): mobike-agent with
# `[kernel] backend = "xfrm"` against strongSwan's charon with real kernel
# ESP (kernel-netlink), each in its own network namespace.
#
#   netns A (agent, initiator) 192.0.2.1 <-veth-> 192.0.2.2 netns B (charon)
#   inner: 10.1.0.1/24 and 10.3.0.1/24 on a dummy in A, 10.2.0.1/24 and
#   10.4.0.1/24 on a dummy in B; the CHILD_SA has two traffic selectors per
#   side (A: local 10.1.0.0/24,10.3.0.0/24, remote 10.2.0.0/24,10.4.0.0/24),
#   so both install policies for the 4 combinations (RFC 7296 §2.9)
#   IKE aes256gcm16-prfsha256-x25519, ESP aes256gcm16, PSK, tunnel mode
#   1. the agent brings up IKE SA + CHILD_SA and installs it through
#      ipsec-backend (2 SAs + out/in/fwd policies for each of the 4
#      selector combinations = 12 policies in A, one reqid)
#   1b. the agent routes both remote subnets via table 220 with an inner
#      source address (install_routes), removed again at SIGTERM
#   2. ping 10.1.0.1 -> 10.2.0.1 and 10.3.0.1 -> 10.4.0.1 pass through the
#      tunnel (and the cross combinations): the ESP SA packet counters in A
#      grow, charon lists the CHILD_SA INSTALLED with both selectors and
#      its kernel SAs in B count packets too; `mobike-agent status --json`
#      reports the same SPIs and kernel counters
#   3. charon rekeys the CHILD_SA: the agent installs the new SAs under the
#      same reqid and policies (still 12), deletes the old SAs, the pings
#      use the new ones
#   3b. the kernel reports the soft byte limit (rekey_bytes) of the SAs:
#      the agent rekeys the CHILD_SA with charon, once
#   4. SIGTERM: the agent deletes the SAs at charon and its own SAs + all
#      12 policies
#   5. MOBIKE: charon initiates to the agent, then changes its address; the
#      agent checks the new address (return routability) and migrates its
#      CHILD_SA (the templates of all 12 policies move), pings for both
#      subnet pairs pass with the same SPIs in both namespaces
#   6. behind an nftables masquerading router: IKE floats to 4500, the
#      kernel SAs use ESP-in-UDP, pings pass
#   6b. `mobike-agent move` to the direct path: UPDATE_SA_ADDRESSES from the
#      agent, no NAT, plain ESP with the same SPIs in both namespaces
#   6c. `mobike-agent move` to a second IPv4 address of the agent
#   6d. `mobike-agent move` from IPv4 to IPv6 (the inner traffic stays
#      IPv4); after 6c and 6d the pings pass with the same SPIs in both
#      namespaces
#   7. a hard packet limit (life_packets): the kernel removes the SA, the
#      agent deletes the CHILD_SA with charon, the IKE SA stays
#   8. transport mode host to host with charon (no MOBIKE); IKE passes the
#      host-to-host policies because the IKE sockets bypass IPsec
#   9. a virtual IP from charon's pool: on lo, routed from, pinged through
#  10. the agent as gateway hands charon a virtual IP from its pool
# Needs on the host (the guest sees the host fs read-only): strongswan-charon
# strongswan-swanctl libstrongswan-standard-plugins libcharon-extra-plugins.
# Prints MOBIKE-CHARON-VM-OK and exits 0 on success.
set -euo pipefail
AGENT_BIN="$BIN_DIR/mobike-agent"
D=$(mktemp -d /tmp/mbkvm.XXXXXX)
# ts, has, wait_for, load_modules, charon_conf, charon_start, sw_in
# shellcheck source=../lib/common.sh
. "$(cd "$(dirname "$0")/../lib" && pwd)/common.sh"
CHARON_PID=""; AGENT=""
fail() {
  echo "FAIL: $*"
  echo "--- agent log"; tail -n 40 "$D/agent.log" 2>/dev/null || true
  echo "--- charon log"; tail -n 60 "$D/B/charon.log" 2>/dev/null || true
  for ns in A B; do
    echo "--- $ns: ip -s xfrm state / policy, routes"
    ip -n $ns -s xfrm state || true; ip -n $ns xfrm policy || true
    ip -n $ns route show table all | grep -v '^local\|^broadcast\|fe80\|ff00' || true
  done
  exit 1
}
cleanup() {
  [ -n "$AGENT" ] && { kill "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; }
  stop_pid "$CHARON_PID"
  ip netns del A 2>/dev/null || true; ip netns del B 2>/dev/null || true
  ip netns del R 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
[ -x "$AGENT_BIN" ] || fail "no $AGENT_BIN (VM_CARGO_PACKAGES must include mobike-agent)"
need_charon
load_modules
ts "modules loaded"

ip netns add A; ip netns add B
ip -n A link set lo up; ip -n B link set lo up
ip link add vA netns A type veth peer name vB netns B
ip -n A addr add 192.0.2.1/24 dev vA; ip -n B addr add 192.0.2.2/24 dev vB
ip -n A link set vA up; ip -n B link set vB up
ip -n A link add d0 type dummy; ip -n B link add d0 type dummy
ip -n A addr add 10.1.0.1/24 dev d0; ip -n B addr add 10.2.0.1/24 dev d0
ip -n A addr add 10.3.0.1/24 dev d0; ip -n B addr add 10.4.0.1/24 dev d0
ip -n A link set d0 up; ip -n B link set d0 up
# The agent routes the remote selectors itself (table 220, source an inner
# address of A: install_routes, on by default); charon's side is routed by
# hand (install_routes = no there).
ip -n B route add 10.1.0.0/24 dev vB src 10.2.0.1
ip -n B route add 10.3.0.0/24 dev vB src 10.4.0.1

# ---- charon (responder) in B ----
charon_conf "$D/B"
cat > "$D/B/swanctl.conf" <<'EOC'
connections { c { version = 2
  proposals = aes256gcm16-prfsha256-x25519
  mobike = yes
  local { auth = psk
          id = b.test }
  remote { auth = psk
           id = a.test }
  remote_addrs = 192.0.2.1
  children { net { local_ts = 10.2.0.0/24,10.4.0.0/24
                   remote_ts = 10.1.0.0/24,10.3.0.0/24
                   esp_proposals = aes256gcm16 } } } }
secrets { ike-c { id-a = a.test
  id-b = b.test
  secret = "vm-interop-psk-0123456789" } }
EOC
sw() { sw_in "$D/B" "$@"; }
charon_start B "$D/B" "$D/B/swanctl.conf"
ts "charon up, config loaded"

# ---- mobike-agent (initiator) in A, backend xfrm ----
cat > "$D/agent.toml" <<'EOC'
[kernel]
backend = "xfrm"
[connections.c]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
local_id = "a.test"
remote_id = "b.test"
psk = "vm-interop-psk-0123456789"
proposals = ["aes256gcm16-prfsha256-x25519"]
mobike = true
start = "initiate"
[connections.c.children.net]
local_ts = ["10.1.0.0/24", "10.3.0.0/24"]
remote_ts = ["10.2.0.0/24", "10.4.0.0/24"]
esp_proposals = ["aes256gcm16"]
rekey_bytes = 40000
life_bytes = 10000000
EOC
printf '[control]\nsocket = "%s"\n' "$D/agent.sock" >> "$D/agent.toml"
ip netns exec A env MOBIKE_AGENT_LOG="${RUST_LOG:-mobike_agent=debug}" "$AGENT_BIN" --config "$D/agent.toml" \
  2>"$D/agent.log" &
AGENT=$!

charon_installed() { sw --list-sas 2>/dev/null | has INSTALLED; }
wait_for 60 charon_installed || fail "1: charon has no INSTALLED CHILD_SA"
wait_for 20 grep -q 'kernel: CHILD_SA installed' "$D/agent.log" || fail "1: agent did not install the CHILD_SA"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "1: agent kernel action failed"
sw --list-sas | has 'AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519' || fail "1: IKE suite"
[ "$(ip -n A xfrm state | grep -c '^src')" = 2 ] || fail "1: agent's namespace has not exactly 2 SAs"
# "src dst dir" of every policy between inner (10.x) prefixes in a namespace, sorted
policies() {
  ip -n "$1" xfrm policy |
    awk '$1=="src"{s=""; if ($2 ~ /^10\./) {s=$2; d=$4}} $1=="dir" && s!=""{print s, d, $2}' | sort
}
# the 12 the agent must have: out for local -> remote, in and fwd back,
# for each of the 2 x 2 selector combinations
want_policies() {
  for l in 10.1.0.0/24 10.3.0.0/24; do for r in 10.2.0.0/24 10.4.0.0/24; do
    echo "$l $r out"; echo "$r $l in"; echo "$r $l fwd"
  done; done | sort
}
[ "$(ip -n A xfrm policy | grep -c '^src 10\.')" = 12 ] || fail "1: agent's namespace has not 12 policies (4 selector pairs x out/in/fwd)"
[ "$(policies A)" = "$(want_policies)" ] || fail "1: agent's policies are not out/in/fwd of the 4 selector pairs: $(policies A)"
[ "$(ip -n A xfrm policy | grep -c 'tmpl src 192.0.2.1 dst 192.0.2.2')" = 4 ] || fail "1: not 4 out templates 192.0.2.1 -> 192.0.2.2"
[ "$(ip -n A xfrm policy | grep -c 'tmpl src 192.0.2.2 dst 192.0.2.1')" = 8 ] || fail "1: not 8 in/fwd templates 192.0.2.2 -> 192.0.2.1"
[ "$(ip -n A xfrm policy | grep -Eo 'reqid [0-9]+' | sort -u | wc -l)" = 1 ] || fail "1: policies of more than one reqid"
[ "$(ip -n B xfrm policy | grep -c '^src 10\.')" = 12 ] || fail "1: charon has not 12 policies in B"
ip -n A xfrm state | has 'rfc4106(gcm(aes))' || fail "1: no AES-GCM SA in A"
ip -n A route show table 220 | has '^10\.2\.0\.0/24 dev vA proto 167 src 10\.1\.0\.1' ||
  fail "1: no agent route 10.2.0.0/24 src 10.1.0.1 in table 220: $(ip -n A route show table 220)"
ip -n A route show table 220 | has '^10\.4\.0\.0/24 dev vA proto 167 src 10\.1\.0\.1' ||
  fail "1: no agent route 10.4.0.0/24 in table 220: $(ip -n A route show table 220)"
ip -n A rule | has '^220:.*lookup 220' || fail "1: no rule 220 in A: $(ip -n A rule)"
ts "1: IKE SA + CHILD_SA up; agent installed it via ipsec-backend (2 SAs, 12 policies) and routed both remote subnets (table 220)"
ip -n A xfrm state; ip -n A xfrm policy

# ---- 2. traffic through the tunnel ----
pkts() { # ns spi -> packets of that SA (ip -s xfrm state lifetime current)
  ip -n "$1" -s xfrm state list spi "$2" | grep -A1 'lifetime current:' | grep -o '[0-9]*(packets)' | sed 's/(packets)//'
}
spi_out=$(ip -n A xfrm state | awk '$1=="src" && $2=="192.0.2.1" {getline; print $4; exit}')
spi_in=$(ip -n A xfrm state | awk '$1=="src" && $2=="192.0.2.2" {getline; print $4; exit}')
[ -n "$spi_out" ] && [ -n "$spi_in" ] || fail "2: SPIs not found in A"
spis() { ip -n "$1" xfrm state | awk '$1=="proto" && $2=="esp" {print $4}' | sort | tr '\n' ' '; }
same_spis() { # step spis-before: both namespaces have exactly the SAs of before a move
  [ -n "$2" ] || fail "$1: no SAs before the move"
  [ "$(spis A)" = "$2" ] || fail "$1: the agent's SAs changed in the move: $2 -> $(spis A)"
  [ "$(spis B)" = "$2" ] || fail "$1: charon's kernel SAs changed in the move: $2 -> $(spis B)"
}
ping_both() { # step src dst count: ping_counted, and charon's kernel SAs count the pings too
  local b_in b_out c_in c_out
  b_in=$(pkts B "$spi_out"); b_out=$(pkts B "$spi_in")
  ping_counted "$@"
  c_in=$(pkts B "$spi_out"); c_out=$(pkts B "$spi_in")
  [ "${c_in:-0}" -ge $(( ${b_in:-0} + $4 )) ] && [ "${c_out:-0}" -ge $(( ${b_out:-0} + $4 )) ] ||
    fail "$1: charon's kernel SAs did not count the pings (in $spi_out ${b_in:-?} -> ${c_in:-?}, out $spi_in ${b_out:-?} -> ${c_out:-?})"
}
ping_counted() { # step src dst count: the ping passes and both SAs count it
  local b_out b_in a_out a_in
  b_out=$(pkts A "$spi_out"); b_in=$(pkts A "$spi_in")
  local src=(-I "$2"); [ "$2" = - ] && src=()  # -: the route picks the source
  ip netns exec A ping -c "$4" -i 0.2 -W 3 "${src[@]}" "$3" || fail "$1: ping $2 -> $3 through the tunnel"
  a_out=$(pkts A "$spi_out"); a_in=$(pkts A "$spi_in")
  echo "agent SA packets ($2 -> $3): out $spi_out ${b_out:-?} -> ${a_out:-?}, in $spi_in ${b_in:-?} -> ${a_in:-?}"
  [ "${a_out:-0}" -ge $(( ${b_out:-0} + $4 )) ] || fail "$1: outbound SA counter did not grow by $4 for $2 -> $3"
  [ "${a_in:-0}" -ge $(( ${b_in:-0} + $4 )) ] || fail "$1: inbound SA counter did not grow by $4 for $2 -> $3"
}
ping_counted 2 10.1.0.1 10.2.0.1 5
ping_counted 2 10.3.0.1 10.4.0.1 5
# the cross combinations have policies too
ping_counted 2 10.1.0.1 10.4.0.1 2
ping_counted 2 10.3.0.1 10.2.0.1 2
# no source given: the agent's route supplies 10.1.0.1, so the policies match
ping_counted 2 - 10.2.0.1 2
ping_counted 2 - 10.4.0.1 2
sw --list-sas | has INSTALLED || fail "2: charon CHILD_SA not INSTALLED"
for t in 'local .*10\.2\.0\.0/24' 'local .*10\.4\.0\.0/24' 'remote .*10\.1\.0\.0/24' 'remote .*10\.3\.0\.0/24'; do
  sw --list-sas | grep -E "^ +$t" >/dev/null || fail "2: charon's CHILD_SA lacks a selector ($t)"
done
sw --list-sas | grep -E 'in +[0-9a-f]+|out +[0-9a-f]+' | has '[1-9][0-9]* packets' || fail "2: charon counts no ESP packets"
sw --list-sas
# `mobike-agent status` reads the same kernel counters through ipsec-backend
st=$("$AGENT_BIN" status --json --control-socket "$D/agent.sock") || fail "2: mobike-agent status"
"$AGENT_BIN" status --control-socket "$D/agent.sock"
python3 - "$st" "$spi_in" "$spi_out" "$(pkts A "$spi_in")" "$(pkts A "$spi_out")" <<'EOP' || fail "2: status counters disagree with ip -s xfrm state"
import json, sys
st, spi_in, spi_out, k_in, k_out = sys.argv[1:]
c = json.loads(st.splitlines()[0])["child_sas"][0]
assert c["counters_known"], c
assert int(c["spi_in"], 16) == int(spi_in, 16) and int(c["spi_out"], 16) == int(spi_out, 16), c
# the ping is over; ip read the counters after status did, so they may only be higher
assert 5 <= c["packets_in"] <= int(k_in) and 5 <= c["packets_out"] <= int(k_out), (c, k_in, k_out)
assert c["bytes_in"] > 0 and c["bytes_out"] > 0 and c["last_used_in"] > 0 and c["installed_at"] > 0, c
EOP
ts "2: pings 10.1.0.1 -> 10.2.0.1 and 10.3.0.1 -> 10.4.0.1 (and across) through the tunnel; SA counters grew in A and at charon, status reports them"

# ---- 3. charon rekeys the CHILD_SA: the agent adds the new SAs under the
#         same reqid (policies stay), deletes the old ones, traffic moves ----
sw --rekey --child net >/dev/null || fail "3: charon CHILD_SA rekey"
one_installed() { [ "$(sw --list-sas 2>/dev/null | grep -c INSTALLED)" = 1 ]; }
new_spi_out() { ip -n A xfrm state | awk '$1=="src" && $2=="192.0.2.1" {getline; print $4; exit}'; }
wait_for 20 bash -c "[ \"\$(ip -n A xfrm state | grep -c '^src')\" = 2 ] && ! ip -n A xfrm state | grep -q 'spi $spi_out '" \
  || fail "3: old SAs not replaced in A after the rekey"
wait_for 10 one_installed || fail "3: charon has not exactly one CHILD_SA after the rekey"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "3: agent kernel action failed"
[ "$(ip -n A xfrm policy | grep -c '^src 10\.')" = 12 ] || fail "3: policies changed by the rekey"
[ "$(policies A)" = "$(want_policies)" ] || fail "3: policies changed by the rekey: $(policies A)"
spi_out=$(new_spi_out); [ -n "$spi_out" ] || fail "3: no new outbound SPI"
spi_in=$(ip -n A xfrm state | awk '$1=="src" && $2=="192.0.2.2" {getline; print $4; exit}')
ping_counted 3 10.1.0.1 10.2.0.1 3
ping_counted 3 10.3.0.1 10.4.0.1 3
ts "3: CHILD_SA rekeyed by charon; new SAs ($spi_out) carry the ping"

# ---- 3b. the kernel's soft byte limit (rekey_bytes = 40000) makes the
#          agent rekey: XFRM_MSG_EXPIRE -> CREATE_CHILD_SA with charon ----
lim=$(ip -n A -s xfrm state list spi "$spi_out")
echo "$lim" | has 'soft 40000(bytes), hard 10000000(bytes)' || fail "3b: byte limits not in the kernel: $lim"
echo "$lim" | has 'expire add: soft 0(sec), hard 3960(sec)' || fail "3b: life_time (1h + 10%) not in the kernel: $lim"
old_out=$spi_out
# 40 x 1428 bytes through each SA crosses 40000
ip netns exec A ping -q -c 40 -i 0.05 -s 1400 -W 3 -I 10.1.0.1 10.2.0.1 >/dev/null || fail "3b: big pings"
wait_for 20 grep -q 'soft limit in the kernel: rekeying' "$D/agent.log" || fail "3b: the agent saw no soft expire"
wait_for 20 bash -c "[ \"\$(ip -n A xfrm state | grep -c '^src')\" = 2 ] && ! ip -n A xfrm state | grep -q 'spi $old_out '" \
  || fail "3b: the SAs that reached the limit were not replaced"
wait_for 10 one_installed || fail "3b: charon has not exactly one CHILD_SA after the agent's rekey"
[ "$(grep -c 'soft limit in the kernel: rekeying' "$D/agent.log")" = 1 ] || fail "3b: more than one rekey for one limit"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "3b: agent kernel action failed"
spi_out=$(new_spi_out); [ -n "$spi_out" ] && [ "$spi_out" != "$old_out" ] || fail "3b: no new outbound SPI"
spi_in=$(ip -n A xfrm state | awk '$1=="src" && $2=="192.0.2.2" {getline; print $4; exit}')
ip -n A -s xfrm state list spi "$spi_out" | has 'soft 40000(bytes)' || fail "3b: the new SA lacks the limit"
ping_counted 3b 10.1.0.1 10.2.0.1 3
ts "3b: soft byte limit reached in the kernel; the agent rekeyed with charon ($old_out -> $spi_out)"

# ---- 4. SIGTERM deletes ----
kill -TERM "$AGENT"; wait "$AGENT" || fail "4: agent exit status $?"; AGENT=""
wait_for 10 bash -c "! STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q ESTABLISHED" \
  || fail "4: charon still has the IKE SA after SIGTERM"
grep -q 'kernel: CHILD_SA deleted' "$D/agent.log" || fail "4: agent did not delete its CHILD_SA"
[ "$(ip -n A xfrm state | grep -c '^src')" = 0 ] || fail "4: SAs left in A"
[ "$(ip -n A xfrm policy | grep -c '^src 10\.')" = 0 ] || fail "4: policies left in A: $(policies A)"
[ -z "$(ip -n A route show table 220)" ] || fail "4: routes left in table 220: $(ip -n A route show table 220)"
ip -n A rule | has 'lookup 220' && fail "4: rule 220 left in A"
ts "4: SIGTERM deleted the SAs at charon and in A"

# ---- 5. MOBIKE: charon initiates, then moves 192.0.2.2 -> 198.51.100.2;
#         the agent follows (UPDATE_SA_ADDRESSES) and migrates its CHILD_SA
#         (XFRM_MSG_MIGRATE through ipsec-backend): same SPIs, new outer dst ----
sed 's/^start = "initiate"/start = "listen"/' "$D/agent.toml" > "$D/agent-listen.toml"
ip netns exec A env MOBIKE_AGENT_LOG="${RUST_LOG:-mobike_agent=debug}" "$AGENT_BIN" --config "$D/agent-listen.toml" \
  2>"$D/agent.log" &
AGENT=$!
ip -n A route add default dev vA; ip -n B route add default dev vB
sleep 0.5
sw --initiate --child net --timeout 30 >/dev/null || fail "5: charon could not initiate"
wait_for 20 grep -q 'kernel: CHILD_SA installed' "$D/agent.log" || fail "5: agent did not install the CHILD_SA"
spi_out=$(new_spi_out); [ -n "$spi_out" ] || fail "5: no outbound SPI in A"
[ "$(policies A)" = "$(want_policies)" ] || fail "5: agent's policies as responder: $(policies A)"
ip netns exec A ping -c 2 -i 0.2 -W 3 -I 10.1.0.1 10.2.0.1 >/dev/null || fail "5: ping before the move"
ip netns exec A ping -c 2 -i 0.2 -W 3 -I 10.3.0.1 10.4.0.1 >/dev/null || fail "5: ping 10.3.0.1 -> 10.4.0.1 before the move"
spis_before=$(spis A); [ "$(spis B)" = "$spis_before" ] || fail "5: A and B disagree on the SAs: $spis_before / $(spis B)"
ip -n B addr add 198.51.100.2/24 dev vB
ip -n B addr del 192.0.2.2/24 dev vB
ip -n B route replace default dev vB; ip -n B route replace 10.1.0.0/24 dev vB src 10.2.0.1
ip -n B route replace 10.3.0.0/24 dev vB src 10.4.0.1
wait_for 30 grep -q 'kernel: CHILD_SA migrated' "$D/agent.log" || fail "5: agent did not migrate the CHILD_SA"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "5: agent kernel action failed"
ip -n A xfrm state | has '^src 192.0.2.1 dst 198.51.100.2' || fail "5: outbound SA not moved to 198.51.100.2"
[ "$(ip -n A xfrm policy | grep -c 'tmpl src 192.0.2.1 dst 198.51.100.2')" = 4 ] || fail "5: not all 4 out policy templates moved"
[ "$(ip -n A xfrm policy | grep -c 'tmpl src 198.51.100.2 dst 192.0.2.1')" = 8 ] || fail "5: not all 8 in/fwd policy templates moved"
ip -n A xfrm policy | grep -q '192\.0\.2\.2' && fail "5: a policy template still names 192.0.2.2"
[ "$(policies A)" = "$(want_policies)" ] || fail "5: policies changed by the move: $(policies A)"
[ "$(new_spi_out)" = "$spi_out" ] || fail "5: outbound SPI changed by the move"
wait_for 10 bash -c "STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q '198.51.100.2\[4500\]'" \
  || fail "5: charon did not move"
spi_in=$(ip -n A xfrm state | awk '$1=="src" && $2=="198.51.100.2" {getline; print $4; exit}')
[ -n "$spi_in" ] || fail "5: inbound SA not moved to 198.51.100.2"
same_spis 5 "$spis_before"
ping_both 5 10.1.0.1 10.2.0.1 3
ping_counted 5 10.3.0.1 10.4.0.1 3
# 198.51.100.2 is not configured and not in charon's list: the agent
# checked it (RFC 4555 §3.7, §5.2) before ESP moved
st=$("$AGENT_BIN" status --json --control-socket "$D/agent.sock") || fail "5: status"
echo "$st" | has '"return_routability_checks":1' || fail "5: no return routability check in the agent's status: $st"
echo "$st" | has '"return_routability":null' || fail "5: a check is still under way: $st"
ip -n A route show table 220 | has '^10\.2\.0\.0/24 dev vA proto 167 src 10\.1\.0\.1' ||
  fail "5: agent route lost in the move: $(ip -n A route show table 220)"
ping_counted 5 - 10.2.0.1 2
ip -n A xfrm state | grep -E '^src'
ts "5: MOBIKE: charon moved to 198.51.100.2, the agent migrated the same SAs ($spi_out) and all 12 policy templates, pings for both subnet pairs pass"
kill -TERM "$AGENT"; wait "$AGENT" || fail "5: agent exit status $?"; AGENT=""

# ---- 6. NAT: the agent behind a masquerading router R; IKE floats to
#         4500 and the kernel SAs use ESP-in-UDP, which reaches the kernel
#         only because the agent marks its 4500 socket UDP_ENCAP_ESPINUDP ----
command -v nft >/dev/null || fail "6: nft missing on the host (Debian package nftables)"
ip netns add R; ip -n R link set lo up
ip link add vAR netns A type veth peer name vRA netns R
ip link add vRB netns R type veth peer name vBR netns B
ip -n A addr add 172.16.0.2/24 dev vAR; ip -n R addr add 172.16.0.1/24 dev vRA
ip -n R addr add 203.0.113.1/24 dev vRB; ip -n B addr add 203.0.113.2/24 dev vBR
for l in "A vAR" "R vRA" "R vRB" "B vBR"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n A route replace 203.0.113.0/24 via 172.16.0.1
ip netns exec R sysctl -qw net.ipv4.ip_forward=1
ip netns exec R nft -f - <<'EON' || fail "6: nft masquerade in R"
table ip nat {
  chain post { type nat hook postrouting priority 100; oifname "vRB" masquerade; }
}
EON
ip -n B route replace 10.1.0.0/24 dev vBR src 10.2.0.1
ip -n B route replace 10.3.0.0/24 dev vBR src 10.4.0.1
# charon accepts this peer from any address (conn c wants 192.0.2.1)
sed -e 's/^connections { c {/connections { n {/' -e '/remote_addrs = 192.0.2.1/d' \
  -e 's/secrets { ike-c {/secrets { ike-n {/' "$D/B/swanctl.conf" > "$D/B/swanctl-nat.conf"
sw --load-all --file "$D/B/swanctl-nat.conf" >/dev/null || fail "6: swanctl --load-all (nat)"
# listening on 192.0.2.1, 192.0.2.11 and 2001:db8::1 too, for 6b-6d
ip -n A addr add 192.0.2.11/24 dev vA
ip -n A addr add 2001:db8::1/64 dev vA nodad; ip -n B addr add 2001:db8::2/64 dev vB nodad
sed -e 's/"192\.0\.2\.1"/"172.16.0.2", "192.0.2.1", "192.0.2.11", "2001:db8::1"/' -e 's/192\.0\.2\.2"/203.0.113.2"/' "$D/agent.toml" > "$D/agent-nat.toml"
grep -q '172.16.0.2' "$D/agent-nat.toml" && grep -q '203.0.113.2' "$D/agent-nat.toml" || fail "6: agent-nat.toml"
ip netns exec A env MOBIKE_AGENT_LOG="${RUST_LOG:-mobike_agent=debug}" "$AGENT_BIN" --config "$D/agent-nat.toml" \
  2>"$D/agent.log" &
AGENT=$!
wait_for 30 grep -q 'kernel: CHILD_SA installed' "$D/agent.log" || fail "6: agent did not install the CHILD_SA behind the NAT"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "6: agent kernel action failed"
ip -n A xfrm state | has 'encap type espinudp sport 4500 dport 4500' || fail "6: no ESP-in-UDP SA in A: $(ip -n A xfrm state)"
st=$("$AGENT_BIN" status --json --control-socket "$D/agent.sock") || fail "6: status"
echo "$st" | has '"local_behind_nat":true' || fail "6: the agent does not see its NAT: $st"
echo "$st" | has '"local":"172.16.0.2:4500"' || fail "6: IKE did not float to 4500: $st"
spi_out=$(ip -n A xfrm state | awk '$1=="src" && $2=="172.16.0.2" {getline; print $4; exit}')
spi_in=$(ip -n A xfrm state | awk '$1=="src" && $2=="203.0.113.2" {getline; print $4; exit}')
[ -n "$spi_out" ] && [ -n "$spi_in" ] || fail "6: SPIs not found in A"
ping_counted 6 10.1.0.1 10.2.0.1 3
ping_counted 6 - 10.4.0.1 2
sw --list-sas | has 'ESTABLISHED' || fail "6: charon has no IKE SA"
ts "6: behind a NAT: IKE on 4500, kernel ESP-in-UDP SAs ($spi_out) carry the pings"

# ---- 6b. leaving the NAT: the agent moves its IKE SA to its direct path
#          (192.0.2.1 -> charon's 198.51.100.2) with `mobike-agent move`
#          (UPDATE_SA_ADDRESSES from the agent); no NAT any more, so the
#          kernel SAs drop ESP-in-UDP (ipsec-backend adds them again without
#          it) and keep their SPIs ----
spis_before=$(spis A); [ "$(spis B)" = "$spis_before" ] || fail "6: A and B disagree on the SAs: $spis_before / $(spis B)"
"$AGENT_BIN" move c --local 192.0.2.1 --remote 198.51.100.2 --control-socket "$D/agent.sock" \
  || fail "6b: mobike-agent move"
wait_for 10 grep -q 'kernel: CHILD_SA migrated' "$D/agent.log" || fail "6b: agent did not migrate the CHILD_SA"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "6b: agent kernel action failed"
ip -n A xfrm state | has encap && fail "6b: the SAs are still ESP-in-UDP: $(ip -n A xfrm state)"
ip -n A xfrm state | has '^src 192\.0\.2\.1 dst 198\.51\.100\.2' || fail "6b: outbound SA not on the direct path"
[ "$(ip -n A xfrm state | awk '$1=="src" && $2=="192.0.2.1" {getline; print $4; exit}')" = "$spi_out" ] \
  || fail "6b: the outbound SPI changed"
st=$("$AGENT_BIN" status --json --control-socket "$D/agent.sock") || fail "6b: status"
echo "$st" | has '"local_behind_nat":false' || fail "6b: the agent still sees a NAT: $st"
echo "$st" | has '"local":"192.0.2.1:4500"' && echo "$st" | has '"remote":"198.51.100.2:4500"' || fail "6b: status path: $st"
wait_for 10 bash -c "STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q '192.0.2.1\[4500\]'" \
  || fail "6b: charon did not follow: $(sw --list-sas)"
ip -n B route replace 10.1.0.0/24 dev vB src 10.2.0.1; ip -n B route replace 10.3.0.0/24 dev vB src 10.4.0.1
same_spis 6b "$spis_before"
ping_both 6b 10.1.0.1 10.2.0.1 3
ts "6b: the agent left the NAT with mobike-agent move: plain ESP on the direct path, same SPIs ($spi_out)"

# ---- 6c. the agent moves to its second address 192.0.2.11 ----
migrated() { grep -c 'kernel: CHILD_SA migrated' "$D/agent.log"; }
n=$(migrated)
"$AGENT_BIN" move c --local 192.0.2.11 --control-socket "$D/agent.sock" || fail "6c: mobike-agent move"
wait_for 10 bash -c "[ \$(grep -c 'kernel: CHILD_SA migrated' $D/agent.log) -gt $n ]" || fail "6c: agent did not migrate the CHILD_SA"
ip -n A xfrm state | has '^src 192\.0\.2\.11 dst 198\.51\.100\.2' || fail "6c: outbound SA not on 192.0.2.11: $(ip -n A xfrm state)"
wait_for 10 bash -c "ip -n B xfrm state | grep -q '^src 198\.51\.100\.2 dst 192\.0\.2\.11'" \
  || fail "6c: charon's kernel SA does not go to 192.0.2.11: $(ip -n B xfrm state)"
same_spis 6c "$spis_before"
ping_both 6c 10.1.0.1 10.2.0.1 3
ts "6c: the agent moved to 192.0.2.11 with mobike-agent move, same SPIs in both namespaces"

# ---- 6d. IPv4 -> IPv6: the outer addresses of the SAs change family,
#          the inner traffic (IPv4 selectors) does not ----
n=$(migrated)
"$AGENT_BIN" move c --local 2001:db8::1 --remote 2001:db8::2 --control-socket "$D/agent.sock" \
  || fail "6d: mobike-agent move to IPv6"
wait_for 10 bash -c "[ \$(grep -c 'kernel: CHILD_SA migrated' $D/agent.log) -gt $n ]" || fail "6d: agent did not migrate the CHILD_SA"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "6d: agent kernel action failed"
ip -n A xfrm state | has '^src 2001:db8::1 dst 2001:db8::2' || fail "6d: outbound SA not on IPv6: $(ip -n A xfrm state)"
ip -n A xfrm state | has '^src 192\.' && fail "6d: an SA still on IPv4: $(ip -n A xfrm state)"
wait_for 10 bash -c "ip -n B xfrm state | grep -q '^src 2001:db8::2 dst 2001:db8::1'" \
  || fail "6d: charon's kernel SA is not on IPv6: $(ip -n B xfrm state)"
[ "$(ip -n A xfrm policy | grep -c 'tmpl src 2001:db8::1 dst 2001:db8::2')" = 4 ] || fail "6d: not all 4 out policy templates on IPv6"
same_spis 6d "$spis_before"
ping_both 6d 10.1.0.1 10.2.0.1 3
ping_counted 6d 10.3.0.1 10.4.0.1 2
ts "6d: the agent moved IPv4 -> IPv6 with mobike-agent move, same SPIs in both namespaces"
kill -TERM "$AGENT"; wait "$AGENT" || fail "6: agent exit status $?"; AGENT=""

# ---- 7. a hard limit (life_packets = 20, no rekey): the kernel removes the
#         SA at the 20th packet, the agent deletes the CHILD_SA with charon
#         and keeps the IKE SA ----
wait_for 10 bash -c "! STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q ESTABLISHED" \
  || fail "7: charon still has the IKE SA of step 6"
sed -e 's/^rekey_bytes = 40000$/rekey_time = "0"\nlife_packets = 20/' -e '/^life_bytes = /d' "$D/agent-nat.toml" > "$D/agent-hard.toml"
grep -q '^life_packets = 20$' "$D/agent-hard.toml" || fail "7: agent-hard.toml"
ip netns exec A env MOBIKE_AGENT_LOG="${RUST_LOG:-mobike_agent=debug}" "$AGENT_BIN" --config "$D/agent-hard.toml" \
  2>"$D/agent.log" &
AGENT=$!
wait_for 30 grep -q 'kernel: CHILD_SA installed' "$D/agent.log" || fail "7: agent did not install the CHILD_SA"
spi_out=$(ip -n A xfrm state | awk '$1=="src" && $2=="172.16.0.2" {getline; print $4; exit}')
ip -n A -s xfrm state list spi "$spi_out" | has 'limit: soft (INF)(packets), hard 20(packets)' ||
  fail "7: packet limit not in the kernel: $(ip -n A -s xfrm state list spi "$spi_out")"
ip -n A -s xfrm state list spi "$spi_out" | has 'expire add: soft 0(sec), hard 0(sec)' ||
  fail "7: rekey_time = 0 must leave no age limit: $(ip -n A -s xfrm state list spi "$spi_out")"
ip netns exec A ping -q -c 30 -i 0.1 -W 1 -I 10.1.0.1 10.2.0.1 >/dev/null || true
wait_for 20 grep -q 'hard limit in the kernel: deleting it' "$D/agent.log" || fail "7: the agent saw no hard expire"
wait_for 20 bash -c "[ \"\$(ip -n A xfrm state | grep -c '^src')\" = 0 ] && [ \"\$(ip -n A xfrm policy | grep -c '^src 10\.')\" = 0 ]" \
  || fail "7: SAs or policies left in A after the hard limit"
wait_for 10 bash -c "! STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q INSTALLED" \
  || fail "7: charon still has the CHILD_SA"
sw --list-sas | has 'ESTABLISHED' || fail "7: the IKE SA went with the CHILD_SA"
st=$("$AGENT_BIN" status --json --control-socket "$D/agent.sock") || fail "7: status"
echo "$st" | has '"state":"ESTABLISHED"' || fail "7: the agent's IKE SA is gone: $st"
ts "7: hard packet limit: the kernel removed the SA, the agent deleted the CHILD_SA with charon; the IKE SA stays"
kill -TERM "$AGENT"; wait "$AGENT" || fail "7: agent exit status $?"; AGENT=""

# Steps 8-10: charon in B (198.51.100.2) and the agent in A (192.0.2.1) over
# the direct link, with one connection each.
# charon_conn NAME STEP CONN_LINES CHILD_LINES [EXTRA_SECTIONS]: loads it.
charon_conn() {
  cat > "$D/B/swanctl-$1.conf" <<EOC
connections { $1 { version = 2
  proposals = aes256gcm16-prfsha256-x25519
  local_addrs = 198.51.100.2
  remote_addrs = 192.0.2.1
$3
  local { auth = psk
          id = b.test }
  remote { auth = psk
           id = a.test }
  children { $4 } } }
${5:-}
secrets { ike-$1 { id-a = a.test
  id-b = b.test
  secret = "vm-interop-psk-0123456789" } }
EOC
  sw --load-all --file "$D/B/swanctl-$1.conf" >/dev/null || fail "$2: swanctl --load-all ($1)"
}
# agent_conn NAME START CONN_LINES CHILD CHILD_LINES: starts the agent with it.
agent_conn() {
  cat > "$D/agent-$1.toml" <<EOC
[kernel]
backend = "xfrm"
[control]
socket = "$D/agent.sock"
[connections.$1]
local_addrs = ["192.0.2.1"]
remote_addrs = ["198.51.100.2"]
local_id = "a.test"
remote_id = "b.test"
psk = "vm-interop-psk-0123456789"
proposals = ["aes256gcm16-prfsha256-x25519"]
start = "$2"
$3
[connections.$1.children.$4]
esp_proposals = ["aes256gcm16"]
$5
EOC
  ip netns exec A env MOBIKE_AGENT_LOG="${RUST_LOG:-mobike_agent=debug}" "$AGENT_BIN" --config "$D/agent-$1.toml" \
    2>"$D/agent.log" &
  AGENT=$!
}

# ---- 8. transport mode, host to host (192.0.2.1 <-> 198.51.100.2, left
#         from step 5), without MOBIKE: the agent asks for it
#         (USE_TRANSPORT_MODE), charon grants it; the policies cover the
#         hosts' own addresses, so IKE itself only passes because both
#         daemons' sockets bypass IPsec: a charon-initiated IKE rekey must
#         reach the agent ----
charon_conn t 8 "  mobike = no" "host { mode = transport
                    esp_proposals = aes256gcm16 }"
agent_conn t initiate 'mobike = false' host 'local_ts = ["192.0.2.1/32"]
remote_ts = ["198.51.100.2/32"]
mode = "transport"'
wait_for 30 grep -q 'kernel: CHILD_SA installed' "$D/agent.log" || fail "8: agent did not install the CHILD_SA"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "8: agent kernel action failed"
wait_for 10 bash -c "STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q 'INSTALLED, TRANSPORT'" \
  || fail "8: charon has no transport-mode CHILD_SA: $(sw --list-sas)"
[ "$(ip -n A xfrm state | grep -c 'mode transport')" = 2 ] || fail "8: not 2 transport-mode SAs in A: $(ip -n A xfrm state)"
ip -n A xfrm policy | has 'src 192.0.2.1/32 dst 198.51.100.2/32' || fail "8: no host-to-host policy in A"
st=$("$AGENT_BIN" status --json --control-socket "$D/agent.sock") || fail "8: status"
echo "$st" | has '"mode":"TRANSPORT"' || fail "8: status does not say transport: $st"
spi_out=$(ip -n A xfrm state | awk '$1=="src" && $2=="192.0.2.1" {getline; print $4; exit}')
spi_in=$(ip -n A xfrm state | awk '$1=="src" && $2=="198.51.100.2" {getline; print $4; exit}')
[ -n "$spi_out" ] && [ -n "$spi_in" ] || fail "8: SPIs not found in A"
ping_counted 8 - 198.51.100.2 3
ike_before=$(sw --list-sas | grep -o 't: #[0-9]*' | head -1)
sw --rekey --ike t >/dev/null || fail "8: charon IKE rekey"
wait_for 20 grep -q 'IKE SA rekeyed by the peer' "$D/agent.log" \
  || fail "8: charon's IKE rekey did not reach the agent through the host-to-host policies"
wait_for 10 bash -c "STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q 'ESTABLISHED'" \
  || fail "8: no IKE SA at charon after the rekey"
[ "$(sw --list-sas | grep -o 't: #[0-9]*' | head -1)" != "$ike_before" ] || fail "8: charon still lists the old IKE SA ($ike_before)"
ping_counted 8 - 198.51.100.2 2
ts "8: transport mode host to host with charon; IKE (a charon-initiated rekey) passes the policies over the agent's bypassing sockets"
kill -TERM "$AGENT"; wait "$AGENT" || fail "8: agent exit status $?"; AGENT=""
wait_for 10 bash -c "! STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q ESTABLISHED" \
  || fail "8: charon still has the IKE SA after SIGTERM"

# ---- 9. a road warrior's virtual IP: charon (198.51.100.2) hands out
#         10.9.0.x from a pool; the agent asks for one (vips), puts it on lo,
#         routes 10.2.0.0/24 from it (table 220) and its pings go through
#         the tunnel; SIGTERM takes the address off again ----
charon_conn rw 9 "  pools = rwpool" "net { local_ts = 10.2.0.0/24
                   esp_proposals = aes256gcm16 }" "pools { rwpool { addrs = 10.9.0.0/24 } }"
ip -n B route replace 10.9.0.0/24 dev vB src 10.2.0.1
agent_conn rw initiate 'vips = ["0.0.0.0"]' net 'remote_ts = ["10.2.0.0/24"]'
wait_for 30 grep -q 'kernel: CHILD_SA installed' "$D/agent.log" || fail "9: agent did not install the CHILD_SA"
grep -q 'CHILD_SA action failed' "$D/agent.log" && fail "9: agent kernel action failed"
st=$("$AGENT_BIN" status --json --control-socket "$D/agent.sock") || fail "9: status"
echo "$st" | has '"virtual_ips":\["10.9.0.1"\]' || fail "9: no virtual IP 10.9.0.1 in status: $st"
ip -n A addr show dev lo | has 'inet 10\.9\.0\.1/32' || fail "9: 10.9.0.1 not on lo: $(ip -n A addr show dev lo)"
ip -n A route show table 220 | has '^10\.2\.0\.0/24 .*src 10\.9\.0\.1' ||
  fail "9: no route 10.2.0.0/24 from the virtual IP: $(ip -n A route show table 220)"
sw --list-sas | grep -E 'remote +10\.9\.0\.1/32' >/dev/null || fail "9: charon's CHILD_SA is not the virtual IP's: $(sw --list-sas)"
sw --list-pools --leases | has -E '10\.9\.0\.1 +online' || fail "9: charon has no online lease: $(sw --list-pools --leases)"
spi_out=$(ip -n A xfrm state | awk '$1=="src" && $2=="192.0.2.1" {getline; print $4; exit}')
spi_in=$(ip -n A xfrm state | awk '$1=="src" && $2=="198.51.100.2" {getline; print $4; exit}')
[ -n "$spi_out" ] && [ -n "$spi_in" ] || fail "9: SPIs not found in A"
ping_counted 9 - 10.2.0.1 3
ts "9: virtual IP 10.9.0.1 from charon's pool on lo; 10.2.0.0/24 routed from it through the tunnel"
kill -TERM "$AGENT"; wait "$AGENT" || fail "9: agent exit status $?"; AGENT=""
ip -n A addr show dev lo | has '10\.9\.0\.1' && fail "9: the virtual IP was left on lo"
ip -n A rule | has 'lookup 220' && fail "9: rule 220 left in A"
ts "9: SIGTERM took the virtual IP off lo"

# ---- 10. the other way round: the agent is the gateway with a pool
#          (10.8.0.0/24), charon the road warrior asking for an address ----
charon_conn rwc 10 "  vips = 0.0.0.0" "net { remote_ts = 10.1.0.0/24
                   esp_proposals = aes256gcm16 }"
agent_conn gw listen 'pools = ["10.8.0.0/24"]' net 'local_ts = ["10.1.0.0/24"]
remote_ts = ["10.8.0.0/24"]'
wait_for 10 test -S "$D/agent.sock" || fail "10: agent did not start"
sw --initiate --child net --timeout 30 >/dev/null || fail "10: charon could not initiate: $(tail -20 "$D/B/charon.log")"
wait_for 20 grep -q 'kernel: CHILD_SA installed' "$D/agent.log" || fail "10: agent did not install the CHILD_SA"
st=$("$AGENT_BIN" status --json --control-socket "$D/agent.sock") || fail "10: status"
echo "$st" | has '"peer_virtual_ips":\["10.8.0.1"\]' || fail "10: the agent handed out no 10.8.0.1: $st"
sw --list-sas | grep -E 'local +10\.8\.0\.1/32' >/dev/null || fail "10: charon's CHILD_SA is not its virtual IP's: $(sw --list-sas)"
wait_for 10 bash -c "ip -n B addr | grep -q 'inet 10\.8\.0\.1/32'" || fail "10: charon did not install its virtual IP"
ip -n A xfrm policy | has 'src 10\.8\.0\.1/32 dst 10\.1\.0\.0/24' || fail "10: the agent's policies are not the virtual IP's"
ip netns exec B ping -c 3 -i 0.2 -W 3 -I 10.8.0.1 10.1.0.1 >/dev/null || fail "10: ping from charon's virtual IP through the tunnel"
ts "10: the agent as gateway handed charon 10.8.0.1 from its pool; ping from it through the tunnel"
kill -TERM "$AGENT"; wait "$AGENT" || fail "10: agent exit status $?"; AGENT=""
echo MOBIKE-CHARON-VM-OK
