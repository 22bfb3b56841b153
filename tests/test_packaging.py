"""What ComfyUI-Manager, the Comfy Registry and CI read from the checkout itself.

* `pyproject.toml` carries the fields the Registry needs ([project] and [tool.comfy]); checked by
  hand with comfy-cli 1.23.0 `comfy node validate` ("All validation checks passed"), which is too
  heavy a dependency for the test environment, so the fields it reads are checked here.
* Neither `requirements.txt` (ComfyUI-Manager installs it line by line and refuses torch) nor
  pyproject's dependencies name torch / torchvision / torchaudio, and the two lists agree.
* `.ci/run` runs exactly the set-up and test commands README.md gives a newcomer.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TORCH_FAMILY = {"torch", "torchvision", "torchaudio"}


def _requirement_names(lines) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_pyproject_has_what_the_registry_reads():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    for key in ("name", "description", "version", "license", "dependencies", "urls"):
        assert project.get(key), f"[project] {key} is missing or empty"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", project["name"]), project["name"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), project["version"]
    assert project["urls"].get("Repository", "").startswith("https://"), project["urls"]
    comfy = data["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert key in comfy, f"[tool.comfy] {key} is missing"
    assert comfy["PublisherId"] and comfy["DisplayName"]


def test_requirements_never_name_torch_and_match_pyproject():
    req = _requirement_names((REPO / "requirements.txt").read_text().splitlines())
    deps = _requirement_names(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert not req & TORCH_FAMILY, f"requirements.txt names {req & TORCH_FAMILY}: ComfyUI-Manager refuses that"
    assert not deps & TORCH_FAMILY, deps
    assert req == deps, f"requirements.txt {sorted(req)} vs pyproject dependencies {sorted(deps)}"


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^ {4}(bash scripts/\S+\.sh)\s*$", readme, flags=re.M)
    assert commands == ["bash scripts/setup.sh", "bash scripts/test.sh"], commands
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert ci[-2:] == commands, ci
