#!/usr/bin/env bash
# Real SocketCAN end to end for the daemon's CAN side: builds the static (musl) test binaries of
# telematics-canio (tests/vcan.rs) and telematicsd (tests/vcan.rs: the daemon's socketcan
# connector + VehicleModel + DBC-encoded actuation against a body controller on vcan0, and two
# [[can.bus]] on vcan0/vcan1 with the kernel filter: unused ids never reach the daemon), boots
# the qemu VM of run.sh for each, and fails unless both pass. Installs what it needs (CI).
#   scripts/qemu-vcan/daemon-test.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v busybox >/dev/null || need+=(busybox-static)
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  else sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; fi
fi
rustup target list --installed | grep -q x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
export CC_x86_64_unknown_linux_musl=musl-gcc
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
bins=()
for pkg in telematics-canio telematicsd; do
  out=$(cargo test --locked -p "$pkg" --test vcan --target x86_64-unknown-linux-musl --no-run \
        --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("target",{}).get("name")=="vcan" and m.get("executable"):
        print(m["executable"])' | tail -n1)
  [ -n "$out" ] || { echo "could not build the vcan test of $pkg" >&2; exit 1; }
  bins+=("$out")
done
rc=0
for b in "${bins[@]}"; do
  echo "=== qemu vcan: $(basename "$b")"
  start=$(date +%s)
  if scripts/qemu-vcan/run.sh "$b" --test-threads=1 --nocapture; then
    echo "=== PASS $(basename "$b") in $(( $(date +%s) - start )) s"
  else
    echo "=== FAIL $(basename "$b")"; rc=1
  fi
done
exit $rc
