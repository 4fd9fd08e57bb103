#!/usr/bin/env bash
# tests/run.sh: the project's whole test suite, on a fresh machine of the
# project's kind, as root. It installs the system packages the tests use
# (Debian), then runs every Rust test of the workspace (including the ones
# `cargo test` skips by default because they need root, namespaces,
# NetworkManager or strongSwan), then stock Python gRPC clients (grpcio
# from PyPI) on the daemons' sockets, then the real-ESP scenarios in a VM booting
# Debian's stock kernel (tests/vm/run.sh).
#
#   tests/run.sh            everything
#   SKIP_VM=1 tests/run.sh  everything but the VM scenarios
#   SKIP_DEB=1 tests/run.sh everything but the Debian packages (tests/deb.sh
#                           installs and purges them on this machine)
#
# Tests make their own network namespaces, buses and VMs and remove them;
# they never touch the host's interfaces, routes or XFRM state.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run.sh: run as root (the tests create network namespaces)" >&2
  exit 2
fi

packages=(
  iproute2 iputils-ping util-linux procps     # namespaces, veth, setpriv
  network-manager dbus dbus-bin               # real NetworkManager on a private bus
  python3-dbusmock python3-dbus python3-gi libglib2.0-bin   # NM Wi-Fi mock
  strongswan-charon strongswan-swanctl        # the IKEv2 peer for interop
  libstrongswan-standard-plugins libcharon-extra-plugins
  nftables                                    # the NAT router of the VM scenario mobike-charon
  systemd                                     # systemd-analyze verify of the units
  python3-venv                                # tests/grpc-clients.sh: grpcio from PyPI
  golang-go golang-google-grpc-dev            # tests/grpc-clients.sh: grpc-go 1.33
  nodejs                                      # tests/grpc-clients.sh: @grpc/grpc-js from npm (npm comes with the machine's nodejs)
  man-db                                      # man -w of the packages' pages (tests/deb.sh)
  openssl                                     # the certificates mobike-agent's pki tests make
  postgresql                                  # the store suite against a real PostgreSQL server (initdb as nobody)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# charon must not run as a system service here: the tests start their own.
systemctl disable --now strongswan-starter strongswan 2>/dev/null || true
# The tests start their own PostgreSQL servers (as nobody, on private sockets);
# the package's default cluster is not needed.
systemctl disable --now postgresql 2>/dev/null || true

echo "== cargo test --workspace (all tests, including root-only ones)"
cargo test --workspace -- --include-ignored

echo "== stock gRPC clients (Python, Node.js) on the daemons' sockets (tests/grpc-clients.sh)"
tests/grpc-clients.sh
if [ -z "${SKIP_DEB:-}" ]; then
  # Builds the .debs (cargo-deb, installed if missing), installs, checks
  # and purges them.
  echo "== Debian packages (tests/deb.sh)"
  tests/deb.sh
fi

if [ -z "${SKIP_VM:-}" ]; then
  # ipsec-esp: ESP SAs installed and moved by ipsec-backend (xfrmctl);
  # mobike-charon: mobike-agent with backend xfrm against charon, ping
  # through the tunnel, rekey, delete, MOBIKE move;
  # mobility: mobike-agent follows the links (trigger-db, its own watch)
  # and moves its SAs: break, replace, Link_Going_Down, flapping, IPv4 -> IPv6.
  export VM_CARGO_PACKAGES="ipsec-backend mobike-agent trigger-db"
  for scenario in ipsec-esp mobike-charon mobility; do
    echo "== VM scenario: $scenario"
    tests/vm/run.sh "$scenario"
  done
fi
echo "== all tests passed"
