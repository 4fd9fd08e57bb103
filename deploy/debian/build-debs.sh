#!/usr/bin/env bash
# deploy/debian/build-debs.sh: builds the Debian packages trigger-db and
# mobike-agent (cargo-deb; `cargo install cargo-deb --locked` once).
# One release build of the four binaries and of tools/gen-assets, which then
# writes the man pages and shell completions into
# $TARGET/release/assets (the path the crates' [package.metadata.deb]
# assets name); then `cargo deb --no-build` for each package. Prints the
# paths of the two .debs, one a line, on stdout (everything else goes to
# stderr).
#
#   deploy/debian/build-debs.sh         # honours CARGO_TARGET_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v cargo-deb >/dev/null || {
  echo "build-debs.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 2
}
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

echo "== release build" >&2
cargo build --release --locked -p trigger-db -p mobike-agent -p ipsec-backend -p gen-assets --bins >&2

echo "== man pages and completions" >&2
rm -rf "$target/release/assets"
"$target/release/gen-assets" "$target/release/assets" >&2
# cargo-deb compresses man pages only outside the target dir.
gzip -9 -n "$target/release/assets/man/"*.1

for p in trigger-db mobike-agent; do
  echo "== cargo deb -p $p" >&2
  # cargo-deb prints the path of the package it wrote. --strip: the release
  # profile keeps line tables (debug = 1) for benchmarks and backtraces;
  # the packages do without.
  cargo deb --locked -p "$p" --no-build --strip --output "$target/debian" | tail -n 1
done
