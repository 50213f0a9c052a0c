#!/usr/bin/env bash
# README command (2): the test suite on real infrastructure. Starts nothing itself: the session
# fixtures in tests/fix_stack.py bring up (and stop) whatever stack the tests need.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/test_devstack.py -k round_trip
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/bootstrap.sh

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
  # pytest's "no tests collected" would otherwise pass silently after a bad selection.
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
