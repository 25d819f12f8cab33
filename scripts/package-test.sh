#!/usr/bin/env bash
# Builds the Debian packages (cargo-deb), installs them on this machine, checks them as a new
# operator would, and purges them again (the CI machine is reused). Needs root (dpkg -i) on
# Debian 12; systemd need not run as PID 1 (systemd-analyze verify works offline).
#
# Checks: files and conffile in place; user `telematicsd` and group `telematics` created by
# sysusers.d; the tmpfiles.d entry creates the directories with their owners and modes;
# `systemd-analyze verify` accepts the installed unit; the shipped example config passes
# `check-config --no-files`; the PKI made with the openssl commands of docs/deploy.md (run
# verbatim from the document) and installed as documented passes a full `check-config` of the
# UNMODIFIED example config as the service user; the installed daemon connects to a mosquitto
# using that PKI ("MQTT connected"), and refuses a v1 broker certificate made with plain
# `openssl x509 -req` (UnsupportedCertVersion); `man telematicsctl` renders; completions load.
#
# Profile: ci-package (release without LTO, 16 codegen units) unless PACKAGE_PROFILE is set
# (PACKAGE_PROFILE=release builds what is shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
PROFILE=${PACKAGE_PROFILE:-ci-package}
CARGO_DEB_VERSION=3.8.0
VIN=1M8GDM9AXKP042788
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

step() { echo "-- package-test [$(($(date +%s) - START)) s] $*"; }
fail() {
  echo "package-test: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
if dpkg-query -W -f='${Status}' telematicsd 2>/dev/null | grep -q "ok installed"; then
  fail "a telematicsd package is already installed here; this script would purge it"
fi

had_user=0; getent passwd telematicsd >/dev/null && had_user=1
had_group=0; getent group telematics >/dev/null && had_group=1
had_etc=0; [ -e /etc/telematicsd ] && had_etc=1
had_state=0; [ -e /var/lib/telematicsd ] && had_state=1
had_run=0; [ -e /run/telematicsd ] && had_run=1
W=$(mktemp -d /tmp/package-test.XXXXXX)
PIDS=()

cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  dpkg --purge telematicsctl telematicsd >/dev/null 2>&1 || true
  rm -f /etc/telematicsd/pki/ca.pem /etc/telematicsd/pki/client.pem \
    /etc/telematicsd/pki/client.key /etc/telematicsd/backend.pub
  if [ "$had_etc" = 0 ]; then rmdir /etc/telematicsd/pki /etc/telematicsd 2>/dev/null || true; fi
  if [ "$had_state" = 0 ]; then rm -rf /var/lib/telematicsd; fi
  if [ "$had_run" = 0 ]; then rm -rf /run/telematicsd; fi
  if [ "$had_user" = 0 ] && getent passwd telematicsd >/dev/null; then userdel telematicsd || true; fi
  if [ "$had_user" = 0 ] && getent group telematicsd >/dev/null; then groupdel telematicsd || true; fi
  if [ "$had_group" = 0 ] && getent group telematics >/dev/null; then groupdel telematics || true; fi
  rm -rf "$W"
  echo "-- package-test: wall time $(($(date +%s) - START)) s (exit $rc)"
}
trap cleanup EXIT

# The fenced block between <!-- package-test:NAME begin/end --> in docs/deploy.md.
doc_block() {
  awk -v b="<!-- package-test:$1 begin -->" -v e="<!-- package-test:$1 end -->" \
    '$0 == b {f = 1; next} $0 == e {f = 0} f' docs/deploy.md | sed '/^```/d'
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for FILE PATTERN SECONDS: true once FILE contains PATTERN.
wait_for() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

step "cargo-deb $CARGO_DEB_VERSION"
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

step "build ($PROFILE): telematicsd, telematicsctl, man pages and completions"
cargo build --profile "$PROFILE" --locked -p telematicsd -p telematicsctl -p telematics-xtask
rm -rf packaging/generated
"$CARGO_TARGET_DIR/$PROFILE/telematics-xtask" packaging/generated >/dev/null

step "cargo deb"
cargo deb -p telematicsd --no-build --profile "$PROFILE" --output "$W/deb"
cargo deb -p telematicsctl --no-build --profile "$PROFILE" --output "$W/deb"
ls -l "$W"/deb/*.deb
dpkg-deb -f "$W"/deb/telematicsd_*.deb Package Version Depends Recommends

step "dpkg -i"
dpkg -i "$W"/deb/telematicsd_*.deb "$W"/deb/telematicsctl_*.deb

step "installed files"
for f in /usr/bin/telematicsd /usr/bin/telematicsctl \
  /usr/lib/systemd/system/telematicsd.service \
  /usr/lib/sysusers.d/telematicsd.conf /usr/lib/tmpfiles.d/telematicsd.conf \
  /etc/telematicsd/telematicsd.toml \
  /usr/share/telematicsd/demo_car.dbc /usr/share/telematicsd/demo_car_vss.toml \
  /usr/share/telematicsd/demo_car_profile.toml \
  /usr/share/doc/telematicsd/deploy.md \
  /usr/share/man/man8/telematicsd.8.gz /usr/share/man/man8/telematicsd-check-config.8.gz \
  /usr/share/man/man1/telematicsctl.1.gz /usr/share/man/man1/telematicsctl-lock.1.gz \
  /usr/share/bash-completion/completions/telematicsd \
  /usr/share/bash-completion/completions/telematicsctl \
  /usr/share/zsh/vendor-completions/_telematicsctl \
  /usr/share/fish/vendor_completions.d/telematicsctl.fish; do
  [ -e "$f" ] || fail "$f not installed"
done
dpkg-query -W -f='${Conffiles}\n' telematicsd | grep -q '/etc/telematicsd/telematicsd.toml' \
  || fail "example config is not a conffile"
getent passwd telematicsd >/dev/null || fail "user telematicsd not created (sysusers.d)"
getent group telematics >/dev/null || fail "group telematics not created (sysusers.d)"
[ "$(getent passwd telematicsd | cut -d: -f6)" = /var/lib/telematicsd ] || fail "home of telematicsd"

step "systemd-analyze verify"
verify_out=$(systemd-analyze verify /usr/lib/systemd/system/telematicsd.service 2>&1) \
  || fail "systemd-analyze verify: $verify_out"
if grep -i telematicsd <<<"$verify_out"; then fail "systemd-analyze verify complained"; fi
echo "systemd-analyze verify: exit 0, ${#verify_out} bytes of output"

step "tmpfiles.d"
# postinst applies it only when systemd runs; do what boot would do.
systemd-tmpfiles --create telematicsd.conf
for spec in "/etc/telematicsd root:telematicsd 750" "/etc/telematicsd/pki root:telematicsd 750" \
  "/var/lib/telematicsd telematicsd:telematicsd 700" "/run/telematicsd telematicsd:telematicsd 755"; do
  set -- $spec
  got=$(stat -c '%U:%G %a' "$1")
  [ "$got" = "$2 $3" ] || fail "$1 is $got, want $2 $3"
done

step "check-config --no-files on the shipped example"
telematicsd check-config --no-files --config /etc/telematicsd/telematicsd.toml >"$W/example.out" \
  || fail "shipped example config does not validate: $(cat "$W/example.out")"
[ "$(head -1 "$W/example.out")" = OK ] || fail "check-config did not print OK"

step "the shipped daemon has no simulator: can.source = sim is refused"
if TELEMATICSD_CAN__SOURCE=sim telematicsd check-config --no-files \
  --config /etc/telematicsd/telematicsd.toml >"$W/sim.out" 2>&1; then
  fail "check-config accepted can.source = sim: $(cat "$W/sim.out")"
fi
grep -q 'can.source: "sim" (the simulated demo car) is not in this build' "$W/sim.out" \
  || fail "no clear refusal of can.source = sim: $(cat "$W/sim.out")"
grep -m1 'not in this build' "$W/sim.out"

step "PKI with the openssl commands of docs/deploy.md"
mkdir -p "$W/pki"
doc_block pki >"$W/pki.sh"
doc_block install >"$W/install.sh"
[ -s "$W/pki.sh" ] && [ -s "$W/install.sh" ] || fail "PKI blocks not found in docs/deploy.md"
(cd "$W/pki" && VIN=$VIN BROKER=localhost bash -euo pipefail "$W/pki.sh")
for c in ca server client; do
  openssl x509 -in "$W/pki/$c.pem" -noout -text | grep -q 'Version: 3 (0x2)' || fail "$c.pem is not v3"
done
step "install the PKI as documented; full check-config as the service user"
(cd "$W/pki" && bash -euo pipefail "$W/install.sh") >"$W/check-config.out" 2>&1 \
  || fail "check-config as telematicsd on the installed example: $(cat "$W/check-config.out")"
[ "$(head -1 "$W/check-config.out")" = OK ] || fail "check-config did not print OK"
stat -c '%n %U:%G %a' /etc/telematicsd/pki/* /etc/telematicsd/backend.pub

step "installed daemon against mosquitto with that PKI"
# The broker drops root for the mosquitto user: let it read the throw-away server files.
chmod 0755 "$W" "$W/pki"
chmod 0644 "$W/pki/server.key"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
start_broker() { # start_broker NAME CERT -> sets BROKER_PORT
  BROKER_PORT=$(free_port)
  cat >"$W/$1.conf" <<EOF
listener $BROKER_PORT 127.0.0.1
allow_anonymous false
require_certificate true
use_identity_as_username true
cafile $W/pki/ca.pem
certfile $2
keyfile $W/pki/server.key
log_dest stderr
EOF
  "$MOSQUITTO" -c "$W/$1.conf" 2>"$W/$1.log" &
  PIDS+=($!)
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  fail "mosquitto did not listen: $(cat "$W/$1.log")"
}
start_daemon() { # start_daemon NAME PORT
  mkdir -p "$W/$1-state"
  env -u JOURNAL_STREAM -u NO_COLOR RUST_LOG=info \
    TELEMATICSD_MQTT__HOST=localhost TELEMATICSD_MQTT__PORT="$2" TELEMATICSD_CAN__SOURCE=replay \
    TELEMATICSD_CAN__REPLAY_FILE="$W/demo_drive.log" TELEMATICSD_STATE__DIRECTORY="$W/$1-state" TELEMATICSD_ADMIN__SOCKET="$W/$1-admin.sock" \
    /usr/bin/telematicsd run --config /etc/telematicsd/telematicsd.toml 2>"$W/$1.log" &
  PIDS+=($!)
  DAEMON_PID=$!
}
# The demo car's drive log replayed through the installed DBC, mapping and profile.
install -m 0644 "$ROOT/crates/telematics-can/data/demo_drive.log" "$W/demo_drive.log"
start_broker broker "$W/pki/server.pem"
start_daemon daemon "$BROKER_PORT"
wait_for "$W/daemon.log" "MQTT connected" 30 || fail "daemon did not connect: $(cat "$W/daemon.log")"
grep -m1 "MQTT connected" "$W/daemon.log"
if grep -q $'\x1b' "$W/daemon.log"; then fail "ANSI escape codes in the daemon's file log"; fi
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || fail "daemon did not stop cleanly on SIGTERM"

step "a v1 broker certificate (plain openssl x509 -req) is refused"
(cd "$W/pki" && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -days 825 -sha256 -out server-v1.pem 2>/dev/null)
openssl x509 -in "$W/pki/server-v1.pem" -noout -text | grep -q 'Version: 1 (0x0)' || fail "not v1"
start_broker broker-v1 "$W/pki/server-v1.pem"
start_daemon daemon-v1 "$BROKER_PORT"
wait_for "$W/daemon-v1.log" "UnsupportedCertVersion" 30 \
  || fail "no UnsupportedCertVersion: $(cat "$W/daemon-v1.log")"
grep -m1 -o "invalid peer certificate.*UnsupportedCertVersion[^ ]*" "$W/daemon-v1.log" || true
if grep -q "MQTT connected" "$W/daemon-v1.log"; then fail "connected with a v1 certificate"; fi
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || true

step "man pages and completions"
MANWIDTH=80 man telematicsctl 2>"$W/man.err" | head -20 >"$W/man.txt" || true
grep -q "telematicsctl" "$W/man.txt" && grep -q "SYNOPSIS" "$W/man.txt" \
  || fail "man telematicsctl: $(cat "$W/man.txt" "$W/man.err")"
head -8 "$W/man.txt"
MANWIDTH=80 man 8 telematicsd 2>/dev/null | grep -q "check-config" || fail "man 8 telematicsd"
bash -c '. /usr/share/bash-completion/completions/telematicsctl && complete -p telematicsctl' >/dev/null \
  || fail "bash completion of telematicsctl"

step "dpkg --purge"
dpkg --purge telematicsctl telematicsd
for f in /usr/bin/telematicsd /usr/bin/telematicsctl /usr/lib/systemd/system/telematicsd.service \
  /etc/telematicsd/telematicsd.toml; do
  [ ! -e "$f" ] || fail "$f left after purge"
done
step "OK"
