#!/usr/bin/env bash
# tests/deb.sh: the Debian packages, end to end (run by tests/run.sh; as
# root, on a machine where neither package is installed). Installs
# cargo-deb if missing, builds both packages (deploy/debian/build-debs.sh),
# installs them with apt-get, then checks: every binary answers --version
# and --help; man pages (man -w) and bash/zsh/fish completions are in
# place; the group trigger-db exists; the units are in systemd's unit
# directory and pass `systemd-analyze verify` as installed; the
# configurations are conffiles (mobike-agent's mode 0600). Then purges both
# and checks that none of their files, configuration directories, unit
# symlinks, database or group is left. Works where systemd is not PID 1
# (containers): the maintainer scripts start nothing there.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/deb.sh: run as root (it installs and purges packages)" >&2
  exit 2
fi
for p in trigger-db mobike-agent; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "installed"; then
    echo "tests/deb.sh: $p is installed here already; not touching it" >&2
    exit 2
  fi
done

fail() { echo "tests/deb.sh: FAIL: $*" >&2; exit 1; }

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

echo "== build (deploy/debian/build-debs.sh)"
mapfile -t debs < <(deploy/debian/build-debs.sh)
[ "${#debs[@]}" -eq 2 ] || fail "build-debs.sh printed ${#debs[@]} paths, not 2: ${debs[*]}"
for d in "${debs[@]}"; do
  [ -f "$d" ] || fail "no package at $d"
  echo "$d"
done

cleanup() { dpkg --purge mobike-agent trigger-db >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== install"
apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null

echo "== binaries"
for b in trigger-db triggerctl mobike-agent xfrmctl; do
  [ "$(command -v "$b")" = "/usr/bin/$b" ] || fail "$b is not /usr/bin/$b"
  v=$("$b" --version) || fail "$b --version failed"
  [ "$v" = "$b $(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)" ] ||
    fail "$b --version said: $v"
  "$b" --help | grep -q "^Usage: $b" || fail "$b --help has no usage line for $b"
done

echo "== man pages and completions"
for b in trigger-db triggerctl mobike-agent xfrmctl triggerctl-watch xfrmctl-child-migrate mobike-agent-move; do
  page=$(man -w "$b") || fail "man -w $b found nothing"
  [ "$page" = "/usr/share/man/man1/$b.1.gz" ] || fail "man -w $b: $page"
  zcat "$page" | grep -q '^\.TH' || fail "$page is no man page"
done
for b in trigger-db triggerctl mobike-agent xfrmctl; do
  bash -n "/usr/share/bash-completion/completions/$b" || fail "bash completion of $b"
  grep -q "^#compdef $b" "/usr/share/zsh/vendor-completions/_$b" || fail "zsh completion of $b"
  grep -q "^complete -c $b " "/usr/share/fish/vendor_completions.d/$b.fish" || fail "fish completion of $b"
done

echo "== group, configuration, units"
getent group trigger-db >/dev/null || fail "no group trigger-db"
grep -q '^writer_group = "trigger-db"$' /etc/trigger-db/trigger-db.toml || fail "writer_group is not trigger-db"
dpkg-query -W -f='${Conffiles}\n' trigger-db | grep -q " /etc/trigger-db/trigger-db.toml " ||
  fail "trigger-db.toml is not a conffile"
dpkg-query -W -f='${Conffiles}\n' mobike-agent | grep -q " /etc/mobike-agent/mobike-agent.toml " ||
  fail "mobike-agent.toml is not a conffile"
[ "$(stat -c %a /etc/mobike-agent/mobike-agent.toml)" = 600 ] || fail "mobike-agent.toml is not 0600"
for u in trigger-db mobike-agent; do
  unit=""
  for dir in /usr/lib/systemd/system /lib/systemd/system; do
    [ -f "$dir/$u.service" ] && unit="$dir/$u.service" && break
  done
  [ -n "$unit" ] || fail "$u.service is in no systemd unit directory"
  if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
    [ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
  fi
done
# Enabled on install (trigger-db) or not (mobike-agent), systemd running or not.
[ -L /etc/systemd/system/multi-user.target.wants/trigger-db.service ] || fail "trigger-db.service not enabled"
[ ! -e /etc/systemd/system/multi-user.target.wants/mobike-agent.service ] || fail "mobike-agent.service enabled"

echo "== purge"
files=$(dpkg-query -L trigger-db mobike-agent | sort -u)
dpkg --purge mobike-agent trigger-db >/dev/null
for p in trigger-db mobike-agent; do
  ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "installed" || fail "$p still installed"
done
left=()
while IFS= read -r f; do
  [ -n "$f" ] || continue
  # Directories the packages share with others (/usr/bin, /etc, ...) stay.
  if [ -d "$f" ] && [ ! -L "$f" ]; then
    case "$f" in /etc/trigger-db | /etc/mobike-agent | /usr/share/doc/trigger-db | /usr/share/doc/mobike-agent) left+=("$f") ;; esac
  elif [ -e "$f" ] || [ -L "$f" ]; then
    left+=("$f")
  fi
done <<<"$files"
for f in /etc/trigger-db /etc/mobike-agent /var/lib/trigger-db \
  /etc/systemd/system/multi-user.target.wants/trigger-db.service \
  /var/lib/systemd/deb-systemd-helper-enabled/trigger-db.service.dsh-also \
  /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/trigger-db.service \
  /var/lib/systemd/deb-systemd-helper-masked/trigger-db.service \
  /var/lib/systemd/deb-systemd-helper-masked/mobike-agent.service; do
  if [ -e "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
done
[ "${#left[@]}" -eq 0 ] || fail "left after purge: ${left[*]}"
! getent group trigger-db >/dev/null || fail "group trigger-db left after purge"
trap - EXIT
echo "== Debian packages: ok"
