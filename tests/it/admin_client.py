#!/usr/bin/env python3
"""An independent telematicsd admin client, written from docs/admin.md alone (no Rust code):
length-prefixed CBOR frames over the Unix socket, every request, the documented errors.

Run by tests/it/admin.rs against the real daemon binary. `full` needs python3 + cbor2
(scripts/install-test-deps.sh); the two peer modes use the standard library only (they run
as another user, who may not see the test's Python packages) and hand-encode their CBOR.

    admin_client.py full SOCKET VIN CODE NEW_CODE AUTH_HEX   the whole protocol, one paired car
    admin_client.py peer-denied SOCKET                      expects one admin.unauthorized frame
    admin_client.py peer-allowed SOCKET                     expects a status response

Exit status 0 and a last line `ok <n> checks` when every check held; otherwise every failed
check is printed and the exit status is 1.
"""

import re
import socket
import struct
import sys
import time

cbor2 = None  # imported by `full` (the peer modes run without it)

MAX_FRAME = 65536  # docs/admin.md: length must be in 1..=65536
FAILURES = []
CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", file=sys.stderr)
    return cond


class Conn:
    """One admin connection: a Unix stream socket, frames = u32 big-endian length + CBOR."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj):
        payload = cbor2.dumps(obj)
        self.send_raw(struct.pack(">I", len(payload)) + payload)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None if not buf else buf
            buf += chunk
        return buf

    def recv(self):
        """The next response map, or None on EOF."""
        head = self._exact(4)
        if head is None:
            return None
        (n,) = struct.unpack(">I", head)
        body = self._exact(n)
        if body is None or len(body) != n:
            return None
        return cbor2.loads(body)

    def call(self, obj):
        self.send(obj)
        return self.recv()

    def at_eof(self):
        return self.recv() is None

    def close(self):
        self.sock.close()


def is_error(resp, code):
    return isinstance(resp, dict) and resp.get("result") == "error" and resp.get("code") == code


def expect_error(resp, code, what):
    ok = check(is_error(resp, code), f"{what}: expected error {code}, got {resp!r}")
    if ok:
        check(isinstance(resp.get("message"), str), f"{what}: error message is text")
    return ok


def components(resp):
    return {name: state for name, state in resp["components"]}


def framing(path):
    # A well-framed payload that is not valid CBOR: admin.frame, connection stays open.
    c = Conn(path)
    c.send_raw(struct.pack(">I", 3) + b"\xff\x00\x13")
    expect_error(c.recv(), "admin.frame", "garbage payload")
    r = c.call({"op": "status"})
    check(isinstance(r, dict) and r.get("result") == "status", "connection survives garbage")
    # Valid CBOR that is not a request: unknown op, missing field, a non-map.
    expect_error(c.call({"op": "reboot"}), "admin.frame", "unknown op")
    expect_error(c.call({"op": "pair", "device_name": "x"}), "admin.frame", "missing field")
    expect_error(c.call({"op": "audit", "limit": "ten"}), "admin.frame", "mistyped field")
    expect_error(c.call(["status"]), "admin.frame", "array payload")
    trailing = cbor2.dumps({"op": "status"}) + b"\x00"
    c.send_raw(struct.pack(">I", len(trailing)) + trailing)
    expect_error(c.recv(), "admin.frame", "bytes after the map")
    # Keys in any order, unknown keys ignored.
    r = c.call({"extra": 1, "op": "status"})
    check(r.get("result") == "status", f"unknown key ignored: {r!r}")
    # The largest allowed frame (exactly MAX_FRAME bytes) is served.
    k = MAX_FRAME - 64
    while True:
        payload = cbor2.dumps({"op": "status", "pad": b"\x00" * k})
        if len(payload) == MAX_FRAME:
            break
        k += MAX_FRAME - len(payload)
    check(len(payload) == MAX_FRAME, f"max frame built ({len(payload)})")
    c.send_raw(struct.pack(">I", len(payload)) + payload)
    r = c.recv()
    check(isinstance(r, dict) and r.get("result") == "status", f"max frame served: {r!r}")
    c.close()
    # Length 0 and MAX_FRAME + 1: admin.frame, then the daemon closes.
    for n in (0, MAX_FRAME + 1):
        c = Conn(path)
        c.send_raw(struct.pack(">I", n))
        expect_error(c.recv(), "admin.frame", f"length {n}")
        check(c.at_eof(), f"length {n}: connection closed")
        c.close()
    # Truncated frame (EOF inside the payload): closed.
    c = Conn(path)
    c.send_raw(struct.pack(">I", 10) + b"\xa1\x62")
    c.sock.shutdown(socket.SHUT_WR)
    r = c.recv()
    check(r is None or is_error(r, "admin.frame"), f"truncated: {r!r}")
    check(c.at_eof(), "truncated: connection closed")
    c.close()


def full(path, vin, code, new_code, auth_hex):
    global cbor2
    import cbor2 as _cbor2

    cbor2 = _cbor2
    framing(path)
    auth = bytes.fromhex(auth_hex)
    now = int(time.time())
    c = Conn(path)  # every following request shares one connection

    r = c.call({"op": "status"})
    check(r.get("result") == "status", f"status: {r!r}")
    check(r.get("vin") == vin, "status vin")
    check(isinstance(r.get("version"), str) and isinstance(r.get("uptime_s"), int), "status fields")
    comp = components(r)
    check(comp.get("security") == "not paired", f"not paired yet: {comp}")
    check(comp.get("recovery") == "none", f"no recovery armed: {comp}")
    for name in ("mqtt", "can", "commands", "outbox"):
        check(name in comp, f"status component {name}")

    # First pairing sets the code.
    r = c.call({"op": "pair", "device_name": "py-phone", "code": code})
    check(r.get("result") == "paired", f"first pair: {r!r}")
    phone = r.get("device_id", "")
    check(isinstance(phone, str) and len(phone) > 0 and all(ch in "0123456789abcdef" for ch in phone),
          "device_id is hex")
    check(str(r.get("credential", "")).startswith("TMDC1:"), "credential text")
    check(components(c.call({"op": "status"})).get("security") == "paired", "paired now")

    # A later pairing checks the code; a wrong one is counted.
    r = c.call({"op": "pair", "device_name": "py-tablet", "code": "9137"})
    expect_error(r, "security.wrong_code", "wrong code")
    check("retry_after_s" not in r, f"no wait after one failure: {r!r}")
    r = c.call({"op": "lockout"})
    check(r == {"result": "lockout", "failures": 1, "locked_until": None}, f"one failure: {r!r}")
    r = c.call({"op": "pair", "device_name": "py-tablet", "code": code})
    check(r.get("result") == "paired", f"second pair: {r!r}")
    tablet = r.get("device_id")
    r = c.call({"op": "lockout"})
    check(r == {"result": "lockout", "failures": 0, "locked_until": None}, f"cleared: {r!r}")
    expect_error(c.call({"op": "pair", "device_name": "", "code": code}), "security.invalid",
                 "empty device name")

    # Devices, revoke.
    r = c.call({"op": "list_devices"})
    devs = r.get("devices", [])
    check(r.get("result") == "devices" and len(devs) == 2, f"two devices: {r!r}")
    for d in devs:
        check(set(d) == {"device_id", "name", "paired_at", "revoked"}, f"device fields {d}")
        check(d.get("revoked") is False and isinstance(d.get("paired_at"), int), f"device {d}")
    check({d["name"] for d in devs} == {"py-phone", "py-tablet"}, "device names")
    check(c.call({"op": "revoke_device", "device_id": tablet}) == {"result": "done"}, "revoke")
    devs = c.call({"op": "list_devices"})["devices"]
    check([d["revoked"] for d in devs if d["device_id"] == tablet] == [True], "tablet revoked")
    check([d["revoked"] for d in devs if d["device_id"] == phone] == [False], "phone active")
    expect_error(c.call({"op": "revoke_device", "device_id": "zz"}), "admin.bad_request", "non-hex id")
    expect_error(c.call({"op": "revoke_device", "device_id": "00" * 8}), "security.unknown_key",
                 "unknown id")

    # Lockout in the car: threshold 3 starts a 30 s wait; then even the right code is refused.
    for i, guess in enumerate(["5831", "7204", "6195"], start=1):
        r = c.call({"op": "pair", "device_name": "thief", "code": guess})
        expect_error(r, "security.wrong_code", f"guess {i}")
        if i == 3:
            check(r.get("retry_after_s") == 30, f"third wrong code starts the wait: {r!r}")
    r = c.call({"op": "pair", "device_name": "owner", "code": code})
    expect_error(r, "security.locked_out", "right code during the wait")
    ra = r.get("retry_after_s")
    check(isinstance(ra, int) and 0 < ra <= 30, f"retry_after_s: {r!r}")
    r = c.call({"op": "lockout"})
    check(r.get("result") == "lockout" and r.get("failures") == 3, f"lockout: {r!r}")
    lu = r.get("locked_until")
    check(isinstance(lu, int) and now < lu <= int(time.time()) + 30, f"locked_until: {r!r}")

    # Audit: every wrong in-car code, never a code.
    r = c.call({"op": "audit", "limit": 100})
    events = r.get("events", [])
    check(r.get("result") == "audit" and len(events) > 0, f"audit: {r!r}")
    for e in events:
        check(set(e) == {"at", "kind", "detail"} and isinstance(e["at"], int), f"event {e}")
    kinds = [e["kind"] for e in events]
    for k in ("pair.first", "pair.device", "pair.refused", "device.revoked"):
        check(k in kinds, f"audit kind {k}: {kinds}")
    wrong = [e for e in events if e["kind"] == "pair.refused" and "fault=wrong_code" in e["detail"]]
    check(len(wrong) == 4, f"four wrong in-car codes audited: {wrong}")
    check(any("fault=locked_out" in e["detail"] for e in events), "lockout refusal audited")
    secrets = [code, new_code, "9137", "5831", "7204", "6195"]
    tokens = {t for e in events for t in re.split(r"[^0-9A-Za-z]+", e["detail"])}
    check(not tokens.intersection(secrets), "no code in the audit trail")
    check(len(c.call({"op": "audit", "limit": 2})["events"]) == 2, "audit limit")

    # Recovery: arm with the signed authorization (a CBOR byte string), confirm in the car.
    expect_error(c.call({"op": "arm_recovery", "authorization": list(auth)}), "admin.frame",
                 "authorization as an array of integers")
    expect_error(c.call({"op": "confirm_recovery", "new_code": new_code}),
                 "security.no_pending_reset", "confirm before arming")
    expect_error(c.call({"op": "arm_recovery", "authorization": auth[:-1] + bytes([auth[-1] ^ 1])}),
                 "security.bad_signature", "tampered authorization")
    r = c.call({"op": "arm_recovery", "authorization": auth})
    check(r.get("result") == "recovery_armed", f"armed: {r!r}")
    cb = r.get("confirm_by")
    check(isinstance(cb, int) and cb >= now, f"confirm_by: {r!r}")
    check(components(c.call({"op": "status"})).get("recovery") == f"armed confirm_by={cb}",
          "status shows the armed reset")
    # Arming changes nothing else: still locked.
    expect_error(c.call({"op": "pair", "device_name": "owner", "code": code}),
                 "security.locked_out", "still locked while armed")
    expect_error(c.call({"op": "confirm_recovery", "new_code": "1111"}), "security.weak_code",
                 "weak new code")
    r = c.call({"op": "confirm_recovery", "new_code": new_code})
    check(r == {"result": "done"}, f"confirmed: {r!r}")
    r = c.call({"op": "lockout"})
    check(r == {"result": "lockout", "failures": 0, "locked_until": None}, f"lockout cleared: {r!r}")
    devs = c.call({"op": "list_devices"})["devices"]
    check(len(devs) == 2 and all(d["revoked"] for d in devs), f"devices voided: {devs}")
    check(components(c.call({"op": "status"})).get("recovery") == "none", "reset consumed")
    expect_error(c.call({"op": "arm_recovery", "authorization": auth}), "security.nonce_reused",
                 "authorization is single-use")
    expect_error(c.call({"op": "confirm_recovery", "new_code": new_code}),
                 "security.no_pending_reset", "nothing armed any more")
    expect_error(c.call({"op": "pair", "device_name": "owner", "code": code}),
                 "security.wrong_code", "old code is gone")
    r = c.call({"op": "pair", "device_name": "owner", "code": new_code})
    check(r.get("result") == "paired", f"re-pair with the new code: {r!r}")
    kinds = [e["kind"] for e in c.call({"op": "audit", "limit": 100})["events"]]
    for k in ("recovery.armed", "recovery.completed", "recovery.refused"):
        check(k in kinds, f"audit kind {k}")
    c.close()


def read_all(sock):
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def frames(data):
    """Split raw bytes into frame payloads; None if they are not whole frames."""
    out = []
    while data:
        if len(data) < 4:
            return None
        (n,) = struct.unpack(">I", data[:4])
        if not 1 <= n <= MAX_FRAME or len(data) < 4 + n:
            return None
        out.append(data[4 : 4 + n])
        data = data[4 + n :]
    return out


# CBOR text strings (RFC 8949 major type 3, length < 24 in the initial byte).
def tstr(s):
    b = s.encode()
    assert len(b) < 24
    return bytes([0x60 + len(b)]) + b


def peer_denied(path):
    # The daemon answers an unauthorized peer with one error frame and closes; only read.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    got = frames(read_all(s))
    check(got is not None and len(got) == 1, f"one frame, then EOF: {got!r}")
    if got:
        p = got[0]
        check(p[:1] == b"\xa3", f"a map of three: result, code, message: {p!r}")
        check(tstr("result") + tstr("error") in p, f"result error: {p!r}")
        check(tstr("code") + tstr("admin.unauthorized") in p, f"code admin.unauthorized: {p!r}")


def peer_allowed(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    req = b"\xa1" + tstr("op") + tstr("status")  # {"op": "status"}
    s.sendall(struct.pack(">I", len(req)) + req)
    s.shutdown(socket.SHUT_WR)  # clean EOF between frames ends the session
    got = frames(read_all(s))
    check(got is not None and len(got) == 1, f"one response: {got!r}")
    if got:
        check(tstr("result") + tstr("status") in got[0], f"status served: {got[0]!r}")


def main(argv):
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "full" and len(argv) == 7:
        full(*argv[2:7])
    elif mode == "peer-denied" and len(argv) == 3:
        peer_denied(argv[2])
    elif mode == "peer-allowed" and len(argv) == 3:
        peer_allowed(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if FAILURES:
        print(f"{len(FAILURES)} of {CHECKS} checks failed", file=sys.stderr)
        return 1
    print(f"ok {CHECKS} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
