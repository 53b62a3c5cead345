#!/bin/bash
# A CSV file POSTed to a channel that only journals rows; peak resident memory sampled every
# 0.25 s. Usage: csv.sh FILE [VAR=value...]   (make one: python3 engine/benches/gen_lab_csv.py F 100)
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
file="$1"; shift
mkdir -p "$BENCH_DIR/csv-channel"
printf 'name = "lab"\n[source]\nkind = "http"\npath = "/csv/lab"\n' >"$BENCH_DIR/csv-channel/lab.toml"
start_engine "$BENCH_DIR/csv-channel" ORBITER_HTTP_MAX_BODY_BYTES=209715200 "$@"
pid=$(pgrep -f "run --data $BENCH_DIR/data")
( while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/{print $2}' /proc/"$pid"/status 2>/dev/null; sleep 0.25; done >"$BENCH_DIR/rss.txt" ) &
curl -s -o /dev/null -w "%{http_code} %{time_total}s " -H 'Content-Type: text/csv' \
  --data-binary @"$file" "http://$HTTP/csv/lab"
sleep 1
echo "peak $(sort -n "$BENCH_DIR/rss.txt" | tail -1) kB [$*]"
stop_engine
