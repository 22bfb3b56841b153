"""Start a real ComfyUI server with this pack in a scratch base folder, and talk to it over HTTP.

Used by scripts/demo.py, scripts/make_example_workflows.py and the tests' server fixtures
(tests/conftest.py). The scratch folder gets `custom_nodes/framepack_oneframe` (a link to this checkout),
optionally the test-only nodes (`tests/comfy_test_nodes`, for random-weight runs), and a models
folder: either a scratch one or a real one given by the caller.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from comfy_env import find_comfy_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "framepack_oneframe"
TEST_NODES_DIR = REPO_ROOT / "tests" / "comfy_test_nodes"
MODEL_FOLDERS = ("diffusion_models", "loras", "vae", "clip_vision", "text_encoders")


def prepare_base_dir(base: Path, test_nodes: bool, models_dir: Path | None = None) -> Path:
    """Lay out a ComfyUI base folder; returns its models folder."""
    for sub in ("custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    links = {base / "custom_nodes" / PACK_NAME: REPO_ROOT}
    if test_nodes:
        links[base / "custom_nodes" / "framepack_test_nodes"] = TEST_NODES_DIR
    if models_dir is not None:
        links[base / "models"] = Path(models_dir).resolve()
    for link, target in links.items():
        if link.is_symlink() and link.resolve() != target.resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    for sub in MODEL_FOLDERS:
        (base / "models" / sub).mkdir(parents=True, exist_ok=True)
    return base / "models"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyHTTPError(RuntimeError):
    """An HTTP error answer from the server; `details` is its JSON body (or the raw text)."""

    def __init__(self, path: str, code: int, body: str):
        try:
            self.details = json.loads(body)
        except ValueError:
            self.details = body
        super().__init__(f"POST {path} -> HTTP {code}: {body[:4000]}")


class ComfyServer:
    """`python main.py` from the ComfyUI folder, rooted at `base`; stop() ends it.

    It listens on `listen` (default 127.0.0.1: this machine only) at `port` (default: a free one)."""

    def __init__(self, base: Path, cpu: bool = True, comfy_dir=None, extra_args=(), timeout: float = 180.0,
                 port: int | None = None, listen: str = "127.0.0.1"):
        self.base = Path(base)
        self.port = port or _free_port()
        if port:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise RuntimeError(f"port {port} is already in use (another ComfyUI?); pick another one")
        # what a browser on this machine opens (0.0.0.0 / :: listen everywhere, this machine included)
        host = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
        self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        self.log_path = self.base / f"comfyui-{self.port}.log"
        args = [sys.executable, "main.py", "--listen", listen, "--port", str(self.port),
                "--base-directory", str(self.base), "--disable-api-nodes",
                "--database-url", f"sqlite:///{self.base}/comfyui-{self.port}.db", *extra_args]
        if cpu:
            args.append("--cpu")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=find_comfy_dir(comfy_dir), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            self._wait_until_up(timeout)
        except BaseException:  # also Ctrl-C while it starts: never leave the server behind
            self.stop()
            raise

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early; its log:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() > deadline:
                    raise RuntimeError(f"ComfyUI did not start in {timeout:.0f}s; its log:\n{self.log()[-4000:]}")
                time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict, timeout: float = 30.0):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise ComfyHTTPError(path, e.code, e.read().decode(errors="replace")) from None

    def queue(self, prompt: dict, client_id: str = "framepack-oneframe") -> str:
        """POST an API-format prompt; returns its prompt_id (validation errors raise ComfyHTTPError)."""
        return self.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 1800.0) -> dict:
        """Poll /history until the prompt completed or failed; returns its history entry either way."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("completed") or status.get("status_str") == "error":
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f}s")

    def run(self, prompt: dict, timeout: float = 1800.0) -> dict:
        """Queue an API prompt, wait for it, return its /history entry (raises with ComfyUI's error)."""
        entry = self.wait(self.queue(prompt), timeout)
        status = entry.get("status", {})
        if status.get("status_str") == "error":
            errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
            raise RuntimeError(f"the workflow failed: {json.dumps(errors)[:4000]}")
        return entry

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line in /proc/<pid>/status")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
