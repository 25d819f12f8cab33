#!/usr/bin/env bash
# Fuzz smoke test (CI and local): every cargo-fuzz target, bounded time, non-zero on any crash.
#   scripts/fuzz-smoke.sh [seconds-per-target]   (default 20; CI uses 10)
#   FUZZ_TARGETS="cose_plaintext reset_auth_signed" scripts/fuzz-smoke.sh 60   # a subset
#
# 1. installs cargo-fuzz if it is missing (`cargo install cargo-fuzz --locked`, ~2 min here);
# 2. builds every target once (libFuzzer via libfuzzer-sys on the STABLE toolchain with
#    RUSTC_BOOTSTRAP=1, because cargo-fuzz passes -Z flags; --sanitizer none: the fuzzed crates
#    are `unsafe_code = deny`, we look for panics, aborts, OOMs and timeouts);
# 3. regression tests: runs each target once over every file in fuzz/regressions/<target>/
#    (tracked in git; a past crash must stay fixed);
# 4. fuzzes each target for the given time from fuzz/corpus/<target>/ (seeded by
#    fuzz/seed-corpora.sh); crash/oom/timeout reproducers are copied to fuzz/regressions/<target>/
#    so that committing them turns them into regression tests.
set -euo pipefail
secs="${1:-20}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/fuzz}"
fuzz_flags=(--sanitizer none)
lf_flags=(-rss_limit_mb=2048 -timeout=10)

if ! command -v cargo-fuzz >/dev/null; then
  echo "=== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

"$root/fuzz/seed-corpora.sh"
echo "=== build"
cargo fuzz build "${fuzz_flags[@]}"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
failed=()

# Copy reproducers libFuzzer left in fuzz/artifacts/<t>/ to fuzz/regressions/<t>/.
keep_reproducers() {
  local t="$1"
  mkdir -p "fuzz/regressions/$t"
  find "fuzz/artifacts/$t" -maxdepth 1 -type f \
    \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' -o -name 'slow-unit-*' \) \
    -exec cp {} "fuzz/regressions/$t/" \;
}

echo "=== regressions (fuzz/regressions/<target>/)"
for t in $targets; do
  dir="fuzz/regressions/$t"
  if [ -d "$dir" ] && [ -n "$(find "$dir" -maxdepth 1 -type f -print -quit)" ]; then
    mkdir -p "fuzz/artifacts/$t"
    n=$(find "$dir" -maxdepth 1 -type f | wc -l)
    # -runs=0: execute every input of the directory once, no mutation.
    if cargo fuzz run "${fuzz_flags[@]}" "$t" "$dir" -- -runs=0 "${lf_flags[@]}" \
        >"fuzz/artifacts/$t/regressions.log" 2>&1; then
      echo "$t: $n regression input(s) pass"
    else
      tail -n 40 "fuzz/artifacts/$t/regressions.log"
      echo "$t: REGRESSION (log: fuzz/artifacts/$t/regressions.log)"
      failed+=("$t(regression)")
    fi
  fi
done

for t in $targets; do
  echo "=== fuzz $t for ${secs}s"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t/smoke.log"
  if ! cargo fuzz run "${fuzz_flags[@]}" "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" "${lf_flags[@]}" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    keep_reproducers "$t"
    failed+=("$t")
  else
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 || true)
    echo "$t: ${runs:-?} runs ($(( ${runs:-0} / (secs > 0 ? secs : 1) ))/s), ${cov:-cov: ?}"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "FUZZ SMOKE FAILED: ${failed[*]} (reproducers copied to fuzz/regressions/<target>/)" >&2
  exit 1
fi
echo "fuzz smoke OK: $(echo "$targets" | wc -w) targets x ${secs}s"
