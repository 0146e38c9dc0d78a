"""Prometheus metrics of one app, in an explicit ``CollectorRegistry`` (never the global one).

Labels are bounded sets (model, route, reason, horizon): never an agent id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from service.errors import REJECTION_CODES, SERVER_ERROR_CODES, ServiceError
from service.protocol import REFUSAL_REASONS

#: why an agent state is removed: ttl (idle), capacity (max agents), ended (DELETE)
EVICTION_REASONS = ("ttl", "capacity", "ended")

ERROR_BUCKETS_M = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 50.0)
TEMPERATURE_BUCKETS_K = (300.5, 301.0, 302.0, 305.0, 310.0, 320.0, 340.0, 360.0, 380.0, 400.0, 425.0, 450.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
INTERVAL_BUCKETS_S = (0.02, 0.05, 0.08, 0.12, 0.15, 0.2, 0.3, 0.45, 0.6, 1.0, 2.0, 5.0, 10.0, 30.0)
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BulkHistogram(Collector):
    """A histogram fed with whole numpy arrays at once, unlabelled or with a few bounded labels.

    The neuron-temperature histogram gets (agents x neurons) values per request, and the online errors of
    a frame's matured predictions arrive together: one Python call per value would cost more than the
    forward itself. The exposition is the one of ``prometheus_client.Histogram`` (``_bucket``, ``_count``,
    ``_sum``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.bounds = np.asarray(buckets, dtype=np.float64)
        # per label values: counts (last: above every bound, +Inf) and sum
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        if not self.labels:
            self._series[()] = (np.zeros(len(self.bounds) + 1, dtype=np.int64), [0.0])

    def observe_many(self, values: np.ndarray, label_value: str | tuple[str, ...] = "") -> None:
        """Count every value of ``values`` in the series of ``label_value`` (a tuple when several labels)."""
        v = np.asarray(values).ravel()
        if v.size == 0:
            return
        key = label_value if isinstance(label_value, tuple) else ((label_value,) if self.labels else ())
        if len(key) != len(self.labels):
            raise ValueError(f"{self.name}: expected label values for {self.labels}, got {key}")
        counts, total = self._series.setdefault(key, (np.zeros(len(self.bounds) + 1, dtype=np.int64), [0.0]))
        # bucket i holds v <= bounds[i]; NaN goes to +Inf, as in prometheus_client
        if v.size > 1024:
            # one comparison pass per bound, in the values' own dtype: much cheaper than a binary search per
            # value for the (agents x neurons) temperatures of a frame
            le = np.array([np.count_nonzero(v <= b) for b in self.bounds.tolist()], dtype=np.int64)
            counts += np.diff(le, prepend=0, append=v.size)
        else:
            counts += np.bincount(np.searchsorted(self.bounds, v, side="left"), minlength=len(counts))
        total[0] += float(v.sum(dtype=np.float64))

    @property
    def counts(self) -> np.ndarray:
        """Bucket counts of the unlabelled series."""
        return self._series[()][0]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labels) or None)
        for label_values, (counts, total) in self._series.items():
            cumulative = np.cumsum(counts)
            # bounds spelled like prometheus_client's ("1.0", not "1"): the same series as its Histogram
            buckets = [
                (str(floatToGoString(b)), float(c))  # type: ignore[no-untyped-call]
                for b, c in zip(self.bounds.tolist(), cumulative[:-1], strict=True)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(label_values), buckets, total[0])
        yield family


class Metrics:
    """Every metric of the service; also the :class:`service.store.StoreEvents` sink."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes & co: capacity planning divides RSS by trajpred_tracked_agents
        ProcessCollector(registry=r)
        self.request_duration = Histogram(
            "trajpred_request_duration_seconds",
            "HTTP request duration by route template",
            ["route"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.observations = Counter(
            "trajpred_observations_total", "observations applied to a model's state", ["model"], registry=r
        )
        self.rejected = Counter(
            "trajpred_rejected_requests_total",
            "requests answered with a 4xx, by error code",
            ["reason"],
            registry=r,
        )
        # 5xx answers (store outage, internal error): what the rejected counter, 4xx only, cannot show
        self.server_errors = Counter(
            "trajpred_server_errors_total",
            "requests answered with a 5xx, by error code",
            ["reason"],
            registry=r,
        )
        self.tracked_agents = Gauge(
            "trajpred_tracked_agents",
            "agents with a live state, per model (this store's view)",
            ["model"],
            registry=r,
        )
        self.evictions = Counter(
            "trajpred_state_evictions_total",
            "per-model agent states removed: ttl (idle), capacity (max agents), ended (DELETE)",
            ["reason"],
            registry=r,
        )
        self.displacement_error = BulkHistogram(
            "trajpred_displacement_error_meters",
            "online displacement error of scored predictions at 1, 2 and 3 s, by the anchor's interval regime",
            labels=["model", "horizon_s", "interval"],
            buckets=ERROR_BUCKETS_M,
        )
        r.register(self.displacement_error)
        self.ade = BulkHistogram(
            "trajpred_ade_meters",
            "ADE of matured scored predictions, by the anchor's interval regime (10hz, 5hz, 2hz, slower)",
            labels=["model", "interval"],
            buckets=ERROR_BUCKETS_M,
        )
        r.register(self.ade)
        self.fde = BulkHistogram(
            "trajpred_fde_meters",
            "FDE of matured scored predictions, by the anchor's interval regime (10hz, 5hz, 2hz, slower)",
            labels=["model", "interval"],
            buckets=ERROR_BUCKETS_M,
        )
        r.register(self.fde)
        self.min_ade = BulkHistogram(
            "trajpred_min_ade_meters",
            "minADE_K of matured scored predictions: the lowest ADE among the K futures served (?modes=K; K = 1 "
            "without it)",
            labels=["model"],
            buckets=ERROR_BUCKETS_M,
        )
        r.register(self.min_ade)
        self.min_fde = BulkHistogram(
            "trajpred_min_fde_meters",
            "minFDE_K of matured scored predictions: the lowest FDE among the K futures served",
            labels=["model"],
            buckets=ERROR_BUCKETS_M,
        )
        r.register(self.min_fde)
        self.misses = Counter(
            "trajpred_misses_total",
            "matured scored predictions whose minFDE_K exceeds 2 m (miss rate: this over the matured count)",
            ["model"],
            registry=r,
        )
        self.scored_points = Counter(
            "trajpred_scored_points_total",
            "observed points that scored the most probable future of a model with deviations",
            ["model"],
            registry=r,
        )
        self.covered_points = Counter(
            "trajpred_covered_points_total",
            "of trajpred_scored_points_total, those inside the predicted 95% region (calibrated: 95% of them)",
            ["model"],
            registry=r,
        )
        self.memory_energy = Counter(
            "trajpred_memory_energy_joules",
            "modeled energy of every state update by component (models.energy): IPNet's drive heat, read-out, "
            "conversions, reheat and SRAM traffic between frames; the digital models' state SRAM traffic; every "
            "model's matrix products (macs)",
            ["model", "component"],
            registry=r,
        )
        self.neuron_temperature = BulkHistogram(
            "trajpred_neuron_temperature_kelvin",
            "IPNet neuron temperatures after each update (every neuron of every agent)",
            TEMPERATURE_BUCKETS_K,
        )
        r.register(self.neuron_temperature)
        # the stream's sampling interval as each model saw it: an operator sees rate changes and drops
        self.observation_interval = BulkHistogram(
            "trajpred_observation_interval_seconds",
            "seconds between an agent's consecutive observations, per applied observation (not a track's first)",
            INTERVAL_BUCKETS_S,
            labels=["model"],
        )
        r.register(self.observation_interval)
        self.batch_agents = Histogram(
            "trajpred_batch_agents", "agents per batched model step", buckets=BATCH_BUCKETS, registry=r
        )
        self.model_info = Gauge(
            "trajpred_model_info", "loaded model versions (value 1)", ["model", "version"], registry=r
        )
        # the capacity as a series, so an alert can compare trajpred_tracked_agents against it
        self.max_agents = Gauge(
            "trajpred_max_agents",
            "configured capacity: tracked agents per model (TRAJPRED_MAX_AGENTS)",
            registry=r,
        )
        self.new_tracks = Counter(
            "trajpred_new_tracks_total",
            "tracks started (first observation or gap longer than the TTL)",
            ["model"],
            registry=r,
        )
        self.scoring = Counter(
            "trajpred_scored_predictions_total",
            "kept predictions by outcome: matured (scored), incomplete (gap in the observed future), "
            "unobserved (horizon passed without observations), dropped (memory bound)",
            ["outcome"],
            registry=r,
        )
        self.pending_predictions = Gauge(
            "trajpred_pending_predictions", "predictions kept until their horizon has passed", registry=r
        )
        self.commit_conflicts = Counter(
            "trajpred_commit_conflicts_total",
            "optimistic commits retried because another writer won",
            registry=r,
        )
        self.snapshots = Counter(
            "trajpred_snapshots_total",
            "snapshot events: written, failed, restored, corrupt",
            ["event"],
            registry=r,
        )
        # the overload bound (TRAJPRED_MAX_CONCURRENT_REQUESTS, TRAJPRED_MAX_QUEUED_REQUESTS) in use
        self.inflight = Gauge(
            "trajpred_inflight_requests",
            "/v1 requests being processed (running) or waiting for a slot (queued)",
            ["state"],
            registry=r,
        )
        # the stream's bounds (TRAJPRED_STREAM_MAX_CONNECTIONS, TRAJPRED_STREAM_MAX_INFLIGHT) in use
        self.streams_open = Gauge("trajpred_streams_open", "WebSocket streams open (/v1/stream)", registry=r)
        self.stream_messages_inflight = Gauge(
            "trajpred_stream_messages_inflight",
            "stream messages read and not yet answered, over every open stream",
            registry=r,
        )
        self.connection_refusals = Counter(
            "trajpred_connection_refusals_total",
            "connections refused or closed before a request reached the app (service/protocol.py), by reason",
            ["reason"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:
            self.connection_refusals.labels(reason=reason)
        # every known label value at 0 from start-up: a rate of a series that does not exist yet is no data,
        # and a panel or rule on a healthy server would stay empty
        for code in REJECTION_CODES:
            self.rejected.labels(reason=code)
        for code in SERVER_ERROR_CODES:
            self.server_errors.labels(reason=code)
        for reason in EVICTION_REASONS:
            self.evictions.labels(reason=reason)

    def count_error(self, err: ServiceError) -> None:
        """An error answered (HTTP or stream): 4xx in the rejected counter, 5xx in the server-error one."""
        counter = self.rejected if err.status < 500 else self.server_errors
        counter.labels(reason=err.code).inc()

    # StoreEvents
    def evicted(self, model: str, reason: str, n: int) -> None:
        self.evictions.labels(reason=reason).inc(n)

    def tracked(self, model: str, n: int) -> None:
        self.tracked_agents.labels(model=model).set(n)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
