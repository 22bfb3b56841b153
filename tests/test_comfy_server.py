"""The pack inside the real ComfyUI server: every node registered, no import errors."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _declared_node_ids() -> set[str]:
    """node_id=... literals in nodes/*.py: the nodes the pack means to register."""
    ids = set()
    for path in (REPO / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "node_id" and isinstance(node.value, ast.Constant):
                ids.add(node.value.value)
    return ids


def _tracebacks(log: str) -> list[str]:
    """Each Python traceback in the log: its header, indented frame lines and the exception line."""
    blocks, current = [], None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            current = [line]
        elif current is not None:
            current.append(line)
            if not line.startswith((" ", "\t")):
                blocks.append("\n".join(current))
                current = None
    return blocks


def test_every_node_in_object_info_without_import_errors(comfy_server):
    info = comfy_server.get("/object_info")
    declared = _declared_node_ids()
    assert "FramePackModelLoader" in declared
    missing = sorted(declared - set(info))
    assert not missing, f"nodes missing from /object_info: {missing}"
    log = comfy_server.log()
    # ComfyUI 0.3.75 itself logs tracebacks for its audio nodes (no torchaudio on CPU); only
    # failures that mention this pack count.
    # (A line is the pack's when it names the pack's folder or sources, not merely "framepack": the
    # checkout's own path, and so the venv's, may contain that word.)
    pack_paths = [str(REPO / sub) for sub in ("nodes", "framepack_core", "__init__.py")] + ["custom_nodes/framepack_oneframe"]
    pack_lines = [l for l in log.splitlines() if any(p in l for p in pack_paths)]
    assert not [l for l in pack_lines if "IMPORT FAILED" in l or "Cannot import" in l or "Error" in l], log
    for block in _tracebacks(log):
        assert not any(p in block for p in pack_paths), block
    for node_id in declared:
        for section in ("required", "optional"):
            for name, spec in info[node_id]["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_pack_runs_in_process_engine(comfy_nodes, run_graph):
    """The in-process harness runs a real graph through ComfyUI's PromptExecutor."""
    prompt = {
        "1": {"class_type": "FPTestConditioning", "inputs": {"seed": 3, "tokens": 5, "padding": 2, "dim": 8, "pooled_dim": 4}},
        "2": {"class_type": "FPTestCapture", "inputs": {"value": ["1", 0]}},
    }
    out = run_graph(prompt, outputs_of=["1"])
    cond = out["1"][0]
    assert cond[0][0].shape == (1, 7, 8)
    assert cond[0][1]["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0]]
    assert "FramePackModelLoader" in comfy_nodes.NODE_CLASS_MAPPINGS
