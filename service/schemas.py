"""Request and response schemas of the HTTP API (pydantic v2). Clients may import them.

Requests are strict: no extra fields, no booleans or strings for numbers, no NaN or infinity. Bounds that
depend on settings (coordinates, future timestamps, observation count) are checked by the engine, with
the same error shape.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

AgentType = Literal["vehicle", "pedestrian", "cyclist", "unknown"]
# service.scoring.INTERVAL_REGIMES: the nominal stream rate of a prediction's anchor (a test keeps them equal)
IntervalRegime = Literal["10hz", "5hz", "2hz", "slower", "unknown"]
MAX_AGENT_ID_LENGTH = 128
#: predicted positions are answered rounded to this many decimals of a metre (0.1 mm)
POSITION_DECIMALS = 4
#: printable characters only: no C0/C1 control characters, no DEL
AGENT_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
AgentId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_AGENT_ID_LENGTH, pattern=AGENT_ID_PATTERN)
]

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Observation(BaseModel):
    """One position of one agent at one time."""

    model_config = ConfigDict(
        **_STRICT,
        json_schema_extra={
            "examples": [
                {
                    "agent_id": "veh-17",
                    "timestamp": 1718000000.1,
                    "x": 12.3,
                    "y": -4.1,
                    "agent_type": "vehicle",
                }
            ]
        },
    )

    agent_id: AgentId = Field(description="stable id of the agent (1-128 printable characters)")
    timestamp: float = Field(ge=0.0, description="seconds (e.g. Unix time); must increase per agent")
    x: float = Field(description="metres, world frame")
    y: float = Field(description="metres, world frame")
    agent_type: AgentType | None = Field(
        default=None, description="default: the agent's previous type, else unknown"
    )


class PredictRequest(BaseModel):
    """A batch of observations; several per agent are applied in timestamp order."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "observations": [
                        {
                            "agent_id": "veh-17",
                            "timestamp": 1718000000.0,
                            "x": 12.3,
                            "y": -4.1,
                            "agent_type": "vehicle",
                        },
                        {"agent_id": "veh-17", "timestamp": 1718000000.1, "x": 13.1, "y": -4.0},
                        {
                            "agent_id": "ped-3",
                            "timestamp": 1718000000.1,
                            "x": 2.0,
                            "y": 7.5,
                            "agent_type": "pedestrian",
                        },
                    ]
                }
            ]
        },
    )

    observations: list[Observation] = Field(min_length=1)


_STD = (
    "standard deviation of the point along the world {} axis, metres (calibrated: 95% of true points fall in "
    "the ellipse of the deviations along and across the heading; absent when the model has none)"
)


class TrajectoryPoint(BaseModel):
    timestamp: float = Field(description="absolute seconds: observation timestamp + horizon")
    x: float = Field(description="metres, world frame, rounded to 0.1 mm")
    y: float = Field(description="metres, world frame, rounded to 0.1 mm")
    std_x: float | None = Field(None, description=_STD.format("x"))
    std_y: float | None = Field(None, description=_STD.format("y"))


class TrajectoryColumns(BaseModel):
    """The predicted points as equal-length arrays (``?layout=columns``)."""

    timestamp: list[float] = Field(description="absolute seconds: observation timestamp + horizon")
    x: list[float] = Field(description="metres, world frame, rounded to 0.1 mm")
    y: list[float] = Field(description="metres, world frame, rounded to 0.1 mm")
    std_x: list[float] | None = Field(None, description=_STD.format("x"))
    std_y: list[float] | None = Field(None, description=_STD.format("y"))


class Mode(BaseModel):
    """One of the K most probable futures (``?modes=K``)."""

    probability: float = Field(description="probability of this future among the K served (they sum to 1)")
    trajectory: list[TrajectoryPoint] | TrajectoryColumns = Field(
        description="as the prediction's trajectory"
    )


# how predict answers lay out each trajectory: a list of points (default) or three arrays (compact, faster)
Layout = Literal["points", "columns"]


class Prediction(BaseModel):
    """One agent's predicted future, from its newest observation."""

    agent_id: str
    timestamp: float = Field(description="timestamp of the newest observation (the prediction's anchor)")
    steps: int = Field(description="observations in the agent's current track")
    new_track: bool = Field(description="a track started in this request (first observation or gap > TTL)")
    dt_s: float | None = Field(description="observed interval used: seconds since the previous observation")
    agent_type: AgentType
    trajectory: list[TrajectoryPoint] | TrajectoryColumns = Field(
        description="the most probable future: points in time order; with ?layout=columns, one object of "
        "arrays"
    )
    modes: list[Mode] | None = Field(
        None,
        description="with ?modes=K: the K most probable futures (at most the model's own), most probable first "
        "(it is the trajectory above)",
    )

    def points(self) -> list[tuple[float, float, float]]:
        """``(timestamp, x, y)`` of each predicted point, whatever the layout."""
        tr = self.trajectory
        if isinstance(tr, TrajectoryColumns):
            return list(zip(tr.timestamp, tr.x, tr.y, strict=True))
        return [(q.timestamp, q.x, q.y) for q in tr]


class PredictResponse(BaseModel):
    model: str
    model_version: str
    predictions: list[Prediction]


class ModelRef(BaseModel):
    model: str
    model_version: str


class ABPredictions(BaseModel):
    ipnet: list[Prediction]
    baseline: list[Prediction]


class ABPredictResponse(BaseModel):
    models: dict[str, ModelRef] = Field(description="'ipnet' and 'baseline' -> the model behind each")
    predictions: ABPredictions


class ModelScore(BaseModel):
    model: str
    model_version: str
    ade_m: float | None
    fde_m: float | None
    ade_median_m: float | None = Field(description="median ADE (within 2%: read off a log-spaced histogram)")
    ade_p90_m: float | None = Field(description="90th percentile of the ADE (within 2%)")
    k: int | None = Field(
        description="futures per prediction scored by the min-of-K figures: the K served (?modes=K, else 1); "
        "null when the scored predictions were served with different K"
    )
    min_ade_k_m: float | None = Field(description="mean minADE_K: the lowest ADE among the K served futures")
    min_fde_k_m: float | None = Field(description="mean minFDE_K: the lowest FDE among the K served futures")
    miss_rate_2m: float | None = Field(description="share of scored predictions whose minFDE_K exceeds 2 m")
    coverage_95: float | None = Field(
        description="share of the scored points inside the most probable future's 95% region (calibrated: "
        "0.95); null when the model has no deviations"
    )
    n: int


class HorizonScore(BaseModel):
    ipnet: float | None
    baseline: float | None
    n: int


class ABReport(BaseModel):
    """Online A/B comparison on identical matured predictions (same agent, same anchor, both models)."""

    models: dict[str, ModelScore]
    ade_reduction: float | None = Field(description="1 - ADE(ipnet) / ADE(baseline)")
    horizons_s: dict[str, HorizonScore]
    agent_type: AgentType | None
    interval: IntervalRegime | None = Field(
        description="only predictions whose anchor interval is in this regime (10hz <= 0.15 s < 5hz <= 0.3 s "
        "< 2hz <= 0.75 s < slower)"
    )
    horizon_s: float
    min_steps: int
    pending: int


class ModelAgentState(BaseModel):
    model_version: str
    steps: int
    last_timestamp: float
    track_start: float
    age_s: float = Field(description="wall-clock seconds since the last update")
    agent_type: AgentType
    neuron_temperatures_k: list[float] | None = Field(default=None, description="IPNet: the memory, kelvin")


class AgentSummary(BaseModel):
    agent_id: str
    models: dict[str, ModelAgentState]


class AgentDeleted(BaseModel):
    agent_id: str
    deleted: list[str] = Field(description="models whose state was freed")


class ErrorDetail(BaseModel):
    field: str | None
    index: int | None
    message: str


class ErrorBody(BaseModel):
    status: int
    code: str = Field(description="stable machine code (label of trajpred_rejected_requests_total)")
    message: str
    field: str | None = Field(description="offending field, e.g. 'x', 'observations', 'X-API-Key'")
    index: int | None = Field(description="index of the offending observation in the request")
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: dict[str, str] = Field(description="'ipnet' and 'baseline' -> model version")
    store: str
    snapshot: str | None = Field(default=None, description="what the memory store restored at start")
