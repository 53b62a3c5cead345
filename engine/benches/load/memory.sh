#!/bin/bash
# Resident memory idle and after each of four 8-second MLLP runs over 16 connections (ingest
# only, fresh journal). BIN=... compares another build.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
start_engine "$BENCH_DIR/empty"
echo "idle $(rss_mb) MB"
for _ in 1 2 3 4; do
  r=$($LOAD --to $MLLP -c 16 -d 8 | tail -1 | awk '{print $1, $2}')
  echo "$r rss $(rss_mb) MB"
done
stop_engine
