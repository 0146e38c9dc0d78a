"""Helpers of tests/deploy and tests/e2e/test_monitoring.py: the shipped deploy files, their tools, and the
queries of the Grafana dashboards as Grafana would send them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO

DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROMETHEUS_TESTS = DEPLOY / "prometheus" / "tests"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
#: the job that scrapes the service in prometheus.yml (the rules and the dashboard filter on it)
SERVICE_JOB = "trajpred"


def tool(name: str, how: str) -> str:
    """A command-line tool: beside this interpreter (pip-installed ones), else on PATH; fail if missing."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed ({how})")
    return found


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus")


def run(args: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=REPO)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rule_files() -> list[Path]:
    """The rule files prometheus.yml loads (its globs are relative to the file)."""
    cfg = load_yaml(PROMETHEUS_CONFIG)
    files: list[Path] = []
    for pattern in cfg.get("rule_files", []):
        matched = sorted(PROMETHEUS_CONFIG.parent.glob(pattern))
        assert matched, f"rule_files pattern {pattern!r} of {PROMETHEUS_CONFIG} matches no file"
        files += matched
    return files


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of the shipped rule files with a ``kind`` key ('record' or 'alert')."""
    return [r for path in rule_files() for g in load_yaml(path)["groups"] for r in g["rules"] if kind in r]


def panels(container: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those inside (collapsed) rows included; rows themselves left out."""
    for p in container.get("panels", []):
        if p.get("type") == "row":
            yield from panels(p)
        else:
            yield p


def dashboard_queries(path: Path) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL expression) of every target of every panel."""
    dash = json.loads(path.read_text())
    return [(p["title"], t.get("refId", "?"), t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]``; an unknown variable is an error."""

    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        if name not in values:
            raise KeyError(f"variable ${name} of {expr!r} has no value")
        return values[name]

    return _VARIABLE.sub(one, expr)


def regex_of(values: list[str]) -> str:
    """A multi-value selection as Grafana's Prometheus datasource writes it into a ``=~"..."`` matcher:
    ``(a|b)``, regex metacharacters escaped, backslashes doubled for the PromQL string literal."""
    escaped = [re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*$")


def label_values_query(query: str) -> tuple[str | None, str]:
    """``label_values(selector, label)`` -> (selector or None, label)."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        raise ValueError(f"not a label_values() variable query: {query!r}")
    return (m.group(1).strip() if m.group(1) else None), m.group(2)


_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(text: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's variable interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``."""
    env = os.environ if env is None else env

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3) or ""
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise KeyError(f"compose requires ${name}: {default}")
        return value or ""

    return _INTERPOLATION.sub(one, text)


def _interpolate_values(node: Any, env: Mapping[str, str] | None) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_values(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_values(v, env) for k, v in node.items()}
    return node


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose reads it: YAML merge keys applied, then every string value interpolated
    from ``env`` (default: the environment; unset variables take their defaults)."""
    data: dict[str, Any] = _interpolate_values(yaml.safe_load(COMPOSE_FILE.read_text()), env)
    return data
