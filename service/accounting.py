"""The accounting of a committed request (metrics, online scoring: :class:`Accountant`), and when it runs:
after the answer (:class:`AccountingSchedule`).

The accounting does not change the answer, so the client need not wait for it. Not at the next event-loop
turn either: the answer's last bytes (100 KB and more) may still wait in the transport for the socket, and
accounting before them delayed every answer by its duration. :class:`AccountingSchedule` keeps the committed
requests in commit order and runs them a little later, or right after the next answer when answers come
back to back; anything that reads what the accounting writes (a report, ``/metrics``, the end of a track,
housekeeping) calls :meth:`AccountingSchedule.flush` first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import numpy as np

from models.agent_types import AGENT_TYPES
from models.predictor import Predictor
from service.frames import Committed, deviation_frames, mode_trajectories
from service.metrics import Metrics
from service.scoring import OnlineScorer
from service.scoring_log import ScoringEntry, frame_entry

log = logging.getLogger("service.accounting")

#: how long after an answer its accounting waits when requests are sparse: long enough for the client to have
#: read the answer (on 100-agent frames at 10 Hz, 0 s instead put the p99 about 0.8 ms higher: 9.0-9.7 ms
#: against 7.9-8.5 ms in three A/B rounds; the client and the server share the machine's cores). Requests that
#: come back to back (answers less than this apart) are accounted right after their answer instead: waiting
#: would land the work inside the next request (see AccountingSchedule.answer_sent).
ACCOUNTING_DELAY_S = 0.005

T = TypeVar("T")


class AccountingSchedule(Generic[T]):
    """Runs ``account(item)`` for every submitted item, oldest first, after the answers; on the event loop."""

    def __init__(self, account: Callable[[T], None], delay_s: float = ACCOUNTING_DELAY_S) -> None:
        self._account = account
        self.delay_s = delay_s
        self._pending: deque[T] = deque()
        self._last_answer_s = -math.inf  # monotonic time the previous answer was handed over

    def __len__(self) -> int:
        """Items submitted and not accounted yet."""
        return len(self._pending)

    def submit(self, item: T) -> None:
        """A committed request to account once its answer is out; call from the event loop."""
        self._pending.append(item)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_later(self.delay_s, self.flush)

    def answer_sent(self) -> None:
        """An answer (of any route) has been handed to the transport; call from the event loop.

        When answers come back to back (less than ``delay_s`` apart: a closed loop, a busy server), the
        pending accounting runs now, in the gap before the next request arrives, rather than at its timer,
        which would fire inside that request and add to it. When they are sparse (a 10 Hz stream), the timer
        stays: the client reads its answer before the server turns to accounting.
        """
        now = time.monotonic()
        back_to_back = now - self._last_answer_s < self.delay_s
        self._last_answer_s = now
        if back_to_back and self._pending:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Account every pending item, oldest first."""
        while self._pending:
            item = self._pending.popleft()
            try:
                self._account(item)
            except Exception:  # a scoring bug must not fail later requests, nor vanish silently
                log.exception("accounting of a committed request failed")


class Accountant:
    """What a committed request adds to the metrics and to online scoring (this process's own scorer with the
    memory store; with a shared store, the entry travels in the store's log and every replica scores it)."""

    def __init__(
        self,
        metrics: Metrics,
        scorer: OnlineScorer,
        predictors: Mapping[str, Predictor],
        origin: str,
        shared: bool,
    ) -> None:
        self.metrics = metrics
        self.scorer = scorer
        self.predictors = predictors
        self.origin = origin
        self.shared = shared

    def __call__(self, done: Committed) -> None:
        """Count a committed request in the metrics and, unless a shared store's log feeds the scorer, score it."""
        computed = done.computed
        met = self.metrics
        for m in done.models:
            c = computed[m]
            met.observations.labels(model=m).inc(c.updates)
            for component, joules in c.energy_j.items():
                met.memory_energy.labels(model=m, component=component).inc(joules)
            if c.new_tracks:
                met.new_tracks.labels(model=m).inc(c.new_tracks)
            for b in c.batch_sizes:
                met.batch_agents.observe(b)
            met.observation_interval.observe_many(c.intervals_s, label_value=m)
            pred = self.predictors[m]
            if pred.is_thermal:
                met.neuron_temperature.observe_many(c.memory)
        if not self.shared:  # (shared: the log follower scores it, on every replica)
            self.scoring_entry(done).apply(self.scorer, own=True)

    def scoring_entry(self, done: Committed) -> ScoringEntry:
        """What online scoring needs of a committed request: tracks restarted back in time (their pending
        predictions, anchored ahead of the clock, mean nothing), the observations, the new predictions."""
        models, frame, computed = done
        agents = frame.agents
        first = computed[models[0]]
        rewound = [agents[i] for i in np.flatnonzero(first.rewound)]
        if frame.depth == 1:  # one observation per agent, in the agents' order: the frame's columns
            t_list, xy_new = frame.t.tolist(), frame.xy
            observations = list(zip(agents, t_list, *xy_new.T.tolist(), strict=True))
        else:  # rows agent by agent, each in time order
            ids = [agents[i] for i in frame.agent.tolist()]
            observations = list(zip(ids, frame.t.tolist(), *frame.xy.T.tolist(), strict=True))
            last = frame.last
            t_list, xy_new = frame.t[last].tolist(), frame.xy[last]
        horizons = self.predictors[models[0]].horizons_s
        same_grid = all(np.array_equal(self.predictors[m].horizons_s, horizons) for m in models)
        return frame_entry(
            self.origin,
            rewound,
            observations,
            agents,
            [AGENT_TYPES[t] for t in first.agent_type.tolist()],
            t_list,
            xy_new,
            np.minimum.reduce([computed[m].steps for m in models]).tolist(),
            [None if math.isnan(d) else d for d in first.dt_s.tolist()],
            horizons if same_grid else None,
            mode_trajectories(models, computed),
            self.scorer.min_steps,
            deviation_frames(models, computed),
        )
