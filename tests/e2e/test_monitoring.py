"""A real Prometheus, with the shipped rules, scraping a real `ipnet serve` fed a real AV2 log through
/v1/ab/predict: every panel query of the shipped dashboards and every recording rule returns data.

Prometheus runs on a copy of deploy/prometheus/prometheus.yml that differs only where it must: 1 s scrape
and evaluation intervals, the test server as the target of the service's job, absolute rule file paths.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml

from clients.processes import stop_process
from tests.deploy.helpers import (
    ALERTMANAGER_CONFIG,
    DASHBOARDS,
    PROMETHEUS_CONFIG,
    SERVICE_JOB,
    dashboard_queries,
    label_values_query,
    regex_of,
    rule_files,
    rules,
    substitute,
)
from tests.support import Replay, Server, _wait, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRAPE_S = 1
#: Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval), with a 1 s step
RATE_INTERVAL = f"{4 * SCRAPE_S}s"
#: after the replay, how long scrapes and rule evaluations may take to show everything
SETTLE_S = 30.0


def prometheus_config(target: str) -> dict[str, Any]:
    """The shipped config, scraping ``target`` as the service's job every second."""
    cfg = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    cfg["global"] = {
        **cfg.get("global", {}),
        "scrape_interval": f"{SCRAPE_S}s",
        "scrape_timeout": f"{SCRAPE_S}s",
        "evaluation_interval": f"{SCRAPE_S}s",
    }
    cfg["rule_files"] = [str(p) for p in rule_files()]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == SERVICE_JOB]
    job = {k: v for k, v in job.items() if not k.endswith("_sd_configs")}
    job["static_configs"] = [{"targets": [target]}]
    cfg["scrape_configs"] = [job]
    cfg.pop("alerting", None)  # the compose stack's Alertmanager: see test_alerts_reach_a_real_alertmanager
    return cfg


@contextlib.contextmanager
def prometheus(config: dict[str, Any], tmp: Path, *flags: str) -> Iterator[str]:
    """A real prometheus on a free loopback port; stopped at the end whatever happens."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus)")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--log.level=warn",
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, "prometheus", 30, proc)
        yield url
    finally:
        stop_process(proc, 15)
        log.close()


@dataclass
class Stack:
    prom: httpx.Client
    start: float  # Unix time before the first request
    deadline: float  # monotonic time by which every series must have shown up
    frames: int
    rejected: int

    def range_query(self, expr: str) -> list[dict[str, Any]]:
        """``expr`` over the whole run at a 1 s step, as a Grafana panel asks for it."""
        r = self.prom.get(
            "/api/v1/query_range",
            params={"query": expr, "start": self.start, "end": time.time(), "step": f"{SCRAPE_S}s"},
        )
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def finite_points(self, expr: str) -> int:
        return sum(1 for s in self.range_query(expr) for _, v in s["values"] if math.isfinite(float(v)))

    def wait_for_data(self, exprs: dict[str, str]) -> dict[str, int]:
        """Poll until every expression has a finite sample (or the deadline); the count of each."""
        while True:
            counts = {what: self.finite_points(e) for what, e in exprs.items()}
            if all(counts.values()) or time.monotonic() > self.deadline:
                return counts
            time.sleep(SCRAPE_S)


@pytest.fixture(scope="module")
def stack(weights: Path, replay: Replay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("monitoring")
    env = {"TRAJPRED_WEIGHTS_DIR": str(weights), "TRAJPRED_SNAPSHOT_PATH": ""}
    server = Server(env, tmp / "serve.log")  # loads its models while Prometheus starts
    try:
        with prometheus(prometheus_config(f"127.0.0.1:{server.port}"), tmp) as url:
            server.wait_ready()
            start = time.time() - 1
            last_frame = {tr.agent_id: float(tr.t[-1]) for tr in replay.tracks}
            rejected = 0
            t0, wall0 = replay.times[0], time.monotonic()
            for i, t in enumerate(replay.times):
                # in real time (15.6 s of log): a dozen scrapes see the counters move, as in production
                time.sleep(max(0.0, (t - t0) - (time.monotonic() - wall0)))
                r = server.client.post("/v1/ab/predict", json=replay.body(i))
                assert r.status_code == 200, r.text
                if i == 1:
                    # a client retrying a frame it already sent: rejected whole, counted by reason
                    r = server.client.post("/v1/ab/predict", json=replay.body(0))
                    assert r.status_code == 409 and r.json()["error"]["code"] == "stale_timestamp", r.text
                    rejected += 1
                # a perception stack ends its tracks: frees the states (evictions, reason "ended")
                for agent in [a for a, end in last_frame.items() if end == t]:
                    assert server.client.delete(f"/v1/agents/{agent}").status_code == 200
            with httpx.Client(base_url=url, timeout=10) as prom:
                yield Stack(prom, start, time.monotonic() + SETTLE_S, len(replay.times), rejected)
    finally:
        server.stop()


def _variable_values(stack: Stack, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each template variable as Grafana resolves it: its label_values() query against Prometheus,
    the first value of a single-value variable, every value (All) of a multi-value one."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": f"{SCRAPE_S}s"}
    for v in dashboard["templating"]["list"]:
        selector, label = label_values_query(substitute(v["query"], values))
        params = {"match[]": selector} if selector else {}
        r = stack.prom.get(f"/api/v1/label/{label}/values", params=params)
        found = sorted(r.json()["data"])
        assert found, f"variable ${v['name']} ({v['query']}) has no value"
        if v.get("multi") or v.get("includeAll"):
            values[v["name"]] = v.get("allValue") or regex_of(found)
        else:
            values[v["name"]] = found[0]
    return values


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_returns_data(stack: Stack, path: Path):
    dashboard = json.loads(path.read_text())
    # the variables need the first scrapes
    _wait(lambda: stack.prom.get("/api/v1/label/job/values").json()["data"], "first scrape", 30)
    values = _variable_values(stack, dashboard)
    assert values["job"] == SERVICE_JOB
    exprs = {f"{title} [{ref}]": substitute(expr, values) for title, ref, expr in dashboard_queries(path)}
    counts = stack.wait_for_data(exprs)
    empty = {what: exprs[what] for what, n in counts.items() if n == 0}
    assert not empty, f"panel queries without data: {empty}"
    print(f"\n{path.name}: {len(exprs)} queries, finite points per query: {counts}")


def test_every_recording_rule_returns_data(stack: Stack):
    records = rules("record")
    exprs = {}
    for r in records:
        labels = ",".join(f'{k}="{v}"' for k, v in r.get("labels", {}).items())
        exprs[r["record"]] = f"{r['record']}{{{labels}}}"
    counts = stack.wait_for_data(exprs)
    empty = [name for name, n in counts.items() if n == 0]
    assert not empty, f"recording rules without data: {empty}"
    series = {name: len(stack.range_query(e)) for name, e in exprs.items()}
    scraped = stack.prom.get("/api/v1/query", params={"query": f'count({{job="{SERVICE_JOB}"}})'}).json()
    print(
        f"\n{len(records)} recording rules, series per rule: {series}; "
        f"series scraped from the service: {scraped['data']['result'][0]['value'][1]}"
    )


def test_rules_evaluate_without_error_and_the_target_is_up(stack: Stack):
    groups = stack.prom.get("/api/v1/rules").json()["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    assert loaded == {r.get("record") or r["alert"] for r in [*rules("record"), *rules("alert")]}
    stack.wait_for_data(
        {"any rule evaluated": "job:trajpred_memory_energy_joules:ratio_ipnet_baseline_rate5m"}
    )
    groups = stack.prom.get("/api/v1/rules").json()["data"]["groups"]
    bad = {r["name"]: r.get("lastError") for g in groups for r in g["rules"] if r["health"] != "ok"}
    assert not bad, bad
    targets = stack.prom.get("/api/v1/targets").json()["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [(SERVICE_JOB, "up")]
    # what Prometheus stored is what the replay sent
    sent = stack.prom.get(
        "/api/v1/query", params={"query": 'sum(trajpred_rejected_requests_total{reason="stale_timestamp"})'}
    ).json()["data"]["result"]
    assert float(sent[0]["value"][1]) == stack.rejected


class _Webhook(http.server.BaseHTTPRequestHandler):
    """Alertmanager's receiver in the test: keeps every notification it is sent."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_alerts_reach_a_real_alertmanager(tmp_path: Path):
    """The shipped alert rules in a real Prometheus, its alerts sent to a real Alertmanager running the shipped
    configuration: with no trajpred target at all, TrajpredAbsent reaches the receiver.

    The copies differ from the shipped files only where a test must: the receiver's URL (this test's
    webhook), 1 s intervals and resend delay, and TrajpredAbsent's `for` (0 s instead of 5 minutes)."""
    exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if exe is None:
        pytest.fail("alertmanager is not installed (apt-get install prometheus-alertmanager)")
    _Webhook.received = []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    am_cfg = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    (receiver,) = [r for r in am_cfg["receivers"] if r["name"] == am_cfg["route"]["receiver"]]
    receiver["webhook_configs"][0]["url"] = f"http://127.0.0.1:{hook.server_port}/trajpred"
    am_cfg["route"]["group_wait"] = "1s"
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_cfg))
    am_addr = f"127.0.0.1:{free_port()}"
    am_log = open(tmp_path / "alertmanager.log", "wb")  # noqa: SIM115 (closed below)
    am = subprocess.Popen(
        [
            exe,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address={am_addr}",
            "--cluster.listen-address=",  # one instance, no gossip port
        ],
        stdout=am_log,
        stderr=subprocess.STDOUT,
    )
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in rule_files():
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == "TrajpredAbsent":
                    rule["for"] = "0s"
        (rules_dir / path.name).write_text(yaml.safe_dump(doc))
    cfg = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [am_addr]
    cfg["global"] = {**cfg["global"], "scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(p) for p in sorted(rules_dir.glob("*.yml"))]
    cfg["scrape_configs"] = [j for j in cfg["scrape_configs"] if j["job_name"] != SERVICE_JOB]  # no service
    try:
        _wait(
            lambda: httpx.get(f"http://{am_addr}/-/ready", timeout=2).status_code == 200,
            "alertmanager",
            30,
            am,
        )
        # an alert that fired before the Alertmanager was discovered is sent again after this delay (1 min)
        with prometheus(cfg, tmp_path, "--rules.alert.resend-delay=1s"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not _Webhook.received:
                time.sleep(0.5)
        alerts = [a for n in _Webhook.received for a in n["alerts"]]
        assert alerts, (tmp_path / "alertmanager.log").read_text()[-2000:]
        absent = [a for a in alerts if a["labels"]["alertname"] == "TrajpredAbsent"]
        assert absent and absent[0]["status"] == "firing" and absent[0]["labels"]["severity"] == "critical"
        assert "no trajpred target is scraped" in absent[0]["annotations"]["summary"]
    finally:
        stop_process(am, 15)
        am_log.close()
        hook.shutdown()
