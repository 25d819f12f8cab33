#!/usr/bin/env bash
# Supply-chain policy (deny.toml): `cargo deny check` advisories, bans, licenses and sources,
# fully offline. The advisories check reads the RustSec advisory database snapshot in
# ../shared/advisory-db (plain copy, see its SOURCE.md; no network to GitHub here).
# Installs the pinned cargo-deny from crates.io if it is missing. Fails on any error finding,
# including a new advisory against a crate version in Cargo.lock.
#
#   bash scripts/deny.sh                      # every check
#   bash scripts/deny.sh advisories           # only some (cargo deny check <which>...)
#   ADVISORY_DB=/path/to/advisory-db bash scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
snapshot=${ADVISORY_DB:-../shared/advisory-db}

if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $DENY_VERSION"; then
  echo "installing cargo-deny $DENY_VERSION from crates.io"
  start=$(date +%s)
  cargo install cargo-deny --locked --version "$DENY_VERSION"
  echo "cargo-deny installed in $(($(date +%s) - start)) s"
fi
cargo deny --version

if [ ! -d "$snapshot/crates" ]; then
  echo "ERROR: no RustSec advisory database at $snapshot (expected ../shared/advisory-db)" >&2
  exit 1
fi
# The snapshot's date, from SOURCE.md ("... at commit <sha> (YYYY-MM-DD)").
snap_date=$(grep -oE '\(([0-9]{4}-[0-9]{2}-[0-9]{2})\)' "$snapshot/SOURCE.md" | head -1 | tr -d '()')
if [ -z "$snap_date" ]; then
  echo "ERROR: $snapshot/SOURCE.md names no snapshot date (YYYY-MM-DD)" >&2
  exit 1
fi

# cargo-deny opens <db-path>/<name>-<hash of the URL>/ and wants a git checkout there (it reads
# the HEAD commit time to enforce maximum-db-staleness). shared/ is read-only, so the snapshot is
# copied into a temporary db-path and committed once, dated with the snapshot's date (so the
# staleness check measures the snapshot's real age, not the time of this copy).
dbs=$(mktemp -d)
trap 'rm -rf "$dbs"' EXIT
# Directory name cargo-deny derives from the default URL https://github.com/RustSec/advisory-db.
db="$dbs/advisory-db-3157b0e258782691"
mkdir -p "$db"
cp -R "$snapshot/." "$db/"
chmod -R u+w "$db"
(
  cd "$db"
  export GIT_AUTHOR_DATE="${snap_date}T00:00:00Z" GIT_COMMITTER_DATE="${snap_date}T00:00:00Z"
  git init -q -b main
  git add -A
  git -c user.name=snapshot -c user.email=snapshot@invalid -c commit.gpgsign=false \
    commit -q -m "advisory-db snapshot $snap_date"
  touch -d "${snap_date}T00:00:00Z" .git/HEAD
)
echo "advisory database: $snapshot (snapshot of $snap_date, $(find "$db/crates" -name '*.md' | wc -l) advisories)"

# `cargo metadata` (run by cargo-deny) needs every package of Cargo.lock on disk, including
# those of other platforms that builds never download: fetch them from crates.io first, then
# check with --offline (no advisory fetch, no index update).
cargo fetch --locked --quiet
if [ $# -eq 0 ]; then set -- advisories bans licenses sources; fi
TELEMATICS_ADVISORY_DBS="$dbs" cargo deny --offline --locked check --show-stats "$@"

# The shipped binaries link no test PKI and no test kit: in telematicsctl only the `demo` and
# `ca` (back-end CA signer, rcgen) features bring them in (release builds have no features; see
# crates/telematicsctl/Cargo.toml); telematicsd builds its renewal CSR itself (identity/csr.rs).
for pkg in telematicsd telematicsctl; do
  for c in rcgen telematics-testkit tempfile; do
    out=$(cargo tree --locked --offline -p "$pkg" -e normal --target all -i "$c" 2>/dev/null) ||
      { echo "ERROR: cargo tree failed for $pkg" >&2; exit 1; }
    if [ -n "$out" ]; then
      echo "ERROR: the release $pkg depends on $c:" >&2
      echo "$out" >&2
      exit 1
    fi
  done
done
echo "release graph: telematicsd and telematicsctl link no rcgen, telematics-testkit or tempfile"
