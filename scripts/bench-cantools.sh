#!/usr/bin/env bash
# CAN decode throughput: telematics-can (Rust, `Dbc::decode_frame`) against cantools (Python,
# `db.decode_message`) on the same DBCs and candump logs, in one run. See BENCHMARKS.md.
#
#   scripts/bench-cantools.sh [REPS] [SYNTHETIC_FRAMES]
#
# Inputs: the demo DBC with its drive and park logs, and the external real DBCs in
# ../shared/fixtures/external (BMW E9x from opendbc, Tesla Model 3) with a synthetic log
# generated into a temporary directory (nothing is written to ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
synth_frames=${2:-20000}
ext=../shared/fixtures/external
data=crates/telematics-can/data

if ! python3 -c 'import cantools' 2>/dev/null; then
  python3 -m pip install --quiet cantools
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

inputs=(demo_drive "$data/demo_car.dbc" "$data/demo_drive.log"
        demo_park "$data/demo_car.dbc" "$data/demo_park.log")
for f in bmw_e9x_e8x tesla_model3; do
  if [ -f "$ext/$f.dbc" ]; then
    python3 scripts/bench_cantools.py gen --dbc "$ext/$f.dbc" --out "$tmp/$f.log" --frames "$synth_frames"
    inputs+=("$f" "$ext/$f.dbc" "$tmp/$f.log")
  else
    echo "NOTE: $ext/$f.dbc absent, skipped" >&2
  fi
done

rust_args=() py_args=()
for ((i = 0; i < ${#inputs[@]}; i += 3)); do
  rust_args+=(--input "${inputs[i]}" "$(realpath "${inputs[i+1]}")" "$(realpath "${inputs[i+2]}")")
  py_args+=(--input "${inputs[i]}" "${inputs[i+1]}" "${inputs[i+2]}")
done

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== telematics-can (cargo bench --bench cantools_compare)"
cargo bench -p telematics-can --bench cantools_compare -- \
  --reps "$reps" --dump-dir "$tmp/dump" --dump-frames 2000 "${rust_args[@]}" | tee "$tmp/rust.txt"

echo "== cantools $(python3 -c 'import cantools; print(cantools.__version__)')"
python3 scripts/bench_cantools.py run --rust-results "$tmp/rust.txt" --dump-dir "$tmp/dump" \
  --reps "$reps" --check-frames 2000 "${py_args[@]}"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg) (wall-clock figures on a shared machine: compare the ratios)"
