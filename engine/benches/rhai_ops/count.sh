#!/bin/bash
# What one Rhai operation costs in this engine's sandbox, in instructions (callgrind, so the
# machine's load does not change it). Each script does one kind of operation 1,000 times on
# issue 7's ADT^A01; `base.rhai` does nothing else, and `loop.rhai` only the loop. A figure is
# (script - base) / (15 runs x 1,000), less the loop's own cost for every script but `loop`.
# Build first: cargo build --release -p orbiter --example script_cpu
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$here/../../.."
bin="${BIN:-$repo/target/release/examples/script_cpu}"
out="$(mktemp -d)"
count() {
  SEGMENTS=issue7 valgrind --tool=callgrind --callgrind-out-file="$out/$1.cg" "$bin" \
    "$here/$1.rhai" "$repo/fixtures/hl7v2/adt_a01_full.hl7" 2 2>&1 | awk '/Collected/{print $4}'
}
base=$(count base)
loop=$(count loop)
echo "loop iteration: $(((loop - base) / 15000)) instructions"
for s in call call_msg field reps hn update; do
  echo "$s: $((($(count "$s") - loop) / 15000)) instructions"
done
rm -rf "$out"
