# shellcheck shell=bash disable=SC2034
# Shared by the load scripts: start/stop a release engine on loopback ports with its data in
# $BENCH_DIR/data (default /tmp/orbiter-bench). Run from anywhere; build first with
#   cargo build --release --bin orbiter --bin orbiter-load
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/tmp/orbiter-bench}"
BIN="${BIN:-$REPO/target/release/orbiter}"
LOAD="$REPO/target/release/orbiter-load"
# LOAD_NICE=19: the load generator at that niceness. It shares the engine's two cores here; at
# a lower priority it takes only what the engine leaves, as a sender on another host would.
if [ -n "${LOAD_NICE:-}" ]; then LOAD="nice -n $LOAD_NICE $LOAD"; fi
mkdir -p "$BENCH_DIR/empty"
ADMIN=127.0.0.1:18080
MLLP=127.0.0.1:12575
HTTP=127.0.0.1:15001

stop_engine() {
  pkill -f "run --data $BENCH_DIR/data" || true
  while pgrep -f "run --data $BENCH_DIR/data" >/dev/null; do sleep 0.2; done
}

# start_engine CHANNELS_DIR [VAR=value...]: a fresh journal; extra variables as in $ENVX too.
start_engine() {
  local channels="$1"; shift
  stop_engine; rm -rf "$BENCH_DIR/data"
  # shellcheck disable=SC2086 # ENVX holds VAR=value pairs, split on purpose
  (cd "$REPO" && env ORBITER_ADMIN_TOKEN=bench ORBITER_MLLP_ADDR=$MLLP ORBITER_HTTP_ADDR=$HTTP \
    ORBITER_ADMIN_ADDR=$ADMIN ORBITER_CHANNELS_DIR="$channels" ORBITER_LOG=warn $ENVX "$@" \
    "$BIN" run --data "$BENCH_DIR/data" >"$BENCH_DIR/log" 2>&1 &)
  sleep 2.5
}

rss_mb() { curl -s "http://$ADMIN/metrics" | awk '/^process_resident/{printf "%.0f", $2/1048576}'; }
delivered() { curl -s "http://$ADMIN/metrics" | awk '/^orbiter_transactions_by_status\{status="delivered"\}/{print $2}'; }

# patient_encounter_channels DIR [DESTINATION_KIND]: a scripts dir and a channels dir under DIR
# with one channel running engine/benches/load/patient_encounter.rhai (the ~100-line Patient +
# Encounter transform) on ADT^A01/A04/A08, optionally into a destination ("cdr").
patient_encounter_channels() {
  local dir="$1" destination="${2:-}"
  rm -rf "$dir" && mkdir -p "$dir/channels" "$dir/scripts"
  ln -s "$REPO/scripts/lib" "$dir/scripts/lib"
  cp "$REPO/engine/benches/load/patient_encounter.rhai" "$dir/scripts/"
  printf '%s\n' 'name = "patient-encounter"' '[source]' 'kind = "mllp"' '[match]' \
    'message_type = ["ADT^A01", "ADT^A04", "ADT^A08"]' '[transform]' \
    'script = "scripts/patient_encounter.rhai"' >"$dir/channels/pe.toml"
  if [ -n "$destination" ]; then
    printf '%s\n' '[[destination]]' "kind = \"$destination\"" >>"$dir/channels/pe.toml"
  fi
}
