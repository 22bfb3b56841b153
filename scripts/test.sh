#!/usr/bin/env bash
# Runs the whole test suite once per ComfyUI version the set-up installed:
#   ComfyUI 0.3.75 in .venv, then ComfyUI 0.28.0 in .venv028 (when scripts/setup.sh made it).
# Pick one with FRAMEPACK_COMFY=0.3.75 or FRAMEPACK_COMFY=0.28.0; arguments go to pytest, e.g.
#   FRAMEPACK_COMFY=0.28.0 bash scripts/test.sh tests/test_layout.py -x
# pytest's exit code 5 ("no tests collected") is a failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."

versions=()
case "${FRAMEPACK_COMFY:-all}" in
  all) versions=(0.3.75); [ -x .venv028/bin/python ] && versions+=(0.28.0) ;;
  0.3.75|0.28.0) versions=("$FRAMEPACK_COMFY") ;;
  *) echo "error: FRAMEPACK_COMFY must be 0.3.75, 0.28.0 or unset (both), not '$FRAMEPACK_COMFY'" >&2; exit 2 ;;
esac

status=0
summary=()
for ver in "${versions[@]}"; do
  venv=.venv; [ "$ver" = 0.28.0 ] && venv=.venv028
  if [ ! -x "$venv/bin/python" ]; then
    echo "error: $venv is missing; run: bash scripts/setup.sh" >&2; exit 1
  fi
  echo "=== tests on ComfyUI $ver ($venv)"
  start=$SECONDS
  "$venv/bin/python" -m pytest "$@"
  rc=$?
  if [ "$rc" = 5 ]; then
    echo "error: pytest collected no tests" >&2
    rc=1
  fi
  summary+=("ComfyUI $ver: exit $rc, $((SECONDS - start)) s")
  [ "$rc" = 0 ] || status=$rc
done
printf '%s\n' "${summary[@]}"
exit "$status"
