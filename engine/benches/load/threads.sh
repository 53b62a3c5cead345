#!/bin/bash
# Where the engine's CPU goes, by thread, and how much of it is the kernel's.
#   threads.sh          latency.sh's load (RATE, default 5,000/s, 16 MLLP connections, no
#                       destination) for 8 s: user and system CPU per message for each thread,
#                       and, when `perf` may count them, syscalls and context switches per
#                       message.
#   threads.sh drain    e2e.sh's load into the embedded CDR for 10 s, then 8 s of draining
#                       (the load generator idle): the drain rate and the cores each thread
#                       group used. Below 2 cores, something other than CPU holds the drain.
# Usage: [BIN=...] [RATE=...] threads.sh [drain]
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
dir="$BENCH_DIR/threads"
patient_encounter_channels "$dir" "$([ "${1:-}" = drain ] && echo cdr)"
start_engine "$dir/channels" ORBITER_SCRIPTS_DIR="$dir/scripts"
pid=$(pgrep -f "run --data $BENCH_DIR/data" | head -1)
# tid, name, user and system ticks (1/100 s) of each thread.
snap() {
  for t in /proc/"$pid"/task/*; do
    echo "$(basename "$t") $(tr ' ' _ <"$t/comm") $(awk '{print $14, $15}' "$t/stat")"
  done
}
processed() { curl -s "http://$ADMIN/metrics" | awk '/^orbiter_processing_seconds_count/{print $2}'; }
if [ "${1:-}" = drain ]; then
  echo "load: $($LOAD --to "$MLLP" -c 16 -d 10 | tail -1)"
  sleep 1
  d1=$(delivered); snap >"$dir/a"; sleep 8; snap >"$dir/b"; d2=$(delivered)
  echo "drain $(((d2 - d1) / 8))/s; cores by thread group over the 8 s:"
  join "$dir/a" "$dir/b" | awk '{c[$2] += ($6 - $3 + $7 - $4) / 800; s[$2] += ($7 - $4) / 800; n[$2]++; t += ($6 - $3 + $7 - $4) / 800}
    END {for (k in c) if (c[k] >= 0.01) printf "  %-20s x%-3d %.2f cores (system %.2f)\n", k, n[k], c[k], s[k]; printf "  total %.2f cores\n", t}'
else
  $LOAD --to "$MLLP" -c 16 -d 2 --rate 2000 >/dev/null # warm-up
  sleep 1
  n0=$(processed); snap >"$dir/a"
  rm -f "$dir/perf"
  # Counted only where perf may read these tracepoints (root, or perf_event_paranoid <= -1).
  perf stat -e raw_syscalls:sys_enter,context-switches -p "$pid" -o "$dir/perf" -- sleep 9 \
    >/dev/null 2>&1 &
  echo "load: $($LOAD --to "$MLLP" -c 16 -d 8 --rate "${RATE:-5000}" | tail -1)"
  wait
  snap >"$dir/b"; n=$(($(processed) - n0))
  echo "µs of CPU per message, by thread ($n messages):"
  join "$dir/a" "$dir/b" | awk -v n="$n" '{u = $6 - $3; s = $7 - $4; if (u + s > 5) printf "  %-20s user %4.0f system %4.0f\n", $2, u * 10000 / n, s * 10000 / n; tu += u; ts += s}
    END {printf "  total                user %4.0f system %4.0f\n", tu * 10000 / n, ts * 10000 / n}'
  if grep -q raw_syscalls "$dir/perf" 2>/dev/null; then
    awk -v n="$n" '/raw_syscalls|context-switches/ {gsub(",", "", $1); if ($1 ~ /^[0-9]+$/) printf "%s per message: %.2f\n", $2, $1 / n}' "$dir/perf"
  fi
fi
stop_engine
