"""Prometheus metrics: fixed names, bounded labels, values that follow from what was sent."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from models.energy import HardwareAssumptions, digital_components, per_update_constants, reheat_per_kelvin
from models.mtj import MTJParams
from models.pipeline import load_predictors
from service.metrics import ERROR_BUCKETS_M, BulkHistogram
from tests.service.helpers import metric, samples

REQUIRED = {
    "trajpred_request_duration_seconds": "histogram",
    "trajpred_observations_total": "counter",
    "trajpred_rejected_requests_total": "counter",
    "trajpred_tracked_agents": "gauge",
    "trajpred_state_evictions_total": "counter",
    "trajpred_displacement_error_meters": "histogram",
    "trajpred_ade_meters": "histogram",
    "trajpred_fde_meters": "histogram",
    "trajpred_memory_energy_joules_total": "counter",
    "trajpred_neuron_temperature_kelvin": "histogram",
    "trajpred_batch_agents": "histogram",
    "trajpred_model_info": "gauge",
}


def test_metrics_follow_a_real_replay(client, replay, weights):
    preds = load_predictors(["ipnet", "gru"], weights)
    n_frames = 12
    sent, agents, batches, dts = 0, set(), [], []
    last_t: dict[str, float] = {}
    for i in range(n_frames):
        body = replay.body(i)
        assert client.post("/v1/ab/predict", json=body).status_code == 200
        sent += len(body["observations"])
        batches.append(len(body["observations"]))
        for o in body["observations"]:
            agents.add(o["agent_id"])
            dts.append(o["timestamp"] - last_t[o["agent_id"]] if o["agent_id"] in last_t else 0.0)
            last_t[o["agent_id"]] = o["timestamp"]
    client.post("/v1/predict", json={"observations": [{"agent_id": "x", "timestamp": -1, "x": 0, "y": 0}]})

    text = client.get("/metrics").text
    s = samples(client)
    for name, kind in REQUIRED.items():
        assert f"# TYPE {name.removesuffix('_total')} {kind}" in text or f"# TYPE {name} {kind}" in text, name
    # never a label per agent
    assert not any(a in text for a in agents)

    assert metric(client, "trajpred_observations_total", model="ipnet") == sent
    assert metric(client, "trajpred_observations_total", model="gru") == sent
    assert metric(client, "trajpred_tracked_agents", model="ipnet") == len(agents)
    assert metric(client, "trajpred_tracked_agents", model="gru") == len(agents)
    assert metric(client, "trajpred_rejected_requests_total", reason="out_of_range") == 1
    assert metric(client, "trajpred_model_info", model="ipnet", version=preds["ipnet"].version) == 1
    assert metric(client, "trajpred_model_info", model="gru", version=preds["gru"].version) == 1
    # one batched step per model and frame
    assert metric(client, "trajpred_batch_agents_count") == 2 * n_frames
    assert metric(client, "trajpred_batch_agents_sum") == 2 * sum(batches)

    # by component (models.energy): the GRU's state in SRAM and its matrix products, the same every update
    updates = len(dts)
    for component, joules in digital_components(
        preds["gru"].net, preds["gru"].cfg, HardwareAssumptions()
    ).items():
        got = metric(client, "trajpred_memory_energy_joules_total", model="gru", component=component)
        assert got == pytest.approx(joules * updates, rel=1e-9), component
    # IPNet: the Joule heat its steps report, positive and below driving every neuron at v_max all the time
    p = MTJParams(**preds["ipnet"].cfg.mtj)
    n_memory = preds["ipnet"].memory_size
    worst = sum(
        n_memory * p.duty * p.v_max_v**2 / p.r_p_ohm * min(p.time_scale * dt, p.max_drive_s) for dt in dts
    )
    e_drive = metric(client, "trajpred_memory_energy_joules_total", model="ipnet", component="drive")
    assert 0.0 < e_drive <= worst * (1 + 1e-9)
    # the heat to restore every updated neuron before the next frame: C_th (T - T0), summed over the same
    # temperatures as the neuron histogram
    rise = metric(client, "trajpred_neuron_temperature_kelvin_sum") - p.t0_k * n_memory * updates
    reheat = metric(client, "trajpred_memory_energy_joules_total", model="ipnet", component="reheat")
    assert reheat == pytest.approx(rise * reheat_per_kelvin(preds["ipnet"].net), rel=1e-4) and reheat > 0
    # and the per-update constants: read pulses, sense decisions, conversions, SRAM traffic, matrix products
    for component, joules in per_update_constants(preds["ipnet"].net, preds["ipnet"].cfg).items():
        got = metric(client, "trajpred_memory_energy_joules_total", model="ipnet", component=component)
        assert got == pytest.approx(joules * updates, rel=1e-9), component

    # every neuron of every updated agent, after each step, all at or above ambient temperature
    assert metric(client, "trajpred_request_duration_seconds_count", route="/v1/ab/predict") == n_frames
    assert s[("trajpred_request_duration_seconds_sum", frozenset({("route", "/v1/ab/predict")}))] > 0
    assert np.isfinite(list(s.values())).all()


@pytest.mark.parametrize("n", [7, 5000])
def test_bulk_histogram_exposes_what_prometheus_client_would(n: int) -> None:
    """Same values into ``BulkHistogram`` and into ``prometheus_client.Histogram``: same buckets, count, sum."""
    rng = np.random.default_rng(n)
    values = np.abs(rng.normal(0.0, 3.0, n))
    values[:3] = [0.05, 0.0, 80.0]  # on a bound, zero, above every bound
    ref_reg, bulk_reg = CollectorRegistry(), CollectorRegistry()
    ref = Histogram("e_meters", "d", ["model", "interval"], buckets=ERROR_BUCKETS_M, registry=ref_reg)
    bulk = BulkHistogram("e_meters", "d", ERROR_BUCKETS_M, labels=["model", "interval"])
    bulk_reg.register(bulk)
    for v in values.tolist():
        ref.labels(model="ipnet", interval="10hz").observe(v)
    bulk.observe_many(values[: n // 2], ("ipnet", "10hz"))
    bulk.observe_many(values[n // 2 :], ("ipnet", "10hz"))

    def series(reg: CollectorRegistry) -> dict[str, float]:
        out = {}
        for line in generate_latest(reg).decode().splitlines():
            if line.startswith("e_meters_") and "_created" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    got, want = series(bulk_reg), series(ref_reg)
    assert got.keys() == want.keys() and len(got) == len(ERROR_BUCKETS_M) + 3
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12), k
    with pytest.raises(ValueError, match="label values"):
        bulk.observe_many(values, "ipnet")  # two labels, one value


def test_every_known_label_value_is_exported_at_zero_from_start_up(make_client):
    from service.errors import REJECTION_CODES, SERVER_ERROR_CODES
    from service.metrics import EVICTION_REASONS

    c = make_client()
    for code in REJECTION_CODES:
        assert ("trajpred_rejected_requests_total", frozenset({("reason", code)})) in samples(c), code
    for code in SERVER_ERROR_CODES:
        assert ("trajpred_server_errors_total", frozenset({("reason", code)})) in samples(c), code
    for reason in EVICTION_REASONS:
        assert metric(c, "trajpred_state_evictions_total", reason=reason) == 0.0
    assert ("trajpred_state_evictions_total", frozenset({("reason", "ttl")})) in samples(c)


def test_every_error_code_the_service_emits_is_listed():
    """Every code in the service's source (error classes, ``code=`` arguments, the validation mappings and
    the engine's issue tuples) is in REJECTION_CODES or SERVER_ERROR_CODES."""
    import ast
    from pathlib import Path

    from service.errors import REJECTION_CODES, SERVER_ERROR_CODES

    found: set[str] = set()
    for path in (Path(__file__).resolve().parents[2] / "service").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "code" for t in node.targets
            ):
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    found.add(node.value.value)
            elif (
                isinstance(node, ast.keyword) and node.arg == "code" and isinstance(node.value, ast.Constant)
            ):
                found.add(node.value.value)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_TYPE_CODES" for t in node.targets
            ):
                found |= {v.value for v in node.value.values if isinstance(v, ast.Constant)}  # type: ignore[attr-defined]
            elif isinstance(node, ast.FunctionDef) and node.name == "_code_for":
                found |= {
                    r.value.value
                    for r in ast.walk(node)
                    if isinstance(r, ast.Return) and isinstance(r.value, ast.Constant)
                }
                found |= {
                    c.value
                    for r in ast.walk(node)
                    if isinstance(r, ast.IfExp)
                    for c in (r.body, r.orelse)
                    if isinstance(c, ast.Constant)
                }
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "append" and node.args:
                arg = node.args[0]
                if (
                    isinstance(arg, ast.Tuple)
                    and len(arg.elts) == 4
                    and isinstance(arg.elts[3], ast.Constant)
                ):
                    found.add(arg.elts[3].value)
            elif isinstance(node, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value == 404 for k in node.keys
            ):
                # the status -> code mapping of the HTTP errors (not a status -> description table)
                found |= {
                    v.value
                    for v in node.values
                    if isinstance(v, ast.Constant)
                    and str(v.value).replace("_", "").isalpha()
                    and " " not in v.value
                }
    assert len(found) > 20
    assert found <= set(REJECTION_CODES) | set(SERVER_ERROR_CODES), (
        found - set(REJECTION_CODES) - set(SERVER_ERROR_CODES)
    )


def test_metrics_are_rendered_once_per_interval_and_can_require_a_key(make_client, replay):
    """A flood of scrapes renders the exposition once per TRAJPRED_METRICS_CACHE_S; with
    TRAJPRED_METRICS_API_KEY set, /metrics answers 401 without the key (X-API-Key or a bearer token)."""
    c = make_client(metrics_cache_s=30.0, metrics_api_key="scrape-key-123")
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"X-API-Key": "wrong-key-1234"}).status_code == 401
    runtime = c.app.state.runtime
    renders = 0
    real = runtime.metrics.render

    def counted() -> bytes:
        nonlocal renders
        renders += 1
        return real()

    runtime.metrics.render = counted
    first = c.get("/metrics", headers={"Authorization": "Bearer scrape-key-123"})
    assert first.status_code == 200 and "trajpred_observations_total" in first.text
    assert c.post("/v1/predict", json=replay.body(0)).status_code == 200
    for _ in range(20):
        again = c.get("/metrics", headers={"X-API-Key": "scrape-key-123"})
        assert again.status_code == 200 and again.text == first.text  # the cached exposition
    assert renders == 1
    runtime.exposition.at -= 31.0  # the interval passed
    fresh = c.get("/metrics", headers={"X-API-Key": "scrape-key-123"}).text
    assert renders == 2 and fresh != first.text
