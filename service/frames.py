"""What the data plane computes for a request, as columns: the request's observations (:class:`Frame`), one
model's batched steps (:class:`Computed`), the answers (:class:`Predictions`), and what the accounting of a
committed request reads (:class:`Committed`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from models.kinematics import TYPE_INDEX
from service.validation import Obs


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
    """The request's observations as columns, grouped per agent and ranked in time within each agent."""

    agent: np.ndarray  # (O,) index into the request's agents
    rank: np.ndarray  # (O,) 0 for an agent's oldest observation in this request
    t: np.ndarray  # (O,)
    xy: np.ndarray  # (O, 2)
    agent_type: np.ndarray  # (O,) TYPE_INDEX, -1 where the observation names none
    first_t: np.ndarray  # (A,) each agent's oldest timestamp in this request
    depth: int  # most observations of one agent

    @staticmethod
    def of(agents: list[str], groups: dict[str, list[Obs]]) -> Frame:
        if agents and len(agents) == sum(map(len, groups.values())):
            # one observation per agent (a perception frame): columns straight from the observations
            _, _, ts, xs, ys, kinds = zip(*(groups[a][0] for a in agents), strict=True)
            t = np.array(ts, dtype=np.float64)
            n = len(agents)
            return Frame(
                agent=np.arange(n, dtype=np.int64),
                rank=np.zeros(n, dtype=np.int64),
                t=t,
                xy=np.column_stack([np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)]),
                agent_type=np.array([-1 if k is None else TYPE_INDEX[k] for k in kinds], dtype=np.int64),
                first_t=t,
                depth=1,
            )
        flat = [(i, k, o) for i, a in enumerate(agents) for k, o in enumerate(groups[a])]
        t = np.array([o.t for _, _, o in flat])
        return Frame(
            agent=np.array([i for i, _, _ in flat], dtype=np.int64),
            rank=np.array([k for _, k, _ in flat], dtype=np.int64),
            t=t,
            xy=np.array([(o.x, o.y) for _, _, o in flat], dtype=np.float64).reshape(-1, 2),
            agent_type=np.array(
                [-1 if o.agent_type is None else TYPE_INDEX[o.agent_type] for _, _, o in flat], dtype=np.int64
            ),
            first_t=np.array([groups[a][0].t for a in agents]),
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
    agents: list[str]
    groups: dict[str, list[Obs]]
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
