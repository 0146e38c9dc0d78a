"""What the data plane computes for a request, as columns: the request's observations (:class:`Observations`,
then grouped per agent: :class:`Frame`), one model's batched steps (:class:`Computed`), the answers
(:class:`Predictions`), and what the accounting of a committed request reads (:class:`Committed`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from models.agent_types import AGENT_TYPES
from models.kinematics import TYPE_INDEX
from service.schemas import PredictRequest


class Obs(NamedTuple):
    """A schema-valid observation and its index in the request (a tuple: the checks that name what is wrong
    with a request go through its observations one by one)."""

    pos: int  # index of the observation in the request
    agent_id: str
    t: float
    x: float
    y: float
    agent_type: str | None


@dataclass(frozen=True)
class Observations:
    """A schema-valid request's observations as columns, in request order (row ``i`` is ``observations[i]``).

    Columns because a frame has hundreds of observations: the checks of a well-formed frame and its grouping
    per agent are a few array operations (``service.validation``), and the compiled reader of request bodies
    (``service.frame_reader``) fills them without an object per observation.
    """

    ids: list[str]
    t: np.ndarray  # (O,) float64 seconds
    xy: np.ndarray  # (O, 2) float64 metres
    agent_type: np.ndarray  # (O,) int64 index into AGENT_TYPES, -1 where the observation names none

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def of(body: PredictRequest) -> Observations:
        """The observations of a request the schema has validated."""
        obs = body.observations
        return Observations(
            ids=[o.agent_id for o in obs],
            t=np.array([o.timestamp for o in obs], dtype=np.float64),
            xy=np.array([(o.x, o.y) for o in obs], dtype=np.float64).reshape(-1, 2),
            agent_type=np.array(
                [-1 if o.agent_type is None else TYPE_INDEX[o.agent_type] for o in obs], dtype=np.int64
            ),
        )

    def rows(self) -> list[Obs]:
        """One tuple per observation (the same floats as the columns)."""
        kinds: list[str | None] = [None if k < 0 else AGENT_TYPES[k] for k in self.agent_type.tolist()]
        x, y = self.xy.T.tolist()
        return list(map(Obs, range(len(self.ids)), self.ids, self.t.tolist(), x, y, kinds))


@dataclass
class Predictions:
    """One model's answers for the agents of a request, columnar: row ``i`` is ``agent_ids[i]``.

    Columnar because a frame has hundreds of agents: the answer is built with a few array operations,
    not an object per agent.
    """

    agent_ids: list[str]
    timestamps: np.ndarray  # (A,) the newest observation's timestamp
    steps: np.ndarray  # (A,) observations in the current track
    new_track: np.ndarray  # (A,) bool
    dt_s: np.ndarray  # (A,) observed interval used, NaN for a track's first observation
    agent_types: list[str]
    trajectory_t: np.ndarray  # (A, P) absolute seconds of the answer's points
    modes_xy: np.ndarray  # (A, K, P, 2) metres, most probable mode first
    modes_std: np.ndarray | None  # (A, K, P, 2) world-axis standard deviations, metres; None: not modeled
    probs: np.ndarray  # (A, K) mode probabilities over the K served, descending
    show_modes: bool  # whether the answer lists the modes (``?modes=K``) beside the single trajectory

    def __len__(self) -> int:
        return len(self.agent_ids)

    @property
    def trajectory_xy(self) -> np.ndarray:
        """(A, P, 2) the single-trajectory answer: the most probable mode."""
        return self.modes_xy[:, 0]

    @property
    def trajectory_std(self) -> np.ndarray | None:
        """(A, P, 2) its standard deviations (x, y)."""
        return None if self.modes_std is None else self.modes_std[:, 0]


@dataclass
class Frame:
    """The request's observations grouped per agent, agents in the order they first appear in the request,
    and ranked in time within each agent: rows agent by agent, each agent's oldest first."""

    agents: list[str]  # (A,)
    agent: np.ndarray  # (O,) index into agents
    rank: np.ndarray  # (O,) 0 for an agent's oldest observation in this request
    pos: np.ndarray  # (O,) index of the observation in the request
    t: np.ndarray  # (O,)
    xy: np.ndarray  # (O, 2)
    agent_type: np.ndarray  # (O,) TYPE_INDEX, -1 where the observation names none
    first: np.ndarray  # (A,) the row of each agent's oldest observation in this request
    depth: int  # most observations of one agent

    @property
    def first_t(self) -> np.ndarray:
        """(A,) each agent's oldest timestamp in this request."""
        return self.t if self.depth == 1 else self.t[self.first]

    @property
    def last(self) -> np.ndarray:
        """(A,) the row of each agent's newest observation in this request."""
        return np.append(self.first[1:], len(self.t)) - 1

    @staticmethod
    def single(obs: Observations) -> Frame:
        """One observation per agent (a perception frame): the request's own columns, in its order."""
        n = len(obs)
        order = np.arange(n, dtype=np.int64)
        return Frame(
            agents=obs.ids,
            agent=order,
            rank=np.zeros(n, dtype=np.int64),
            pos=order,
            t=obs.t,
            xy=obs.xy,
            agent_type=obs.agent_type,
            first=order,
            depth=1,
        )

    @staticmethod
    def of(groups: dict[str, list[Obs]]) -> Frame:
        """Observations grouped per agent (each group in time order)."""
        flat = [(i, k, o) for i, group in enumerate(groups.values()) for k, o in enumerate(group)]
        rank = np.array([k for _, k, _ in flat], dtype=np.int64)
        return Frame(
            agents=list(groups),
            agent=np.array([i for i, _, _ in flat], dtype=np.int64),
            rank=rank,
            pos=np.array([o.pos for _, _, o in flat], dtype=np.int64),
            t=np.array([o.t for _, _, o in flat], dtype=np.float64),
            xy=np.array([(o.x, o.y) for _, _, o in flat], dtype=np.float64).reshape(-1, 2),
            agent_type=np.array(
                [-1 if o.agent_type is None else TYPE_INDEX[o.agent_type] for _, _, o in flat], dtype=np.int64
            ),
            first=np.flatnonzero(rank == 0),
            depth=max(len(g) for g in groups.values()),
        )


@dataclass
class Computed:
    """Result of the batched steps of one model (built in a worker thread), one row per agent."""

    records: list[bytes]  # the new state records, to commit
    kin: np.ndarray  # (A, 7)
    memory: np.ndarray  # (A, M)
    last_t: np.ndarray  # (A,)
    agent_type: np.ndarray  # (A,) TYPE_INDEX
    modes_xy: np.ndarray  # (A, K, H, 2) the K served futures from each agent's newest observation
    probs: np.ndarray  # (A, K) their probabilities, renormalised over the K, descending
    std: np.ndarray | None  # (A, K, P, 2) world-axis standard deviations at the served horizons; None: none
    std_agent: np.ndarray | None  # (A, H, 2) the most probable future's deviations along / across the heading
    new_track: np.ndarray  # (A,) bool
    rewound: np.ndarray  # (A,) bool: a track that had run ahead of the clock restarted earlier
    dt_s: np.ndarray  # (A,) float, NaN for a first observation
    energy_j: dict[str, float]  # modeled joules by component (models.energy)
    updates: int
    batch_sizes: list[int]
    new_tracks: int
    intervals_s: np.ndarray  # observed intervals of every applied observation but a track's first

    @property
    def steps(self) -> np.ndarray:
        """(A,) observations in each agent's current track."""
        return self.kin[:, 6].astype(np.int64)

    @property
    def trajectories(self) -> np.ndarray:
        """(A, H, 2) the most probable future of each agent."""
        return self.modes_xy[:, 0]


class Committed(NamedTuple):
    """A committed request, as its accounting needs it."""

    models: Sequence[str]
    frame: Frame
    computed: dict[str, Computed]


def mode_trajectories(models: Sequence[str], computed: dict[str, Computed]) -> dict[str, np.ndarray]:
    """What online scoring keeps of each model's served futures: ``model`` -> the most probable (A, H, 2),
    and ``model#j`` -> the j-th mode for the others served (``service.scoring.mode_of`` reads the names)."""
    out: dict[str, np.ndarray] = {}
    for m in models:
        c = computed[m]
        out[m] = c.modes_xy[:, 0]
        for j in range(1, c.modes_xy.shape[1]):
            out[f"{m}#{j}"] = c.modes_xy[:, j]
    return out


def deviation_frames(models: Sequence[str], computed: dict[str, Computed]) -> dict[str, np.ndarray]:
    """What online scoring needs to judge calibration, per model with deviations: (A, 1 + H, 2), each agent's
    heading (row 0) and the most probable future's deviations along / across it (the 95% ellipse's axes)."""
    out: dict[str, np.ndarray] = {}
    for m in models:
        c = computed[m]
        if c.std_agent is not None:
            out[m] = np.concatenate([c.kin[:, None, 4:6], c.std_agent], axis=1)
    return out
