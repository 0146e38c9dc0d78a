"""deploy/prometheus: promtool accepts the config and the rules, and unit-tests every alert."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.helpers import (
    PROMETHEUS_CONFIG,
    PROMETHEUS_TESTS,
    load_yaml,
    promtool,
    rule_files,
    rules,
    run,
)

#: level:metric:operations (https://prometheus.io/docs/practices/rules/)
RULE_NAME = re.compile(r"[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]+")


def test_promtool_check_config():
    r = run([promtool(), "check", "config", str(PROMETHEUS_CONFIG)])
    assert r.returncode == 0, r.stdout + r.stderr
    # the config loads the rule files (promtool checks them through it)
    assert f"{len(rule_files())} rule files found" in r.stdout + r.stderr


def test_promtool_check_rules():
    r = run([promtool(), "check", "rules", *map(str, rule_files())])
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_rules_rejects_a_broken_rule(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - record: a:b:rate5m\n        expr: rate(x[5m]\n")
    assert run([promtool(), "check", "rules", str(bad)]).returncode != 0


def test_promtool_test_rules():
    tests = sorted(PROMETHEUS_TESTS.glob("*.yml"))
    assert tests
    r = run([promtool(), "test", "rules", *map(str, tests)], timeout_s=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not():
    fires: set[str] = set()
    silent: set[str] = set()
    for path in PROMETHEUS_TESTS.glob("*.yml"):
        for group in load_yaml(path)["tests"]:
            for t in group.get("alert_rule_test", []):
                (fires if t.get("exp_alerts") else silent).add(t["alertname"])
    alerts = {r["alert"] for r in rules("alert")}
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"


def test_alerts_the_issue_asks_for():
    exprs = {r["alert"]: r["expr"] for r in rules("alert")}
    needs = {
        "error rate": "trajpred_rejected_requests",
        "latency": "trajpred_request_duration_seconds",
        "tracked agents near capacity": "trajpred_max_agents",
        "IPNet ADE worse than the baseline": "trajpred_ab_ade_reduction",
        "no observations": "trajpred_observations_total",
        "a target gone from service discovery": 'absent(up{job="trajpred"})',
    }
    for what, metric in needs.items():
        assert any(metric in e for e in exprs.values()), f"no alert on {what} ({metric})"
    worse = next(r for r in rules("alert") if "trajpred_ab_ade_reduction" in r["expr"])
    assert worse["for"] == "15m"


def test_recording_rules_are_named_level_metric_operations_and_cover_the_issue():
    records = {r["record"]: r["expr"] for r in rules("record")}
    for name in records:
        assert RULE_NAME.fullmatch(name), name
    assert len(records) == len(rules("record")), "a recording rule name is defined twice"
    wanted = [
        # (what the issue lists, a fragment of the rule name, a fragment of its expression)
        ("request rate", ":trajpred_request_duration_seconds_count:rate5m", "rate("),
        ("p50 latency by route", ":trajpred_request_duration_seconds:p50", "histogram_quantile(0.5,"),
        ("p99 latency by route", ":trajpred_request_duration_seconds:p99", "histogram_quantile(0.99,"),
        ("online ADE per model", "_model:trajpred_ade_meters:mean5m", "trajpred_ade_meters_sum"),
        ("online FDE per model", "_model:trajpred_fde_meters:mean5m", "trajpred_fde_meters_sum"),
        ("error per model and horizon", "_model_horizon_s:trajpred_displacement_error_meters:", "horizon_s"),
        ("A/B ADE reduction", ":trajpred_ab_ade_reduction:", 'model="ipnet"'),
        (
            "memory power per model",
            "_model:trajpred_memory_energy_joules:rate5m",
            "rate(trajpred_memory_energy_joules_total[5m])",
        ),
        ("IPNet/baseline energy ratio", ":trajpred_memory_energy_joules:ratio", 'model!="ipnet"'),
    ]
    for what, name_part, expr_part in wanted:
        assert any(name_part in n and expr_part in e for n, e in records.items()), what
