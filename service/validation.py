"""The settings-dependent checks of a request's observations (the schema has checked each one already):
bounds, timestamps not in the future, per-agent counts, duplicates and implausible motion, each issue named
by field and index."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from service.errors import MAX_REPORTED_ISSUES, InvalidRequest
from service.schemas import PredictRequest
from service.settings import Settings

#: position noise allowed on top of the speed bound: two observations milliseconds apart may differ by a
#: detection's noise, which no speed explains
MOTION_SLACK_M = 10.0
#: the most futures a request may ask for (``?modes=K``): what the served models are trained with
MAX_MODES = 6


def _implausible(x0: float, y0: float, x1: float, y1: float, dt: float, max_speed: float) -> bool:
    return math.hypot(x1 - x0, y1 - y0) > max_speed * dt + MOTION_SLACK_M


class Obs(NamedTuple):
    """A schema-valid observation and its index in the request (a tuple: a frame makes hundreds)."""

    pos: int  # index of the observation in the request
    agent_id: str
    t: float
    x: float
    y: float
    agent_type: str | None


def observations_of(body: PredictRequest) -> list[Obs]:
    """A schema-valid request's observations, each with its index in the request."""
    return [Obs(i, o.agent_id, o.timestamp, o.x, o.y, o.agent_type) for i, o in enumerate(body.observations)]


class FrameValidator:
    """Checks one request's observations and groups them per agent."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock

    @staticmethod
    def check_modes(modes: int | None) -> None:
        """``?modes=K``: None (the single trajectory) or 1 <= K <= ``MAX_MODES``."""
        if modes is not None and not 1 <= modes <= MAX_MODES:
            raise InvalidRequest(
                f"modes must be within 1..{MAX_MODES}, got {modes}", field="modes", code="out_of_range"
            )

    def __call__(self, observations: Sequence[Obs]) -> dict[str, list[Obs]]:
        """Settings-dependent checks of the whole request; returns observations grouped per agent.

        Groups keep the order in which agents first appear; each group is sorted by timestamp.
        """
        s = self.settings
        if len(observations) > s.max_observations:
            raise InvalidRequest(
                f"{len(observations)} observations in one request; the maximum is {s.max_observations}",
                field="observations",
                code="too_many_observations",
            )
        latest = self.clock() + s.max_future_s
        if observations:
            # the common case checked in three array passes; the loop below names what is wrong
            _, ids, ts, xs, ys, _ = zip(*observations, strict=True)
            bound = s.max_abs_coordinate_m
            fine = not (
                (np.abs(np.array(xs)) > bound).any()
                or (np.abs(np.array(ys)) > bound).any()
                or (np.array(ts) > latest).any()
            )
            if fine and len(set(ids)) == len(ids):  # one observation per agent: nothing within the request
                return {o.agent_id: [o] for o in observations}  # one observation per agent: nothing to sort
        issues: list[tuple[str, int, str, str]] = []
        for o in observations:
            for name, v in (("x", o.x), ("y", o.y)):
                if abs(v) > s.max_abs_coordinate_m:
                    issues.append(
                        (
                            name,
                            o.pos,
                            f"|{name}| = {abs(v):g} m exceeds {s.max_abs_coordinate_m:g} m",
                            "coordinate_out_of_range",
                        )
                    )
            if o.t > latest:
                issues.append(
                    (
                        "timestamp",
                        o.pos,
                        f"timestamp {o.t:.3f} is more than {s.max_future_s:g} s in the future",
                        "timestamp_in_future",
                    )
                )
        groups: dict[str, list[Obs]] = {}
        for o in observations:
            groups.setdefault(o.agent_id, []).append(o)
        for agent, group in groups.items():
            group.sort(key=lambda o: o.t)
            if len(group) > s.max_observations_per_agent:
                over = group[s.max_observations_per_agent]
                issues.append(
                    (
                        "agent_id",
                        over.pos,
                        f"agent {agent!r} has {len(group)} observations in one request; the maximum is "
                        f"{s.max_observations_per_agent} (each is one model step in sequence)",
                        "too_many_observations_per_agent",
                    )
                )
            for a, b in itertools.pairwise(group):
                if b.t > a.t and _implausible(a.x, a.y, b.x, b.y, b.t - a.t, s.max_speed_mps):
                    issues.append(
                        (
                            "x",
                            b.pos,
                            f"agent {agent!r} moved {math.hypot(b.x - a.x, b.y - a.y):.1f} m in {b.t - a.t:g} s "
                            f"(from observations[{a.pos}]): faster than {s.max_speed_mps:g} m/s",
                            "implausible_motion",
                        )
                    )
                if b.t == a.t:
                    issues.append(
                        (
                            "timestamp",
                            b.pos,
                            f"agent {agent!r} has two observations at timestamp {b.t!r} "
                            f"(indexes {a.pos} and {b.pos})",
                            "duplicate_timestamp",
                        )
                    )
        if issues:
            issues.sort(key=lambda i: (i[1], i[0]))
            first = issues[0]
            raise InvalidRequest(
                f"observations[{first[1]}].{first[0]}: {first[2]}",
                field=first[0],
                index=first[1],
                code=first[3],
                details=[
                    {"field": f, "index": i, "message": f"observations[{i}].{f}: {m}"}
                    for f, i, m, _ in issues[:MAX_REPORTED_ISSUES]
                ],
            )
        return groups
