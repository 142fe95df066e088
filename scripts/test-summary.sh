#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Totals of the ctest runs of `make test`, ending with the plain "N passed, N failed" line.
# Usage: scripts/test-summary.sh BUILD_DIR...
set -euo pipefail
passed=0 failed=0 parts=()
for dir in "$@"; do
  log="$dir/Testing/Temporary/LastTest.log"
  [ -f "$log" ] || { echo "test-summary: no ctest log in $dir" >&2; exit 1; }
  p=$(grep -cE '^(Test Passed\.|Test Pass Reason:)' "$log" || true)
  f=$(grep -cE '^Test Failed' "$log" || true)
  passed=$((passed + p)); failed=$((failed + f)); parts+=("${dir#build-}: $p")
done
echo "make test: ${parts[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
