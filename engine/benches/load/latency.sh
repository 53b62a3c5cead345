#!/bin/bash
# Issue 5: what routing, a ~100-line Patient + Encounter transform and the journal write of the
# outcome add to a message, at a steady 5,000 msg/s over 16 MLLP connections. The channel has no
# destination (the transform's Bundle is journaled as a step), so this is the pipeline's own
# cost. Prints the orbiter_processing_seconds histogram (route to journaled outcome) after three
# 8-second runs on one engine. RATE=2000 latency.sh runs at another rate; ALIGNED=1 paces the
# connections in step (bursts of 16), as orbiter-load did before it spread them.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
dir="$BENCH_DIR/latency"
patient_encounter_channels "$dir"
start_engine "$dir/channels" ORBITER_SCRIPTS_DIR="$dir/scripts"
rate="${RATE:-5000}"
aligned=(); [ -n "${ALIGNED:-}" ] && aligned=(--aligned)
for _ in 1 2 3; do echo "paced$rate $($LOAD --to "$MLLP" -c 16 -d 8 --rate "$rate" "${aligned[@]}" | tail -1)"; done
sleep 2
curl -s "http://$ADMIN/metrics" | grep -E '^orbiter_processing_seconds_(bucket|count)|^orbiter_transactions_by_status'
stop_engine
