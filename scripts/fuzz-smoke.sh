#!/usr/bin/env bash
# Fuzz smoke test: run every cargo-fuzz target for a bounded time; fail on any crash.
#   scripts/fuzz-smoke.sh [seconds-per-target]   (default 20)
# Runs real libFuzzer (cargo-fuzz + libfuzzer-sys) on the STABLE toolchain via
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags) and --sanitizer none (no ASan: the fuzzed
# crates are `unsafe_code = deny`, so panics/aborts/OOM/timeouts are what we look for).
# Crash reproducers are copied to fuzz/regressions/<target>/ (tracked in git).
set -euo pipefail
secs="${1:-20}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/fuzz}"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2; exit 2; }
"$root/fuzz/seed-corpora.sh"
cargo fuzz build --sanitizer none
targets=$(cargo fuzz list)
failed=()
for t in $targets; do
  echo "=== fuzz $t for ${secs}s"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  if ! cargo fuzz run --sanitizer none "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      >"fuzz/artifacts/$t/smoke.log" 2>&1; then
    tail -n 40 "fuzz/artifacts/$t/smoke.log"
    mkdir -p "fuzz/regressions/$t"
    find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) \
      -exec cp {} "fuzz/regressions/$t/" \;
    failed+=("$t")
  else
    grep -E '^stat::number_of_executed_units|^Done' "fuzz/artifacts/$t/smoke.log" | tr '\n' ' '; echo
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FUZZ SMOKE FAILED: ${failed[*]} (reproducers in fuzz/regressions/)" >&2
  exit 1
fi
echo "fuzz smoke OK: $(echo $targets | wc -w) targets x ${secs}s"
