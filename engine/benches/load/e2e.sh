#!/bin/bash
# End to end with the repository's default channels (full ADT mapping into the embedded CDR):
# three runs on fresh data, each 10 s of MLLP over 16 connections, then 10 s of draining.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
uptime
for _ in 1 2 3; do
  start_engine "$REPO/channels"
  echo "e2e $($LOAD --to $MLLP -c 16 -d 10 | tail -1)"
  d1=$(delivered); sleep 10; d2=$(delivered)
  echo "  delivered during the load: $d1, drain $(( (d2 - d1) / 10 ))/s, resident $(rss_mb) MB"
done
stop_engine
