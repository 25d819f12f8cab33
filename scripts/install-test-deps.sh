#!/usr/bin/env bash
# Installs the real components the test suite runs against. Idempotent; needs root (or sudo)
# on Debian/Ubuntu. Everything comes from Debian packages or PyPI.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# Fault suite: wall-clock jump of the daemon (libfaketime), RLIMIT_FSIZE for disk full (prlimit).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(faketime)
command -v prlimit >/dev/null 2>&1 || need_apt+=(util-linux)
# Package test (scripts/package-test.sh): cargo-deb's $auto depends, unit verification,
# sysusers/tmpfiles, the documented openssl PKI, man pages. Logging test: unshare (util-linux).
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_apt+=(dpkg-dev)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v deb-systemd-helper >/dev/null 2>&1 || need_apt+=(init-system-helpers)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v man >/dev/null 2>&1 || need_apt+=(man-db)
# PKCS#11 key store tests (telematics-keystore, tests/it): SoftHSM2 token and pkcs11-tool.
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need_apt+=(opensc)
# AsyncAPI check (scripts/asyncapi-check.sh): @asyncapi/parser from the npm registry.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
# The system mosquitto service is not wanted: tests start their own brokers.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi

# Independent COSE implementation for the protocol interop tests.
# python-cryptography: the interop tests and the back-end key load test.
if ! python3 -c 'import pycose, cbor2, cryptography' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check pycose cbor2 cryptography
fi
# Independent frame protection implementations for crates/telematics-can/tests/protection_peer.rs:
# AUTOSAR E2E profiles (autosar-e2e >= 1.0, keyword-only length/offset), CRC catalogue (crccheck),
# AES-CMAC (cryptography).
if ! python3 -c 'import e2e, crccheck, cryptography' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'autosar-e2e>=1.0' crccheck cryptography
fi
