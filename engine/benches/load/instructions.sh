#!/bin/bash
# Instructions per message across the whole engine (every thread, user space), counted by
# callgrind, which the machine's load does not change: the A/B figure for pipeline changes
# whose effect is smaller than this VM's timing noise. Runs the ~100-line Patient + Encounter
# channel, no destination (or `instructions.sh cdr`: into the embedded CDR), at 25 msg/s over
# 4 MLLP connections for 20 s, counting from a zeroed counter after a warm-up. Per-batch costs
# (group commits of ~1 message at this rate) weigh more here than at 5,000/s.
# Needs valgrind (callgrind_control). Usage: [BIN=...] instructions.sh [cdr]
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
command -v callgrind_control >/dev/null || { echo "needs valgrind" >&2; exit 2; }
out="$BENCH_DIR/callgrind"; rm -rf "$out"; mkdir -p "$out"
wrapper="$BENCH_DIR/under-callgrind.sh"
printf '#!/bin/bash\nexec valgrind --tool=callgrind --callgrind-out-file=%s/out.%%p "%s" "$@"\n' \
  "$out" "$BIN" >"$wrapper"
chmod +x "$wrapper"
dir="$BENCH_DIR/instructions"
patient_encounter_channels "$dir" "${1:-}"
BIN="$wrapper" start_engine "$dir/channels" ORBITER_SCRIPTS_DIR="$dir/scripts"
sleep 15 # valgrind's start-up, the library compiled
pid=$(pgrep -f "valgrind.*run --data $BENCH_DIR/data" | head -1)
# Warm-up (first-use costs), with ids of its own: the counted messages are all new patients.
$LOAD --to "$MLLP" -c 4 -d 4 --rate 25 --id-prefix W >/dev/null
sleep 5
processed() { curl -s "http://$ADMIN/metrics" | awk '/^orbiter_processing_seconds_count/{print $2}'; }
callgrind_control -z "$pid" >/dev/null 2>&1
before=$(processed)
$LOAD --to "$MLLP" -c 4 -d 20 --rate 25 >/dev/null
sleep 8
after=$(processed)
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 1
ir=$(awk '/^summary:/{print $2}' "$out/out.$pid.1")
echo "messages $((after - before)) instructions $ir per message $((ir / (after - before)))"
echo "profile: $out/out.$pid.1 (callgrind_annotate --inclusive=yes)"
stop_engine
