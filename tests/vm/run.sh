#!/bin/bash
# tests/vm/run.sh SCENARIO|SCRIPT [ARGS...]
#
# Run a script as root inside a throw-away QEMU VM that boots Debian's stock
# kernel (it has esp4/esp6/xfrm_user/veth/dummy as modules, which the CI host
# kernel lacks), with the host root filesystem shared READ-ONLY (virtme-ng).
# Exit status = the guest script's exit status.
#
#   SCENARIO   a name under tests/vm/scenarios/ (e.g. `ipsec-esp`), or
#   SCRIPT     a path to any script visible in the guest.
#
# Before booting it builds (cargo, release) the workspace binaries named by
# VM_CARGO_PACKAGES (default: ipsec-backend) because the guest cannot write
# the source tree; the guest gets their directory in $BIN_DIR (and the
# benchmark programs of VM_CARGO_BENCHES in $BENCH_DIR).  It installs
# what it needs itself: qemu-system-x86 busybox-static file kmod iproute2
# iputils-ping python3-venv udev (apt), virtme-ng $VNG_VERSION (PyPI, in a venv
# under $VM_CACHE), and Debian's linux-image-amd64 target package
# (apt-get download, unpacked under $VM_CACHE, never installed).
#
# Environment:
#   VM_CACHE           cache dir (default /var/lib/mobike-vm, else $TMPDIR/mobike-vm;
#                      not under /var/cache: tmpfs in the guest)
#   VM_OUT             dir shared read-write with the guest, for results
#                      (default $VM_CACHE/out); the guest sees it as $VM_OUT
#   VM_CARGO_PACKAGES  space-separated cargo packages to build (bins)
#   VM_CARGO_BENCHES   space-separated PACKAGE/BENCH benchmark programs to
#                      build (default ipsec-backend/xfrm-bench); the guest
#                      finds them in $BENCH_DIR
#   VM_CPUS / VM_MEM   guest size (default 2 / 1G)
#   VM_PASS_ENV        names of variables handed to the guest script
#                      (default: STEPS RUST_LOG XFRMCTL_LOG)
#   VNG_VERSION        virtme-ng version (default 1.42, the tested one)
#
# Why TCG (--disable-kvm): /dev/kvm on the CI machines is nested "kvm-pvm",
# which only runs PVM-enabled guest kernels; Debian's kernel hangs there.
# Pure emulation boots in ~10 s and runs commands ~5-10x slower.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export DEBIAN_FRONTEND=noninteractive

[ $# -ge 1 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
target=$1; shift
if [ -f "$HERE/scenarios/$target.sh" ]; then script="$HERE/scenarios/$target.sh"
elif [ -f "$target" ]; then script=$(cd "$(dirname "$target")" && pwd)/$(basename "$target")
else echo "run.sh: no scenario or script '$target'" >&2; exit 2; fi

# The unpacked kernel's modules must be visible in the guest: virtme-ng
# mounts tmpfs over /var/cache, /var/tmp, /var/log and /var/lib/apt there,
# so the cache cannot live in those.
if [ -z "${VM_CACHE:-}" ]; then
  if mkdir -p /var/lib/mobike-vm 2>/dev/null && [ -w /var/lib/mobike-vm ]; then
    VM_CACHE=/var/lib/mobike-vm
  else VM_CACHE=${TMPDIR:-/tmp}/mobike-vm; fi
fi
case "$VM_CACHE" in
  /var/cache/*|/var/tmp/*|/var/log/*|/var/lib/apt/*)
    echo "run.sh: VM_CACHE=$VM_CACHE is hidden by tmpfs in the guest" >&2; exit 2;;
esac
mkdir -p "$VM_CACHE"
VM_OUT=${VM_OUT:-$VM_CACHE/out}
mkdir -p "$VM_OUT"
log() { echo "[vm/run.sh] $*" >&2; }

# 1. system packages
ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || apt-get update -qq
need=()
for c in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static file:file \
         depmod:kmod ip:iproute2 ping:iputils-ping; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# virtme-ng-init needs udevd in the guest (= the host fs) to create
# /dev/virtio-ports/*; without it the script's output and exit status are lost.
[ -x /lib/systemd/systemd-udevd ] || need+=(udev)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. virtme-ng in a venv (vng calls virtme-run: the venv's bin goes on PATH)
VNG_VERSION=${VNG_VERSION:-1.42}
VENV=$VM_CACHE/venv-vng-$VNG_VERSION
if [ ! -x "$VENV/bin/vng" ]; then
  log "installing virtme-ng $VNG_VERSION into $VENV"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "virtme-ng==$VNG_VERSION"
fi
export PATH="$VENV/bin:$PATH"

# 3. Debian's current generic kernel, unpacked (the -cloud flavour has no 9p)
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$KPKG" ] || { apt-get update -qq; KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); }
KVER=${KPKG#linux-image-}
KROOT=$VM_CACHE/kernel/$KVER
if [ ! -e "$KROOT/boot/vmlinuz-$KVER" ]; then
  log "downloading $KPKG"
  mkdir -p "$VM_CACHE/kernel"
  (cd "$VM_CACHE/kernel" && apt-get download -qq "$KPKG")
  rm -rf "$KROOT.tmp" && mkdir -p "$KROOT.tmp"
  dpkg-deb -x "$VM_CACHE/kernel/${KPKG}"_*.deb "$KROOT.tmp"
  depmod -b "$KROOT.tmp" "$KVER"
  mv "$KROOT.tmp" "$KROOT"
fi

# 4. build the binaries the guest needs (the guest cannot write the tree)
BIN_DIR=
if [ -n "${VM_CARGO_PACKAGES-ipsec-backend}" ]; then
  pk=()
  for p in ${VM_CARGO_PACKAGES:-ipsec-backend}; do pk+=(-p "$p"); done
  log "cargo build --release ${pk[*]} --bins"
  (cd "$ROOT" && cargo build -q --release "${pk[@]}" --bins)
  TD=$(cd "$ROOT" && cargo metadata -q --format-version 1 --no-deps |
       /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  BIN_DIR=$TD/release
fi
# 4b. benchmark programs ([[bench]], harness = false): each PACKAGE/BENCH of
#     VM_CARGO_BENCHES is built (cargo bench --no-run) and linked as
#     $BENCH_DIR/BENCH for the guest.
BENCH_DIR=
if [ -n "${VM_CARGO_BENCHES-ipsec-backend/xfrm-bench}" ]; then
  TD=$(cd "$ROOT" && cargo metadata -q --format-version 1 --no-deps |
       /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  BENCH_DIR=$TD/vm-benches
  mkdir -p "$BENCH_DIR"
  for pb in ${VM_CARGO_BENCHES:-ipsec-backend/xfrm-bench}; do
    log "cargo bench --no-run -p ${pb%%/*} --bench ${pb#*/}"
    exe=$(cd "$ROOT" && cargo bench -q --no-run -p "${pb%%/*}" --bench "${pb#*/}" --message-format=json |
          /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "${pb#*/}")
    [ -n "$exe" ] || { echo "no executable for bench $pb" >&2; exit 1; }
    ln -sf "$exe" "$BENCH_DIR/${pb#*/}"
  done
fi

# 5. boot.  --force-9p: no virtiofsd needed.  Hand QEMU pipes, not files:
#    virtme-ng makes QEMU open /proc/self/fd/1 and 2, which truncates files.
log "booting $KVER (TCG) for $(basename "$script")"
envs=(BIN_DIR="$BIN_DIR" BENCH_DIR="$BENCH_DIR" VM_OUT="$VM_OUT")
for v in ${VM_PASS_ENV:-STEPS RUST_LOG XFRMCTL_LOG}; do
  [ -n "${!v+x}" ] && envs+=("$v=${!v}")
done
cmd=$(printf '%q ' env "${envs[@]}" "$script" "$@")
set +e
vng --run "$KROOT/boot/vmlinuz-$KVER" --disable-kvm --force-9p \
  --cpus "${VM_CPUS:-2}" --memory "${VM_MEM:-1G}" --rwdir "$VM_OUT" \
  --exec "$cmd" 2> >(cat >&2) | cat
rc=${PIPESTATUS[0]}
log "guest exit status $rc"
exit "$rc"
