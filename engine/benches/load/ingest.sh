#!/bin/bash
# Ingest only (no channels): MLLP 3x16 and 3x64 connections, MLLP paced at 5,000/s, HTTP 3x16
# and 3x64; then resident memory. One engine and journal for all runs, as in BENCHMARKS.md.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
start_engine "$BENCH_DIR/empty"
uptime
for _ in 1 2 3; do echo "mllp16 $($LOAD --to $MLLP -c 16 -d 8 | tail -1)"; done
for _ in 1 2 3; do echo "mllp64 $($LOAD --to $MLLP -c 64 -d 8 | tail -1)"; done
for _ in 1 2 3; do echo "paced5000 $($LOAD --to $MLLP -c 16 -d 8 --rate 5000 | tail -1)"; done
for _ in 1 2 3; do echo "http16 $($LOAD --to http://$HTTP/hl7v2 -c 16 -d 8 | tail -1)"; done
for _ in 1 2 3; do echo "http64 $($LOAD --to http://$HTTP/hl7v2 -c 64 -d 8 | tail -1)"; done
echo "resident $(rss_mb) MB"
stop_engine
uptime
