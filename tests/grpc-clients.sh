#!/usr/bin/env bash
# tests/grpc-clients.sh: stock gRPC clients (Python's grpcio from PyPI and
# Node.js's @grpc/grpc-js from npm, default channel options) against the
# daemons' real Unix sockets. As root:
#   - a venv with the pinned versions of examples/python/requirements.txt;
#   - trigger-db on a temporary socket and database, its sources off (it
#     reads nothing of the host), and mobike-agent (backend "none", one
#     connection listening on 127.0.0.2, mobility off) inside a network
#     namespace this script creates and deletes;
#   - examples/python/triggerdb_client.py: Health, Query, Add (root is a
#     writer), Subscribe with resume, no duplicates;
#   - examples/python/list_services.py (grpcio-reflection, v1alpha) on both
#     sockets;
#   - examples/node/triggerdb_client.mjs (@grpc/grpc-js, the pinned
#     versions of examples/node/package.json): Stats, Add, Query, Subscribe
#     with resume;
#   - examples/go/grpc_check.go (grpc-go from Debian, 1.33): Health/Check,
#     reflection v1alpha on both sockets.
# For each client it says whether the daemon had to read its :authority as
# localhost. Needs python3-venv, nodejs + npm, golang-go +
# golang-google-grpc-dev, iproute2, PyPI and the npm registry. BIN_DIR: where the debug binaries
# are (default: the workspace's target dir, built here first).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/grpc-clients.sh: run as root (network namespace, trigger-db writer)" >&2
  exit 2
fi

if [ -z "${BIN_DIR:-}" ]; then
  cargo build --quiet -p trigger-db -p mobike-agent --bins
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  BIN_DIR="$target/debug"
fi

work=$(mktemp -d /tmp/grpc-clients.XXXXXX)
ns="pyclient-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_socket() { # path log
  for _ in $(seq 1 100); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  echo "no socket $1 after 10 s; log:" >&2
  cat "$2" >&2
  return 1
}

echo "-- venv: $(grep -v '^#' examples/python/requirements.txt | tr '\n' ' ')"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
  -r examples/python/requirements.txt
py="$work/venv/bin/python"

ip netns add "$ns"
ip -n "$ns" link set lo up

cat > "$work/trigger-db.toml" <<'TOML'
[sources.rtnetlink]
enabled = false
[sources.networkmanager]
enabled = false
TOML
cat > "$work/agent.toml" <<'TOML'
[kernel]
backend = "none"

[mobility]
source = "off"

[connections.py]
local_addrs = ["127.0.0.2"]
remote_addrs = ["127.0.0.1"]
local_id = "b.test"
remote_id = "a.test"
psk = "python-client-test-psk"
proposals = ["aes256gcm16-prfsha256-x25519"]
start = "listen"

[connections.py.children.net]
local_ts = ["10.2.0.0/24"]
remote_ts = ["10.1.0.0/24"]
esp_proposals = ["aes256gcm16"]
TOML

TRIGGER_DB_LOG=info,daemon_support=debug ip netns exec "$ns" "$BIN_DIR/trigger-db" --config "$work/trigger-db.toml" \
  --socket "$work/trigger.sock" --database "$work/triggers.db" 2> "$work/trigger-db.log" &
pids+=($!)
MOBIKE_AGENT_LOG=info,daemon_support=debug ip netns exec "$ns" "$BIN_DIR/mobike-agent" --config "$work/agent.toml" \
  --control-socket "$work/control.sock" 2> "$work/agent.log" &
pids+=($!)
wait_socket "$work/trigger.sock" "$work/trigger-db.log"
wait_socket "$work/control.sock" "$work/agent.log"

fail() { echo "FAIL: $*" >&2; echo "-- trigger-db log:" >&2; cat "$work/trigger-db.log" >&2;
  echo "-- agent log:" >&2; cat "$work/agent.log" >&2; exit 1; }

# rewrites LOG: connections whose :authority the daemon read as localhost
rewrites() { grep -c "invalid :authority" "$1" || true; }
# rewritten CLIENT LOG BEFORE: says whether CLIENT's connections needed it
rewritten() {
  local n=$(( $(rewrites "$2") - $3 ))
  if [ "$n" -gt 0 ]; then echo "   ($1 sent an invalid :authority on $n connection(s), read as localhost)"
  else echo "   ($1 sent a valid :authority)"; fi
}

echo "-- examples/python/triggerdb_client.py (trigger-db)"
r0=$(rewrites "$work/trigger-db.log")
"$py" examples/python/triggerdb_client.py --socket "$work/trigger.sock" --add 6 ||
  fail "triggerdb_client.py"
# Twice: the second run's Query sees the first run's rows.
"$py" examples/python/triggerdb_client.py --socket "$work/trigger.sock" --add 4 > "$work/second.out" ||
  fail "triggerdb_client.py (second run)"
grep -q "query: 3 newest" "$work/second.out" || fail "second run's Query: $(cat "$work/second.out")"
rewritten grpcio "$work/trigger-db.log" "$r0"

echo "-- reflection (v1alpha, grpcio-reflection) on trigger-db"
"$py" examples/python/list_services.py "unix://$work/trigger.sock" --expect \
  trigger.v1.TriggerService grpc.health.v1.Health grpc.reflection.v1alpha.ServerReflection ||
  fail "reflection on trigger-db"
echo "-- reflection (v1alpha, grpcio-reflection) on mobike-agent's control socket"
"$py" examples/python/list_services.py "unix://$work/control.sock" --expect \
  mobike.v1.AgentControl grpc.reflection.v1alpha.ServerReflection ||
  fail "reflection on mobike-agent"

echo "-- examples/node/triggerdb_client.mjs (@grpc/grpc-js, trigger-db)"
command -v node >/dev/null && command -v npm >/dev/null || fail "node and npm are needed (Debian: nodejs, npm)"
(cd examples/node && npm install --no-package-lock --no-audit --no-fund --silent) || fail "npm install in examples/node"
r0=$(rewrites "$work/trigger-db.log")
node examples/node/triggerdb_client.mjs --socket "$work/trigger.sock" --add 6 || fail "triggerdb_client.mjs"
rewritten @grpc/grpc-js "$work/trigger-db.log" "$r0"

echo "-- examples/go/grpc_check.go (grpc-go $(dpkg-query -W -f='${Version}' golang-google-grpc-dev 2>/dev/null), both sockets)"
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/gocache" \
  go build -o "$work/grpc_check" examples/go/grpc_check.go || fail "go build examples/go/grpc_check.go"
r0=$(rewrites "$work/trigger-db.log")
"$work/grpc_check" -health trigger.v1.TriggerService -expect trigger.v1.TriggerService,grpc.health.v1.Health \
  "unix://$work/trigger.sock" || fail "grpc_check on trigger-db"
"$work/grpc_check" -expect mobike.v1.AgentControl "unix://$work/control.sock" || fail "grpc_check on mobike-agent"
rewritten grpc-go "$work/trigger-db.log" "$r0"

# No connection may have been closed as malformed.
if grep -q "malformed HTTP/2" "$work/trigger-db.log" "$work/agent.log"; then
  fail "a connection was closed as malformed"
fi
echo "-- grpc-clients: ok"
