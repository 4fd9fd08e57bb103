#!/bin/bash
# Establishment rate and memory: N IKE SAs, each with one CHILD_SA,
# mobike-agent to mobike-agent against charon to charon, same run, same
# topology: two network namespaces mbkbA (192.0.2.1) and mbkbB (192.0.2.2)
# joined by a veth pair. Every IKE SA is a connection of its own (ids
# aN.test / bN.test, so INITIAL_CONTACT touches nothing else); all N are
# initiated at once at start-up (agent: start = "initiate"; charon:
# start_action = start on loading); connection i has the selectors
# 10.1.i/32 === 10.2.i/32 (identical selectors would clash in charon's
# policies and be refused with TS_UNACCEPTABLE). Rate = N / (time from
# start until the initiator reports N CHILD_SAs INSTALLED), polled every $POLL s (default
# 0.02; status --json / swanctl --list-sas --raw on the same 2 CPUs; with
# POLL=0.5 charon's rate is the same, so the polls do not slow it down).
#   agent:  backend "none" (CHILD_SAs not installed anywhere); no limit of
#           half-open IKE SAs per source or in all (as charon's below), its
#           cookie threshold (30) kept; MOBILITY_OFF=1: [mobility] source
#           "off" (no link following: no route lookups per new IKE SA).
#   charon: kernel-libipsec (this host's kernel has no ESP; userspace SAs,
#           plus one route per CHILD_SA via netlink, whose source address
#           each namespace has on lo), encap = yes as in tests/interop_charon.rs,
#           logging off, DoS thresholds lifted (see strongswan.conf below).
# AUTH=psk (default) or AUTH=ecdsa: ECDSA P-256 certificates instead of
# the PSK, on both sides of both pairs. One P-256 root CA (openssl, made
# here); each side has one key, and every connection its own end-entity
# certificate for it (subjectAltName DNS:aN.test / bN.test, signed by the
# root), sent in IKE_AUTH; each side trusts the root (agent: cacerts;
# charon: x509ca/). The agent signs with RFC 7427 (method 14), charon as
# it negotiates.
# Memory: VmRSS of each agent with N established IKE SAs minus its VmRSS
# just before (same configuration, no SA), over N.
# ONLY=agent skips charon; PERF=1 records the two agents with `perf
# record --call-graph dwarf` while they establish (perf-RUN.data in the kept directory,
# with KEEP=1).
# Needs root, iproute2, strongswan-charon strongswan-swanctl.
# Usage: [AUTH=ecdsa] bench-establish.sh /path/to/mobike-agent [N] [RUNS]
set -euo pipefail
BIN=$(realpath "${1:?path to mobike-agent}")
N=${2:-1000}
POLL=${POLL:-0.02}   # seconds between completion polls
RUNS=${3:-3}
AUTH=${AUTH:-psk}
case $AUTH in psk|ecdsa) ;; *) echo "AUTH=$AUTH: psk or ecdsa" >&2; exit 2 ;; esac
D=$(mktemp -d /tmp/mbkbench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del mbkbA 2>/dev/null || true; ip netns del mbkbB 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $D" >&2; else rm -rf "$D"; fi
}
trap cleanup EXIT
ip netns add mbkbA; ip netns add mbkbB
ip -n mbkbA link set lo up; ip -n mbkbB link set lo up
ip link add vA netns mbkbA type veth peer name vB netns mbkbB
ip -n mbkbA addr add 192.0.2.1/24 dev vA; ip -n mbkbB addr add 192.0.2.2/24 dev vB
ip -n mbkbA link set vA up; ip -n mbkbB link set vB up
# charon's kernel-libipsec installs a route per CHILD_SA whose source must
# be a local address inside the local selector: give every 10.x.i/32 one.
for i in $(seq 0 $((N - 1))); do echo "addr add 10.1.$((i / 256)).$((i % 256))/32 dev lo"; done | ip -n mbkbA -batch -
for i in $(seq 0 $((N - 1))); do echo "addr add 10.2.$((i / 256)).$((i % 256))/32 dev lo"; done | ip -n mbkbB -batch -
sleep 1

# AUTH=ecdsa: the root, a key per side, a certificate per connection.
P=$D/pki
if [ "$AUTH" = ecdsa ]; then
  mkdir -p "$P"
  ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }
  ec_key "$P/ca.key"
  openssl req -x509 -new -key "$P/ca.key" -subj "/CN=Bench Root CA" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$P/ca.pem"
  for side in a b; do
    ec_key "$P/$side.key"
    openssl pkey -in "$P/$side.key" -pubout -out "$P/$side.pub"
    for i in $(seq 0 $((N - 1))); do echo "$side $i"; done
  done | xargs -P "$(nproc)" -n 2 sh -c '
    printf "subjectAltName=DNS:%s%s.test\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n" "$0" "$1" > "'"$P"'/$0$1.ext"
    openssl x509 -new -subj "/CN=$0$1.test" -force_pubkey "'"$P"'/$0.pub" -CA "'"$P"'/ca.pem" \
      -CAkey "'"$P"'/ca.key" -days 30 -extfile "'"$P"'/$0$1.ext" -out "'"$P"'/$0$1.pem"'
  echo "AUTH=ecdsa: $((2 * N)) P-256 certificates made" >&2
fi

now() { date +%s.%N; }
# UDP datagrams dropped for a full socket receive buffer, both namespaces
udp_drops() { local t=0 n; for ns in mbkbA mbkbB; do
  n=$(ip netns exec "$ns" awk '/^Udp:/ { if (h) print $6; h = 1 }' /proc/net/snmp); t=$((t + n)); done; echo "$t"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

agent_conf() { # me peer my-prefix peer-prefix start lts-net rts-net
  echo '[kernel]'; echo 'backend = "none"'
  # As charon's below: no per-source or total limit of half-open IKE SAs
  # (all N come from one address at once); the cookie threshold stays.
  echo '[ike]'; echo 'half_open_per_source = 0'; echo 'half_open_limit = 0'
  [ -n "${MOBILITY_OFF:-}" ] && { echo '[mobility]'; echo 'source = "off"'; }
  for i in $(seq 0 $((N - 1))); do
    local h=$((i / 256)).$((i % 256))
    cat <<EOC
[connections.c$i]
local_addrs = ["$1"]
remote_addrs = ["$2"]
local_id = "$3$i.test"
remote_id = "$4$i.test"
$(if [ "$AUTH" = ecdsa ]; then
    printf 'local_auth = "pubkey"\ncert = "%s"\nkey = "%s"\ncacerts = ["%s"]' "$P/$3$i.pem" "$P/$3.key" "$P/ca.pem"
  else
    echo 'psk = "bench-psk-0123456789"'
  fi)
proposals = ["aes256gcm16-prfsha256-x25519"]
start = "$5"
retransmit_timeout = "2s"
[connections.c$i.children.net]
local_ts = ["$6.$h/32"]
remote_ts = ["$7.$h/32"]
esp_proposals = ["aes256gcm16"]
EOC
  done
}
agent_conf 192.0.2.1 192.0.2.2 a b initiate 10.1 10.2 > "$D/a.toml"
agent_conf 192.0.2.1 192.0.2.2 a b listen 10.1 10.2 > "$D/a-idle.toml"
agent_conf 192.0.2.2 192.0.2.1 b a listen 10.2 10.1 > "$D/b.toml"

installed_agent() { # socket
  { "$BIN" status --json --control-socket "$1" 2>/dev/null || true; } | { grep -o '"state":"INSTALLED"' || true; } | wc -l
}
wait_sock() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }

agent_run() { # run-index; prints "rate rssA_idle rssA rssB_idle rssB"
  local sa="$D/a.sock" sb="$D/b.sock"
  rm -f "$sa" "$sb"
  # idle RSS of the initiator: same connections, start = "listen"
  ip netns exec mbkbA env MOBIKE_AGENT_LOG=${AGENT_LOG:-warn} "$BIN" --config "$D/a-idle.toml" \
    --control-socket "$sa" 2>>"$D/agent-a.log" & local ai=$!; PIDS+=("$ai")
  wait_sock "$sa"; sleep 0.3; local rai; rai=$(rss_kb "$ai"); stop "$ai"
  ip netns exec mbkbB env MOBIKE_AGENT_LOG=${AGENT_LOG:-warn} "$BIN" --config "$D/b.toml" \
    --control-socket "$sb" 2>>"$D/agent-b.log" & local b=$!; PIDS+=("$b")
  wait_sock "$sb"; sleep 0.3; local rbi; rbi=$(rss_kb "$b")
  local d0; d0=$(udp_drops)
  local t0; t0=$(now)
  ip netns exec mbkbA env MOBIKE_AGENT_LOG=${AGENT_LOG:-warn} "$BIN" --config "$D/a.toml" \
    --control-socket "$sa" 2>>"$D/agent-a.log" & local a=$!; PIDS+=("$a")
  local perf=""
  if [ -n "${PERF:-}" ]; then
    perf record -F 499 --call-graph dwarf,16384 -p "$a,$b" -o "$D/perf-$1.data" >/dev/null 2>&1 & perf=$!
  fi
  local n=0
  for _ in $(seq 6000); do
    n=$(installed_agent "$sa"); [ "$n" -ge "$N" ] && break; sleep "$POLL"
  done
  local t1; t1=$(now)
  if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" || true; fi
  [ "$n" -ge "$N" ] || { echo "agent: only $n of $N CHILD_SAs" >&2; exit 1; }
  local d1; d1=$(udp_drops)
  local nb; nb=$(installed_agent "$sb")
  sleep 0.5
  local ra rb; ra=$(rss_kb "$a"); rb=$(rss_kb "$b")
  stop "$a"; stop "$b"
  echo "$(echo "$N / ($t1 - $t0)" | bc -l) $rai $ra $rbi $rb $nb $((d1 - d0))"
}

CAUTH=psk; [ "$AUTH" = ecdsa ] && CAUTH=pubkey
charon_conf() { # me peer my-prefix peer-prefix start_action lts-net rts-net
  echo 'connections {'
  for i in $(seq 0 $((N - 1))); do
    local h=$((i / 256)).$((i % 256))
    echo " c$i { version = 2
  local_addrs = $1
  remote_addrs = $2
  proposals = aes256gcm16-prfsha256-x25519
  encap = yes
  local { auth = $CAUTH$([ "$AUTH" = ecdsa ] && echo "
    certs = $3$i.pem")
    id = $3$i.test }
  remote { auth = $CAUTH
    id = $4$i.test }
  children { net { local_ts = $6.$h/32
    remote_ts = $7.$h/32
    esp_proposals = aes256gcm16
    start_action = $5 } } }"
  done
  echo '}'
  echo 'secrets { ike-all { secret = "bench-psk-0123456789" } }'
}
charon_setup() { # side
  mkdir -p "$D/$1"
  (cd "$D/$1" && mkdir -p x509 x509ca x509ocsp x509aa x509ac x509crl pubkey private rsa ecdsa bliss pkcs8 pkcs12)
  cat > "$D/$1/strongswan.conf" <<EOC
charon {
  load = random nonce openssl pem pkcs1 x509 pubkey kdf kernel-libipsec kernel-netlink socket-default vici
  install_routes = no
  install_virtual_ip = no
  retransmit_timeout = 2.0
  # no per-peer DoS limits (the agent has none besides its cookie
  # threshold of 32 half-open SAs; charon's default block_threshold of 5
  # half-open SAs per peer IP drops IKE_SA_INIT requests here)
  block_threshold = 100000
  cookie_threshold = 100000
  init_limit_half_open = 0
  plugins { vici { socket = unix://$D/$1/charon.vici } }
  filelog { main { path = $D/$1/charon.log
    default = ${CHARON_LOG:--1} } }
  syslog { daemon { default = -1 } }
}
swanctl { load = pem pkcs1 x509 pubkey openssl random nonce
  socket = unix://$D/$1/charon.vici }
EOC
}
charon_setup A; charon_setup B
if [ "$AUTH" = ecdsa ]; then
  for side in A B; do
    s=$(echo "$side" | tr AB ab)
    cp "$P/ca.pem" "$D/$side/x509ca/"
    cp "$P/$s.key" "$D/$side/private/"
    for i in $(seq 0 $((N - 1))); do ln -s "$P/$s$i.pem" "$D/$side/x509/$s$i.pem"; done
  done
fi
charon_conf 192.0.2.1 192.0.2.2 a b start 10.1 10.2 > "$D/A/swanctl.conf"
charon_conf 192.0.2.2 192.0.2.1 b a none 10.2 10.1 > "$D/B/swanctl.conf"
sw() { local s=$1; shift; STRONGSWAN_CONF=$D/$s/strongswan.conf swanctl "$@" --uri "unix://$D/$s/charon.vici"; }
start_charon() { # side netns
  rm -f "$D/$1/charon.vici"
  ip netns exec "$2" unshare -m sh -c \
    "mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF=$D/$1/strongswan.conf /usr/lib/ipsec/charon" \
    >"$D/$1/charon.stdout" 2>&1 &
  CPID=$!; PIDS+=("$CPID")
  wait_sock "$D/$1/charon.vici"; sleep 0.3
}
installed_charon() { { sw "$1" --list-sas --raw 2>/dev/null || true; } | { grep -o 'state=INSTALLED' || true; } | wc -l; }

charon_run() { # prints "rate rssA_idle rssA rssB_idle rssB nB"
  start_charon B mbkbB; local b=$CPID
  sw B --load-all --file "$D/B/swanctl.conf" >/dev/null
  start_charon A mbkbA; local a=$CPID
  local rai rbi; rai=$(rss_kb "$a"); rbi=$(rss_kb "$b")
  local d0; d0=$(udp_drops)
  local t0; t0=$(now)
  sw A --load-all --file "$D/A/swanctl.conf" >/dev/null
  local n=0
  for _ in $(seq 6000); do
    n=$(installed_charon A); [ "$n" -ge "$N" ] && break; sleep "$POLL"
  done
  local t1; t1=$(now)
  [ "$n" -ge "$N" ] || { echo "charon: only $n of $N CHILD_SAs" >&2; exit 1; }
  local d1; d1=$(udp_drops)
  local nb; nb=$(installed_charon B)
  local ra rb; ra=$(rss_kb "$a"); rb=$(rss_kb "$b")
  stop "$a"; stop "$b"
  echo "$(echo "$N / ($t1 - $t0)" | bc -l) $rai $ra $rbi $rb $nb $((d1 - d0))"
}

echo "N=$N IKE SAs (+1 CHILD_SA each) per run, $RUNS runs, $(nproc) CPUs, AUTH=$AUTH"
for r in $(seq "$RUNS"); do
  agent_run "$r" > "$D/res"; read -r rate rai ra rbi rb nb drops < "$D/res"
  printf 'run %d agent : %8.1f est/s  initiator RSS %6d -> %6d kB (%.1f kB/SA)  responder RSS %6d -> %6d kB (%.1f kB/SA), responder CHILD_SAs %d, UDP rcvbuf drops %d\n' \
    "$r" "$rate" "$rai" "$ra" "$(echo "($ra - $rai) / $N" | bc -l)" "$rbi" "$rb" "$(echo "($rb - $rbi) / $N" | bc -l)" "$nb" "$drops"
  [ "${ONLY:-}" = agent ] && continue
  charon_run > "$D/res"; read -r rate rai ra rbi rb nb drops < "$D/res"
  printf 'run %d charon: %8.1f est/s  initiator RSS %6d -> %6d kB (%.1f kB/SA)  responder RSS %6d -> %6d kB (%.1f kB/SA), responder CHILD_SAs %d, UDP rcvbuf drops %d\n' \
    "$r" "$rate" "$rai" "$ra" "$(echo "($ra - $rai) / $N" | bc -l)" "$rbi" "$rb" "$(echo "($rb - $rbi) / $N" | bc -l)" "$nb" "$drops"
done
echo BENCH-OK
