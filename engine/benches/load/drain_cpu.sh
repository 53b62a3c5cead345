#!/bin/bash
# Issue 6: where a message's CPU goes while the engine drains a backlog into the embedded CDR.
# A 10-second burst over 16 MLLP connections (the Patient + Encounter channel, destination
# `cdr`), then the CPU each thread group used over 8 seconds of draining (user and system time
# from /proc/<pid>/task/*/stat, context switches from .../status), divided by the transactions
# delivered meanwhile. Usage: [BIN=...] [DUR=10] drain_cpu.sh [VAR=value ...] (extra engine env).
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
patient_encounter_channels "$BENCH_DIR/drain" cdr
start_engine "$BENCH_DIR/drain/channels" ORBITER_SCRIPTS_DIR="$BENCH_DIR/drain/scripts" "$@"
pid=$(pgrep -f "run --data $BENCH_DIR/data" | head -1)
echo "burst $($LOAD --to "$MLLP" -c 16 -d "${DUR:-10}" | tail -1)"
# One line per thread group (sled-io-N as one): name, user ticks, system ticks, switches.
snapshot() {
  for t in /proc/"$pid"/task/*; do
    name=$(cat "$t/comm"); name=${name%%-[0-9]*}
    ticks=$(sed 's/.*) //' "$t/stat" | awk '{print $12, $13}')
    switches=$(awk '/ctxt_switches/{s+=$2} END {print s}' "$t/status")
    echo "$name $ticks $switches"
  done | awk '{u[$1]+=$2; s[$1]+=$3; c[$1]+=$4} END {for (k in u) print k, u[k], s[k], c[k]}' | sort
}
d1=$(delivered); snapshot >"$BENCH_DIR/drain/before"
sleep 8
d2=$(delivered); snapshot >"$BENCH_DIR/drain/after"
n=$((d2 - d1))
echo "drain $((n / 8)) msg/s ($n delivered in 8 s), resident $(rss_mb) MB"
tick_us=$((1000000 / $(getconf CLK_TCK)))
join "$BENCH_DIR/drain/before" "$BENCH_DIR/drain/after" | awk -v n="$n" -v t="$tick_us" '
  { u = ($5 - $2) * t / n; s = ($6 - $3) * t / n; c = ($7 - $4) / n
    if (u + s + c == 0) next
    U += u; S += s; C += c
    printf "%-16s user %6.1f  sys %6.1f us/msg  switches %4.1f/msg\n", $1, u, s, c }
  END { printf "%-16s user %6.1f  sys %6.1f us/msg  switches %4.1f/msg\n", "all", U, S, C }'
stop_engine
