#!/usr/bin/env python3
"""Independent implementation of the telematicsd command protocol (docs/protocol.md) with
pycose + cbor2 + cryptography, used by tests/interop.rs.

Usage: interop.py MODE < request.json   (prints one JSON object on stdout)
  build_command   -> {"envelope": hex}     build a COSE_Encrypt0 command envelope
  open_command    -> {fields...}           decrypt + check a Rust-built envelope
  sign_reset      -> {"sign1": hex}        sign a reset authorization (Ed25519)
  verify_reset    -> {fields...}           verify a Rust-signed reset authorization
  sign_revocation -> {"sign1": hex}        sign a device revocation (Ed25519, docs/protocol.md §10)
  verify_revocation -> {fields...}         verify a Rust-signed device revocation
  parse_session   -> {fields...}           verify + parse a Rust-built session info (Mac0)
  session_request -> {"request": hex}      build a session-info request (docs/protocol.md §8)
  build_variant   -> {"envelope": hex}     build_command's message, authentic (AEAD over the
                                           bytes as sent) but with one deliberate encoding
                                           defect ("variant", see VARIANTS), or none ("none")
"""
import json
from collections.abc import Mapping
import sys

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pycose.algorithms import A256GCM, HMAC256, EdDSA
from pycose.headers import IV, KID, Algorithm
from pycose.keys import OKPKey, SymmetricKey
from pycose.keys.curves import Ed25519
from pycose.messages import Enc0Message, Mac0Message, Sign1Message

HKDF_SALT = b"telematicsd/v1 hkdf salt"
INFO_COMMAND = b"telematicsd command v1"
INFO_SESSION = b"telematicsd session v1"
HEADER_VIN = -65537


def cose_decode(cls, raw: bytes, tag: int):
    """Decode a tagged COSE message with pycose. cbor2 >= 6 returns containers inside a tag as
    immutable tuples/frozen maps, which pycose 1.1's CoseMessage.decode rejects, so unwrap the
    tag here and hand pycose plain lists/dicts."""
    obj = cbor2.loads(raw)
    assert isinstance(obj, cbor2.CBORTag) and obj.tag == tag, f"expected CBOR tag {tag}"
    return cls.from_cose_obj(thaw(obj.value), True)


def thaw(x):
    if isinstance(x, (list, tuple)):
        return [thaw(i) for i in x]
    if isinstance(x, Mapping):
        return {thaw(k): thaw(v) for k, v in x.items()}
    return x


def command_key(secret: bytes, vin: str) -> bytes:
    info = INFO_COMMAND + b"\x00" + vin.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=info).derive(secret)


def build_command(r):
    vin = r["vin"]
    plaintext = {1: vin, 2: bytes.fromhex(r["command_id"]), 3: r["action"]}
    if r.get("max_run_secs") is not None:
        plaintext[4] = {1: r["max_run_secs"]}
    plaintext.update({5: r["counter"], 6: r["issued_at"], 7: r["expires_at"], 8: r["code"]})
    msg = Enc0Message(
        phdr={Algorithm: A256GCM, KID: bytes.fromhex(r["key_id"]), HEADER_VIN: vin},
        uhdr={IV: bytes.fromhex(r["iv"])},
        payload=cbor2.dumps(plaintext),
        external_aad=f"vehicles/{vin}/commands".encode(),
    )
    msg.key = SymmetricKey(k=command_key(bytes.fromhex(r["secret"]), vin))
    return {"envelope": msg.encode(tag=True).hex()}


def open_command(r):
    vin = r["vin"]
    raw = bytes.fromhex(r["envelope"])
    msg = cose_decode(Enc0Message, raw, 16)
    assert msg.phdr[Algorithm] == A256GCM, msg.phdr
    assert msg.phdr[KID] == bytes.fromhex(r["key_id"]), "kid"
    assert msg.phdr[HEADER_VIN] == vin, "protected VIN"
    assert len(msg.uhdr[IV]) == 12, "iv length"
    msg.key = SymmetricKey(k=command_key(bytes.fromhex(r["secret"]), vin))
    msg.external_aad = f"vehicles/{vin}/commands".encode()
    pt = cbor2.loads(msg.decrypt())
    out = {
        "vin": pt[1],
        "command_id": pt[2].hex(),
        "action": pt[3],
        "max_run_secs": pt.get(4, {}).get(1),
        "counter": pt[5],
        "issued_at": pt[6],
        "expires_at": pt[7],
        "code": pt[8],
    }
    assert set(pt) <= {1, 2, 3, 4, 5, 6, 7, 8}, pt.keys()
    return out


def parse_session(r):
    vin = r["vin"]
    msg = cose_decode(Mac0Message, bytes.fromhex(r["session_info"]), 17)
    assert msg.phdr[Algorithm] == HMAC256 and msg.phdr[KID] == bytes.fromhex(r["key_id"])
    info = INFO_SESSION + b"\x00" + vin.encode()
    k = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=info).derive(
        bytes.fromhex(r["secret"]))
    msg.key = SymmetricKey(k=k)
    msg.external_aad = f"vehicles/{vin}/session".encode()
    assert msg.verify_tag(), "session info MAC"
    p = cbor2.loads(msg.payload)
    return {"vin": p[1], "last_counter": p[2], "clock": p[3], "failures": p[4],
            "lockout": p[5], "retry_after": p.get(6), "epoch": p[7], "echo": p[8].hex()}


def session_request(r):
    # Deterministic CBOR (cbor2 canonical): {1: kid, 2: challenge}.
    req = {1: bytes.fromhex(r["key_id"]), 2: bytes.fromhex(r["challenge"])}
    return {"request": cbor2.dumps(req, canonical=True).hex()}


def reset_payload(r):
    return cbor2.dumps(
        {1: r["vin"], 2: bytes.fromhex(r["nonce"]), 3: r["issued_at"], 4: r["expires_at"], 5: "code_reset"}
    )


def sign_reset(r):
    key = OKPKey(crv=Ed25519, d=bytes.fromhex(r["seed"]))
    msg = Sign1Message(
        phdr={Algorithm: EdDSA},
        payload=reset_payload(r),
        external_aad=f"vehicles/{r['vin']}/reset".encode(),
    )
    msg.key = key
    return {"sign1": msg.encode(tag=True).hex()}


def verify_reset(r):
    raw = bytes.fromhex(r["sign1"])
    msg = cose_decode(Sign1Message, raw, 18)
    assert msg.phdr[Algorithm] == EdDSA
    msg.key = OKPKey(crv=Ed25519, x=bytes.fromhex(r["public_key"]))
    msg.external_aad = f"vehicles/{r['vin']}/reset".encode()
    assert msg.verify_signature(), "signature"
    p = cbor2.loads(msg.payload)
    assert p[5] == "code_reset" and p[1] == r["vin"]
    return {"vin": p[1], "nonce": p[2].hex(), "issued_at": p[3], "expires_at": p[4]}


def revocation_payload(r):
    # Deterministic CBOR (cbor2 canonical): keys 1..6 in ascending order.
    return cbor2.dumps(
        {1: r["vin"], 2: bytes.fromhex(r["nonce"]), 3: r["issued_at"], 4: r["expires_at"],
         5: "device_revoke", 6: bytes.fromhex(r["key_id"])},
        canonical=True,
    )


def sign_revocation(r):
    key = OKPKey(crv=Ed25519, d=bytes.fromhex(r["seed"]))
    msg = Sign1Message(
        phdr={Algorithm: EdDSA},
        payload=revocation_payload(r),
        external_aad=f"vehicles/{r['vin']}/devices/revoke".encode(),
    )
    msg.key = key
    return {"sign1": msg.encode(tag=True).hex()}


def verify_revocation(r):
    raw = bytes.fromhex(r["sign1"])
    msg = cose_decode(Sign1Message, raw, 18)
    assert msg.phdr[Algorithm] == EdDSA
    msg.key = OKPKey(crv=Ed25519, x=bytes.fromhex(r["public_key"]))
    msg.external_aad = f"vehicles/{r['vin']}/devices/revoke".encode()
    assert msg.verify_signature(), "signature"
    p = cbor2.loads(msg.payload)
    assert p[5] == "device_revoke" and p[1] == r["vin"]
    return {"vin": p[1], "nonce": p[2].hex(), "issued_at": p[3], "expires_at": p[4],
            "key_id": p[6].hex()}


# --- Hand-assembled CBOR, to build encodings cbor2 will not produce -------------------------

def head(major: int, n: int, width: int | None = None) -> bytes:
    """Item head; width None = shortest form, else force a 1/2/4/8-byte argument."""
    if width is None:
        if n < 24:
            return bytes([major << 5 | n])
        width = 1 if n < 0x100 else 2 if n < 0x10000 else 4 if n < 0x100000000 else 8
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | ai]) + n.to_bytes(width, "big")


def cmap(items, indefinite=False) -> bytes:
    """Map from (encoded key, encoded value) pairs, in the order given."""
    body = b"".join(k + v for k, v in items)
    return b"\xbf" + body + b"\xff" if indefinite else head(5, len(items)) + body


def bstr(b: bytes, width=None) -> bytes:
    return head(2, len(b), width) + b


# Every defect a deterministic (RFC 8949 4.2.1) decoder must refuse, by layer, with the fault
# docs/protocol.md gives for it: the COSE structure and the protected header before the AEAD
# ("decode"), the plaintext after it ("bad_payload").
VARIANTS = {
    "none": None,
    "protected_nonminimal_int": "decode",   # alg 3 as 0x18 0x03
    "protected_indefinite_map": "decode",   # 0xbf ... 0xff
    "protected_key_order": "decode",        # kid (4) before alg (1)
    "protected_duplicate_key": "decode",    # alg twice
    "outer_nonminimal_length": "decode",    # ciphertext bstr length in 2 bytes
    "outer_indefinite_array": "decode",     # 0x9f ... 0xff
    "unprotected_nonminimal_key": "decode",  # IV label 5 as 0x18 0x05
    "plaintext_key_order": "bad_payload",   # command id (2) before VIN (1)
    "plaintext_nonminimal_int": "bad_payload",  # counter in 8 bytes
    "plaintext_indefinite_map": "bad_payload",
    "plaintext_indefinite_text": "bad_payload",  # code as a chunked text string
    "plaintext_duplicate_key": "bad_payload",   # counter (5) twice
}


def build_variant(r):
    variant = r["variant"]
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant}")
    d = cbor2.dumps
    vin = r["vin"]
    prot_items = [(d(1), d(3)), (d(4), d(bytes.fromhex(r["key_id"]))), (d(HEADER_VIN), d(vin))]
    if variant == "protected_nonminimal_int":
        prot_items[0] = (d(1), head(0, 3, 1))
    if variant == "protected_key_order":
        prot_items[0], prot_items[1] = prot_items[1], prot_items[0]
    if variant == "protected_duplicate_key":
        prot_items.insert(1, (d(1), d(3)))
    prot = cmap(prot_items, indefinite=variant == "protected_indefinite_map")

    pt_items = [(d(1), d(vin)), (d(2), d(bytes.fromhex(r["command_id"]))), (d(3), d(r["action"]))]
    if r.get("max_run_secs") is not None:
        pt_items.append((d(4), d({1: r["max_run_secs"]})))
    counter = d(r["counter"])
    if variant == "plaintext_nonminimal_int":
        counter = head(0, r["counter"], 8)
    pt_items.append((d(5), counter))
    if variant == "plaintext_duplicate_key":
        pt_items.append((d(5), counter))
    code = d(r["code"])
    if variant == "plaintext_indefinite_text":
        c = r["code"].encode()
        code = b"\x7f" + d(c[:1].decode()) + d(c[1:].decode()) + b"\xff"
    pt_items += [(d(6), d(r["issued_at"])), (d(7), d(r["expires_at"])), (d(8), code)]
    if variant == "plaintext_key_order":
        pt_items[0], pt_items[1] = pt_items[1], pt_items[0]
    plaintext = cmap(pt_items, indefinite=variant == "plaintext_indefinite_map")

    # Authentic: the AEAD covers exactly the protected bytes that are sent.
    iv = bytes.fromhex(r["iv"])
    aad = d(["Encrypt0", prot, f"vehicles/{vin}/commands".encode()])
    ct = AESGCM(command_key(bytes.fromhex(r["secret"]), vin)).encrypt(iv, plaintext, aad)

    label5 = head(0, 5, 1) if variant == "unprotected_nonminimal_key" else d(5)
    unprot = cmap([(label5, d(iv))])
    ct_enc = bstr(ct, 2) if variant == "outer_nonminimal_length" else bstr(ct)
    body = bstr(prot) + unprot + ct_enc
    arr = b"\x9f" + body + b"\xff" if variant == "outer_indefinite_array" else head(4, 3) + body
    return {"envelope": (b"\xd0" + arr).hex(), "fault": VARIANTS[variant],
            "plaintext": plaintext.hex()}


def variants(_r):
    return {"variants": VARIANTS}


if __name__ == "__main__":
    mode = sys.argv[1]
    req = json.load(sys.stdin)
    fn = {"build_command": build_command, "open_command": open_command,
          "sign_reset": sign_reset, "verify_reset": verify_reset,
          "sign_revocation": sign_revocation, "verify_revocation": verify_revocation,
          "parse_session": parse_session, "session_request": session_request,
          "build_variant": build_variant, "variants": variants}[mode]
    print(json.dumps(fn(req)))
