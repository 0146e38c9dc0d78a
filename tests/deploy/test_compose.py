"""docker-compose.yml: valid against the Compose Specification, every mount present, the stack the issue asks for.

No Docker engine runs here: the file is checked by schema and by what it declares.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.helpers import COMPOSE_FILE, DEPLOY, PROMETHEUS_CONFIG, load_compose, load_yaml
from tests.support import REPO


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    # the Compose Specification schema (compose-spec/compose-spec, Apache-2.0) as check-jsonschema vendors it
    text = (
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    ).read_text()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_is_valid_against_the_compose_specification(validator):
    # the file as written (variables not yet interpolated) and as compose reads it with the defaults
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert _errors(validator, raw) == []
    assert _errors(validator, load_compose({})) == []


def test_the_schema_check_rejects_what_compose_rejects(validator, compose):
    # a check that cannot fail proves nothing: typical mistakes must be caught
    broken = copy.deepcopy(compose)
    broken["services"]["trajpred"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert _errors(validator, broken)
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    assert _errors(validator, broken)
    broken = copy.deepcopy(compose)
    broken["services"]["prometheus"]["volumes"] = "./deploy/prometheus:/etc/prometheus:ro"
    assert _errors(validator, broken)


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(host path, container path, read only) of every bind mount of a service (short and long syntax)."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            source, target = parts[0], parts[1]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
            if not source.startswith((".", "/", "~")):
                continue  # a named volume
        else:
            if v.get("type") != "bind":
                continue
            source, target, ro = v["source"], v["target"], bool(v.get("read_only"))
        out.append((source, target, ro))
    return out


def test_every_mounted_host_path_exists_and_deploy_is_read_only(compose):
    mounts = {name: _bind_mounts(s) for name, s in compose["services"].items()}
    assert any(mounts.values())
    for name, service_mounts in mounts.items():
        for source, target, ro in service_mounts:
            host = (COMPOSE_FILE.parent / source).resolve()
            assert host.exists(), f"{name}: {source} -> {target}: {host} does not exist"
            # configuration (deploy/) and replay data are read, never written, by the containers
            assert ro, f"{name}: {source} -> {target} is mounted read-write"
    named = {
        v.split(":")[0]
        for s in compose["services"].values()
        for v in s.get("volumes", [])
        if isinstance(v, str)
    }
    declared = set(compose.get("volumes") or {})
    assert {n for n in named if not n.startswith((".", "/", "~"))} <= declared

    # each monitoring container reads its configuration from deploy/, where the file it is told to load is
    prometheus = compose["services"]["prometheus"]
    config = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    ((source, target, _),) = _bind_mounts(prometheus)
    assert (COMPOSE_FILE.parent / source).resolve() == DEPLOY / "prometheus"
    assert (DEPLOY / "prometheus" / Path(config).relative_to(target)).is_file()


def test_images_are_pinned_and_the_stack_is_complete(compose):
    services = compose["services"]
    for name, s in services.items():
        image = s["image"]
        assert re.fullmatch(r"[\w./-]+:[\w][\w.-]*", image), f"{name}: image {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image}"
    by_image = {s["image"].split(":")[0].split("/")[-1]: n for n, s in services.items()}
    assert {"redis", "prometheus", "grafana", "nginx", "ipnet-traj"} <= set(by_image)
    # Redis persists with the append-only file
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_healthchecks_and_depends_on_conditions(compose):
    services = compose["services"]
    built = {n for n, s in services.items() if "build" in s}
    for name, s in services.items():
        if name == "replay":
            continue  # a one-shot job, not a server
        # the service's healthcheck is the Dockerfile's HEALTHCHECK (tests/deploy/test_container.py)
        assert "healthcheck" in s or name in built, f"{name} has no healthcheck"
        for dep, cond in s.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] == "service_healthy", f"{name} -> {dep}"
            assert "healthcheck" in services[dep] or dep in built
    assert "redis" in services["trajpred"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]


def test_replicas_profile_shares_redis_behind_nginx_and_is_scraped(compose):
    services = compose["services"]
    replicas = [n for n, s in services.items() if "replicas" in s.get("profiles", []) and "build" in s]
    assert len(replicas) >= 2
    stores = {services[n]["environment"]["TRAJPRED_STORE"] for n in [*replicas, "trajpred"]}
    assert stores == {"redis://redis:6379/0"}

    lb = next(s for s in services.values() if s["image"].startswith("nginx:"))
    assert "replicas" in lb["profiles"]
    assert set(lb["depends_on"]) == set(replicas)
    (conf_source, _, _), *_ = _bind_mounts(lb)
    conf = (COMPOSE_FILE.parent / conf_source).read_text()
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.M)
    assert sorted(h for h, _ in upstream) == sorted(replicas)
    assert {p for _, p in upstream} == {"8000"}
    # the service rejects bodies itself above TRAJPRED_MAX_BODY_BYTES (4 MB); nginx's 1 MB default would not
    assert re.search(r"client_max_body_size\s+4m;", conf)

    # Prometheus discovers every service container by name
    job = next(j for j in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"] if j["job_name"] == "trajpred")
    names = {n for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == {"trajpred", *replicas}


def test_replay_reads_a_mounted_folder(compose):
    replay = compose["services"]["replay"]
    assert "replay" in replay["profiles"]
    assert replay["command"][0] == "replay" and "--server" in replay["command"]
    (source, target, ro), *_ = _bind_mounts(replay)
    assert ro and replay["command"][1].startswith(target + "/")
    data = Path(COMPOSE_FILE.parent / source).resolve() / replay["command"][1].removeprefix(target + "/")
    assert data.exists(), f"the default replay data {data} does not exist"
    assert not data.is_relative_to(REPO), "replay data must come from a mounted folder, not the repository"
