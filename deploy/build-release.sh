#!/usr/bin/env bash
# Build the release `orbiter` binary for one Linux architecture, natively or cross.
#
#   deploy/build-release.sh TARGETARCH OUTDIR
#
# TARGETARCH is Docker's name for the architecture (amd64 | arm64). When it differs from the
# machine's own architecture, Debian's cross gcc for it must be installed
# (gcc-aarch64-linux-gnu + libc6-dev-arm64-cross, or gcc-x86-64-linux-gnu + libc6-dev-amd64-cross)
# and the Rust target must be installable (`rustup target add`, a download).
#
# The image build (deploy/Dockerfile) and deploy/ci-check.sh both call this script, so CI
# exercises the exact cross-compilation recipe that the image uses.
#
# The binary is copied to OUTDIR/orbiter. Set ORBITER_BUILD_STRIP=0 to keep symbols
# (the workspace profile keeps line tables for profiling; the image does not need them).
# ORBITER_BUILD_PROFILE picks the Cargo profile: `dist` (the default, what the image ships:
# release with fat LTO, 5-9% fewer instructions a message, a much slower build) or `release`
# (what CI's arm64 step uses, to stay within its time).
set -euo pipefail

targetarch="${1:?usage: build-release.sh TARGETARCH OUTDIR}"
outdir="${2:?usage: build-release.sh TARGETARCH OUTDIR}"

case "$targetarch" in
  amd64 | x86_64) gnu=x86_64 ;;
  arm64 | aarch64) gnu=aarch64 ;;
  *) echo "build-release.sh: unsupported architecture '$targetarch' (amd64 or arm64)" >&2; exit 2 ;;
esac
target="${gnu}-unknown-linux-gnu"
host_gnu="$(uname -m)"

if [[ "$gnu" != "$host_gnu" ]]; then
  linker="${gnu}-linux-gnu-gcc"
  if ! command -v "$linker" >/dev/null 2>&1; then
    echo "build-release.sh: cross compiler $linker not found (apt-get install gcc-${gnu//_/-}-linux-gnu)" >&2
    exit 3
  fi
  if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
  fi
  # Linker for rustc, C compiler and archiver for the -sys crates (aws-lc-sys, zstd, ...).
  tvar="${target//-/_}"
  export "CARGO_TARGET_${tvar^^}_LINKER=$linker"
  export "CC_${tvar}=$linker"
  export "AR_${tvar}=${gnu}-linux-gnu-ar"
fi

profile="${ORBITER_BUILD_PROFILE:-dist}"
case "$profile" in
  dist | release) ;;
  *) echo "build-release.sh: ORBITER_BUILD_PROFILE must be dist or release, not '$profile'" >&2; exit 2 ;;
esac
if [[ "${ORBITER_BUILD_STRIP:-1}" == 1 ]]; then
  export CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
  export CARGO_PROFILE_DIST_DEBUG=0 CARGO_PROFILE_DIST_STRIP=symbols
fi

cargo build --profile "$profile" --locked -p orbiter --bin orbiter --target "$target"

target_dir="${CARGO_TARGET_DIR:-target}"
install -D -m 0755 "$target_dir/$target/$profile/orbiter" "$outdir/orbiter"
echo "build-release.sh: built $outdir/orbiter for $target"
