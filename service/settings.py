"""Every setting of the service, read from ``TRAJPRED_*`` environment variables (pydantic-settings).

There is no module-level instance: ``create_app(Settings())`` and the tests build their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: longest horizon the shipped models predict (50 steps of 0.1 s); checked again against the loaded models
MAX_MODEL_HORIZON_S = 5.0
#: the models that can serve as the baseline (``TRAJPRED_BASELINE``): the fair baselines of models/catalog.py
BASELINE_NAMES = ("gru", "lstm", "gru_nodt", "ctgru", "cv", "ca", "ctrv")


class Settings(BaseSettings):
    """Service configuration. Each field is the environment variable ``TRAJPRED_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TRAJPRED_", extra="ignore", frozen=True)

    # --- models -------------------------------------------------------------------------------------
    weights_dir: Path | None = Field(
        default=None,
        description="folder with ipnet.pt and the baseline's <name>.pt (default: seed 0 of the set named by "
        "model_set)",
    )
    model_set: Literal["multimodal", "single"] = Field(
        default="multimodal",
        description="the shipped weights served when weights_dir is not set: 'multimodal' (6 futures with "
        "probabilities and calibrated deviations; models/weights/multimodal/seed0) or 'single' (one trajectory "
        "each, no deviations, a lower single-trajectory error; models/weights/shipped/seed0)",
    )

    @property
    def model_dir(self) -> Path:
        """The folder the models are loaded from."""
        from models.checkpoint import recipe_dir

        if self.weights_dir is not None:
            return self.weights_dir
        return recipe_dir("multimodal" if self.model_set == "multimodal" else "shipped") / "seed0"

    baseline: Literal["gru", "lstm", "gru_nodt", "ctgru", "cv", "ca", "ctrv"] = Field(
        default="gru", description="model behind /v1/baseline and the A/B (models/catalog.py)"
    )
    prediction_horizon_s: float = Field(
        default=3.0,
        gt=0.0,
        le=MAX_MODEL_HORIZON_S,
        description="trajectory points returned up to this horizon",
    )
    torch_threads: int = Field(default=1, ge=1, le=64, description="intra-op threads of each batched forward")
    native_kernel: bool = Field(
        default=True,
        description="the compiled code of the serving path: IPNet's MTJ layer as one pass and the answer writer "
        "(built by the system C compiler on first use, cached); false, or no compiler: the torch form and "
        "orjson (slower; the same predictions to float32 rounding, the same answer bytes)",
    )
    inline_step_max_updates: int = Field(
        default=200,
        ge=0,
        description="requests with at most this many agent-updates (agents x models) step on the event loop; "
        "larger ones in a worker thread (the hand-off and its cold caches cost more than a small step)",
    )

    # --- state ----------------------------------------------------------------------------------------
    store: str = Field(
        default="memory", description="'memory' or a Redis URL (redis://host:port/db, rediss://, unix://)"
    )
    redis_key_prefix: str = Field(
        default="trajpred", min_length=1, max_length=64, description="Redis key namespace"
    )
    state_ttl_s: float = Field(
        default=30.0,
        gt=0.0,
        description="idle agents expire after this; a longer gap between observations starts a new track",
    )
    max_agents: int = Field(
        default=100_000, ge=1, description="tracked agents per model; the least recently updated go first"
    )
    snapshot_path: Path | None = Field(
        default=Path("trajpred-state.snap"), description="memory store snapshot file (empty: no persistence)"
    )
    snapshot_interval_s: float = Field(default=30.0, gt=0.0, description="seconds between periodic snapshots")
    eviction_interval_s: float = Field(
        default=5.0,
        gt=0.0,
        description="seconds between housekeeping rounds (TTL sweep, purge of unobserved predictions)",
    )
    commit_retries: int = Field(
        default=8, ge=1, le=100, description="optimistic-concurrency retries of one request"
    )

    startup_in_background: bool = Field(
        default=True,
        description="open the listener before the models are loaded: /healthz answers at once, /readyz and "
        "/v1 answer 503 until ready",
    )

    # --- connections (ipnet serve: service/protocol.py) ------------------------------------------------
    max_connections: int = Field(
        default=900,
        ge=1,
        description="open connections (below the usual 1,024 open files); at the cap a new one replaces the "
        "connection that has waited longest for its request headers, or is answered 503 when every one is busy",
    )
    max_header_bytes: int = Field(
        default=65_536, ge=1024, description="request line and headers, bytes (414 / 431 above)"
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        description="a connection's request headers must be complete this long after it opened or after its "
        "previous answer; idle and half-open connections are closed",
    )
    write_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        description="a client that reads nothing of its answer for this long is disconnected",
    )

    # --- input limits ---------------------------------------------------------------------------------
    max_observations: int = Field(default=10_000, ge=1, description="observations per request")
    max_answer_points: int = Field(
        default=300_000,
        ge=1,
        description="agents x models x trajectory points of one answer (413 above, before any work): an "
        "answer is held in memory until the client reads it",
    )
    max_observations_per_agent: int = Field(
        default=64,
        ge=1,
        description="observations of one agent in one request (each is one model step in sequence)",
    )
    max_speed_mps: float = Field(
        default=100.0,
        gt=0.0,
        description="consecutive observations of an agent farther apart than this speed times their interval, "
        "plus 10 m of position noise, are implausible motion (422)",
    )
    max_body_bytes: int = Field(default=4_000_000, ge=1024, description="request body size, bytes")
    max_abs_coordinate_m: float = Field(default=1.0e7, gt=0.0, description="|x| and |y| bound, metres")
    max_future_s: float = Field(
        default=300.0, ge=0.0, description="timestamps later than now + this are rejected"
    )
    max_track_skew_s: float = Field(
        default=5.0,
        ge=0.0,
        description="an agent whose last timestamp is more than this ahead of the server clock (a sender's "
        "clock error) starts a new track at its next, earlier observation instead of answering 409 for the TTL",
    )
    api_keys: str = Field(
        default="", description="comma-separated keys accepted in X-API-Key on /v1 (empty: no auth)"
    )
    metrics_api_key: str = Field(
        default="",
        description="key required on /metrics, in X-API-Key or as a bearer token (empty: /metrics is open)",
    )
    metrics_cache_s: float = Field(
        default=1.0,
        ge=0.0,
        le=60.0,
        description="a /metrics exposition is reused for this long: a flood of scrapes renders it once a second",
    )

    # --- online scoring -------------------------------------------------------------------------------
    scoring_min_steps: int = Field(
        default=20,
        ge=1,
        description="only predictions made after this many observations of a track are scored",
    )
    scoring_stride_s: float = Field(
        default=1.0,
        ge=0.0,
        description="score at most one prediction per agent every this many seconds, like the offline windows' "
        "stride (0: every prediction)",
    )
    scoring_max_pending: int = Field(default=200_000, ge=1, description="unmatured predictions kept in total")
    scoring_max_pending_per_agent: int = Field(
        default=64, ge=1, description="unmatured predictions kept per agent"
    )
    scoring_log_retention_s: float = Field(
        default=30.0,
        ge=5.0,
        description="Redis store: seconds of the shared scoring log kept (every replica scores every frame "
        "from it; a replica that starts catches up on them)",
    )
    scoring_catch_up_s: float = Field(
        default=2.0,
        gt=0.0,
        description="Redis store: how long the A/B report waits for this replica to apply the scoring log "
        "up to the newest entry",
    )

    # --- the stream (WebSocket /v1/stream) --------------------------------------------------------------
    stream_max_inflight: int = Field(
        default=4,
        ge=1,
        description="messages of one stream read and not yet answered; beyond this the server stops reading it",
    )
    stream_max_connections: int = Field(
        default=64, ge=1, description="streams open at once; one more is closed with 1013 (try again later)"
    )
    stream_compression: bool = Field(
        default=False,
        description="offer permessage-deflate on streams: fewer bytes on the wire, at the server's CPU",
    )

    # --- overload -------------------------------------------------------------------------------------
    max_concurrent_requests: int = Field(
        default=32, ge=1, description="/v1 requests processed at once; more wait in the queue"
    )
    max_queued_requests: int = Field(
        default=64, ge=0, description="/v1 requests waiting for a slot; beyond this: 503 with Retry-After"
    )
    max_queue_wait_s: float = Field(
        default=5.0, gt=0.0, description="a queued request still without a slot after this gets a 503"
    )
    body_read_timeout_s: float = Field(
        default=10.0, gt=0.0, description="a request body still incomplete after this gets a 408"
    )
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After (seconds) of every 503 answer")

    # --- serving --------------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="`ipnet serve` bind address (--host overrides)")
    port: int = Field(default=8000, ge=0, le=65535, description="`ipnet serve` port (--port overrides)")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="`ipnet serve`: worker processes sharing the port (--workers overrides). More than one "
        "needs the Redis store: each worker is a replica with its own models, metrics and scorer view",
    )
    worker_port_base: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="`ipnet serve`: worker i also listens on this port + i, alone (its /metrics: one "
        "Prometheus target per worker, since a scrape of the shared port reaches one worker at random)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="log level of `ipnet serve`"
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="`ipnet serve`: one JSON object per log line (time, level, logger, message, request_id), "
        "or plain text",
    )
    access_log: bool = Field(
        default=False,
        description="`ipnet serve`: one log line per request (uvicorn's access log). Off by default: request "
        "counts and latencies by route, and rejections by error code, are in /metrics, internal errors are "
        "logged either way, and the line is CPU spent on every request",
    )
    malloc_keep_mb: int = Field(
        default=64,
        ge=0,
        le=4096,
        description="`ipnet serve`: MB of freed memory glibc keeps for reuse instead of returning it (large "
        "numpy/torch temporaries then reuse warm pages; see service/process.py); 0: glibc's defaults",
    )
    gc_gen0_threshold: int = Field(
        default=20_000,
        ge=0,
        description="`ipnet serve`: allocations between young-generation garbage collections; 0: Python's default",
    )

    @field_validator("store")
    @classmethod
    def _check_store(cls, v: str) -> str:
        v = v.strip()
        if v == "memory" or v.startswith(("redis://", "rediss://", "unix://")):
            return v
        raise ValueError("must be 'memory' or a Redis URL (redis://, rediss://, unix://)")

    @field_validator("snapshot_path", "weights_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        # an empty environment variable means "off", not the current directory
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, v: str) -> str:
        keys = [k.strip() for k in v.split(",") if k.strip()]
        if any(len(k) < 8 for k in keys):
            raise ValueError("every API key needs at least 8 characters")
        return ",".join(keys)

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.scoring_max_pending_per_agent > self.scoring_max_pending:
            raise ValueError("scoring_max_pending_per_agent exceeds scoring_max_pending")
        if self.workers > 1 and self.store == "memory":
            # the memory store lives in one process: two workers would each hold half of an agent's frames
            raise ValueError("workers > 1 needs the Redis store (TRAJPRED_STORE=redis://...)")
        return self

    @property
    def api_key_set(self) -> frozenset[str]:
        """The accepted API keys (empty: authentication is off)."""
        return frozenset(k for k in self.api_keys.split(",") if k)

    @property
    def uses_redis(self) -> bool:
        return self.store != "memory"
