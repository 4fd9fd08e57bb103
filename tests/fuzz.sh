#!/bin/bash
# Runs the project's cargo-fuzz targets (libFuzzer + AddressSanitizer, the
# nightly toolchain), each from its committed seeds plus the corpus kept in
# its crate's fuzz/corpus/ (not committed), then replays the resulting
# corpus input by input to report the slowest one.
#
#   tests/fuzz.sh [--runs N | --seconds S] [CRATE:TARGET ...]
#
# Seeds: CRATE/fuzz/seeds/TARGET (the IKE decoder and engine: charon's golden
# captures; mobike-agent cert: certificates and AUTH payloads of the fixed
# PKI in mobike-agent/fuzz/pki; the XFRM decoder: ipsec-backend/tests/golden).
# Default: every target below for 10 s each (the short run .ci/run makes);
# a campaign: `tests/fuzz.sh --runs 10000000 mobike-agent:engine`.
# Installs cargo-fuzz if it is missing (needs the nightly toolchain). Exits
# non-zero on a crash, a leak, a timeout (> 1 s per input) or an input
# slower than SLOW_MS (10) in the replay; the crashing input is left in the
# crate's fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=""; SECONDS_EACH=10; SLOW_MS=${SLOW_MS:-10}
TARGETS=()
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; SECONDS_EACH=""; shift 2;;
    --seconds) SECONDS_EACH=$2; RUNS=""; shift 2;;
    -h|--help) sed -n '2,17p' "$0"; exit 0;;
    *:*) TARGETS+=("$1"); shift;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2;;
  esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(
  mobike-agent:decode mobike-agent:engine mobike-agent:config mobike-agent:cert
  ipsec-backend:decode
  trigger-db:request trigger-db:add_from trigger-db:config
)

rustup run nightly rustc --version >/dev/null 2>&1 ||
  { echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$ROOT/target/fuzz}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')

# seeds CRATE TARGET: the committed seed directories of a target
seeds() {
  local d=$ROOT/$1/fuzz/seeds/$2
  [ -d "$d" ] && echo "$d"
  # the XFRM decoder's golden netlink captures
  [ "$1:$2" = ipsec-backend:decode ] && echo "$ROOT/ipsec-backend/tests/golden"
  return 0
}

summary=()
for t in "${TARGETS[@]}"; do
  crate=${t%%:*}; target=${t#*:}
  corpus=$ROOT/$crate/fuzz/corpus/$target
  mkdir -p "$corpus"
  mapfile -t seed_dirs < <(seeds "$crate" "$target")
  limit=(-runs="$RUNS")
  [ -n "$SECONDS_EACH" ] && limit=(-max_total_time="$SECONDS_EACH")
  log=$CARGO_TARGET_DIR/fuzz-$crate-$target.log
  mkdir -p "$CARGO_TARGET_DIR"
  echo "== fuzz $crate $target (${RUNS:+$RUNS runs}${SECONDS_EACH:+$SECONDS_EACH s})"
  (cd "$ROOT/$crate" && cargo +nightly fuzz build "$target") >"$log" 2>&1 || {
    echo "fuzz.sh: $crate $target does not build (log $log):" >&2; tail -n 40 "$log" >&2; exit 1; }
  start=$(date +%s)
  (cd "$ROOT/$crate" && cargo +nightly fuzz run "$target" "$corpus" "${seed_dirs[@]}" -- \
     "${limit[@]}" -timeout=1 -print_final_stats=1 -close_fd_mask=3) >"$log" 2>&1 || {
    echo "fuzz.sh: $crate $target FAILED (log $log):" >&2; tail -n 40 "$log" >&2; exit 1; }
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  # Replay: libFuzzer runs files given by name one by one and prints
  # "Executed FILE in N ms" for each (ASan build, as fuzzed). An input over
  # SLOW_MS is run again three times on its own and judged by its fastest
  # run, so a moment of scheduling delay (or the first input's one-time
  # start-up) is not taken for a slow input.
  bin=$CARGO_TARGET_DIR/$TRIPLE/release/$target
  times=$(find "$corpus" -type f -print0 | xargs -0 -r -n 500 "$bin" -close_fd_mask=3 2>&1 |
    sed -n 's/^Executed \(.*\) in \([0-9]*\) ms$/\2 \1/p' | sort -n)
  slowest=0; slow_input=""
  while read -r ms file; do
    [ -n "$ms" ] || continue
    if [ "$ms" -gt "$SLOW_MS" ]; then
      ms=$(for _ in 1 2 3; do "$bin" -close_fd_mask=3 "$file" 2>&1 |
        sed -n 's/^Executed .* in \([0-9]*\) ms$/\1/p'; done | sort -n | head -1)
    fi
    if [ "${ms:-0}" -gt "$slowest" ]; then slowest=$ms; slow_input=$file; fi
  done <<< "$times"
  n=$(find "$corpus" -type f | wc -l)
  line="$crate $target: ${execs:-?} executions in ${secs} s, ${cov:-cov ?}, corpus $n inputs, slowest replayed ${slowest} ms"
  echo "$line"; summary+=("$line")
  if [ "$slowest" -gt "$SLOW_MS" ]; then
    echo "fuzz.sh: $crate $target: input $slow_input takes ${slowest} ms (> ${SLOW_MS} ms)" >&2; exit 1
  fi
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
