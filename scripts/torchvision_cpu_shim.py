"""Let torchvision's pure-Python parts import on CPU-only torch.

torchvision 0.28.0's compiled `_C.so` links against CUDA torch. When it fails to load, the
fake-kernel registrations for `torchvision::nms` / `torchvision::qnms` raise because the op
schemas were never defined. Defining the two schemas up front makes `import torchvision` work;
only `torchvision.ops.nms` itself would then raise. Installed into the test venv by
scripts/setup.sh as a .pth hook; never shipped to users.
"""
import importlib.abc
import sys


class _Finder(importlib.abc.MetaPathFinder):
    done = False

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" and not _Finder.done:
            _Finder.done = True
            try:
                import torch

                lib = torch.library.Library("torchvision", "DEF")
                lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                _Finder.lib = lib  # keep the registration alive
            except Exception:
                pass
        return None


sys.meta_path.insert(0, _Finder())
