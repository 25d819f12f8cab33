#!/usr/bin/env bash
# System benchmarks of telematicsd (see BENCHMARKS.md, "System" sections): command round trip
# through mosquitto against an MQTT echo, idle CPU/RSS against mosquitto, CPU per CAN frame at a
# bus load against a plain reader of the same bus, cold start, a fleet of daemons against one
# broker, and stripped binary sizes. Prints a Markdown table.
#
#   scripts/bench-system.sh            # full run (~15 min on 2 cores)
#   scripts/bench-system.sh --quick    # smoke run (~2 min): few samples, fleet of 20
#
# Environment: FLEET_N (default 200), RTT_N (200), CARGO_TARGET_DIR (default target).
# Needs mosquitto (apt-get install -y mosquitto). aarch64 sizes only when
# aarch64-linux-gnu-gcc and the rustup target are installed (see .cargo/config.toml).
# Not part of CI: too slow, and the figures need a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
rel=$CARGO_TARGET_DIR/release

# The daemon as shipped (release profile: opt-level s, fat LTO, stripped), then the harness.
cargo build --release -p telematicsd -p telematicsctl
cargo build --release -p telematics-bench
bench=$rel/bench-system
daemon=$rel/telematicsd
# The fleet's vehicles are the in-process simulated demo car (`can.source = "sim"`): the same
# daemon built with its development feature `sim`, in a target directory of its own so that
# target/release/telematicsd (what `cargo deb --no-build` packages) stays the shipped build.
CARGO_TARGET_DIR=$CARGO_TARGET_DIR/bench-sim cargo build --release -p telematicsd --features sim
sim_daemon=$CARGO_TARGET_DIR/bench-sim/release/telematicsd

# Every daemon of the fleet is a client of the one broker (which inherits this limit).
ulimit -n "$(ulimit -Hn)"

if [ $quick = 1 ]; then
  rtt=(rtt --n 10 --rejected 5)
  idle=(idle --secs 10)
  busload=(bus-load --fps 4000 --ids 200 --mapped 20 --secs 5)
  cold=(cold-start --runs 3)
  fleet=(fleet --n 20 --window 10 --commands 2)
else
  rtt=(rtt --n "${RTT_N:-200}" --rejected 50)
  idle=(idle --secs 60)
  busload=(bus-load --fps 4000 --ids 200 --mapped 20 --secs 20)
  cold=(cold-start --runs 10)
  fleet=(fleet --n "${FLEET_N:-200}" --window 60 --commands 5)
fi

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
"$bench" --daemon "$daemon" "${rtt[@]}" | tee -a "$rows"
"$bench" --daemon "$daemon" "${idle[@]}" | tee -a "$rows"
"$bench" --daemon "$daemon" "${busload[@]}" | tee -a "$rows"
"$bench" --daemon "$daemon" "${cold[@]}" | tee -a "$rows"
"$bench" --daemon "$sim_daemon" "${fleet[@]}" | tee -a "$rows"

size_row() { # target-label dir
  for b in telematicsd telematicsctl; do
    f=$2/$b
    s=$(stat -c %s "$f")
    if file "$f" | grep -q 'not stripped'; then strip -o "$f.stripped" "$f"; s=$(stat -c %s "$f.stripped"); fi
    printf '| binary size %s, %s (stripped, release) | %s bytes (%.2f MiB) | — | `cargo build --release -p telematicsd -p telematicsctl%s` |\n' \
      "$b" "$1" "$s" "$(echo "$s / 1048576" | bc -l)" "$3"
  done
}
size_row x86_64 "$rel" "" | tee -a "$rows"
if [ $quick = 0 ] && command -v aarch64-linux-gnu-gcc >/dev/null \
   && rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
  cargo build --release --target aarch64-unknown-linux-gnu -p telematicsd -p telematicsctl
  size_row aarch64 "$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release" \
    " --target aarch64-unknown-linux-gnu" | tee -a "$rows"
fi

echo
echo "| Figure | Value | Peer / ratio | Command |"
echo "|---|---|---|---|"
cat "$rows"
