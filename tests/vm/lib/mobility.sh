# Sourced by the guest scenarios mobility (pass/fail) and mobility-bench
# (handover times): a mobile host with two uplinks, a gateway running
# charon, the mobile side's initiator (charon or mobike-agent), events on
# the uplinks and the pings that measure them, and `fail`. Needs
# tests/vm/lib/common.sh sourced first, $D (a scratch dir) and $BIN_DIR.
#
#   netns A (mobile)                    netns R (router)        netns B (gateway)
#   u1 192.0.2.1/24    2001:db8:1::1 -- r1 .254 / ::fe
#   u2 198.51.100.1/24 2001:db8:2::1 -- r2 .254 / ::fe   r0 -- g0 203.0.113.1/24
#                                                                 2001:db8:ff::1/64
#   inner: d0 10.1.0.1/24 (dummy) in A     d0 10.2.0.1/24 (dummy) in B
#
# A prefers u1 (default route metric 101 against 102); policy routing sends
# each uplink's own source addresses out of that uplink and nowhere else
# (rules "from ADDR lookup 10N", table 10N ending in "unreachable"), so a
# path chosen by its source address uses its uplink, and an address left on
# a link that is down routes nowhere (as the provider of another uplink
# would drop its packets).
# IPv6 addresses stay on an interface that is set down
# (keep_addr_on_down), as IPv4 ones do, and skip DAD.
# B routes 10.1.0.0/24 into its dummy and A 10.2.0.0/24 into its own: the
# XFRM policies then take the packets into the tunnel, whose outer route
# follows the SA's addresses, so neither side's inner route changes in a
# move. The gateway's charon is the responder for two initiators in turn:
# charon in A (id c.test) and mobike-agent in A (id a.test).

A_V4=(- 192.0.2.1 198.51.100.1); A_GW4=(- 192.0.2.254 198.51.100.254)
A_V6=(- 2001:db8:1::1 2001:db8:2::1); A_GW6=(- 2001:db8:1::fe 2001:db8:2::fe)
B_V4=203.0.113.1; B_V6=2001:db8:ff::1
# the families each uplink has: "4 6", "4" or "6" (uplinks_set)
U_FAM=(- "4 6" "4 6")
PSK=vm-mobility-psk-0123456789
INITIATOR_PID=""; TRIGGERDB_PID=""; PING_PID=""

mob_topology() {
  local ns
  for ns in A R B; do
    ip netns add "$ns"; ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
      net.ipv6.conf.all.keep_addr_on_down=1 net.ipv6.conf.default.keep_addr_on_down=1
  done
  ip netns exec R sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  ip link add u1 netns A type veth peer name r1 netns R
  ip link add u2 netns A type veth peer name r2 netns R
  ip link add r0 netns R type veth peer name g0 netns B
  ip -n R addr add 192.0.2.254/24 dev r1; ip -n R addr add 2001:db8:1::fe/64 dev r1 nodad
  ip -n R addr add 198.51.100.254/24 dev r2; ip -n R addr add 2001:db8:2::fe/64 dev r2 nodad
  ip -n R addr add 203.0.113.254/24 dev r0; ip -n R addr add 2001:db8:ff::fe/64 dev r0 nodad
  ip -n B addr add "$B_V4/24" dev g0; ip -n B addr add "$B_V6/64" dev g0 nodad
  for l in "R r1" "R r2" "R r0" "B g0"; do set -- $l; ip -n "$1" link set "$2" up; done
  ip -n B route add default via 203.0.113.254; ip -n B -6 route add default via 2001:db8:ff::fe
  ip -n A link add d0 type dummy; ip -n B link add d0 type dummy
  ip -n A addr add 10.1.0.1/24 dev d0; ip -n B addr add 10.2.0.1/24 dev d0
  ip -n A link set d0 up; ip -n B link set d0 up
  ip -n A route add 10.2.0.0/24 dev d0 src 10.1.0.1
  ip -n B route add 10.1.0.0/24 dev d0 src 10.2.0.1
  local n
  for n in 1 2; do
    ip -n A rule add from "${A_V4[$n]}" lookup "10$n" pref "100$n"
    ip -n A -6 rule add from "${A_V6[$n]}" lookup "10$n" pref "100$n"
  done
  uplink_up 1; uplink_up 2
  monitor_start
}

# uplink_up N: uplink N up with the addresses of its families (U_FAM) and
# its routes (an interface set down loses its routes), in one `ip -batch`;
# again (five times at most) until the kernel routes each of its sources
# to the gateway B through it: a route added while the link comes up can
# be missing afterwards (seen once for IPv6, table 10N), which left the
# next move of that run with no path
uplink_up() {
  local n=$1 try
  for try in 1 2 3 4 5; do
    uplink_apply "$n"
    uplink_routed "$n" && return 0
    echo "uplink_up $n: a route is missing (try $try); again"
    ip -n A route show table "10$n"; ip -n A -6 route show table "10$n"
    sleep 0.2
  done
  fail "uplink_up $n: routes missing after 5 tries"
}

# uplink_routed N: whether each source of uplink N is routed to B via its
# gateway
uplink_routed() {
  local n=$1 f
  for f in ${U_FAM[$n]}; do
    if [ "$f" = 4 ]; then
      ip -n A route get "$B_V4" from "${A_V4[$n]}" 2>/dev/null | grep -q "via ${A_GW4[$n]} dev u$n" || return 1
    else
      ip -n A -6 route get "$B_V6" from "${A_V6[$n]}" 2>/dev/null | grep -q "via ${A_GW6[$n]} dev u$n" || return 1
    fi
  done
}

uplink_apply() {
  local n=$1 f
  {
    echo "link set u$n up"
    # what does not go out of this uplink is unreachable from its sources
    echo "route replace unreachable 0.0.0.0/0 table 10$n metric 4294967295"
    echo "route replace unreachable ::/0 table 10$n metric 4294967295"
    for f in ${U_FAM[$n]}; do
      if [ "$f" = 4 ]; then
        echo "address replace ${A_V4[$n]}/24 dev u$n"
        echo "route replace 0.0.0.0/0 via ${A_GW4[$n]} dev u$n metric 10$n"
        echo "route replace 0.0.0.0/0 via ${A_GW4[$n]} dev u$n table 10$n"
      else
        echo "address replace ${A_V6[$n]}/64 dev u$n nodad"
        echo "route replace ::/0 via ${A_GW6[$n]} dev u$n metric 10$n"
        echo "route replace ::/0 via ${A_GW6[$n]} dev u$n table 10$n"
      fi
    done
  } | ip -n A -batch - || fail "uplink_up $n"
}

# uplinks_set FAMILIES1 FAMILIES2: the families of u1 and u2 ("4 6", "4",
# "6"); addresses and routes of the others go
uplinks_set() {
  U_FAM[1]=$1; U_FAM[2]=$2
  local n
  for n in 1 2; do
    case " ${U_FAM[$n]} " in *" 4 "*) ;; *)
      ip -n A -4 route flush table "10$n" 2>/dev/null || true
      ip -n A -4 route flush dev "u$n" 2>/dev/null || true
      ip -n A -4 addr flush dev "u$n" 2>/dev/null || true;; esac
    case " ${U_FAM[$n]} " in *" 6 "*) ;; *)
      ip -n A -6 route flush table "10$n" 2>/dev/null || true
      ip -n A -6 addr del "${A_V6[$n]}/64" dev "u$n" 2>/dev/null || true
      ip -n A -6 route del ::/0 dev "u$n" 2>/dev/null || true;; esac
    uplink_up "$n"
  done
}

# uplink_of ADDR: 1 or 2, the uplink that has ADDR
uplink_of() {
  case $1 in "${A_V4[1]}"|"${A_V6[1]}") echo 1;; "${A_V4[2]}"|"${A_V6[2]}") echo 2;; *) echo 0;; esac
}

# out_sa: "SRC DST SPI" of A's outbound ESP SA (the one from an uplink address)
out_sa() {
  ip -n A xfrm state | awk '$1=="src" && $2 !~ /^(203\.0\.113\.|2001:db8:ff::)/ {s=$2; d=$4; getline; print s, d, $4; exit}'
}
# in_spi: the SPI of A's inbound ESP SA
in_spi() {
  ip -n A xfrm state | awk '$1=="src" && $2 ~ /^(203\.0\.113\.|2001:db8:ff::)/ {getline; print $4; exit}'
}

# ---- the gateway's charon in B (responder for both initiators) ----
gateway_start() {
  # the inner dummy's address is no IKE address (not in the address lists;
  # the agent's configuration excludes d0 likewise)
  charon_conf "$D/B" "  interfaces_ignore = d0"
  local id
  {
    echo "connections {"
    for id in a c; do cat <<EOC
  $id { version = 2
    proposals = aes256gcm16-prfsha256-x25519
    mobike = yes
    local { auth = psk
            id = b.test }
    remote { auth = psk
             id = $id.test }
    children { net { local_ts = 10.2.0.0/24
                     remote_ts = 10.1.0.0/24
                     esp_proposals = aes256gcm16 } } }
EOC
    done
    echo "}"
    echo "secrets {"
    for id in a c; do printf '  ike-%s { id-a = %s.test\n    id-b = b.test\n    secret = "%s" }\n' "$id" "$id" "$PSK"; done
    echo "}"
  } > "$D/B/swanctl.conf"
  charon_start B "$D/B" "$D/B/swanctl.conf"
  GATEWAY_PID=$CHARON_PID
}
gw() { sw_in "$D/B" "$@"; }

# ---- the initiator in A: charon (MOBIKE, kernel-netlink) ----
charon_initiator_start() {
  charon_conf "$D/CA" "  interfaces_ignore = d0"
  cat > "$D/CA/swanctl.conf" <<EOC
connections { m { version = 2
  proposals = aes256gcm16-prfsha256-x25519
  mobike = yes
  remote_addrs = $B_V4, $B_V6
  local { auth = psk
          id = c.test }
  remote { auth = psk
           id = b.test }
  children { net { local_ts = 10.1.0.0/24
                   remote_ts = 10.2.0.0/24
                   esp_proposals = aes256gcm16 } } } }
secrets { ike-c { id-a = c.test
  id-b = b.test
  secret = "$PSK" } }
EOC
  charon_start A "$D/CA" "$D/CA/swanctl.conf"
  INITIATOR_PID=$CHARON_PID
  sw_in "$D/CA" --initiate --child net --timeout 30 >/dev/null || fail "charon in A could not initiate"
  wait_for 10 gw_installed || fail "the gateway has no CHILD_SA from charon"
}

# ---- trigger-db in A (its rtnetlink source; no NetworkManager, no damping) ----
triggerdb_start() {
  cat > "$D/trigger-db.toml" <<EOC
[store]
durability = "normal"
[sources.networkmanager]
enabled = false
EOC
  ip netns exec A env TRIGGER_DB_LOG="${TRIGGER_DB_LOG:-info}" "$BIN_DIR/trigger-db" \
    --socket "$D/trigger.sock" --database "$D/triggers.db" --config "$D/trigger-db.toml" \
    >>"$D/trigger-db.log" 2>&1 &
  TRIGGERDB_PID=$!
  wait_for 30 test -S "$D/trigger.sock" || fail "trigger-db did not start: $(tail -5 "$D/trigger-db.log")"
}
triggerctl() { "$BIN_DIR/triggerctl" --socket "$D/trigger.sock" "$@"; }

# ---- the initiator in A: mobike-agent, [mobility] source SOURCE ----
agent_initiator_start() {
  cat > "$D/agent.toml" <<EOC
[kernel]
backend = "xfrm"
[control]
socket = "$D/agent.sock"
[mobility]
source = "$1"
trigger_db_socket = "$D/trigger.sock"
# Moves between the uplinks stay on IPv4 while it is there (the path-test
# round trips under TCG differ by more than the default bonus of 20
# points, 200 ms, would outweigh); step 6 moves to IPv6 when u1's IPv4 goes.
prefer_family = "ipv4"
family_bonus = 100
[mobility.interfaces.d0]
exclude = true
[connections.m]
remote_addrs = ["$B_V4", "$B_V6"]
local_id = "a.test"
remote_id = "b.test"
psk = "$PSK"
proposals = ["aes256gcm16-prfsha256-x25519"]
mobike = true
start = "initiate"
[connections.m.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["aes256gcm16"]
EOC
  ip netns exec A env MOBIKE_AGENT_LOG="${RUST_LOG:-info,mobike_agent=debug}" "$BIN_DIR/mobike-agent" \
    --config "$D/agent.toml" >>"$D/agent.log" 2>&1 &
  INITIATOR_PID=$!
  wait_for 60 gw_installed || fail "the gateway has no CHILD_SA from the agent"
  wait_for 20 grep -q 'kernel: CHILD_SA installed' "$D/agent.log" || fail "the agent did not install its CHILD_SA"
}
agent_moves() { grep -c 'kernel: CHILD_SA migrated' "$D/agent.log" || true; }
# agent_timeline: "UPDATE_SENT_MS MOVED_MS OBSERVED_TO_RECEIVED_MS" of the
# agent's last move (its timeline in the log line "mobility: moved", from
# the trigger's receipt; the last from the source's observation to it)
agent_timeline() {
  grep 'mobility: moved' "$D/agent.log" | tail -n 1 | awk '
    function ms(k,   v) {
      if (!match($0, k "=Some\\([0-9.]+(µs|ms|s|ns)\\)")) return "-"
      v = substr($0, RSTART + length(k) + 6, RLENGTH - length(k) - 7)
      if (v ~ /µs$/) return sprintf("%.2f", v / 1000)
      if (v ~ /ns$/) return sprintf("%.3f", v / 1000000)
      if (v ~ /ms$/) return sprintf("%.2f", v + 0)
      return sprintf("%.2f", v * 1000)
    }
    { print ms("update_sent"), ms("moved"), ms("observed_to_received") }'
}

gw_installed() { gw --list-sas 2>/dev/null | has INSTALLED; }
# gw_peer ADDR: the gateway's IKE SA is with ADDR
gw_peer() { gw --list-sas 2>/dev/null | grep -F "$1[" >/dev/null; }

initiator_stop() {
  stop_pid "$INITIATOR_PID"; INITIATOR_PID=""
  wait_for 10 bash -c "! STRONGSWAN_CONF=$D/B/strongswan.conf swanctl --list-sas --uri unix://$D/B/charon.vici | grep -q ESTABLISHED" ||
    gw --terminate --ike-id "$(gw --list-sas | awk -F'[#:]' '/#/{print $2; exit}')" >/dev/null 2>&1 || true
}

# ---- pings every 10 ms through the tunnel, timestamped by the kernel ----
# The pinger runs SCHED_FIFO: it is the measuring instrument, and at
# normal priority under TCG it was starved while A's one vCPU tore the link
# down and the daemons handled it (silences of 30-50 ms with no ping lost:
# consecutive sequence numbers, sent that much apart), so the figure was
# A's scheduler and not the tunnel. Both initiators are measured with it.
# ping_start FILE
ping_start() {
  : > "$1"
  ip netns exec A chrt -f 50 ping -D -n -i 0.01 -I 10.1.0.1 10.2.0.1 >"$1" 2>&1 &
  PING_PID=$!
  wait_for 10 bash -c "[ \$(grep -c 'bytes from.*icmp_seq=' '$1') -ge 20 ]" || fail "no pings through the tunnel: $(tail -3 "$1")"
}
ping_stop() { [ -z "$PING_PID" ] || { kill -INT "$PING_PID" 2>/dev/null || true; wait "$PING_PID" 2>/dev/null || true; PING_PID=""; }; }
# replies_after FILE T: how many replies arrived after time T (epoch seconds)
replies_after() {
  awk -v t="$2" '/bytes from.*icmp_seq=/ { x=substr($1, 2, length($1) - 2); if (x + 0 > t + 0) n++ } END { print n + 0 }' "$1"
}
# handover FILE T [START_WITHIN]: "HANDOVER_MS LOST GAP_MS STALL_MS" for an
# event at T (epoch seconds). The move's silence is the largest gap between
# two replies that begins from 0.2 s before T to START_WITHIN seconds after
# it (default 0.05: the old path stops carrying at T, so a silence that
# begins later is not the event's; under TCG the pinger also pauses ~20 ms
# now and then, e.g. when the harness starts processes again after its
# quiet second). HANDOVER_MS is the time from T to the reply that ended
# that silence, or to the first reply after T if the silence had ended
# before T (the pings went on through the event). LOST: the sequence
# numbers never answered in the whole file. GAP_MS: the silence. STALL_MS:
# the pinger's own longest pause in the window, the largest gap between the
# send times (reply time - rtt) of two consecutive sequence numbers both
# answered (10 ms when it kept its pace).
handover() {
  awk -v t="$2" -v within="${3:-0.05}" '
    /bytes from.*icmp_seq=/ {
      x = substr($1, 2, length($1) - 2) + 0
      s = $0; sub(/.*icmp_seq=/, "", s); sub(/[^0-9].*/, "", s); s += 0
      r = $0; sub(/.*time=/, "", r); sub(/[^0-9.].*/, "", r); r += 0
      if (s in seen) next
      seen[s] = 1; n++
      if (n == 1 || s < lo) lo = s
      if (n == 1 || s > hi) hi = s
      if (prev >= t - 0.2 && prev <= t + within && x - prev > gap) { gap = x - prev; end = x }
      if (x > t && first_after == 0) first_after = x
      sent = x - r / 1000
      if (x >= t - 0.2 && x <= t + 5 && (s - 1) in sent_at && sent - sent_at[s - 1] > stall) stall = sent - sent_at[s - 1]
      sent_at[s] = sent
      prev = x
    }
    END {
      if (n == 0 || first_after == 0) { print "- " ((n == 0) ? "-" : (hi - lo + 1) - n) " - -"; exit }
      h = (end > t) ? end - t : first_after - t
      printf "%.1f %d %.1f %.1f\n", h * 1000, (hi - lo + 1) - n, gap * 1000, stall * 1000
    }' "$1"
}

# monitor_start: `ip -ts monitor` of A's links and addresses into
# $D/monitor.log, for the kernel's time of each event
monitor_start() {
  ip -n A -ts monitor link address >"$D/monitor.log" 2>&1 &
  MONITOR_PID=$!
  sleep 0.5
}
# kernel_time IFACE T: epoch seconds of the first line of the monitor that
# names IFACE at or after T (epoch seconds; the monitor prints local time
# in a form that sorts as text)
kernel_time() {
  local after l
  after=$(date -d "@$2" +%Y-%m-%dT%H:%M:%S.%6N)
  l=$(awk -v a="[$after]" -v re="^(Deleted )?[0-9]+: $1[@ :]" '
        substr($0, 1, 1) == "[" && $1 >= a { x = $0; sub(/^\[[^]]+\] /, "", x); if (x ~ re) { print substr($1, 2, length($1) - 2); exit } }' \
      "$D/monitor.log") || true
  [ -z "$l" ] || date -d "${l/T/ }" +%s.%N
}

# ---- events on the uplink of the current path ----
# The events of measured moves go through one long-lived `ip -batch` in A
# (events_start), fed line by line through a FIFO: a new `ip` process per
# event costs 100-2000 ms of CPU under TCG around the very moment measured
# (its start before the change, its exit after it), on the vCPUs the
# gateway needs to answer the update. Without it (flap, uplink_up) each
# event is its own `ip` command.
EV_FD=""
events_start() {
  mkfifo "$D/events.fifo"
  ip -n A -force -batch "$D/events.fifo" >"$D/events.log" 2>&1 &
  EVENTS_PID=$!
  exec {EV_FD}>"$D/events.fifo"
}
events_stop() {
  [ -z "$EV_FD" ] || { exec {EV_FD}>&-; EV_FD=""; wait "${EVENTS_PID:-}" 2>/dev/null || true; }
}
# ev_ip ARGS...: one `ip -n A` command, through the batch when it runs
ev_ip() { if [ -n "$EV_FD" ]; then echo "$*" >&"$EV_FD"; else ip -n A "$@"; fi; }
# ev_break N: uplink N set down (admin down; the kernel drops its routes)
ev_break() { ev_ip link set "u$1" down; }
# ev_replace N ADDR: ADDR deleted from uplink N (the link stays up)
ev_replace() {
  case $2 in *:*) ev_ip addr del "$2/64" dev "u$1";; *) ev_ip addr del "$2/24" dev "u$1";; esac
}

# idle SECONDS: waits without starting a process (bash's read timing out
# on a FIFO nobody writes; `sleep` is a process, costly under TCG)
idle() {
  [ -p "$D/idle.fifo" ] || mkfifo "$D/idle.fifo"
  read -rt "$1" _ <>"$D/idle.fifo" || true
}

# pin_cpus: (benchmark) the gateway B's processes on the last vCPU, this
# shell and so everything of A it starts from now on (the initiator,
# trigger-db, pings, monitor, events) on the others, as if they were two
# machines; without it the gateway's answer to an update waits behind
# whatever A runs at that moment (2 vCPUs under TCG). No-op on one vCPU.
pin_cpus() {
  local n p
  n=$(nproc --all)
  [ "$n" -ge 2 ] || return 0
  taskset -cp "0-$((n - 2))" $$ >/dev/null
  for p in $(ip netns pids B); do taskset -a -cp "$((n - 1))" "$p" >/dev/null || true; done
}

# measure_move NAME EVENT [LEAD]: with pings running, applies EVENT (break
# or replace) to the uplink of the current path (LEAD: a Link_Going_Down
# that many ms before, through trigger-db), waits until the pings flow
# again, restores the uplink, and sets MOVE="HANDOVER_MS LOST GAP_MS",
# MOVE_FROM/MOVE_TO (the out SA's source address before and after), MOVE_SPI
# (the out SPI before) and MOVE_SPI_AFTER. The handover is counted from
# T_KERNEL, when the kernel announced the event (ip monitor; the event's
# command can take hundreds of ms under TCG), and EVENT_MS is how long after
# the start of that command it came (the command's duration if no
# announcement was seen); MOVE_REPLIES counts the replies after the event
# (30 when the pings flow again).
measure_move() {
  local name=$1 ev=$2 lead=${3:-} f="$D/ping-$1.log" src dst n t_ev t_done t_lgd t_ref i
  read -r src dst MOVE_SPI < <(out_sa) || true
  [ -n "${src:-}" ] || fail "$name: no outbound SA in A"
  n=$(uplink_of "$src"); [ "$n" != 0 ] || fail "$name: outbound SA from $src, not an uplink"
  MOVE_FROM=$src
  ping_start "$f"
  sleep 0.3
  if [ -n "$lead" ]; then
    t_lgd=$EPOCHREALTIME
    triggerctl add --type link-going-down --interface "u$n" --time-interval "${lead}ms" >/dev/null ||
      fail "$name: triggerctl add link-going-down"
    sleep "$(awk -v a="$t_lgd" -v b="$EPOCHREALTIME" -v l="$lead" 'BEGIN{d=l/1000-(b-a); print (d>0?d:0)}')"
    # the path before the link goes down: moved already (make-before-break)?
    read -r MOVE_BEFORE_DOWN _ _ < <(out_sa) || true
  fi
  t_ev=$EPOCHREALTIME
  case $ev in
    break) ev_break "$n";;
    replace) ev_replace "$n" "$src";;
    *) fail "measure_move: no event $ev";;
  esac
  t_done=$EPOCHREALTIME
  # Nothing else runs in A for QUIET seconds (the move is measured then);
  # then wait for 30 replies after the event as the kernel announced it
  # (the reference MOVE_REPLIES uses below; under TCG it comes 0.1-2 s
  # after t_ev with a new `ip` per event)
  idle "${QUIET:-0}"
  for i in $(seq 200); do
    t_ref=$(kernel_time "u$n" "$t_ev")
    [ "$(replies_after "$f" "${t_ref:-$t_ev}")" -ge 30 ] && break
    sleep 0.1
  done
  ping_stop
  # the event's time: when the kernel announced it (ip monitor), else when
  # its command started
  T_KERNEL=$(kernel_time "u$n" "$t_ev")
  EVENT_MS=$(awk -v a="$t_ev" -v k="${T_KERNEL:-0}" -v b="$t_done" 'BEGIN{ printf "%.1f", ((k > 0 ? k : b) - a) * 1000 }')
  MOVE=$(handover "$f" "${T_KERNEL:-$t_ev}")
  MOVE_REPLIES=$(replies_after "$f" "${T_KERNEL:-$t_ev}")
  read -r MOVE_TO _ MOVE_SPI_AFTER < <(out_sa) || true
  uplink_up "$n"
  sleep "${SETTLE:-1.5}"
}

# flap N SECONDS: uplink N changes state every 200 ms (down, up, ...) for
# SECONDS, ending up
flap() {
  local n=$1 steps=$(( $2 * 5 )) t0=$EPOCHREALTIME k
  for k in $(seq 0 $(( steps - 1 ))); do
    sleep "$(awk -v t0="$t0" -v now="$EPOCHREALTIME" -v k="$k" 'BEGIN{d=t0+k*0.2-now; print (d>0?d:0)}')"
    if [ $(( k % 2 )) = 0 ]; then ev_break "$n"; else uplink_apply "$n"; fi
  done
  uplink_up "$n"
}

fail() { echo "FAIL: $*"; mob_diag; exit 1; }

# mob_setup: checks the binaries, loads the modules, builds the topology
# and starts the gateway
mob_setup() {
  need_charon
  [ -x "$BIN_DIR/mobike-agent" ] && [ -x "$BIN_DIR/trigger-db" ] && [ -x "$BIN_DIR/triggerctl" ] ||
    fail "VM_CARGO_PACKAGES must include mobike-agent and trigger-db"
  load_modules
  mob_topology
  gateway_start
}

# mob_diag: what a failing scenario prints (fail)
mob_diag() {
  echo "--- agent log"; tail -n 60 "$D/agent.log" 2>/dev/null || true
  echo "--- trigger-db log"; tail -n 20 "$D/trigger-db.log" 2>/dev/null || true
  echo "--- charon in A log"; tail -n 30 "$D/CA/charon.log" 2>/dev/null || true
  echo "--- gateway charon log"; tail -n 40 "$D/B/charon.log" 2>/dev/null || true
  gw --list-sas 2>/dev/null || true
  local ns
  for ns in A B; do
    echo "--- $ns: ip -s xfrm state / policy, addresses, routes"
    ip -n "$ns" -s xfrm state || true; ip -n "$ns" xfrm policy || true
    ip -n "$ns" -br addr || true
    ip -n "$ns" route show table all | grep -v '^local\|^broadcast\|^multicast\|fe80\|ff00' || true
  done
}

# mob_cleanup NAME: stops everything, keeps the logs in $VM_OUT/NAME/
mob_cleanup() {
  ping_stop
  if [ -n "${VM_OUT:-}" ] && [ -d "$D" ]; then
    rm -rf "${VM_OUT:?}/$1"; mkdir -p "$VM_OUT/$1"
    cp "$D"/*.log "$D"/*.toml "$VM_OUT/$1/" 2>/dev/null || true
    cp "$D/B/charon.log" "$VM_OUT/$1/gateway-charon.log" 2>/dev/null || true
    cp "$D/CA/charon.log" "$VM_OUT/$1/initiator-charon.log" 2>/dev/null || true
  fi
  stop_pid "$INITIATOR_PID"; stop_pid "$TRIGGERDB_PID"; stop_pid "${GATEWAY_PID:-}"
  stop_pid "${MONITOR_PID:-}"
  events_stop
  local ns
  for ns in A R B; do ip netns del "$ns" 2>/dev/null || true; done
}
