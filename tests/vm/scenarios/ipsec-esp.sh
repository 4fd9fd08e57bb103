#!/bin/bash
# Guest scenario (run by tests/vm/run.sh ipsec-esp): real kernel ESP through
# ipsec-backend.  Every SA/policy install and every move is done by
# `xfrmctl` (ipsec-backend); iproute2 only builds namespaces, links, routes.
#
#   netns L <-> R over three veth pairs (three outer address pairs):
#     pair 1: 192.0.2.1/.2   pair 2: 198.51.100.1/.2   pair 3: fd00:3::1/::2
#   1. tunnel CHILD_SA pair (AES-GCM-128) on pair 1, ping through it
#   2. MIGRATE v4 -> v4 (pair 2), pair 1 down, ping
#   3. MIGRATE v4 -> v6 outer (pair 3), pair 2 down, ping
#   4. `xfrmctl migrate` (selector + reqid CLI) v6 -> v4 back to pair 1, ping
#   4b. a MIGRATE the kernel must refuse (target SA exists) is one typed
#      error and leaves SAs, policies and traffic as they were
#      -> after each move the SAME SPIs carry the traffic and their packet
#         counters keep growing (no new SA, no counter reset)
#   5. BEET-mode pair (ChaCha20-Poly1305) passes traffic
#   6. ESP-in-UDP pair (AES-CBC + HMAC-SHA-256-128) on ports 4500, moved to
#      pair 2 and ports 4501 by MIGRATE with XFRMA_ENCAP, ping after
#      then L alone changes its source port to 4502 (same-address MIGRATE):
#      R's monitor must report the NAT-T mapping change (XFRM_MSG_MAPPING);
#      then both move back to pair 1 as plain ESP (encapsulation taken off
#      by adding the SAs again: same SPIs, sequence numbers and counters)
#   6b. a tunnel pair with two traffic selectors per side (the JSON list
#      form of `xfrmctl child install`): 4 selector pairs x out/in/fwd = 12
#      policies, one SA pair with a wildcard selector; both subnet pairs
#      ping through it, MIGRATE to pair 2 moves all 12 templates, ping again;
#      then IPv4 and IPv6 selectors in one CHILD_SA (v4 outer): 2 pairs (the
#      mixed-family combinations are left out), SAs with an AF_UNSPEC
#      selector so that both inner families find them; ping and ping -6
#      pass, before and after a MIGRATE
#   7. SA lifetimes: soft then hard XFRM_MSG_EXPIRE for a short-lived pair
#   8. negative check: with R's SAs flushed, nothing gets through
#   `xfrmctl monitor --json` runs in L throughout and must have seen the
#   MIGRATE events (which `ip xfrm monitor` does not show) and the expires.
# Prints IPSEC-ESP-OK and exits 0 on success.
set -euo pipefail
X="$BIN_DIR/xfrmctl"
PY=/usr/bin/python3
W=$(mktemp -d)
T0=$(date +%s.%N)
ts() { awk -v t0="$T0" -v now="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "[%6.2fs] %s\n", now-t0, m}'; }
fail() {
  echo "FAIL: $*"
  for ns in L R; do
    echo "--- $ns: ip -s xfrm state / policy, xfrm_stat"
    ip -n $ns -s xfrm state || true; ip -n $ns xfrm policy || true
    ip netns exec $ns grep -v ' 0$' /proc/net/xfrm_stat || true
  done
  exit 1
}

for m in xfrm_user esp4 esp6 veth dummy gcm ghash_generic authenc seqiv \
         chacha20poly1305 cbc hmac sha256_generic; do modprobe "$m" 2>/dev/null || true; done
"$X" caps
ts "modules loaded"

HOLDERS=()
cleanup() {
  for p in "${HOLDERS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del L 2>/dev/null || true; ip netns del R 2>/dev/null || true; rm -rf "$W"
}
trap cleanup EXIT
ip netns add L; ip netns add R
for ns in L R; do ip -n $ns link set lo up; done
for i in 1 2 3; do
  ip link add vL$i netns L type veth peer name vR$i netns R
  ip -n L link set vL$i up; ip -n R link set vR$i up
done
ip -n L addr add 192.0.2.1/24 dev vL1;      ip -n R addr add 192.0.2.2/24 dev vR1
ip -n L addr add 198.51.100.1/24 dev vL2;   ip -n R addr add 198.51.100.2/24 dev vR2
ip -n L addr add fd00:3::1/64 dev vL3 nodad; ip -n R addr add fd00:3::2/64 dev vR3 nodad
# inner addresses on dummies: tunnel 10.1/10.2, BEET 10.5.0.1/10.6.0.1, UDP 10.7/10.8
ip -n L link add d0 type dummy; ip -n R link add d0 type dummy
for a in 10.1.0.1/24 10.5.0.1/32 10.7.0.1/24; do ip -n L addr add $a dev d0; done
for a in 10.2.0.1/24 10.6.0.1/32 10.8.0.1/24; do ip -n R addr add $a dev d0; done
ip -n L link set d0 up; ip -n R link set d0 up
ip -n L route add 10.2.0.0/24 dev vL1 src 10.1.0.1; ip -n R route add 10.1.0.0/24 dev vR1 src 10.2.0.1
# (routes over a link vanish when it goes down: each step adds its own)

K() { printf "$1%.0s" $(seq "$2"); }   # K 11 20 -> 20 bytes of 0x11 in hex
tsj() { # "a/n" -> "a/n" (JSON string); "a/n,b/m" -> ["a/n","b/m"] (JSON list)
  if [[ $1 == *,* ]]; then printf '["%s"]' "${1//,/\",\"}"; else printf '"%s"' "$1"; fi
}
spec() { # ns local remote lts rts mode spi_out spi_in crypto_out crypto_in [encap]
  printf '{"outer":{"local":"%s","remote":"%s"},"local_ts":%s,"remote_ts":%s,"mode":"%s","reqid":%s,"spi_out":%d,"spi_in":%d,"crypto_out":%s,"crypto_in":%s%s}\n' \
    "$2" "$3" "$(tsj "$4")" "$(tsj "$5")" "$6" "$((RANDOM % 1000 + 1))" "$7" "$8" "$9" "${10}" "${11:-}"
}
gcm() { echo "{\"kind\":\"aead\",\"alg\":\"rfc4106(gcm(aes))\",\"key\":\"$(K $1 20)\",\"icv_bits\":128}"; }
chacha() { echo "{\"kind\":\"aead\",\"alg\":\"rfc7539esp(chacha20,poly1305)\",\"key\":\"$(K $1 36)\",\"icv_bits\":128}"; }
cbc() { echo "{\"kind\":\"enc_auth\",\"enc\":\"cbc(aes)\",\"enc_key\":\"$(K $1 16)\",\"auth\":\"hmac(sha256)\",\"auth_key\":\"$(K $1 32)\",\"trunc_bits\":128}"; }

install_pair() { # name local_L local_R lts rts mode spiLR spiRL cryptoLR cryptoRL [encapL encapR]
  local n=$1 reqid=$((RANDOM % 1000 + 1))
  spec L "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10}" "${11:-}" | sed "s/\"reqid\":[0-9]*/\"reqid\":$reqid/" > "$W/$n.L.json"
  spec R "$3" "$2" "$5" "$4" "$6" "$8" "$7" "${10}" "$9" "${12:-}" | sed "s/\"reqid\":[0-9]*/\"reqid\":$reqid/" > "$W/$n.R.json"
  "$X" -n L child install --spec "$W/$n.L.json" > "$W/$n.L.h"
  "$X" -n R child install --spec "$W/$n.R.json" > "$W/$n.R.h"
}
move_pair() { # name newL newR [encap args for L] [encap args for R]
  local n=$1 l=$2 r=$3 eL=${4:-} eR=${5:-}
  "$X" -n L child migrate --handle "$W/$n.L.h" --new-local "$l" --new-remote "$r" $eL > "$W/$n.L.h2"
  "$X" -n R child migrate --handle "$W/$n.R.h" --new-local "$r" --new-remote "$l" $eR > "$W/$n.R.h2"
  mv "$W/$n.L.h2" "$W/$n.L.h"; mv "$W/$n.R.h2" "$W/$n.R.h"
}
pkts() { # name -> "out_packets in_packets" of L's pair
  "$X" -n L child counters --handle "$W/$1.L.h" |
    $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["outbound"]["packets"], d["inbound"]["packets"])'
}
ping_ok() { # src dst
  ip netns exec L ping -q -c 3 -i 0.2 -W 2 -I "$1" "$2" >/dev/null || fail "ping $1 -> $2"
}
grew() { # name before_out before_in -> asserts both counters grew by >= 3
  local o i; read -r o i < <(pkts "$1")
  [ "$o" -ge $(( $2 + 3 )) ] && [ "$i" -ge $(( $3 + 3 )) ] || fail "$1 counters $2/$3 -> $o/$i"
  echo "  $1 counters: out $2 -> $o, in $3 -> $i packets"
  C_OUT=$o; C_IN=$i
}
sa_dst() { # spi(hex) -> dst of that SA in L, checks there is exactly one SA with that SPI
  "$X" -n L sa list --json | $PY -c "
import json,sys
m=[json.loads(l) for l in sys.stdin if json.loads(l)['spi']==$1]
assert len(m)==1, m
print(m[0]['dst'], (m[0].get('encap') or {}).get('sport',''), (m[0].get('encap') or {}).get('dport',''))"
}

STEPS=${STEPS:-tunnel beet udp multi expire negative}
"$X" -n L monitor --json > "$W/L.events" 2>&1 &
HOLDERS+=($!)
sleep 0.5
want() { [[ " $STEPS " == *" $1 "* ]]; }

if want tunnel; then
install_pair tun 192.0.2.1 192.0.2.2 10.1.0.0/24 10.2.0.0/24 tunnel 0x1001 0x1002 "$(gcm 11)" "$(gcm 22)"
ts "step 1: tunnel pair installed by xfrmctl child install"
ping_ok 10.1.0.1 10.2.0.1; grew tun 0 0

move_pair tun 198.51.100.1 198.51.100.2
ip -n L route replace 10.2.0.0/24 dev vL2 src 10.1.0.1; ip -n R route replace 10.1.0.0/24 dev vR2 src 10.2.0.1
ip -n L link set vL1 down
[ "$(sa_dst 0x1001)" = "198.51.100.2  " ] || fail "SA 0x1001 not at 198.51.100.2: $(sa_dst 0x1001)"
ts "step 2: MIGRATE v4 -> v4 (pair 2), pair 1 down"
ping_ok 10.1.0.1 10.2.0.1; grew tun $C_OUT $C_IN

move_pair tun fd00:3::1 fd00:3::2
ip -n L route replace 10.2.0.0/24 dev vL3 src 10.1.0.1; ip -n R route replace 10.1.0.0/24 dev vR3 src 10.2.0.1
ip -n L link set vL2 down
[ "$(sa_dst 0x1001)" = "fd00:3::2  " ] || fail "SA 0x1001 not at fd00:3::2"
ts "step 3: MIGRATE v4 -> v6 outer (pair 3), pair 2 down"
ping_ok 10.1.0.1 10.2.0.1; grew tun $C_OUT $C_IN

ip -n L link set vL1 up
reqid=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["reqid"])' "$W/tun.L.h")
"$X" -n L migrate --sel-src 10.1.0.0/24 --sel-dst 10.2.0.0/24 --reqid "$reqid" \
  --old-src fd00:3::1 --old-dst fd00:3::2 --new-src 192.0.2.1 --new-dst 192.0.2.2 --kmaddress
"$X" -n R migrate --sel-src 10.2.0.0/24 --sel-dst 10.1.0.0/24 --reqid "$reqid" \
  --old-src fd00:3::2 --old-dst fd00:3::1 --new-src 192.0.2.2 --new-dst 192.0.2.1
ip -n L route replace 10.2.0.0/24 dev vL1 src 10.1.0.1; ip -n R route replace 10.1.0.0/24 dev vR1 src 10.2.0.1
ip -n L link set vL3 down
[ "$(sa_dst 0x1001)" = "192.0.2.2  " ] || fail "SA 0x1001 not back at 192.0.2.2"
ts "step 4: xfrmctl migrate (selector+reqid) v6 -> v4 back to pair 1, pair 3 down"
ping_ok 10.1.0.1 10.2.0.1
# the handle still names pair 3; counters by SPI from the SA list instead
o=$("$X" -n L sa list --json | $PY -c 'import json,sys; print([json.loads(l) for l in sys.stdin if json.loads(l)["spi"]==0x1001][0]["current"]["packets"])')
[ "$o" -ge $((C_OUT + 3)) ] || fail "SA 0x1001 packets $C_OUT -> $o"
echo "  tun out counter: $C_OUT -> $o packets"

# Kernel rollback: a blocker pair on pair 2 already owns (198.51.100.2, esp,
# 0x1001), so moving tun there must fail in the kernel (xfrm_migrate restores
# what it changed) and surface as one typed error; nothing moves.
ip -n L link set vL2 up
install_pair blk 198.51.100.1 198.51.100.2 10.21.0.0/24 10.22.0.0/24 tunnel 0x1001 0x6002 "$(gcm 99)" "$(gcm aa)"
cp "$W/tun.L.h" "$W/tun.L.h.bak"
$PY - "$W/tun.L.h" <<'PYEOF'
import json, sys
h = json.load(open(sys.argv[1])); h["outer"] = {"local": "192.0.2.1", "remote": "192.0.2.2"}
json.dump(h, open(sys.argv[1], "w"))
PYEOF
if "$X" -n L child migrate --handle "$W/tun.L.h" --new-local 198.51.100.1 --new-remote 198.51.100.2 \
     > /dev/null 2> "$W/rollback.err"; then fail "MIGRATE onto an existing SA succeeded"; fi
grep -Eq "migrating SAs and policies \(out 10\.1\.0\.0/24 -> 10\.2\.0\.0/24\): kernel:" "$W/rollback.err" ||
  fail "untyped error: $(cat "$W/rollback.err")"
dsts=$("$X" -n L sa list --json | $PY -c 'import json,sys; print(" ".join(sorted(json.loads(l)["dst"] for l in sys.stdin if json.loads(l)["spi"]==0x1001)))')
[ "$dsts" = "192.0.2.2 198.51.100.2" ] || fail "after failed MIGRATE, SA 0x1001 at: $dsts"
"$X" -n L policy list | grep -q "10.1.0.0/24 -> 10.2.0.0/24 dir out .*tmpl 192.0.2.1 -> 192.0.2.2" ||
  fail "out policy template moved: $("$X" -n L policy list)"
ping_ok 10.1.0.1 10.2.0.1
"$X" -n L child delete --handle "$W/blk.L.h"; "$X" -n R child delete --handle "$W/blk.R.h"; rm -f "$W/blk.L.h"
ts "step 4b: MIGRATE onto an existing SA fails as one typed error ($(sed 's/.*kernel: //' "$W/rollback.err" | head -1)); nothing moved, traffic flows"
fi

ip -n L link set vL1 up; ip -n L link set vL2 up
if want beet; then
ip -n L route replace 10.6.0.1/32 dev vL1 src 10.5.0.1; ip -n R route replace 10.5.0.1/32 dev vR1 src 10.6.0.1
install_pair beet 192.0.2.1 192.0.2.2 10.5.0.1/32 10.6.0.1/32 beet 0x3001 0x3002 "$(chacha 33)" "$(chacha 44)"
ts "step 5: BEET pair (chacha20-poly1305) installed"
ping_ok 10.5.0.1 10.6.0.1; grew beet 0 0
fi

if want udp; then
# ESP-in-UDP needs a UDP socket with UDP_ENCAP_ESPINUDP on each receiving port
for ns in L R; do
  ip netns exec $ns $PY -c '
import socket, time
ss = []
for port in (4500, 4501):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port)); s.setsockopt(socket.IPPROTO_UDP, 100, 2)  # UDP_ENCAP, ESPINUDP
    ss.append(s)
time.sleep(3600)' &
  HOLDERS+=($!)
done
sleep 1
ip -n L route replace 10.8.0.0/24 dev vL1 src 10.7.0.1; ip -n R route replace 10.7.0.0/24 dev vR1 src 10.8.0.1
install_pair udp 192.0.2.1 192.0.2.2 10.7.0.0/24 10.8.0.0/24 tunnel 0x4001 0x4002 "$(cbc 55)" "$(cbc 66)" \
  ',"encap":{"sport":4500,"dport":4500}' ',"encap":{"sport":4500,"dport":4500}'
[ "$(sa_dst 0x4001)" = "192.0.2.2 4500 4500" ] || fail "UDP SA: $(sa_dst 0x4001)"
ts "step 6: ESP-in-UDP pair (cbc(aes)+hmac(sha256)/128) on 4500"
ping_ok 10.7.0.1 10.8.0.1; grew udp 0 0
move_pair udp 198.51.100.1 198.51.100.2 "--encap-sport 4501 --encap-dport 4501" "--encap-sport 4501 --encap-dport 4501"
ip -n L route replace 10.8.0.0/24 dev vL2 src 10.7.0.1; ip -n R route replace 10.7.0.0/24 dev vR2 src 10.8.0.1
[ "$(sa_dst 0x4001)" = "198.51.100.2 4501 4501" ] || fail "UDP SA after move: $(sa_dst 0x4001)"
ts "  moved to 198.51.100.x and UDP port 4501 by MIGRATE + XFRMA_ENCAP"
ping_ok 10.7.0.1 10.8.0.1; grew udp $C_OUT $C_IN
# NAT rebinding as R sees it: L's outbound SA starts sending from UDP 4502
# (a same-address MIGRATE of the out policy/SA with a new XFRMA_ENCAP);
# R's kernel reports XFRM_MSG_MAPPING, xfrmctl monitor shows it.
"$X" -n R monitor --json > "$W/R.events" 2>&1 &
HOLDERS+=($!)
sleep 0.5
reqid=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["reqid"])' "$W/udp.L.h")
"$X" -n L migrate --dir out --sel-src 10.7.0.0/24 --sel-dst 10.8.0.0/24 --reqid "$reqid" \
  --old-src 198.51.100.1 --old-dst 198.51.100.2 --new-src 198.51.100.1 --new-dst 198.51.100.2 \
  --encap-sport 4502 --encap-dport 4501
[ "$(sa_dst 0x4001)" = "198.51.100.2 4502 4501" ] || fail "UDP SA after port change: $(sa_dst 0x4001)"
ping_ok 10.7.0.1 10.8.0.1
for i in $(seq 20); do grep -q '"event":"mapping"' "$W/R.events" && break; sleep 0.5; done
grep '"event":"mapping"' "$W/R.events" | grep -q '"old_sport":4501,"new_sport":4502' ||
  fail "no mapping event 4501 -> 4502 in R: $(cat "$W/R.events")"
ts "  NAT-T port change 4501 -> 4502 seen by R's monitor as XFRM_MSG_MAPPING"
grew udp $C_OUT $C_IN
# Leaving the NAT: back to pair 1 as plain ESP. MIGRATE cannot take the
# encapsulation off (the kernel keeps it); ipsec-backend adds both SAs
# again without it, keeping keys, sequence numbers, replay windows and
# counters: the same SPIs, counters that go on growing, and a ping that
# passes only if neither side's sequence numbers started over.
replay() { # ns spi -> "seq 0x.., oseq 0x.., bitmap 0x.." (anti-replay context)
  ip -n "$1" -s xfrm state list spi "$2" | grep -o 'seq 0x[0-9a-f]*, oseq 0x[0-9a-f]*, bitmap 0x[0-9a-f]*'
}
before="L: $(replay L 0x4001) / $(replay L 0x4002); R: $(replay R 0x4001) / $(replay R 0x4002)"
move_pair udp 192.0.2.1 192.0.2.2
after="L: $(replay L 0x4001) / $(replay L 0x4002); R: $(replay R 0x4001) / $(replay R 0x4002)"
[ "$after" = "$before" ] && [[ $(replay L 0x4001) != *"oseq 0x0,"* ]] ||
  fail "sequence numbers not carried over: before '$before', after '$after'"
echo "  anti-replay state carried over: $after"
ip -n L route replace 10.8.0.0/24 dev vL1 src 10.7.0.1; ip -n R route replace 10.7.0.0/24 dev vR1 src 10.8.0.1
[ "$(sa_dst 0x4001)" = "192.0.2.2  " ] || fail "UDP SA after leaving the NAT: $(sa_dst 0x4001)"
[ "$(sa_dst 0x4002)" = "192.0.2.1  " ] || fail "inbound UDP SA after leaving the NAT: $(sa_dst 0x4002)"
ip -n R xfrm state | grep encap >/dev/null && fail "R's SAs still encapsulated: $(ip -n R xfrm state)"
ping_ok 10.7.0.1 10.8.0.1; grew udp $C_OUT $C_IN
ts "  left the NAT: plain ESP on pair 1, same SPIs, sequence numbers and counters carried over"
fi

if want multi; then
for a in 10.13.0.1/24 10.15.0.1/24; do ip -n L addr add $a dev d0; done
for a in 10.14.0.1/24 10.16.0.1/24; do ip -n R addr add $a dev d0; done
mroutes() { # L's dev, R's dev
  ip -n L route replace 10.14.0.0/24 dev "$1" src 10.13.0.1; ip -n L route replace 10.16.0.0/24 dev "$1" src 10.15.0.1
  ip -n R route replace 10.13.0.0/24 dev "$2" src 10.14.0.1; ip -n R route replace 10.15.0.0/24 dev "$2" src 10.16.0.1
}
mroutes vL1 vR1
install_pair mts 192.0.2.1 192.0.2.2 10.13.0.0/24,10.15.0.0/24 10.14.0.0/24,10.16.0.0/24 tunnel 0x7001 0x7002 "$(gcm 12)" "$(gcm 21)"
mpol() { ip -n "$1" xfrm policy | grep -c '^src 10\.1[3-6]\.' || true; }
[ "$(mpol L)" = 12 ] && [ "$(mpol R)" = 12 ] || fail "multi: policies L $(mpol L) R $(mpol R), expected 12 each"
$PY -c 'import json,sys; h=json.load(open(sys.argv[1])); assert len(h["selectors"]) == 4, h' "$W/mts.L.h" ||
  fail "multi: handle has not 4 selector pairs: $(cat "$W/mts.L.h")"
ip -n L xfrm state list spi 0x7001 | grep -E 'sel src 0\.0\.0\.0/0 dst 0\.0\.0\.0/0' >/dev/null ||
  fail "multi: SA 0x7001 has no wildcard selector: $(ip -n L xfrm state list spi 0x7001)"
ts "step 6b: pair with 2 x 2 traffic selectors installed (12 policies each side, wildcard SA selector)"
ping_ok 10.13.0.1 10.14.0.1; ping_ok 10.15.0.1 10.16.0.1; grew mts 0 0
ping_ok 10.13.0.1 10.16.0.1; ping_ok 10.15.0.1 10.14.0.1
move_pair mts 198.51.100.1 198.51.100.2
mroutes vL2 vR2
[ "$(sa_dst 0x7001)" = "198.51.100.2  " ] || fail "multi: SA 0x7001 not at 198.51.100.2: $(sa_dst 0x7001)"
moved=$(ip -n L xfrm policy | grep -A2 '^src 10\.1[3-6]\.' | grep -cE 'tmpl src (198\.51\.100\.1 dst 198\.51\.100\.2|198\.51\.100\.2 dst 198\.51\.100\.1)' || true)
[ "$moved" = 12 ] || fail "multi: $moved of 12 policy templates moved in L: $(ip -n L xfrm policy)"
ping_ok 10.13.0.1 10.14.0.1; ping_ok 10.15.0.1 10.16.0.1; grew mts $C_OUT $C_IN
"$X" -n L child delete --handle "$W/mts.L.h"; "$X" -n R child delete --handle "$W/mts.R.h"; rm -f "$W/mts.L.h"
[ "$(mpol L)" = 0 ] && [ "$(mpol R)" = 0 ] || fail "multi: policies left after delete: L $(mpol L) R $(mpol R)"
ts "  moved to 198.51.100.x by MIGRATE (all 12 templates), both subnet pairs ping; delete removed all"

ip -n L addr add 10.17.0.1/24 dev d0; ip -n L addr add fd17::1/64 dev d0 nodad
ip -n R addr add 10.18.0.1/24 dev d0; ip -n R addr add fd18::1/64 dev d0 nodad
xroutes() { # L's dev, R's dev
  ip -n L route replace 10.18.0.0/24 dev "$1" src 10.17.0.1; ip -n L -6 route replace fd18::/64 dev "$1" src fd17::1
  ip -n R route replace 10.17.0.0/24 dev "$2" src 10.18.0.1; ip -n R -6 route replace fd17::/64 dev "$2" src fd18::1
}
xroutes vL1 vR1
install_pair mix 192.0.2.1 192.0.2.2 10.17.0.0/24,fd17::/64 10.18.0.0/24,fd18::/64 tunnel 0x7101 0x7102 "$(gcm 13)" "$(gcm 31)"
xpol() { ip -n "$1" xfrm policy | grep -cE '^src (10\.1[78]\.|fd1[78]::)' || true; }
[ "$(xpol L)" = 6 ] && [ "$(xpol R)" = 6 ] || fail "mixed: policies L $(xpol L) R $(xpol R), expected 6 each"
ip -n L xfrm state list spi 0x7101 | grep -q 'af-unspec' || fail "mixed: SA 0x7101 not AF_UNSPEC: $(ip -n L xfrm state list spi 0x7101)"
ping_ok 10.17.0.1 10.18.0.1; ping_ok fd17::1 fd18::1; grew mix 0 0
move_pair mix 198.51.100.1 198.51.100.2
xroutes vL2 vR2
[ "$(sa_dst 0x7101)" = "198.51.100.2  " ] || fail "mixed: SA 0x7101 not at 198.51.100.2: $(sa_dst 0x7101)"
ping_ok 10.17.0.1 10.18.0.1; ping_ok fd17::1 fd18::1; grew mix $C_OUT $C_IN
"$X" -n L child delete --handle "$W/mix.L.h"; "$X" -n R child delete --handle "$W/mix.R.h"; rm -f "$W/mix.L.h"
[ "$(xpol L)" = 0 ] && [ "$(xpol R)" = 0 ] || fail "mixed: policies left after delete: L $(xpol L) R $(xpol R)"
ts "  IPv4 + IPv6 selectors in one CHILD_SA (AF_UNSPEC SA selector): ping and ping -6 pass, also after a MIGRATE"
fi

if want expire; then
INF=18446744073709551615
LFT="\"lifetime\":{\"soft_byte_limit\":$INF,\"hard_byte_limit\":$INF,\"soft_packet_limit\":$INF,\"hard_packet_limit\":$INF,\"soft_add_expires_seconds\":2,\"hard_add_expires_seconds\":4,\"soft_use_expires_seconds\":0,\"hard_use_expires_seconds\":0}"
install_pair exp 192.0.2.1 192.0.2.2 10.11.0.0/24 10.12.0.0/24 tunnel 0x5001 0x5002 "$(gcm 77)" "$(gcm 88)" ",$LFT" ",$LFT"
ts "step 7: pair with soft 2 s / hard 4 s lifetime installed"
# SPIs 0x5001/0x5002 = 20481/20482 in the JSON
exp_events() { grep '"event":"sa_expire"' "$W/L.events" | grep -E '"spi":2048[12],' | grep -c "$1" || true; }
for i in $(seq 40); do
  hard=$(exp_events '"hard":true')
  [ "$hard" -ge 2 ] && break; sleep 0.5
done
soft=$(exp_events '"hard":false')
hard=$(exp_events '"hard":true')
[ "$soft" -ge 2 ] && [ "$hard" -ge 2 ] || fail "expire events: soft $soft hard $hard"
"$X" -n L sa list --json | grep -qE '"spi":2048[12],' && fail "SAs survived their hard lifetime"
echo "  monitor saw $soft soft and $hard hard SA expires; SAs gone"
rm -f "$W/exp.L.h"
fi

if want tunnel; then
  m=$(grep -c '"event":"migrate"' "$W/L.events" || true)
  # child migrate x2 + xfrmctl migrate x1, 3 policies each
  [ "$m" -ge 9 ] || fail "monitor saw $m migrate events, expected >= 9"
  echo "  xfrmctl monitor saw $m MIGRATE events in L"
fi

if want negative && want tunnel; then
"$X" -n R sa flush
if ip netns exec L ping -q -c 1 -W 1 -I 10.1.0.1 10.2.0.1 >/dev/null 2>&1; then
  fail "ping worked without SAs"
fi
ts "step 8: negative check ok (R's SAs flushed -> no traffic)"
fi
for h in "$W"/*.L.h; do [ -e "$h" ] && "$X" -n L child delete --handle "$h" 2>/dev/null || true; done
echo "IPSEC-ESP-OK ($STEPS)"
