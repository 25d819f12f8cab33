#!/usr/bin/env python3
"""Independent implementations of the frame protection schemes, for tests/protection_peer.rs:
AUTOSAR E2E profiles 1, 2, 5 from the autosar-e2e package (PyPI, module `e2e`), the CRCs from
crccheck, AES-CMAC from cryptography.

Usage: protection_peer.py < cases.json   (prints one JSON list, one result per case)
  {"kind": "crc", "data": hex}
      -> {"crc8_j1850", "crc8_autosar", "crc16_ccitt_false"}      (crccheck)
  {"kind": "e2e_p1", "mode": "both|alt|low|nibble", "data_id", "offset" (bytes), "raw", "rust",
   "mutated"}
  {"kind": "e2e_p2", "data_id_list": [16], "raw", "rust", "mutated"}
  {"kind": "e2e_p5", "data_id", "offset" (bytes), "raw", "rust", "mutated"}
      -> {"protected": hex, "check_rust": bool, "check_mutated": bool}
      `raw` carries the counter already (protect runs with increment_counter=False). The whole
      frame is protected (length=0). Profile 1's header at byte `offset` is the package's
      layout: CRC byte, then the counter in the low nibble and the data id nibble in the high
      nibble of the next byte.

autosar-e2e >= 1.0 API (keyword-only length/offset).
  {"kind": "cmac", "key": hex, "msg": hex} -> {"tag": hex}           (cryptography)
"""
import json
import sys

import e2e
from crccheck.crc import Crc8Autosar, Crc8SaeJ1850, Crc16CcittFalse
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

P1_MODES = {
    "both": e2e.p01.E2E_P01_DATAID_BOTH,
    "alt": e2e.p01.E2E_P01_DATAID_ALT,
    "low": e2e.p01.E2E_P01_DATAID_LOW,
    "nibble": e2e.p01.E2E_P01_DATAID_NIBBLE,
}


def e2e_case(case, protect, check):
    raw = bytearray.fromhex(case["raw"])
    protect(raw)
    return {
        "protected": raw.hex(),
        "check_rust": check(bytearray.fromhex(case["rust"])),
        "check_mutated": check(bytearray.fromhex(case["mutated"])),
    }


def run(case):
    kind = case["kind"]
    if kind == "crc":
        data = bytes.fromhex(case["data"])
        return {
            "crc8_j1850": Crc8SaeJ1850.calc(data),
            "crc8_autosar": Crc8Autosar.calc(data),
            "crc16_ccitt_false": Crc16CcittFalse.calc(data),
        }
    if kind == "e2e_p1":
        kw = {"data_id_mode": P1_MODES[case["mode"]], "offset": case["offset"]}
        return e2e_case(
            case,
            lambda d: e2e.p01.e2e_p01_protect(d, case["data_id"], increment_counter=False, **kw),
            lambda d: e2e.p01.e2e_p01_check(d, case["data_id"], **kw),
        )
    if kind == "e2e_p2":
        ids = bytes(case["data_id_list"])
        return e2e_case(
            case,
            lambda d: e2e.p02.e2e_p02_protect(d, ids, increment_counter=False),
            lambda d: e2e.p02.e2e_p02_check(bytes(d), ids),
        )
    if kind == "e2e_p5":
        o = case["offset"]
        return e2e_case(
            case,
            lambda d: e2e.p05.e2e_p05_protect(d, case["data_id"], offset=o, increment_counter=False),
            lambda d: e2e.p05.e2e_p05_check(bytes(d), case["data_id"], offset=o),
        )
    if kind == "cmac":
        c = CMAC(algorithms.AES(bytes.fromhex(case["key"])))
        c.update(bytes.fromhex(case["msg"]))
        return {"tag": c.finalize().hex()}
    raise ValueError(f"unknown kind {kind}")


def main():
    cases = json.load(sys.stdin)
    json.dump([run(c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
