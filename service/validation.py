"""The settings-dependent checks of a request's observations (the schema has checked each one already):
bounds, timestamps not in the future, per-agent counts, duplicates and implausible motion, each issue named
by field and index; and their grouping per agent (:class:`service.frames.Frame`)."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

import numpy as np

from service.errors import MAX_REPORTED_ISSUES, InvalidRequest
from service.frames import Frame, Obs, Observations
from service.settings import Settings

#: position noise allowed on top of the speed bound: two observations milliseconds apart may differ by a
#: detection's noise, which no speed explains
MOTION_SLACK_M = 10.0
#: the most futures a request may ask for (``?modes=K``): what the served models are trained with
MAX_MODES = 6


def _implausible(x0: float, y0: float, x1: float, y1: float, dt: float, max_speed: float) -> bool:
    return math.hypot(x1 - x0, y1 - y0) > max_speed * dt + MOTION_SLACK_M


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

    def __call__(self, observations: Observations) -> Frame:
        """Settings-dependent checks of the whole request; returns its observations grouped per agent.

        Agents keep the order in which they first appear; each agent's observations are sorted by timestamp.
        """
        s = self.settings
        n = len(observations)
        if n > s.max_observations:
            raise InvalidRequest(
                f"{n} observations in one request; the maximum is {s.max_observations}",
                field="observations",
                code="too_many_observations",
            )
        latest = self.clock() + s.max_future_s
        # the common case checked in three array passes; the loop below names what is wrong
        fine = not (
            (np.abs(observations.xy) > s.max_abs_coordinate_m).any() or (observations.t > latest).any()
        )
        if fine and len(set(observations.ids)) == n:  # one observation per agent: nothing to group or sort
            return Frame.single(observations)
        rows = observations.rows()
        issues: list[tuple[str, int, str, str]] = []
        for o in rows:
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
        for o in rows:
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
        return Frame.of(groups)
