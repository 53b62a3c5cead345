#!/bin/bash
# Issue 6 as it names it: ADT^A01 over MLLP at a steady rate into the embedded CDR (the ~100-line
# Patient + Encounter channel, on-commit ACKs), and how much of it the CDR has by the end.
# 16 connections paced at RATE msg/s in all (one message in flight each) for DUR seconds after
# the generator's 1-s warm-up; then the transactions delivered by the end of the load, and in
# the 5 s after it. Sustained means delivered by the end ≈ sent (acked + the warm-up's).
# Usage: [BIN=...] [RATE=5000] [DUR=20] sustain.sh [VAR=value ...] (extra engine env).
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
patient_encounter_channels "$BENCH_DIR/sustain" cdr
start_engine "$BENCH_DIR/sustain/channels" ORBITER_SCRIPTS_DIR="$BENCH_DIR/sustain/scripts" "$@"
sent=$($LOAD --to "$MLLP" -c 16 -d "${DUR:-20}" --rate "${RATE:-5000}" | tail -1)
d1=$(delivered)
sleep 5
d2=$(delivered)
echo "rate=${RATE:-5000} $sent delivered_by_end=$d1 next_5s=$((d2 - d1))"
stop_engine
