#!/usr/bin/env bash
# Validates docs/asyncapi.yaml with the standard AsyncAPI parser (@asyncapi/parser from the
# npm registry, exact version pinned in scripts/asyncapi/package-lock.json): fails on any
# diagnostic of severity error, and on a disagreement between the parsed channel addresses and
# the line scan that crates/telematics-link/tests/asyncapi_topics.rs compares with the code.
# Usage: scripts/asyncapi-check.sh [DOC.yaml]   (default docs/asyncapi.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
doc="${1:-docs/asyncapi.yaml}"
# --ignore-scripts: nothing in the tree needs an install script (one dependency has a
# telemetry postinstall). The stamp only skips a reinstall of the same lock file on a rerun in
# the same checkout; CI's clean clone always installs.
stamp=scripts/asyncapi/node_modules/.installed-from-lock
if ! cmp -s scripts/asyncapi/package-lock.json "$stamp" 2>/dev/null; then
  npm ci --prefix scripts/asyncapi --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
  cp scripts/asyncapi/package-lock.json "$stamp"
fi
node scripts/asyncapi/check.mjs "$doc"
