#!/bin/bash
# Captures a strongSwan (charon) IKEv2 exchange between two namespaces and
# writes each IKE datagram as hex, for the codec's golden-byte tests.
# Needs root and the Debian packages strongswan-charon strongswan-swanctl
# libstrongswan-standard-plugins tcpdump.  Usage: capture-charon.sh OUTDIR
# Uses namespaces mbkcapA/mbkcapB and a temp dir; cleans both up.
set -euo pipefail
OUT=$(realpath "${1:?outdir}")
D=$(mktemp -d /tmp/mbkcap.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del mbkcapA 2>/dev/null || true; ip netns del mbkcapB 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $D" >&2; else rm -rf "$D"; fi
}
trap cleanup EXIT
ip netns add mbkcapA; ip netns add mbkcapB
ip -n mbkcapA link set lo up; ip -n mbkcapB link set lo up
ip link add vA netns mbkcapA type veth peer name vB netns mbkcapB
ip -n mbkcapA addr add 192.0.2.1/24 dev vA; ip -n mbkcapB addr add 192.0.2.2/24 dev vB
ip -n mbkcapA link set vA up; ip -n mbkcapB link set vB up
ip -n mbkcapA route add default dev vA
# inner LANs (libipsec routes the tunnel via the LAN source address)
ip -n mbkcapA link add lanA0 type veth peer name lanA1; ip -n mbkcapA addr add 10.1.0.1/24 dev lanA0
ip -n mbkcapA link set lanA0 up; ip -n mbkcapA link set lanA1 up
ip -n mbkcapB link add lanB0 type veth peer name lanB1; ip -n mbkcapB addr add 10.2.0.1/24 dev lanB0
ip -n mbkcapB link set lanB0 up; ip -n mbkcapB link set lanB1 up
for X in A B; do
  mkdir -p "$D/$X"
  (cd "$D/$X" && mkdir -p x509 x509ca x509ocsp x509aa x509ac x509crl pubkey private rsa ecdsa bliss pkcs8 pkcs12)
  cat > "$D/$X/strongswan.conf" <<EOC
charon {
  load = random nonce openssl pem pkcs1 x509 pubkey kdf kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  plugins { vici { socket = unix://$D/$X/charon.vici } }
  filelog { main { path = $D/$X/charon.log
    default = 1
    ike = 2 } }
}
swanctl { socket = unix://$D/$X/charon.vici }
EOC
done
conn() { # name local_id remote_id remote_addr
  cat <<EOC
connections { c { version = 2
  ${4:+remote_addrs = $4}
  proposals = aes256gcm16-prfsha256-x25519
  mobike = yes
  encap = yes   # the host kernel has no ESP: libipsec needs ESP-in-UDP
  local { auth = psk
          id = $2 }
  remote { auth = psk
           id = $3 }
  children { net { local_ts = $5
                   remote_ts = $6
                   esp_proposals = aes256gcm16
                   mode = tunnel } } } }
secrets { ike-c { id-a = a.test
  id-b = b.test
  secret = "capture-psk-0123456789" } }
EOC
}
conn c a.test b.test 192.0.2.2 10.1.0.0/24 10.2.0.0/24 > "$D/A/swanctl.conf"
conn c b.test a.test "" 10.2.0.0/24 10.1.0.0/24 > "$D/B/swanctl.conf"
for X in A B; do
  ip netns exec mbkcap$X unshare -m sh -c \
    "mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF=$D/$X/strongswan.conf /usr/lib/ipsec/charon" \
    >"$D/$X/stdout" 2>&1 &
  PIDS+=($!)
done
sw() { local X=$1; shift; STRONGSWAN_CONF=$D/$X/strongswan.conf swanctl "$@" --uri "unix://$D/$X/charon.vici"; }
for X in A B; do
  for i in $(seq 100); do [ -S "$D/$X/charon.vici" ] && break; sleep 0.1; done
  sw $X --load-all --file "$D/$X/swanctl.conf" >/dev/null 2>&1
done
ip netns exec mbkcapB tcpdump -i vB -w "$D/ike.pcap" -U 'udp port 500 or udp port 4500' 2>/dev/null &
PIDS+=($!); sleep 0.5
sw A --initiate --child net --timeout 20 >/dev/null
sw A --terminate --ike c --timeout 20 >/dev/null
sleep 0.5
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
mkdir -p "$OUT"
python3 - "$D/ike.pcap" "$OUT" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
endian = '<' if data[:4] == b'\xd4\xc3\xb2\xa1' else '>'
off, n = 24, 0
while off + 16 <= len(data):
    _, _, caplen, _ = struct.unpack(endian + 'IIII', data[off:off + 16]); off += 16
    pkt = data[off:off + caplen]; off += caplen
    ip = pkt[14:]                      # Ethernet
    ihl = (ip[0] & 15) * 4
    sport, dport = struct.unpack('>HH', ip[ihl:ihl + 4])
    payload = ip[ihl + 8:]
    n += 1
    name = f"{n:02d}-{sport}-{dport}.hex"
    open(f"{sys.argv[2]}/{name}", 'w').write(payload.hex() + "\n")
    print(name, len(payload))
PY
# The PSK and nothing else secret is needed to check these: the test only
# decodes the plaintext IKE_SA_INIT messages and the outer layer of the rest.
