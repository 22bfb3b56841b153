"""Test harness: the pack inside the real ComfyUI backend.

Two ways in, both the real ComfyUI of the venv the tests run in (scripts/setup.sh installs 0.3.75 in
.venv and 0.28.0 in .venv028; scripts/test.sh runs the suite in each), and both only through what
ComfyUI's own `main.py` uses in either version:

* in-process: `run_graph(prompt)` validates and runs an API-format prompt through ComfyUI's own
  `execution.validate_prompt` and `execution.PromptExecutor` (built and called as main.py does), with
  the pack loaded by ComfyUI's own custom-node loader. The values a test asks for come back through
  a test-only output node wired into the prompt (`FPTestOutputs`), not from executor internals;
* over HTTP: the `comfy_server` fixture starts `main.py` on 127.0.0.1 with the pack symlinked
  into its `custom_nodes/`, and talks to it with `/object_info`, `/prompt`, `/history`.

Both share one scratch ComfyUI base directory per test session (models/, input/, output/,
custom_nodes/). Tests place tiny random-weight model files under `models/`.

The pack's own modules are importable in tests as the package `framepack_oneframe` (a symlink
to the repo root in a scratch folder), never by putting the repo root itself on sys.path
(ComfyUI would then shadow or be shadowed by the pack's `nodes/` and `tests/`).
"""
from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The server launcher and ComfyUI locator are shared with scripts/demo.py.
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from comfy_env import find_comfy_dir  # noqa: E402
from comfy_server import PACK_NAME, ComfyHTTPError, ComfyServer as _ComfyServer, prepare_base_dir  # noqa: E402


COMFY_DIR = find_comfy_dir()
BASE_DIR = Path(tempfile.mkdtemp(prefix="fp1f-comfy-"))
prepare_base_dir(BASE_DIR, test_nodes=True)
# The pack importable as a package for tests of framepack_core (see the module docstring).
(BASE_DIR / "pkgs").mkdir()
(BASE_DIR / "pkgs" / PACK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)


def _boot_comfy_in_process() -> None:
    """Import ComfyUI's backend the way main.py does, CPU only, rooted at BASE_DIR."""
    sys.argv = [sys.argv[0], "--cpu", "--base-directory", str(BASE_DIR), "--disable-api-nodes"]
    sys.path.insert(0, str(COMFY_DIR))
    import comfy.options

    comfy.options.enable_args_parsing()
    import utils.extra_config  # noqa: F401  (must precede `nodes`, which shadows `utils`)
    import folder_paths  # noqa: F401

    sys.path.append(str(BASE_DIR / "pkgs"))


_boot_comfy_in_process()


@pytest.fixture(scope="session")
def comfy_base_dir() -> Path:
    return BASE_DIR


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return BASE_DIR / "models"


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's `nodes` module with the built-in nodes and this pack loaded by ComfyUI's loader."""
    import nodes

    if not getattr(comfy_nodes, "_loaded", False):
        _prompt_server()  # main.py makes the server before loading nodes; some node modules need it
        _event_loop().run_until_complete(nodes.init_extra_nodes(init_api_nodes=False))
        comfy_nodes._loaded = True
        pack_modules = [name for name in nodes.LOADED_MODULE_DIRS if name.endswith(PACK_NAME)]
        assert pack_modules, "ComfyUI did not load the pack (see the IMPORT FAILED lines in the log)"
    return nodes


def _event_loop():
    if not hasattr(_event_loop, "loop"):
        _event_loop.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_event_loop.loop)
    return _event_loop.loop


def _prompt_server():
    """The one PromptServer of this process, made the way main.py makes it (on the event loop)."""
    import server

    if not hasattr(_prompt_server, "server"):
        _prompt_server.server = server.PromptServer(_event_loop())
    return _prompt_server.server


class GraphError(AssertionError):
    """A graph failed validation or execution; carries ComfyUI's own error payload."""

    def __init__(self, message: str, details):
        super().__init__(f"{message}: {json.dumps(details, default=str)[:4000]}")
        self.details = details


_CAPTURE_PREFIX = "__fp_test_outputs_"  # node ids of the FPTestOutputs nodes run_graph adds


class GraphRunner:
    """Runs API-format prompts through ComfyUI's real validation and PromptExecutor."""

    def __init__(self, nodes_module):
        import execution

        self._execution = execution
        self.loop = _event_loop()
        self.server = _prompt_server()
        # As main.py builds it with default arguments: classic cache, no LRU, RAM-pressure headroom 0.
        # ("ram_inactive" is read by 0.28's cache set; 0.3.75's ignores the key.)
        self.executor = execution.PromptExecutor(self.server, cache_type=False,
                                                 cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
        self._outputs_node = nodes_module.NODE_CLASS_MAPPINGS["FPTestOutputs"]
        self._nodes = nodes_module

    def validate(self, prompt: dict):
        prompt_id = str(uuid.uuid4())
        return self.loop.run_until_complete(self._execution.validate_prompt(prompt_id, prompt, None)), prompt_id

    def __call__(self, prompt: dict, outputs_of: list[str] | None = None, extra_data: dict | None = None) -> dict:
        """Run `prompt`; return {node_id: tuple of that node's outputs} for `outputs_of`.

        Raises GraphError with ComfyUI's message when validation or execution fails.
        """
        prompt = dict(prompt)
        n_outputs = {node_id: len(self._nodes.NODE_CLASS_MAPPINGS[prompt[node_id]["class_type"]].RETURN_TYPES)
                     for node_id in outputs_of or []}
        for node_id, n_out in n_outputs.items():
            for i in range(n_out):
                prompt[f"{_CAPTURE_PREFIX}{node_id}_{i}"] = {
                    "class_type": "FPTestOutputs", "inputs": {"key": f"{node_id}:{i}", "value": [node_id, i]}}
        (valid, error, good_outputs, node_errors), prompt_id = self.validate(prompt)
        if not valid:
            raise GraphError("prompt failed validation", {"error": error, "node_errors": node_errors})
        captured = self._outputs_node.captured
        captured.clear()
        self.executor.execute(prompt, prompt_id, extra_data or {}, good_outputs)  # as main.py calls it
        if not self.executor.success:
            errors = [m for m in self.executor.status_messages if m[0] == "execution_error"]
            raise GraphError("prompt failed to execute", errors)
        result = {}
        for node_id, n_out in n_outputs.items():
            missing = [i for i in range(n_out) if f"{node_id}:{i}" not in captured]
            if missing:
                raise KeyError(f"node {node_id} produced no output {missing}")
            result[node_id] = tuple(captured[f"{node_id}:{i}"] for i in range(n_out))
        self.ui_outputs = {k: v for k, v in self.executor.history_result.get("outputs", {}).items()
                           if not k.startswith(_CAPTURE_PREFIX)}
        return result


@pytest.fixture(scope="session")
def run_graph(comfy_nodes) -> GraphRunner:
    return GraphRunner(comfy_nodes)


# --------------------------------------------------------------------------------------------
# The real ComfyUI server over HTTP
# --------------------------------------------------------------------------------------------


class ComfyServer(_ComfyServer):
    """The shared launcher (scripts/comfy_server.py); HTTP errors surface as GraphError for tests."""

    def post(self, path: str, payload: dict, timeout: float = 30.0):
        try:
            return super().post(path, payload, timeout)
        except ComfyHTTPError as e:
            raise GraphError(str(e), e.details) from None


@pytest.fixture(scope="session")
def comfy_server():
    srv = ComfyServer(BASE_DIR)
    yield srv
    srv.stop()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(BASE_DIR, ignore_errors=True)
