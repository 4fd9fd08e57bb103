#!/bin/bash
# Guest scenario (tests/vm/run.sh ipsec-bench [xfrm-bench args]): runs
# ipsec-backend's benchmark on Debian's kernel (real ESP) and writes the
# tables to $VM_OUT/ipsec-bench.md as well as stdout.
set -euo pipefail
for m in xfrm_user esp4 esp6 veth dummy gcm ghash_generic authenc seqiv; do
  modprobe "$m" 2>/dev/null || true
done
"$BENCH_DIR/xfrm-bench" "$@" | tee "$VM_OUT/ipsec-bench.md"
