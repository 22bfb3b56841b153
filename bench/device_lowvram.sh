#!/usr/bin/env bash
# On the lent GPU machine (the call carries .whl, see bench/device_kit/unpack.sh): the low-VRAM runs of
# bench_oneframe.py on one ComfyUI version, once with its legacy partial loading and, where it has one,
# once under its Dynamic VRAM, each beside the resident runs it is compared with.
#   OUT=$OUT COMFY=0.28.0 bash bench/device_lowvram.sh      (COMFY=0.3.75 has no Dynamic VRAM)
# Each half is capped (LEGACY_S, DYNAMIC_S seconds) so that one call stays within the device's limit.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/device_kit/unpack.sh
ver=${COMFY:-0.28.0}
dir=$C028; [ "$ver" = 0.3.75 ] && dir=$C375
OUT=${OUT:-bench/results}; mkdir -p "$OUT"
bench() {  # name seconds bench_oneframe args...
  local name=$1 secs=$2; shift 2
  COMFYUI_DIR="$dir" PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout "$secs" python3 bench/bench_oneframe.py \
    --layouts kisekaeichi --out "$OUT/lowvram_${name}_$ver.json" "$@" > "$OUT/lowvram_${name}_$ver.log" 2>&1
  echo "$name: rc $?"; grep -E "lowvram |host->GPU|done;" "$OUT/lowvram_${name}_$ver.log" | cut -c1-600
}
bench legacy "${LEGACY_S:-330}" --sections env,floor,ours,ours_compiled,fp8,lowvram
[ "$ver" = 0.3.75 ] || bench dynamic "${DYNAMIC_S:-240}" --dynamic-vram --sections env,ours,ours_compiled,fp8,lowvram
