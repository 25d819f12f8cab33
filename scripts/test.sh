#!/usr/bin/env bash
# The project's test command (README): every crate's unit, property and integration tests,
# including the mTLS tests against a real mosquitto broker. Ends with one summary line
# "tests: N passed, N failed" added up over every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d ../shared/fixtures/external ]; then
  echo "NOTE: ../shared/fixtures/external is absent: tests that decode the external DBC fixtures will fail and say so." >&2
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
