#!/usr/bin/env bash
# Stripped sizes of the shipped binaries (release profile: opt-level z, fat LTO, one codegen
# unit, panic = "abort", strip) per target, and the goals of issue 14: the daemon below
# 3.5 MiB on aarch64, telematicsctl (shipped: no `sim`/`demo` features) no larger than the
# daemon on every target. Exits 1 when a goal is missed. Cross toolchains as in
# scripts/cross-test.sh (Debian's cross gcc; linkers in .cargo/config.toml).
#
#   bash scripts/binary-sizes.sh                      # x86_64 aarch64 armv7
#   bash scripts/binary-sizes.sh aarch64              # some of them
#
# scripts/cross-test.sh runs it for aarch64 and armv7 at its end (CI log; BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A TRIPLE=([x86_64]=x86_64-unknown-linux-gnu [aarch64]=aarch64-unknown-linux-gnu
                   [armv7]=armv7-unknown-linux-gnueabihf)
declare -A GCC=([aarch64]=aarch64-linux-gnu-gcc [armv7]=arm-linux-gnueabihf-gcc)
declare -A PKGS=([aarch64]="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
                 [armv7]="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross")
# The aarch64 daemon's goal: below 3.5 MiB.
DAEMON_MAX_AARCH64=$((7 * 1024 * 1024 / 2))

arches=("$@")
if [ ${#arches[@]} -eq 0 ]; then arches=(x86_64 aarch64 armv7); fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
need_apt=()
targets=()
for a in "${arches[@]}"; do
  [ -n "${TRIPLE[$a]:-}" ] || { echo "unknown target '$a' (x86_64 | aarch64 | armv7)" >&2; exit 2; }
  if [ -n "${GCC[$a]:-}" ]; then
    command -v "${GCC[$a]}" >/dev/null 2>&1 || need_apt+=(${PKGS[$a]})
  fi
  rustup target list --installed | grep -qx "${TRIPLE[$a]}" || rustup target add "${TRIPLE[$a]}"
  targets+=(--target "${TRIPLE[$a]}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

cargo build --release --locked -p telematicsd -p telematicsctl "${targets[@]}"

dir=${CARGO_TARGET_DIR:-target}
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
rc=0
echo "| Target | telematicsd | telematicsctl |"
echo "|---|---|---|"
for a in "${arches[@]}"; do
  d=$(stat -c %s "$dir/${TRIPLE[$a]}/release/telematicsd")
  c=$(stat -c %s "$dir/${TRIPLE[$a]}/release/telematicsctl")
  echo "| $a | $d B ($(mib "$d")) | $c B ($(mib "$c")) |"
  if [ "$c" -gt "$d" ]; then
    echo "FAIL $a: telematicsctl ($c B) is larger than telematicsd ($d B)" >&2; rc=1
  fi
  if [ "$a" = aarch64 ] && [ "$d" -ge "$DAEMON_MAX_AARCH64" ]; then
    echo "FAIL aarch64: telematicsd is $d B, goal below $DAEMON_MAX_AARCH64 B (3.5 MiB)" >&2; rc=1
  fi
done
exit "$rc"
