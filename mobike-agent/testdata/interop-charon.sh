#!/bin/bash
# Interop: mobike-agent (kernel backend "none") against strongSwan's charon,
# each in its own network namespace (mbkiA: agent 192.0.2.1, mbkiB: charon
# 192.0.2.2). charon uses kernel-libipsec (the CI host kernel has no ESP),
# which needs ESP-in-UDP: encap = yes, so charon fakes NAT detection and
# both sides move to port 4500.
#   1. agent initiates  aes256gcm16-prfsha256-x25519 / ESP aes256gcm16;
#      charon rekeys the CHILD_SA and the IKE SA; SIGTERM deletes the SAs.
#   2. charon initiates aes128gcm16-prfsha384-ecp384 / ESP chacha20poly1305;
#      the agent rekeys CHILD_SA and IKE SA itself and sends liveness
#      checks; charon deletes.
#   3. wrong PSK: AUTHENTICATION_FAILED; 4. proposal mismatch: NO_PROPOSAL_CHOSEN.
#   5. both ends rekey the IKE SA every 6 s and the CHILD_SA every 5 s, so
#      rekeys cross (RFC 7296 §2.8.1, §2.8.2).
#   6. over IPv6 with IPv6 selectors; the agent rekeys the CHILD_SA with PFS
#      and first offers a group charon refuses (INVALID_KE_PAYLOAD retry).
#   7. charon dies (SIGKILL): the agent's liveness check declares it dead.
#   8. MOBIKE: charon (initiator) changes its address; it sends
#      UPDATE_SA_ADDRESSES and the agent follows it (RFC 4555 §3.5).
# Needs root, iproute2, strongswan-charon strongswan-swanctl
# libstrongswan-standard-plugins libcharon-extra-plugins.
# Usage: interop-charon.sh /path/to/mobike-agent    Prints INTEROP-OK.
set -euo pipefail
BIN=$(realpath "${1:?path to mobike-agent}")
# Namespace names per run, so that two runs (or a stale one) never collide.
NSA=mbkiA$$; NSB=mbkiB$$
D=$(mktemp -d /tmp/mbkinterop.XXXXXX)
CHARON=""; AGENT=""
fail() { echo "FAIL: $*" >&2; echo "--- agent log" >&2; tail -n 40 "$D"/agent*.log >&2 || true
         echo "--- charon log" >&2; grep -E 'IKE|CFG|ENC' "$D/B/charon.log" | tail -40 >&2 || true; exit 1; }
stop_charon() { [ -n "$CHARON" ] && { kill "$CHARON" 2>/dev/null || true; wait "$CHARON" 2>/dev/null || true; }; CHARON=""; }
cleanup() {
  [ -n "$AGENT" ] && { kill "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; }
  stop_charon
  ip netns del $NSA 2>/dev/null || true; ip netns del $NSB 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $D" >&2; else rm -rf "$D"; fi
}
trap cleanup EXIT
ip netns add $NSA; ip netns add $NSB
ip -n $NSA link set lo up; ip -n $NSB link set lo up
ip link add vA netns $NSA type veth peer name vB netns $NSB
ip -n $NSA addr add 192.0.2.1/24 dev vA; ip -n $NSB addr add 192.0.2.2/24 dev vB
ip -n $NSA link set vA up; ip -n $NSB link set vB up
ip -n $NSB link add lanB0 type veth peer name lanB1; ip -n $NSB addr add 10.2.0.1/24 dev lanB0
ip -n $NSB link set lanB0 up; ip -n $NSB link set lanB1 up
ip -n $NSA addr add 2001:db8::1/64 dev vA nodad; ip -n $NSB addr add 2001:db8::2/64 dev vB nodad
ip -n $NSB addr add fd00:2::1/64 dev lanB0 nodad
mkdir -p "$D/B"; (cd "$D/B" && mkdir -p x509 x509ca x509ocsp x509aa x509ac x509crl pubkey private rsa ecdsa bliss pkcs8 pkcs12)
cat > "$D/B/strongswan.conf" <<EOC
charon {
  load = random nonce openssl pem pkcs1 x509 pubkey kdf kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  retransmit_timeout = 1.0
  retransmit_tries = 3
  plugins { vici { socket = unix://$D/B/charon.vici } }
  filelog { main { path = $D/B/charon.log
    time_format = %T
    flush_line = yes
    default = 1
    ike = 2 } }
}
swanctl { load = pem pkcs1 x509 pubkey openssl random nonce
  socket = unix://$D/B/charon.vici }
EOC
sw() { STRONGSWAN_CONF=$D/B/strongswan.conf swanctl "$@" --uri "unix://$D/B/charon.vici"; }
start_charon() { # swanctl.conf body
  echo "$1" > "$D/B/swanctl.conf"
  rm -f "$D/B/charon.vici"
  ip netns exec $NSB unshare -m sh -c \
    "mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF=$D/B/strongswan.conf /usr/lib/ipsec/charon" \
    >"$D/B/charon.stdout" 2>&1 &
  CHARON=$!
  for i in $(seq 100); do [ -S "$D/B/charon.vici" ] && break; sleep 0.1; done
  wait_for 5 bash -c "STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --load-all --file $D/B/swanctl.conf \
    --uri unix://$D/B/charon.vici >/dev/null 2>&1" || fail "swanctl --load-all"
}
charon_conf() { # proposals esp_proposals [remote_addrs] [psk] [extra connection lines] [extra child lines]
  cat <<EOC
connections { c { version = 2
  ${3:+remote_addrs = $3}
  ${5:-}
  proposals = $1
  mobike = yes
  encap = yes
  local { auth = psk
          id = b.test }
  remote { auth = psk
           id = a.test }
  children { net { local_ts = 10.2.0.0/24
                   remote_ts = 10.1.0.0/24
                   ${6:-}
                   esp_proposals = $2 } } } }
secrets { ike-c { id-a = a.test
  id-b = b.test
  secret = "${4:-interop-psk-0123456789}" } }
EOC
}
agent_conf() { # start proposals esp [psk] [extra connection lines] [extra child lines]
  cat <<EOC
[kernel]
backend = "none"
[connections.c]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
local_id = "a.test"
remote_id = "b.test"
psk = "${4:-interop-psk-0123456789}"
proposals = ["$2"]
mobike = true
start = "$1"
${5:-}
[connections.c.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["$3"]
${6:-}
EOC
}
start_agent() { # name conf
  echo "$2" > "$D/$1.toml"
  ip netns exec $NSA env MOBIKE_AGENT_LOG=mobike_agent=debug "$BIN" --config "$D/$1.toml" 2>"$D/agent-$1.log" &
  AGENT=$!
}
stop_agent() {
  kill -TERM "$AGENT"; wait "$AGENT" || fail "agent exit status $?"; AGENT=""
}
wait_for() { # seconds cmd...
  local n=$(( $1 * 10 )); shift
  for i in $(seq "$n"); do "$@" && return 0; sleep 0.1; done; return 1
}
charon_has() { sw --list-sas 2>/dev/null | grep -q "$1"; }
spis() { sw --list-sas 2>/dev/null | awk '$1 == "in" || $1 == "out" { printf "%s ", $2 }'; }

# ---- 1. agent initiates ----
start_charon "$(charon_conf aes256gcm16-prfsha256-x25519 aes256gcm16)"
start_agent init "$(agent_conf initiate aes256gcm16-prfsha256-x25519 aes256gcm16)"
wait_for 20 charon_has INSTALLED || fail "1: CHILD_SA not installed by charon"
charon_has 'AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519' || fail "1: IKE suite"
grep -q 'CHILD_SA installed' "$D/agent-init.log" || fail "1: agent did not install the CHILD_SA"
echo "1: IKE_SA + CHILD_SA up, agent initiator"
old=$(spis); [ -n "$old" ] || fail "1: no CHILD_SA SPIs listed"
sw --rekey --child net >/dev/null || fail "1: charon CHILD_SA rekey"
wait_for 10 bash -c "[ \"\$(STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -c INSTALLED)\" = 1 ]" \
  || fail "1: old CHILD_SA not deleted after rekey"
[ "$(spis)" != "$old" ] || fail "1: CHILD_SA SPIs unchanged after rekey"
grep -q 'CHILD_SA installed' "$D/agent-init.log" || fail "1: rekeyed CHILD_SA"
echo "1: CHILD_SA rekeyed by charon"
sw --rekey --ike c >/dev/null || fail "1: charon IKE rekey"
wait_for 10 grep -q 'IKE SA rekeyed by the peer' "$D/agent-init.log" || fail "1: IKE rekey not seen by agent"
wait_for 10 grep -q 'reason: Rekeyed' "$D/agent-init.log" || fail "1: old IKE SA not deleted"
charon_has INSTALLED || fail "1: CHILD_SA lost in IKE rekey"
echo "1: IKE SA rekeyed by charon"
stop_agent
wait_for 5 bash -c "! STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q ESTABLISHED" \
  || fail "1: charon still has the IKE SA after SIGTERM"
grep -q 'received DELETE for IKE_SA' "$D/B/charon.log" || fail "1: charon saw no Delete"
echo "1: SIGTERM deleted the SAs at charon"
stop_charon

# ---- 2. charon initiates ----
rm -f "$D/B/charon.log"
start_charon "$(charon_conf aes128gcm16-prfsha384-ecp384 chacha20poly1305 192.0.2.1)"
start_agent listen "$(agent_conf listen aes128gcm16-prfsha384-ecp384 chacha20poly1305 interop-psk-0123456789 \
  $'dpd_delay = "1s"\nrekey_time = "5s"' 'rekey_time = "3s"')"
sleep 0.5
sw --initiate --child net --timeout 20 >/dev/null || fail "2: charon could not initiate"
charon_has 'AES_GCM_16-128/PRF_HMAC_SHA2_384/ECP_384' || fail "2: IKE suite"
charon_has 'CHACHA20_POLY1305' || fail "2: ESP suite"
echo "2: IKE_SA + CHILD_SA up, agent responder"
# The agent rekeys the CHILD_SA every 3 s and the IKE SA every 5 s, and
# sends liveness checks after 1 s of silence.
wait_for 15 bash -c "[ \$(grep -c 'IKE SA rekeyed old=' $D/agent-listen.log) -ge 2 ]" || fail "2: agent did not rekey the IKE SA twice"
wait_for 15 bash -c "[ \$(grep -c 'ChildSaRekeyed' $D/agent-listen.log) -ge 2 ]" || fail "2: agent did not rekey the CHILD_SA twice"
[ "$(grep -c 'received DELETE for ESP CHILD_SA' "$D/B/charon.log")" -ge 2 ] || fail "2: charon saw no CHILD_SA deletes"
[ "$(grep -c 'received DELETE for IKE_SA' "$D/B/charon.log")" -ge 2 ] || fail "2: charon saw no IKE_SA deletes"
grep -q 'parsed INFORMATIONAL request [0-9]* \[ \]' "$D/B/charon.log" || fail "2: no liveness check reached charon"
charon_has ESTABLISHED || fail "2: IKE SA gone after rekeys"
[ "$(sw --list-sas | grep -c INSTALLED)" = 1 ] || fail "2: not exactly one CHILD_SA after rekeys"
grep -q 'PeerUnreachable' "$D/agent-listen.log" && fail "2: agent lost the peer"
echo "2: agent-initiated CHILD_SA and IKE SA rekeys and liveness checks accepted by charon"
sw --terminate --ike c --timeout 10 >/dev/null || fail "2: terminate"
wait_for 5 grep -q 'reason: PeerDeleted' "$D/agent-listen.log" || fail "2: agent did not see the Delete"
echo "2: charon's Delete processed"
stop_agent
stop_charon

# ---- 3. wrong PSK ----
rm -f "$D/B/charon.log"
start_charon "$(charon_conf aes256gcm16-prfsha256-x25519 aes256gcm16)"
start_agent badpsk "$(agent_conf initiate aes256gcm16-prfsha256-x25519 aes256gcm16 wrong-psk-000000000)"
wait_for 10 grep -q 'reason: AuthenticationFailed' "$D/agent-badpsk.log" || fail "3: no AUTHENTICATION_FAILED"
echo "3: wrong PSK -> AUTHENTICATION_FAILED"
stop_agent

# ---- 4. proposal mismatch ----
start_agent noprop "$(agent_conf initiate aes128gcm16-prfsha512-ecp256 aes256gcm16)"
wait_for 10 grep -q 'PeerError(NO_PROPOSAL_CHOSEN)' "$D/agent-noprop.log" || fail "4: no NO_PROPOSAL_CHOSEN"
echo "4: proposal mismatch -> NO_PROPOSAL_CHOSEN"
stop_agent

# ---- 5. both ends rekey the IKE SA every 6 s and the CHILD_SA every 5 s:
#         crossing rekeys (§2.8.1, §2.8.2) ----
stop_charon
rm -f "$D/B/charon.log"
start_charon "$(charon_conf aes256gcm16-prfsha256-x25519 aes256gcm16 "" interop-psk-0123456789 \
  $'rekey_time = 6s\n  over_time = 60s\n  rand_time = 0s' \
  $'rekey_time = 5s\n                   life_time = 60s\n                   rand_time = 0s')"
start_agent cross "$(agent_conf initiate aes256gcm16-prfsha256-x25519 aes256gcm16 interop-psk-0123456789 'rekey_time = "6s"' 'rekey_time = "5s"')"
wait_for 20 charon_has INSTALLED || fail "5: CHILD_SA not installed by charon"
sleep 20
# Rekeys keep going, so two SAs can exist for a moment: poll for a settled
# state in which both ends agree on exactly one IKE SA and one CHILD_SA.
settled() {
  local l; l=$(sw --list-sas 2>/dev/null)
  [ "$(grep -c ESTABLISHED <<<"$l")" = 1 ] && [ "$(grep -c INSTALLED <<<"$l")" = 1 ] || return 1
  local inst del cin
  inst=$(grep -c 'install CHILD_SA' "$D/agent-cross.log" || true)
  del=$(grep -c 'delete CHILD_SA' "$D/agent-cross.log" || true)
  [ $((inst - del)) = 1 ] || return 1
  cin=$(awk '$1 == "in" { sub(",", "", $2); print $2 }' <<<"$l")
  grep -q "outbound=0x$cin" "$D/agent-cross.log"
}
wait_for 20 settled || fail "5: the ends do not settle on one IKE SA and the same single CHILD_SA"
grep -q 'PeerUnreachable' "$D/agent-cross.log" && fail "5: agent lost the peer"
n=$(grep -c 'IKE SA rekey' "$D/agent-cross.log" || true)
k=$(grep -c 'ChildSaRekeyed' "$D/agent-cross.log" || true)
c=$(grep -c 'collision' "$D/agent-cross.log" || true)
echo "5: IKE SA and CHILD_SA rekeyed by both ends ($n IKE rekey lines, $k CHILD rekey lines, $c collision lines): one IKE SA, one CHILD_SA"
stop_agent

# ---- 6. IPv6, PFS with INVALID_KE_PAYLOAD retry ----
stop_charon
rm -f "$D/B/charon.log"
start_charon "connections { c { version = 2
  proposals = aes128gcm16-prfsha384-ecp384
  mobike = yes
  encap = yes
  local { auth = psk
          id = b.test }
  remote { auth = psk
           id = a.test }
  children { net { local_ts = fd00:2::/64
                   remote_ts = fd00:1::/64
                   esp_proposals = aes256gcm16-ecp256 } } } }
secrets { ike-c { id-a = a.test
  id-b = b.test
  secret = \"interop-psk-0123456789\" } }"
start_agent v6 "[kernel]
backend = \"none\"
[connections.c]
local_addrs = [\"2001:db8::1\"]
remote_addrs = [\"2001:db8::2\"]
local_id = \"a.test\"
remote_id = \"b.test\"
psk = \"interop-psk-0123456789\"
proposals = [\"aes128gcm16-prfsha384-ecp384\"]
start = \"initiate\"
[connections.c.children.net]
local_ts = [\"fd00:1::/64\"]
remote_ts = [\"fd00:2::/64\"]
esp_proposals = [\"aes256gcm16-x25519-ecp256\"]
rekey_time = \"3s\""
wait_for 20 charon_has INSTALLED || fail "6: CHILD_SA not installed by charon over IPv6"
charon_has '2001:db8::1\[4500\]' || fail "6: charon does not see the agent's IPv6 address on 4500"
wait_for 15 grep -q 'INVALID_KE_PAYLOAD, retrying' "$D/agent-v6.log" || fail "6: no INVALID_KE_PAYLOAD retry"
wait_for 15 grep -q 'ChildSaRekeyed' "$D/agent-v6.log" || fail "6: CHILD_SA not rekeyed with PFS"
grep -q 'ChildSaFailed' "$D/agent-v6.log" && fail "6: a CHILD_SA failed"
charon_has INSTALLED || fail "6: CHILD_SA gone after the PFS rekey"
grep -qE 'CHILD_SA net\{[0-9]+\} established.*fd00:2::/64 === fd00:1::/64' "$D/B/charon.log" || fail "6: selectors"
echo "6: IPv6 IKE SA and CHILD_SA; PFS rekey retried with charon's group (INVALID_KE_PAYLOAD)"
stop_agent

# ---- 7. dead peer ----
stop_charon
start_charon "$(charon_conf aes256gcm16-prfsha256-x25519 aes256gcm16)"
start_agent dpd "$(agent_conf initiate aes256gcm16-prfsha256-x25519 aes256gcm16 interop-psk-0123456789 \
  $'dpd_delay = "1s"\nretransmit_timeout = "250ms"\nretransmit_tries = 2')"
wait_for 20 charon_has INSTALLED || fail "7: CHILD_SA not installed by charon"
kill -KILL "$CHARON"; wait "$CHARON" 2>/dev/null || true; CHARON=""
wait_for 15 grep -q 'reason: PeerUnreachable' "$D/agent-dpd.log" || fail "7: agent did not notice the dead peer"
grep -q 'delete CHILD_SA' "$D/agent-dpd.log" || fail "7: CHILD_SA not removed after the peer died"
echo "7: charon killed: liveness check declared it dead, SAs removed"
stop_agent

# ---- 8. MOBIKE: the peer moves ----
ip -n $NSA route add default dev vA
ip -n $NSB route add default dev vB
rm -f "$D/B/charon.log"
start_charon "$(charon_conf aes256gcm16-prfsha256-x25519 aes256gcm16 192.0.2.1)"
start_agent mobike "$(agent_conf listen aes256gcm16-prfsha256-x25519 aes256gcm16)"
sleep 0.5
sw --initiate --child net --timeout 20 >/dev/null || fail "8: charon could not initiate"
ip -n $NSB addr add 198.51.100.2/24 dev vB
ip -n $NSB addr del 192.0.2.2/24 dev vB
wait_for 20 grep -q 'IKE SA moved (MOBIKE)' "$D/agent-mobike.log" || fail "8: agent did not follow charon's address update"
grep -q 'migrate CHILD_SA.*remote=198.51.100.2' "$D/agent-mobike.log" || fail "8: CHILD_SA not migrated to the new address"
wait_for 10 charon_has '198.51.100.2\[4500\]' || fail "8: charon did not move"
charon_has ESTABLISHED || fail "8: IKE SA lost after the move"
[ "$(sw --list-sas | grep -c INSTALLED)" = 1 ] || fail "8: CHILD_SA lost after the move"
echo "8: MOBIKE: charon moved 192.0.2.2 -> 198.51.100.2, the agent followed and migrated the CHILD_SA"
stop_agent
echo INTEROP-OK
