#!/usr/bin/env bash
# Runs the whole test suite in the set-up's .venv. pytest's exit code 5 ("no tests collected")
# is a failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
