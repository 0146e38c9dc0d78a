"""deploy/grafana: provisioning consistent with compose, the dashboard's panels, queries that parse.

That each query returns data from a real Prometheus is tests/e2e/test_monitoring.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    DASHBOARDS,
    GRAFANA,
    dashboard_queries,
    load_compose,
    load_yaml,
    panels,
    promtool,
    run,
    substitute,
)

#: the panels the issue lists: (what, words of the panel title, metrics its queries must read)
REQUIRED_PANELS = [
    ("request rate by route", "request rate", {"trajpred_request_duration_seconds_count"}),
    ("latency quantiles by route", "latency", {"trajpred_request_duration_seconds_bucket"}),
    ("tracked agents", "tracked agents", {"trajpred_tracked_agents"}),
    ("evictions", "evictions", {"trajpred_state_evictions_total"}),
    ("online ADE/FDE by model", "ade / fde", {"trajpred_ade_meters_sum", "trajpred_fde_meters_sum"}),
    ("error by model and horizon", "horizon", {"trajpred_displacement_error_meters_sum"}),
    ("A/B ADE reduction over time", "ade reduction", {"job:trajpred_ab_ade_reduction:ratio_mean5m"}),
    (
        "modeled memory power per model, by component",
        "memory power by model",
        {"trajpred_memory_energy_joules_total"},
    ),
    ("their ratio", "power ratio", {"job:trajpred_memory_energy_joules:ratio_ipnet_baseline_rate5m"}),
    ("heatmap of neuron temperatures", "neuron temperatures", {"trajpred_neuron_temperature_kelvin_bucket"}),
    ("rejected requests by reason", "rejected", {"trajpred_rejected_requests_total"}),
    ("batch sizes", "batch sizes", {"trajpred_batch_agents_bucket"}),
    ("observation interval", "observation interval", {"trajpred_observation_interval_seconds_bucket"}),
    (
        "error per interval regime",
        "interval regime",
        {"trajpred_ade_meters_sum", "trajpred_ade_meters_count"},
    ),
    ("min-of-K errors", "minade_k", {"trajpred_min_ade_meters_sum", "trajpred_min_fde_meters_sum"}),
    ("miss rate", "miss rate", {"trajpred_misses_total"}),
    ("calibration over time", "coverage", {"trajpred_covered_points_total", "trajpred_scored_points_total"}),
]

#: values standing in for the template variables and Grafana's built-ins when only syntax matters
PLACEHOLDERS = {
    "job": "trajpred",
    "instance": "(a|b)",
    "model": "(ipnet|gru)",
    "interval": "(10hz|2hz)",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}


def _dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _datasources() -> list[dict[str, Any]]:
    return [
        d
        for p in (GRAFANA / "provisioning" / "datasources").glob("*.yml")
        for d in load_yaml(p)["datasources"]
    ]


def test_there_is_a_dashboard():
    assert DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_the_provisioned_datasource(path: Path):
    uids = {d["uid"] for d in _datasources() if d["type"] == "prometheus"}
    dash = _dashboard(path)
    refs = [p.get("datasource") for p in panels(dash)]
    refs += [t.get("datasource") for p in panels(dash) for t in p.get("targets", [])]
    refs += [v.get("datasource") for v in dash["templating"]["list"] if v["type"] == "query"]
    assert refs
    for ref in refs:
        assert ref == {"type": "prometheus", "uid": ref["uid"]} and ref["uid"] in uids, ref


def test_provisioning_matches_the_compose_mounts():
    grafana = load_compose()["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = [
        p for f in (GRAFANA / "provisioning" / "dashboards").glob("*.yml") for p in load_yaml(f)["providers"]
    ]
    assert [p["options"]["path"] for p in providers] == [mounts["./deploy/grafana/dashboards"]]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mounts["./deploy/grafana/dashboards"] + "/")
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()
    # the datasource reaches Prometheus by its compose service name and port
    (ds,) = _datasources()
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in load_compose()["services"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_has_the_panels_of_the_issue(path: Path):
    dash = _dashboard(path)
    for what, words, metrics in REQUIRED_PANELS:
        matching = [p for p in panels(dash) if words in p["title"].lower()]
        assert matching, f"no panel for {what} (title with {words!r})"
        exprs = " ".join(t["expr"] for p in matching for t in p["targets"])
        for m in metrics:
            assert m in exprs, f"{what}: no query of {m}"
    heat = next(p for p in panels(dash) if "neuron temperatures" in p["title"].lower())
    assert heat["type"] == "heatmap" and heat["targets"][0]["format"] == "heatmap"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    for p in panels(dash):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_parses(path: Path, tmp_path: Path):
    dash = _dashboard(path)
    defined = {v["name"] for v in dash["templating"]["list"]}
    assert defined <= set(PLACEHOLDERS)
    queries = dashboard_queries(path)
    assert queries
    # promtool parses PromQL only in rule files: one recording rule per query
    rule_set = [
        {"record": f"panel:query_{i}:check", "expr": substitute(expr, PLACEHOLDERS)}
        for i, (_, _, expr) in enumerate(queries)
    ]
    # the variable queries too (label_values(selector, label) -> its selector)
    for v in dash["templating"]["list"]:
        selector = v["query"].removeprefix("label_values(").rsplit(",", 1)[0]
        rule_set.append({"record": f"variable:{v['name']}:check", "expr": substitute(selector, PLACEHOLDERS)})
    rules_file = tmp_path / "queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rule_set}]}))
    r = run([promtool(), "check", "rules", str(rules_file)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(rule_set)} rules found" in r.stdout
