#!/usr/bin/env bash
# Run a static Linux x86_64 test binary inside a qemu VM whose (Debian) kernel has real
# SocketCAN: can.ko, can-raw.ko, vcan.ko loaded and vcan0, vcan1 up (MTU 72, CAN FD capable).
#   scripts/qemu-vcan/run.sh <static-test-binary> [args...]
# Env: QEMU_VCAN_CACHE (kernel cache dir, default target/qemu-vcan), QEMU_VCAN_TIMEOUT
# (seconds, default 120), QEMU_VCAN_ENV ("K=V K2=V2" exported in the guest; TELEMATICS_VCAN=vcan0
# and TELEMATICS_VCAN2=vcan1 are always set). Prints the guest console; exits 0 only on the QEMU-VCAN-PASS marker.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 <static-test-binary> [args...]" >&2; exit 2; }
bin="$(realpath "$1")"; shift
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${QEMU_VCAN_CACHE:-$root/target/qemu-vcan}"
timeout_s="${QEMU_VCAN_TIMEOUT:-120}"
for tool in qemu-system-x86_64 busybox; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y qemu-system-x86 busybox-static" >&2; exit 2; }
done
file -b "$bin" | grep -q "statically linked\|static-pie" || echo "warning: $bin does not look static" >&2

# 1. Kernel + CAN modules from the Debian package (downloaded once).
mkdir -p "$cache"
if ! [ -f "$cache/vmlinuz" ] || ! [ -f "$cache/can-dev.ko" ]; then
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  ( cd "$cache" && apt-get download "$pkg" && dpkg-deb -x "$pkg"_*.deb x )
  cp "$cache"/x/boot/vmlinuz-* "$cache/vmlinuz"
  for m in net/can/can.ko net/can/can-raw.ko drivers/net/can/dev/can-dev.ko drivers/net/can/vcan.ko; do
    f=$(find "$cache"/x/lib/modules -path "*/kernel/$m*" | head -n1)
    case "$f" in *.xz) xz -dc "$f" > "$cache/$(basename "$m")";; *.zst) zstd -dc "$f" > "$cache/$(basename "$m")";; *) cp "$f" "$cache/";; esac
  done
  rm -rf "$cache/x" "$cache"/*.deb
fi

# 2. initramfs: busybox + modules + test binary + /init.
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
ir="$work/root"; mkdir -p "$ir"/{bin,lib,proc,sys,dev,tmp}
cp "$(command -v busybox)" "$ir/bin/busybox"
cp "$cache"/can.ko "$cache"/can-raw.ko "$cache"/can-dev.ko "$cache"/vcan.ko "$ir/lib/"
cp "$bin" "$ir/test"
{ printf 'export TELEMATICS_VCAN=vcan0 TELEMATICS_VCAN2=vcan1 %s\n' "${QEMU_VCAN_ENV:-}"
  printf 'set --'; for a in "$@"; do printf " '%s'" "${a//\'/\'\\\'\'}"; done; echo; } > "$ir/args"
cat > "$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
insmod /lib/can.ko && insmod /lib/can-raw.ko && insmod /lib/can-dev.ko && insmod /lib/vcan.ko || echo "QEMU-VCAN-FAIL insmod"
for i in vcan0 vcan1; do
  ip link add dev $i type vcan && ip link set $i mtu 72 && ip link set up $i || echo "QEMU-VCAN-FAIL $i"
done
echo "QEMU-VCAN-START uptime=$(cut -d' ' -f1 /proc/uptime)"
. /args
cd /tmp && /test "$@"; rc=$?
echo "QEMU-VCAN-END rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ "$rc" = 0 ]; then echo QEMU-VCAN-PASS; else echo QEMU-VCAN-FAIL; fi
poweroff -f
INIT
chmod +x "$ir/init"
( cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz" )

# 3. Boot (TCG: no KVM needed). panic=-1 reboots on panic and -no-reboot then exits.
log="$work/console.log"
start=$(date +%s.%N)
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot \
  -kernel "$cache/vmlinuz" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" </dev/null 2>&1 | tee "$log" || true
end=$(date +%s.%N)
echo "qemu-vcan: host wall time $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s"
if grep -q '^QEMU-VCAN-FAIL' "$log" || ! grep -q '^QEMU-VCAN-PASS' "$log"; then
  echo "qemu-vcan: FAIL" >&2; exit 1
fi
echo "qemu-vcan: PASS"
