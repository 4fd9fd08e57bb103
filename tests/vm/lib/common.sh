# Sourced by the guest scenarios of tests/vm/scenarios/: timing, waiting,
# kernel modules and a charon per network namespace. Expects `set -euo
# pipefail` and a function `fail MESSAGE` that prints the diagnostics and
# exits (the scenario's own, or tests/vm/lib/mobility.sh's).

T0=${EPOCHREALTIME:-$(date +%s.%N)}
# ts MESSAGE: the message with the seconds since the scenario began
ts() { awk -v t0="$T0" -v now="$EPOCHREALTIME" -v m="$*" 'BEGIN{printf "[%6.2fs] %s\n", now-t0, m}'; }
# grep -q in a pipe under pipefail can fail the pipe (SIGPIPE to the writer)
has() { grep "$@" >/dev/null; }
# wait_for SECONDS CMD...: CMD succeeds within SECONDS (polled every 0.1 s)
wait_for() {
  local n=$(( $1 * 10 )); shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done; return 1
}

# The modules of real ESP (xfrm, esp4/esp6, AES-GCM), veth and dummy, and the
# NAT of mobike-charon; Debian's kernel has them all as modules.
load_modules() {
  local m
  for m in xfrm_user xfrm_algo esp4 esp6 xfrm4_tunnel xfrm6_tunnel tunnel6 veth dummy af_key aes_generic \
           gcm ghash_generic ctr seqiv authenc chacha20poly1305 sha256_generic hmac nf_tables nft_chain_nat \
           nft_masq nf_nat; do
    modprobe "$m" 2>/dev/null || true
  done
}

need_charon() {
  [ -x /usr/lib/ipsec/charon ] && command -v swanctl >/dev/null ||
    fail "strongSwan missing on the host (strongswan-charon strongswan-swanctl libstrongswan-standard-plugins libcharon-extra-plugins)"
}

# charon_conf DIR [EXTRA_CHARON_LINES]: strongswan.conf for a charon whose
# files (vici socket, log) live in DIR, with real kernel ESP (kernel-netlink).
# The log has IKE and KNL at level 2 (each SA and policy change) for the
# scenarios' diagnostics; CHARON_LOG_DETAIL=0 keeps charon's default level 1
# everywhere, as a production charon logs (the benchmarks: every line is a
# flushed write, and at level 2 a MOBIKE update logs about 25 of them
# inside the window where its SAs and policies are replaced).
charon_conf() {
  local detail="    ike = 2
    knl = 2"
  [ "${CHARON_LOG_DETAIL:-1}" != 0 ] || detail=""
  mkdir -p "$1"
  (cd "$1" && mkdir -p x509 x509ca x509ocsp x509aa x509ac x509crl pubkey private rsa ecdsa bliss pkcs8 pkcs12)
  cat > "$1/strongswan.conf" <<EOC
charon {
  load = random nonce openssl pem pkcs1 x509 pubkey kdf kernel-netlink socket-default vici
  install_routes = no
  retransmit_timeout = 2.0
${2:-}
  plugins { vici { socket = unix://$1/charon.vici } }
  filelog { main { path = $1/charon.log
    time_format = %T
    time_add_ms = yes
    flush_line = yes
    default = 1
$detail } }
}
swanctl { load = pem pkcs1 x509 pubkey openssl random nonce
  socket = unix://$1/charon.vici }
EOC
}

# sw_in DIR ARGS...: swanctl against the charon of DIR
sw_in() { local d=$1; shift; STRONGSWAN_CONF=$d/strongswan.conf swanctl "$@" --uri "unix://$d/charon.vici"; }

# charon_start NS DIR SWANCTL_CONF: starts charon in namespace NS (its pid in
# $CHARON_PID) and loads the connections of SWANCTL_CONF. charon's pidfile is
# /var/run/charon.pid: each charon gets a private tmpfs on /run.
charon_start() {
  ip netns exec "$1" unshare -m sh -c \
    "mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF=$2/strongswan.conf /usr/lib/ipsec/charon" \
    >"$2/charon.stdout" 2>&1 &
  CHARON_PID=$!
  wait_for 30 test -S "$2/charon.vici" || fail "charon in $1 did not start: $(cat "$2/charon.stdout")"
  wait_for 10 sw_in "$2" --load-all --file "$3" >/dev/null 2>&1 || fail "swanctl --load-all in $1 ($3)"
}

# stop_pid PID: SIGTERM and reap (no error if it is gone)
stop_pid() {
  [ -n "${1:-}" ] || return 0
  kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}
