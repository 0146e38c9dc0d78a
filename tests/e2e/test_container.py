"""The image for real, through the Docker SDK: built from the Dockerfile, run, restarted, stopped, scraped.

The base images come from ``scripts/local_images.sh`` (Debian packages only, cached between runs: no image
registry is reachable here) and torch from a PEP 503 index served on loopback from this machine's CPU wheel
(``TORCH_INDEX_URL``); everything else the build installs comes from the package registry. The build runs on
the host network (``docker build --network host``), the containers on a user-defined network.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from models.checkpoint import WEIGHTS_DIR
from service.app import create_app
from service.settings import Settings
from tests.deploy.helpers import (
    COMPOSE_FILE,
    DASHBOARDS,
    PROMETHEUS_CONFIG,
    dashboard_queries,
    rule_files,
    substitute,
)
from tests.e2e.test_monitoring import _variable_values
from tests.support import REPO, Replay, _wait, free_port

docker = pytest.importorskip("docker", reason="the Docker SDK for Python (pip install docker)")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(1800)]

TAG = "ipnet-traj:test"
SHIPPED = WEIGHTS_DIR  # what the image serves
TORCH_INDEX_PORT = 38513


def _compose_grace_s() -> int:
    """The service's stop grace period in docker-compose.yml (e.g. ``40s``), in whole seconds."""
    text = yaml.safe_load(COMPOSE_FILE.read_text())["x-trajpred"]["stop_grace_period"]
    return int(str(text).removesuffix("s"))


# --- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as e:
        pytest.fail(f"no Docker engine answers ({e}); scripts/test.sh installs docker.io and starts dockerd")
    yield client
    client.close()


@pytest.fixture(scope="module")
def local_images() -> dict[str, str]:
    """The Debian-built base images (built once, then cached by scripts/local_images.sh)."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "local_images.sh")], capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)


def _torch_wheel() -> Path | None:
    """This machine's CPU wheel of torch, where pip's find-links point (PIP_FIND_LINKS or pip config)."""
    dirs = os.environ.get("PIP_FIND_LINKS", "").split()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        conf = subprocess.run(["pip", "config", "list"], capture_output=True, text=True, timeout=30).stdout
        dirs += [
            v.strip("'")
            for k, v in (ln.split("=", 1) for ln in conf.splitlines() if "=" in ln)
            if "find-links" in k
        ]
    for d in dirs:
        for wheel in sorted(Path(d).glob("torch-2.13.0+cpu-*.whl")) if Path(d).is_dir() else ():
            return wheel
    return None


@pytest.fixture(scope="module")
def torch_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A PEP 503 index of this machine's torch wheel on loopback (None: the build uses PyTorch's index)."""
    wheel = _torch_wheel()
    if wheel is None:
        yield None
        return
    root = tmp_path_factory.mktemp("torch-index")
    (root / "simple" / "torch").mkdir(parents=True)
    os.symlink(wheel, root / "simple" / "torch" / wheel.name)
    (root / "simple" / "torch" / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    try:  # a fixed port: the index URL is a build argument, and a new one would miss the build cache
        server = http.server.ThreadingHTTPServer(("127.0.0.1", TORCH_INDEX_PORT), Handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()


@pytest.fixture(scope="module")
def image(engine: Any, local_images: dict[str, str], torch_index: str | None) -> Any:
    args = {"PYTHON_IMAGE": local_images["PYTHON_IMAGE"]}
    if torch_index is not None:
        args["TORCH_INDEX_URL"] = torch_index
    start = time.monotonic()
    img, _ = engine.images.build(path=str(REPO), tag=TAG, buildargs=args, network_mode="host", rm=True)
    print(f"\nimage {TAG}: built in {time.monotonic() - start:.0f} s, {img.attrs['Size'] / 1e6:.0f} MB")
    return img


@pytest.fixture
def network(engine: Any) -> Iterator[Any]:
    net = engine.networks.create(f"ipnet-test-{uuid.uuid4().hex[:8]}", driver="bridge")
    yield net
    for c in engine.containers.list(all=True, filters={"network": net.id}):
        c.remove(force=True)
    net.remove()


# --- helpers ----------------------------------------------------------------------------------------------
def _run(engine: Any, image: str, network: Any, alias: str, **kw: Any) -> Any:
    container = engine.containers.create(image, detach=True, **kw)
    network.connect(container, aliases=[alias])
    container.start()
    return container


def _host_url(container: Any, port: str) -> str:
    container.reload()
    binding = container.attrs["NetworkSettings"]["Ports"][port][0]
    return f"http://127.0.0.1:{binding['HostPort']}"


def _wait_healthy(container: Any, timeout_s: float = 180) -> float:
    """Seconds until the image's HEALTHCHECK reports healthy."""
    start = time.monotonic()
    while True:
        container.reload()
        state = container.attrs["State"]
        if state["Status"] == "exited":
            raise AssertionError(f"container exited: {container.logs()[-3000:].decode(errors='replace')}")
        if state.get("Health", {}).get("Status") == "healthy":
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(
                f"not healthy after {timeout_s} s: {container.logs()[-3000:].decode(errors='replace')}"
            )
        time.sleep(0.5)


def _service(engine: Any, network: Any, env: dict[str, str], **kw: Any) -> Any:
    return _run(
        engine,
        TAG,
        network,
        "trajpred",
        environment={"TRAJPRED_LOG_LEVEL": "warning", **env},
        ports={"8000/tcp": ("127.0.0.1", None)},
        **kw,
    )


# --- the tests --------------------------------------------------------------------------------------------
CHECK = r"""
import json, os, shutil, sys
from pathlib import Path
before = sorted(str(p) for p in Path("/opt/numba-cache").rglob("*"))
import models._mtj_native as mtj_ext, service._points_json_native as writer_ext
import service._frame_reader_native as reader_ext
from service import frame_reader
from service.app import load_models
from service.jsontext import available
from service.settings import Settings
models = load_models(Settings(snapshot_path=None))
after = sorted(str(p) for p in Path("/opt/numba-cache").rglob("*"))
print(json.dumps({
    "uid": os.getuid(),
    "compilers": [c for c in ("cc", "gcc", "clang") if shutil.which(c)],
    "extensions": [m.__file__ for m in (mtj_ext, writer_ext, reader_ext)],
    "numba_index": len([p for p in before if p.endswith(".nbi")]),
    "written_at_start": sorted(set(after) - set(before)),
    "native_mtj": bool(models["ipnet"].infer.native),
    "native_writer": bool(available()),
    "native_reader": bool(frame_reader.available()),
}))
"""


def test_the_image_runs_as_non_root_with_its_kernels_built_at_build_time(engine: Any, image: Any):
    out = engine.containers.run(
        TAG, entrypoint=["python", "-c", CHECK], remove=True, environment={"TRAJPRED_LOG_LEVEL": "warning"}
    )
    facts = json.loads(out.decode().strip().splitlines()[-1])
    print(f"\n{facts}")
    assert facts["uid"] == 10001
    assert facts["compilers"] == []  # nothing could compile at start: the kernels must come from the build
    # the C extensions, built by the package's install in the build stage, in the virtualenv
    assert len(facts["extensions"]) == 3
    assert all(f.startswith("/opt/venv/") and f.endswith(".so") for f in facts["extensions"])
    assert facts["native_mtj"] and facts["native_writer"] and facts["native_reader"]
    assert facts["numba_index"] > 0
    assert facts["written_at_start"] == []  # every kernel loaded from the caches, nothing compiled


def _reference_answer(replay: Replay, frames: int) -> dict[str, Any]:
    """Frame ``frames`` (0-based) of a server that was never restarted: the app in this process."""
    settings = Settings(weights_dir=SHIPPED, snapshot_path=None, startup_in_background=False)
    with TestClient(create_app(settings)) as c:
        for i in range(frames):
            assert c.post("/v1/ab/predict", json=replay.body(i)).status_code == 200
        r = c.post("/v1/ab/predict", json=replay.body(frames))
        assert r.status_code == 200
        return r.json()


def _positions(answer: dict[str, Any]) -> dict[tuple[str, str], np.ndarray]:
    return {
        (role, p["agent_id"]): np.array([[q["x"], q["y"]] for q in p["trajectory"]])
        for role, preds in answer["predictions"].items()
        for p in preds
    }


def test_state_survives_a_service_restart_in_redis(
    engine: Any, image: Any, network: Any, local_images: dict[str, str], replay: Replay
):
    redis = _run(engine, local_images["REDIS_IMAGE"], network, "redis")
    start = time.monotonic()
    svc = _service(engine, network, {"TRAJPRED_STORE": "redis://redis:6379/0"})
    url = _host_url(svc, "8000/tcp")
    _wait(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, "the service container", 180)
    ready_s = time.monotonic() - start
    healthy_s = _wait_healthy(svc) + ready_s
    print(f"\ncontainer start to /readyz 200: {ready_s:.1f} s; to HEALTHCHECK healthy: {healthy_s:.1f} s")
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(30):
            r = c.post("/v1/ab/predict", json=replay.body(i))
            assert r.status_code == 200, r.text
    svc.restart(timeout=_compose_grace_s())
    _wait_healthy(svc)
    url = _host_url(svc, "8000/tcp")  # the host port may change at a restart
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/v1/ab/predict", json=replay.body(30))
        assert r.status_code == 200, r.text
        got = r.json()
    want = _reference_answer(replay, 30)
    a, b = _positions(got), _positions(want)
    assert a.keys() == b.keys() and len(a) > 10
    # a restart that lost the state would restart every track: 1e-3 m tells them apart
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst < 1e-3, worst
    assert all(not p["new_track"] for p in got["predictions"]["ipnet"] if p["steps"] > 1)
    redis.remove(force=True)


def test_docker_stop_drains_and_loses_no_acknowledged_update(
    engine: Any, image: Any, network: Any, replay: Replay
):
    volume = engine.volumes.create(f"ipnet-test-{uuid.uuid4().hex[:8]}")
    try:
        svc = _service(
            engine, network, {}, volumes={volume.name: {"bind": "/var/lib/trajpred", "mode": "rw"}}
        )
        _wait_healthy(svc)
        url = _host_url(svc, "8000/tcp")
        acked: dict[str, float] = {}
        stop = threading.Event()

        def stream() -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                for i in range(len(replay.times)):
                    if stop.is_set():
                        return
                    try:
                        r = c.post("/v1/ab/predict", json=replay.body(i))
                    except httpx.HTTPError:
                        return  # the server went away: what it answered before is what counts
                    if r.status_code != 200:
                        return
                    for o in replay.body(i)["observations"]:
                        acked[o["agent_id"]] = o["timestamp"]

        sender = threading.Thread(target=stream)
        sender.start()
        _wait(lambda: len(acked) > 20, "acknowledged updates", 60)
        start = time.monotonic()
        svc.stop(timeout=_compose_grace_s())
        stop_s = time.monotonic() - start
        stop.set()
        sender.join(60)
        code = svc.wait(timeout=10)["StatusCode"]
        print(f"\ndocker stop: exited {code} after {stop_s:.1f} s with {len(acked)} agents acknowledged")
        assert code == 0 and stop_s < _compose_grace_s()
        svc.remove()
        again = _service(
            engine, network, {}, volumes={volume.name: {"bind": "/var/lib/trajpred", "mode": "rw"}}
        )
        _wait_healthy(again)
        url = _host_url(again, "8000/tcp")
        with httpx.Client(base_url=url, timeout=30) as c:
            lost = []
            for agent, t in acked.items():
                r = c.get(f"/v1/agents/{agent}")
                if r.status_code != 200 or r.json()["models"]["ipnet"]["last_timestamp"] < t:
                    lost.append(agent)
        assert not lost, f"{len(lost)} acknowledged agents lost: {lost[:5]}"
        again.remove(force=True)
    finally:
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)


def test_a_prometheus_container_scrapes_the_service_container(
    engine: Any, image: Any, network: Any, local_images: dict[str, str], replay: Replay, tmp_path: Path
):
    # the shipped configuration (its DNS discovery of `trajpred` included), 1 s intervals so that a short run
    # has rates; the shipped rule files next to it
    cfg = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    cfg["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    cfg.pop("alerting", None)
    (tmp_path / "rules").mkdir()
    for f in rule_files():
        (tmp_path / "rules" / f.name).write_text(f.read_text())
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    os.chmod(tmp_path, 0o755)
    svc = _service(engine, network, {"TRAJPRED_SNAPSHOT_PATH": ""})
    prom = _run(
        engine,
        local_images["PROMETHEUS_IMAGE"],
        network,
        "prometheus",
        volumes={str(tmp_path): {"bind": "/etc/prometheus", "mode": "ro"}},
        ports={"9090/tcp": ("127.0.0.1", None)},
    )
    _wait_healthy(svc)
    url = _host_url(svc, "8000/tcp")
    prom_url = _host_url(prom, "9090/tcp")
    _wait(lambda: httpx.get(f"{prom_url}/-/ready", timeout=2).status_code == 200, "prometheus container", 60)
    start = time.time() - 1
    t0, wall0 = replay.times[0], time.monotonic()
    with httpx.Client(base_url=url, timeout=30) as c:
        for i, t in enumerate(replay.times):
            time.sleep(max(0.0, (t - t0) - (time.monotonic() - wall0)))  # real time: scrapes see it move
            assert c.post("/v1/ab/predict", json=replay.body(i)).status_code == 200
    deadline = time.monotonic() + 40
    with httpx.Client(base_url=prom_url, timeout=10) as p:
        targets = p.get("/api/v1/targets").json()["data"]["activeTargets"]
        assert any(t["labels"]["instance"] == "trajpred:8000" and t["health"] == "up" for t in targets), (
            targets
        )

        def points(expr: str) -> int:
            body = p.get(
                "/api/v1/query_range",
                params={"query": expr, "start": start, "end": time.time(), "step": "1s"},
            ).json()
            assert body["status"] == "success", (expr, body)
            return sum(
                1 for s in body["data"]["result"] for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")
            )

        for path in DASHBOARDS:
            # the dashboard's variables as Grafana resolves them, against this Prometheus
            values = _variable_values(SimpleNamespace(prom=p), json.loads(path.read_text()))  # type: ignore[arg-type]
            exprs = {
                f"{title} [{ref}]": substitute(expr, values) for title, ref, expr in dashboard_queries(path)
            }
            while True:
                empty = [w for w, e in exprs.items() if points(e) == 0]
                if not empty or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert not empty, f"{path.name}: panel queries without data: {empty}"


# --- the compose stack, with Debian's docker-compose 1.29 -------------------------------------------------
def _compose(project: str, env: dict[str, str], *args: str, timeout_s: float = 600) -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    out = subprocess.run(
        [exe, "-p", project, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert out.returncode == 0, f"docker-compose {' '.join(args)}: {out.stderr[-3000:]}"
    return out.stdout


def test_the_compose_stack_runs_with_replicas_behind_nginx(
    engine: Any, image: Any, local_images: dict[str, str], replay: Replay
):
    """The real docker-compose.yml, default services and the `replicas` profile, on the local images (Grafana
    has no Debian package and no registry is reachable: it is the one service not started)."""
    image.tag("ipnet-traj", "0.1.0")  # the compose file's image: built above, so compose builds nothing
    ports = {
        k: str(free_port())
        for k in ("TRAJPRED_PORT", "TRAJPRED_LB_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")
    }
    env = {**local_images, **ports, "GRAFANA_PORT": str(free_port())}
    project = f"ipnettest{uuid.uuid4().hex[:6]}"
    try:
        _compose(
            project, env, "--profile", "replicas", "up", "-d", "--no-build", "trajpred", "prometheus", "lb"
        )
        names = {
            c.name: c
            for c in engine.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        }
        service = {c.labels["com.docker.compose.service"]: c for c in names.values()}
        assert {"trajpred", "trajpred-r1", "trajpred-r2", "lb", "redis", "prometheus", "alertmanager"} <= set(
            service
        )
        for name in ("trajpred", "trajpred-r1", "trajpred-r2", "lb", "redis", "prometheus", "alertmanager"):
            _wait_healthy(service[name])
        lb = f"http://127.0.0.1:{ports['TRAJPRED_LB_PORT']}"
        with httpx.Client(base_url=lb, timeout=30) as c:
            for i in range(len(replay.times)):
                r = c.post("/v1/ab/predict", json=replay.body(i))
                assert r.status_code == 200, r.text
            report = c.get("/v1/ab/report").json()
        # nginx spreads the frames over both replicas; they score each other's frames through Redis
        assert report["models"]["ipnet"]["n"] > 50, report
        prom = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"

        def targets_up() -> bool:
            active = httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            up = {
                t["labels"]["instance"]
                for t in active
                if t["labels"]["job"] == "trajpred" and t["health"] == "up"
            }
            return up == {"trajpred:8000", "trajpred-r1:8000", "trajpred-r2:8000"}

        _wait(targets_up, "Prometheus scraping the three service containers", 60)
        per_replica = []
        for name in ("trajpred-r1", "trajpred-r2"):
            q = f'sum(trajpred_observations_total{{instance="{name}:8000",model="ipnet"}})'
            _wait(
                lambda q=q: httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=5).json()["data"][
                    "result"
                ],
                q,
                60,
            )
            per_replica.append(
                float(
                    httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=5).json()["data"][
                        "result"
                    ][0]["value"][1]
                )
            )
        assert all(v > 0 for v in per_replica), per_replica  # both replicas served frames
    finally:
        _compose(project, env, "--profile", "replicas", "down", "-v", "--remove-orphans", timeout_s=300)
