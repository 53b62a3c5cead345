#!/bin/bash
# A CSV file POSTed to a channel that only journals rows; peak resident memory sampled every
# 0.25 s. Usage: [TRANSFORM=1] csv.sh FILE [VAR=value...]
#   (make one: python3 engine/benches/gen_lab_csv.py F 100)
# TRANSFORM=1: channels/csv-lab.toml's channel instead (its Rhai script on every row, no
# destination), and the time until every row is processed besides the time to the 202.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
file="$1"; shift
rm -rf "$BENCH_DIR/csv-channel" && mkdir -p "$BENCH_DIR/csv-channel"
if [ -n "${TRANSFORM:-}" ]; then
  sed '/^\[\[destination\]\]/,/^kind = "cdr"/d' "$REPO/channels/csv-lab.toml" >"$BENCH_DIR/csv-channel/lab.toml"
  set -- ORBITER_SCRIPTS_DIR="$REPO/scripts" "$@"
else
  printf 'name = "lab"\n[source]\nkind = "http"\npath = "/csv/lab"\n' >"$BENCH_DIR/csv-channel/lab.toml"
fi
start_engine "$BENCH_DIR/csv-channel" ORBITER_HTTP_MAX_BODY_BYTES=209715200 "$@"
pid=$(pgrep -f "run --data $BENCH_DIR/data")
( while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/{print $2}' /proc/"$pid"/status 2>/dev/null; sleep 0.25; done >"$BENCH_DIR/rss.txt" ) &
started=$(date +%s.%N)
curl -s -o /dev/null -w "%{http_code} %{time_total}s " -H 'Content-Type: text/csv' \
  --data-binary @"$file" "http://$HTTP/csv/lab"
if [ -n "${TRANSFORM:-}" ]; then
  pending() {
    curl -s "http://$ADMIN/metrics" |
      awk '/^orbiter_transactions_by_status\{status="(received|processing)"\}/{n += $2} END {print n + 0}'
  }
  while [ "$(pending)" != 0 ]; do sleep 0.2; done
  echo -n "every row processed after $(echo "$(date +%s.%N) - $started" | bc)s "
fi
sleep 1
echo "peak $(sort -n "$BENCH_DIR/rss.txt" | tail -1) kB [$*]"
stop_engine
