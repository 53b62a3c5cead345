#!/bin/bash
# End to end into the embedded CDR: three runs on fresh data, each 10 s of MLLP over 16
# connections, then 10 s of draining. Usage: e2e.sh [patient-encounter]
#   default: the repository's channels (the full ADT mapping, ~11 resources a message);
#   patient-encounter: issue 6's workload, a ~100-line Patient + Encounter transform.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
channels="$REPO/channels"
extra=()
if [ "${1:-}" = patient-encounter ]; then
  patient_encounter_channels "$BENCH_DIR/e2e-pe" cdr
  channels="$BENCH_DIR/e2e-pe/channels"
  extra=(ORBITER_SCRIPTS_DIR="$BENCH_DIR/e2e-pe/scripts")
fi
uptime
for _ in 1 2 3; do
  start_engine "$channels" "${extra[@]}"
  echo "e2e $($LOAD --to $MLLP -c 16 -d 10 | tail -1)"
  d1=$(delivered); sleep 10; d2=$(delivered)
  echo "  delivered during the load: $d1, drain $(( (d2 - d1) / 10 ))/s, resident $(rss_mb) MB"
done
stop_engine
