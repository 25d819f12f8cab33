#!/usr/bin/env python3
"""cantools side of scripts/bench-cantools.sh (CAN decode: telematics-can vs cantools).

  gen  --dbc DBC --out LOG --frames N [--seed S]
        Synthetic candump -L log: every message of the DBC in turn (ids read from the BO_ lines),
        random payload bytes of the declared length. A payload whose multiplexer value the DBC
        does not define is drawn again (cantools rejects it, telematics-can decodes the
        non-multiplexed part), so both decoders do the same work on every frame.

  run  --rust-results FILE --dump-dir DIR [--reps N] [--min-time S] [--check-frames N]
       --input NAME DBC LOG [--input ...]
        1. Cross-check: the first N frames of each log decoded by cantools against the values
           telematics-can dumped (DIR/NAME.jsonl): same outcome, same signal names, physical
           values within 1e-6 relative, same value-table labels.
        2. Times cantools decode_message over the pre-parsed frames (median of N runs) with
           decode_choices=True (like telematics-can, which always resolves labels) and False.
        3. Prints a table with the Rust/cantools ratio per input (Rust figures from FILE), by
           thread CPU time (robust on a shared machine) and by wall clock.
"""

import argparse
import json
import math
import random
import re
import statistics
import sys
import time

import cantools
from cantools.database.errors import DecodeError
from cantools.database.namedsignalvalue import NamedSignalValue

BO_RE = re.compile(r"^BO_\s+(\d+)\s+\w+\s*:\s*(\d+)", re.M)


def load_db(path):
    return cantools.database.load_file(path)


def parse_candump(path):
    """candump -L lines -> [(frame_id, extended, data)]; remote frames are skipped (no data)."""
    frames = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 3 or "#" not in parts[2]:
                raise SystemExit(f"{path}:{n}: not a candump -L line: {line!r}")
            id_s, rest = parts[2].split("#", 1)
            fid = int(id_s, 16)
            ext = len(id_s) > 3
            if rest.startswith("#"):  # CAN FD: ##<flags><data>
                data = bytes.fromhex(rest[2:].replace(".", ""))
            elif rest[:1] in ("R", "r"):
                frames.append((fid, ext, None))
                continue
            else:
                data = bytes.fromhex(rest.split("_", 1)[0].replace(".", ""))
            frames.append((fid, ext, data))
    return frames


def cmd_gen(a):
    with open(a.dbc, encoding="utf-8", errors="replace") as f:
        text = f.read()
    db = load_db(a.dbc)
    rng = random.Random(a.seed)
    msgs = []
    for m in BO_RE.finditer(text):
        raw_id, size = int(m.group(1)), int(m.group(2))
        ext = bool(raw_id & 0x80000000)
        fid = raw_id & 0x7FFFFFFF
        if (ext and fid > 0x1FFFFFFF) or (not ext and fid > 0x7FF) or size > 64:
            continue  # e.g. VECTOR__INDEPENDENT_SIG_MSG: not a real frame
        msgs.append((fid, ext, size))
    if not msgs:
        raise SystemExit(f"{a.dbc}: no messages")
    rerolled = unresolved = 0
    with open(a.out, "w", encoding="ascii") as out:
        for k in range(a.frames):
            fid, ext, size = msgs[k % len(msgs)]
            for attempt in range(2000):
                data = bytes(rng.getrandbits(8) for _ in range(size))
                try:
                    db.decode_message(fid, data)
                    break
                except DecodeError:
                    rerolled += 1
                except KeyError:
                    break
            else:
                unresolved += 1
            id_s = f"{fid:08X}" if ext else f"{fid:03X}"
            body = f"{id_s}##0{data.hex().upper()}" if size > 8 else f"{id_s}#{data.hex().upper()}"
            out.write(f"({1700000000 + k // 1000}.{(k % 1000) * 1000:06d}) can0 {body}\n")
    print(
        f"gen: {a.out}: {a.frames} frames over {len(msgs)} messages "
        f"({rerolled} payloads redrawn for undefined multiplexer values, {unresolved} unresolved)"
    )


def phys_equal(r, c):
    if math.isnan(r) or math.isnan(c):
        return math.isnan(r) and math.isnan(c)
    return math.isclose(r, c, rel_tol=1e-6, abs_tol=1e-12)


def cross_check(name, db, frames, dump_path, limit):
    """Compare telematics-can's dumped decode with cantools; returns (signals compared, problems)."""
    problems = []
    compared = 0
    with open(dump_path, encoding="utf-8") as f:
        rust = [json.loads(line) for line in f]
    if len(rust) != min(limit, len(frames)):
        problems.append(f"frame count: rust dumped {len(rust)}, expected {min(limit, len(frames))}")
    for r, (fid, ext, data) in zip(rust, frames):
        where = f"{name} frame {r['i']} id 0x{fid:X}"
        if r["id"] != fid or r["ext"] != ext:
            problems.append(f"{where}: frame mismatch (rust id 0x{r['id']:X} ext {r['ext']})")
            continue
        if data is None:
            if r["outcome"] != "remote":
                problems.append(f"{where}: remote frame, rust says {r['outcome']}")
            continue
        try:
            phys = db.decode_message(fid, data, decode_choices=False)
            named = db.decode_message(fid, data, decode_choices=True)
            outcome = "decoded"
        except KeyError:
            outcome = "unknown"
        except DecodeError as e:
            outcome = f"error ({e})"
        if r["outcome"] != outcome:
            problems.append(f"{where}: rust {r['outcome']}, cantools {outcome}")
            continue
        if outcome != "decoded":
            continue
        rs = {s[0]: (float(s[1]), s[2]) for s in r["signals"]}
        if set(rs) != set(phys):
            problems.append(
                f"{where}: signals only in rust {sorted(set(rs) - set(phys))}, "
                f"only in cantools {sorted(set(phys) - set(rs))}"
            )
        for sig in set(rs) & set(phys):
            compared += 1
            rv, rlabel = rs[sig]
            cv = float(phys[sig])
            cn = named[sig]
            clabel = cn.name if isinstance(cn, NamedSignalValue) else None
            if not phys_equal(rv, cv):
                problems.append(f"{where} {sig}: rust {rv!r}, cantools {cv!r}")
            if rlabel != clabel:
                problems.append(f"{where} {sig}: label rust {rlabel!r}, cantools {clabel!r}")
    return compared, problems


def time_cantools(db, frames, choices, reps, min_time):
    """Median frames/s (wall clock, on-CPU) of db.decode_message over all frames and the number
    of frames decoded per pass (unknown ids skipped by a set test)."""
    known = {m.frame_id for m in db.messages}
    work = [(fid, data) for fid, _ext, data in frames if data is not None]
    decode = db.decode_message
    total = len(frames)

    def one_pass():
        n = 0
        for fid, data in work:
            if fid in known:
                try:
                    decode(fid, data, decode_choices=choices)
                    n += 1
                except DecodeError:
                    pass
        return n

    one_pass()  # warm-up (cantools compiles its codecs lazily)
    wall, cpu = [], []
    for _ in range(reps):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        passes = 0
        while True:
            one_pass()
            passes += 1
            el = time.perf_counter() - t0
            if el >= min_time:
                break
        c = time.thread_time() - c0
        wall.append(passes * total / el)
        cpu.append(passes * total / c)
    return statistics.median(wall), statistics.median(cpu), one_pass()


def fmt_rate(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    return f"{x / 1e3:.1f} k/s"


def cmd_run(a):
    rust = {}
    with open(a.rust_results, encoding="utf-8") as f:
        for line in f:
            if line.startswith("RESULT "):
                v = json.loads(line[len("RESULT "):])
                rust[v["input"]] = v
    rows = []
    failed = False
    for name, dbc, log in a.input:
        if name not in rust:
            raise SystemExit(f"no Rust result for input {name}")
        t0 = time.perf_counter()
        db = load_db(dbc)
        parse_dbc_ms = (time.perf_counter() - t0) * 1e3
        frames = parse_candump(log)
        r = rust[name]
        if len(frames) != r["frames"]:
            raise SystemExit(f"{name}: cantools side read {len(frames)} frames, Rust {r['frames']}")
        compared, problems = cross_check(
            name, db, frames, f"{a.dump_dir}/{name}.jsonl", a.check_frames
        )
        checked = min(a.check_frames, len(frames))
        status = "OK" if not problems else f"{len(problems)} MISMATCHES"
        print(f"cross-check {name}: {checked} frames, {compared} signal values compared: {status}")
        for p in problems[:20]:
            print(f"  {p}")
        failed |= bool(problems)
        wall_c, cpu_c, decoded_c = time_cantools(db, frames, True, a.reps, a.min_time)
        _wall_n, cpu_n, _ = time_cantools(db, frames, False, a.reps, a.min_time)
        if decoded_c != r["decoded"]:
            print(f"  WARNING {name}: cantools decoded {decoded_c} frames per pass, Rust {r['decoded']}")
            failed = True
        rows.append((name, r, wall_c, cpu_c, cpu_n, parse_dbc_ms))

    print()
    print(
        f"CAN decode throughput, frames/s on-CPU (thread CPU time; median of {a.reps}; "
        "unknown ids skipped by both); last column: ratio by wall clock"
    )
    print()
    print(
        "| input | frames (decoded) | signals/pass | telematics-can | cantools choices=True "
        "| ratio | cantools choices=False | ratio | wall ratio | DBC load Rust / cantools |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r, wall_c, cpu_c, cpu_n, pms in rows:
        rust_cpu = r["fps_cpu_median"]
        if rust_cpu is None:
            raise SystemExit("the Rust side has no CPU-time figure (needs /proc/thread-self/schedstat)")
        print(
            f"| {name} | {r['frames']} ({r['decoded']}) | {r['signals_per_pass']} "
            f"| {fmt_rate(rust_cpu)} | {fmt_rate(cpu_c)} | {rust_cpu / cpu_c:.0f}x "
            f"| {fmt_rate(cpu_n)} | {rust_cpu / cpu_n:.0f}x | {r['fps_median'] / wall_c:.0f}x "
            f"| {r['parse_dbc_ms']:.2f} ms / {pms:.0f} ms |"
        )
    print()
    print(f"python {sys.version.split()[0]}, cantools {cantools.__version__}")
    if failed:
        print("FAILED: decoders disagree (see above)", file=sys.stderr)
        sys.exit(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--dbc", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--frames", type=int, default=20000)
    g.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("run")
    r.add_argument("--rust-results", required=True)
    r.add_argument("--dump-dir", required=True)
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--min-time", type=float, default=0.5)
    r.add_argument("--check-frames", type=int, default=2000)
    r.add_argument("--input", nargs=3, action="append", required=True, metavar=("NAME", "DBC", "LOG"))
    a = p.parse_args()
    {"gen": cmd_gen, "run": cmd_run}[a.cmd](a)


if __name__ == "__main__":
    main()
