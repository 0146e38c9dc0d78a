"""``ipnet replay``: stream a real dataset to the service frame by frame through ``/v1/ab/predict``.

The data are read with the project's loaders (every format, including the interchange CSV). Each scene is
played in time order; a frame is every observation sharing one timestamp (with time jitter, which breaks
that sharing, observations are binned by the data's own frame period). Agent ids get the scene id as a
prefix when the data hold several scenes, because ids are only unique within a scene.

The final table is the server's ``/v1/ab/report`` (the service scores its own predictions online), plus what
the replay sent and what was rejected.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clients.client import ApiError, TrajpredClient
from clients.stream import Encoding
from models.data import Track, load_tracks
from models.windows import Perturbation, median_dt, perturb_observed
from service.schemas import ABPredictResponse, ABReport, Prediction, TrajectoryColumns

__all__ = ["Frame", "KeptPrediction", "ReplayResult", "build_frames", "format_table", "plot_replay", "replay"]


@dataclass
class Frame:
    """Observations sent in one request; ``t`` is the data time of the frame (for real-time pacing)."""

    t: float
    observations: list[dict[str, Any]]


@dataclass
class KeptPrediction:
    """One model's prediction for a plotted agent: its futures, most probable first."""

    t: np.ndarray  # (n,) absolute timestamps of the points
    modes: list[np.ndarray]  # (n, 2) world positions per future
    probs: list[float]
    std: np.ndarray | None  # (n, 2) std_x, std_y of the most probable future, metres (None: not served)

    @property
    def xy(self) -> np.ndarray:
        """(n, 2) the most probable future (the single answer)."""
        return self.modes[0]


@dataclass
class ReplayResult:
    """What one replay sent, what came back, and the server's A/B report at the end."""

    frames: int = 0
    requests: int = 0
    observations: int = 0
    rejected_requests: int = 0
    rejected_observations: int = 0
    reject_codes: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    report: ABReport | None = None
    #: observed track per plotted agent: (t, xy)
    tracks: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: one prediction per model per plotted agent (made mid-track): model -> agent -> its futures
    predictions: dict[str, dict[str, KeptPrediction]] = field(default_factory=dict)
    #: the timestamp each plotted prediction was made at (its newest observation)
    anchors: dict[str, float] = field(default_factory=dict)
    #: what was replayed (a file or folder), for the plot's title
    source: str = ""


def perturb_track(tr: Track, pert: Perturbation, seed: int) -> Track:
    """The whole track through :func:`models.windows.perturb_observed` (seeded per track)."""
    if pert.is_identity or len(tr) < 3:
        return tr
    t, xy = perturb_observed(tr.t, tr.xy, pert, np.random.default_rng(seed))
    return Track(tr.scene_id, tr.agent_id, tr.agent_type, t, xy, tr.source)


def build_frames(tracks: list[Track], pert: Perturbation | None = None) -> list[Frame]:
    """Frames in time order, scene after scene (each scene starts where the previous one ended, in time)."""
    pert = pert or Perturbation()
    scenes: dict[str, list[Track]] = defaultdict(list)
    for tr in tracks:
        scenes[tr.scene_id].append(tr)
    prefix = len(scenes) > 1
    frames: list[Frame] = []
    offset = 0.0
    for k, scene in enumerate(sorted(scenes)):
        group = [
            perturb_track(tr, pert, pert.seed * 1_000_003 + k * 10_007 + i)
            for i, tr in enumerate(scenes[scene])
        ]
        period = float(np.median([median_dt(tr.t) for tr in group]))
        t0 = min(float(tr.t[0]) for tr in group)
        by_key: dict[float, list[dict[str, Any]]] = defaultdict(list)
        for tr in group:
            agent = f"{scene}:{tr.agent_id}" if prefix else tr.agent_id
            for t, (x, y) in zip(tr.t.tolist(), tr.xy.tolist(), strict=True):
                # jittered times no longer line up: bin by the frame period (several per agent are allowed)
                key = float(np.floor((t - t0) / period + 1e-6)) if pert.jitter_s > 0 else t
                by_key[key].append(
                    {"agent_id": agent, "timestamp": t, "x": x, "y": y, "agent_type": tr.agent_type}
                )
        keys = sorted(by_key)
        for key in keys:
            obs = by_key[key]
            t_frame = max(o["timestamp"] for o in obs)
            frames.append(Frame(t_frame - t0 + offset, obs))
        t_end = max(float(tr.t[-1]) for tr in group)
        offset += t_end - t0 + period
    return frames


def _pick_agents(tracks: list[Track], frames: list[Frame], n: int) -> list[str]:
    """The ``n`` agents with the most observations that moved (interesting to look at)."""
    counts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for fr in frames:
        for o in fr.observations:
            counts[o["agent_id"]].append((o["x"], o["y"]))
    ranked = sorted(
        counts,
        key=lambda a: (np.ptp(np.asarray(counts[a]), axis=0).sum() > 5.0, len(counts[a])),
        reverse=True,
    )
    return ranked[:n]


def _sleep_until(start: float, data_t: float, speed: float | None) -> None:
    if speed is None:
        return
    delay = start + data_t / speed - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def replay(
    client: TrajpredClient,
    tracks: list[Track],
    *,
    speed: float | None = None,
    pert: Perturbation | None = None,
    plot_agents: int = 4,
    progress: bool = True,
    stream: bool = False,
    encoding: Encoding = "json",
    modes: int | None = None,
) -> ReplayResult:
    """Send every frame through ``/v1/ab/predict`` and fetch ``/v1/ab/report`` at the end.

    Args:
        stream: send the frames over one WebSocket stream (``/v1/stream?route=ab``, ``encoding`` JSON or
            MessagePack) instead of one HTTP request each: the same answers.
        speed: 1.0 = real time, 2.0 = twice as fast, None = as fast as the server answers.
        pert: stream degradation applied to each track before sending (seeded: reproducible).
        plot_agents: how many agents' tracks and predictions to keep for :func:`plot_replay`.
        modes: ask for the K most probable futures of each prediction (``?modes=K``): the server then
            scores min-of-K online, and the plot draws every future.
    """
    from tqdm import tqdm

    frames = build_frames(tracks, pert)
    result = ReplayResult()
    watched = set(_pick_agents(tracks, frames, plot_agents))
    seen: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    total_obs = {a: 0 for a in watched}
    for fr in frames:
        for o in fr.observations:
            if o["agent_id"] in total_obs:
                total_obs[o["agent_id"]] += 1
    result.predictions = {"ipnet": {}, "baseline": {}}
    opened = contextlib.ExitStack()

    def ab_predict(observations: list[dict[str, Any]]) -> ABPredictResponse:
        return client.ab_predict(observations, modes=modes)

    send: Callable[[list[dict[str, Any]]], ABPredictResponse] = ab_predict
    if stream:
        send = opened.enter_context(client.stream("ab", encoding=encoding, modes=modes)).predict
    start = time.perf_counter()
    bar: Iterator[Frame] = tqdm(frames, desc="replay", unit="frame", disable=not progress, leave=False)
    with opened:
        for fr in bar:
            _sleep_until(start, fr.t, speed)
            result.frames += 1
            result.requests += 1
            result.observations += len(fr.observations)
            try:
                answer = send(fr.observations)
            except ApiError as e:
                # a rejected request changes nothing on the server: count it and go on with the stream
                result.rejected_requests += 1
                result.rejected_observations += len(fr.observations)
                code = e.code or f"http_{e.status}"
                result.reject_codes[code] = result.reject_codes.get(code, 0) + 1
                continue
            for o in fr.observations:
                if o["agent_id"] in watched:
                    seen[o["agent_id"]].append((o["timestamp"], o["x"], o["y"]))
            for role, preds in (
                ("ipnet", answer.predictions.ipnet),
                ("baseline", answer.predictions.baseline),
            ):
                for p in preds:
                    if _keep_mid_track(result.predictions[role], p, seen, total_obs):
                        result.anchors[p.agent_id] = p.timestamp
    result.elapsed_s = time.perf_counter() - start
    result.tracks = {
        a: (np.array([s[0] for s in v]), np.array([[s[1], s[2]] for s in v])) for a, v in seen.items()
    }
    result.report = client.ab_report()
    return result


def _kept(p: Prediction) -> KeptPrediction:
    points = p.points()
    t = np.array([q[0] for q in points])
    listed = p.modes or []
    modes = [np.array([[x, y] for _, x, y in _points_of(m.trajectory)]) for m in listed] or [
        np.array([[x, y] for _, x, y in points])
    ]
    probs = [m.probability for m in listed] or [1.0]
    return KeptPrediction(t, modes, probs, _std_of(p.trajectory))


def _points_of(trajectory: Any) -> list[tuple[float, float, float]]:
    if isinstance(trajectory, TrajectoryColumns):
        return list(zip(trajectory.timestamp, trajectory.x, trajectory.y, strict=True))
    return [(q.timestamp, q.x, q.y) for q in trajectory]


def _std_of(trajectory: Any) -> np.ndarray | None:
    if isinstance(trajectory, TrajectoryColumns):
        if trajectory.std_x is None or trajectory.std_y is None:
            return None
        return np.column_stack([trajectory.std_x, trajectory.std_y])
    if not trajectory or trajectory[0].std_x is None:
        return None
    return np.array([[q.std_x, q.std_y] for q in trajectory])


def _keep_mid_track(
    store: dict[str, KeptPrediction],
    p: Prediction,
    seen: dict[str, list[tuple[float, float, float]]],
    total_obs: dict[str, int],
) -> bool:
    """Keep the prediction made at the middle of a watched agent's track (enough history, and a future to
    compare with); True if this one was kept."""
    if p.agent_id not in total_obs or p.agent_id in store:
        return False
    if len(seen[p.agent_id]) >= max(2, total_obs[p.agent_id] // 2):
        store[p.agent_id] = _kept(p)
        return True
    return False


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(result: ReplayResult) -> str:
    """The closing table: ADE/FDE and the error at 1, 2, 3 s per model, the ADE reduction, counts."""
    rep = result.report
    lines = []
    if rep is not None:
        hs = sorted(rep.horizons_s, key=float)
        head = ["model", "version", "ADE m", "FDE m", *[f"@{h} s m" for h in hs], "K", "minADE_K", "minFDE_K"]
        head += ["miss", "cov95", "n"]
        rows = []
        for role in ("ipnet", "baseline"):
            m = rep.models[role]
            at = [_fmt(getattr(rep.horizons_s[h], role)) for h in hs]
            multi = [_fmt(m.k, "d"), _fmt(m.min_ade_k_m), _fmt(m.min_fde_k_m), _fmt(m.miss_rate_2m, ".1%")]
            rows.append(
                [
                    role,
                    m.model_version,
                    _fmt(m.ade_m),
                    _fmt(m.fde_m),
                    *at,
                    *multi,
                    _fmt(m.coverage_95, ".1%"),
                    str(m.n),
                ]
            )
        rows.append(
            ["n (scored)", "", "", "", *[str(rep.horizons_s[h].n) for h in hs], "", "", "", "", "", ""]
        )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        red = "-" if rep.ade_reduction is None else f"{rep.ade_reduction:+.1%}"
        lines.append(
            f"ADE reduction (1 - ADE ipnet / ADE baseline): {red}   pending predictions: {rep.pending}"
        )
    rate = result.frames / result.elapsed_s if result.elapsed_s > 0 else 0.0
    lines.append(
        f"sent: {result.observations} observations in {result.requests} requests "
        f"({result.elapsed_s:.1f} s, {rate:.0f} frames/s)"
    )
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(result.reject_codes.items())) or "none"
    lines.append(
        f"rejected: {result.rejected_requests} requests, {result.rejected_observations} observations ({codes})"
    )
    return "\n".join(lines)


def _model_label(rep: ABReport | None, role: str) -> str:
    if role == "ipnet":
        return "IPNet"
    name = rep.models[role].model if rep is not None and role in rep.models else role
    return f"{name.upper()} baseline"


def plot_replay(result: ReplayResult, out: Path) -> None:
    """A PNG. Left: watched agents, each with its past track (solid), its future ground truth (dotted), the
    point a prediction starts from (x) and both models' predictions from there: every future served (with
    ``modes``), opacity by probability, and the 95% region of the most probable one at 1, 2 and 3 s (an
    ellipse of ``sqrt(5.991)`` times ``std_x``, ``std_y``: its axes along x and y). Right: the server's error
    against horizon per model, with the number of scored predictions and the ADE's median and 90th percentile.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    rep = result.report
    fig, (ax_xy, ax_h) = plt.subplots(1, 2, figsize=(13, 6))
    # colour and line style both differ: the models stay apart in grey print and for colour-blind readers
    styles = {"ipnet": ("tab:red", "-", "o"), "baseline": ("tab:blue", "--", "s")}
    for i, (agent, (t, xy)) in enumerate(sorted(result.tracks.items())):
        anchor = result.anchors.get(agent)
        past = t <= anchor if anchor is not None else np.ones(len(t), dtype=bool)
        first = i == 0
        ax_xy.plot(
            xy[past, 0],
            xy[past, 1],
            "-",
            color="0.35",
            lw=1.3,
            label="track up to the prediction" if first else None,
        )
        if (~past).any():
            future = np.concatenate([xy[past][-1:], xy[~past]])
            ax_xy.plot(
                future[:, 0],
                future[:, 1],
                ":",
                color="black",
                lw=1.5,
                label="what happened next (ground truth)" if first else None,
            )
        if anchor is not None:
            start = xy[past][-1]
            ax_xy.plot(*start, "x", color="black", ms=8, mew=2, label="prediction starts" if first else None)
        for role in ("baseline", "ipnet"):
            pred = result.predictions.get(role, {}).get(agent)
            if pred is not None:
                color, line, marker = styles[role]
                top = max(pred.probs)
                for j in range(len(pred.modes) - 1, 0, -1):  # the less probable futures, faint
                    ax_xy.plot(
                        pred.modes[j][:, 0],
                        pred.modes[j][:, 1],
                        line,
                        color=color,
                        lw=1.2,
                        alpha=0.15 + 0.6 * pred.probs[j] / top,
                        label=f"{_model_label(rep, role)}: other futures (opacity: probability)"
                        if first and j == 1
                        else None,
                    )
                ax_xy.plot(
                    pred.xy[:, 0],
                    pred.xy[:, 1],
                    line,
                    color=color,
                    lw=2.0,
                    marker=marker,
                    ms=3,
                    markevery=5,
                    alpha=0.9,
                    label=_model_label(rep, role) + (" (most probable)" if len(pred.modes) > 1 else "")
                    if first
                    else None,
                )
                _ellipses(ax_xy, pred, anchor, color, first and role == "ipnet")
        ax_xy.annotate(agent[-8:], xy[0], fontsize=7, color="0.3")
    ax_xy.set_title("tracks and one prediction per agent, made mid-track")
    ax_xy.set_xlabel("x (m)")
    ax_xy.set_ylabel("y (m)")
    ax_xy.set_aspect("equal", adjustable="datalim")
    ax_xy.legend(loc="best", fontsize=8)
    if rep is not None:
        hs = sorted(rep.horizons_s, key=float)
        for role in ("ipnet", "baseline"):
            pts = [(float(h), getattr(rep.horizons_s[h], role)) for h in hs]
            pts = [(h, v) for h, v in pts if v is not None]
            m = rep.models[role]
            if pts:
                color, line, marker = styles[role]
                spread = (
                    f"; ADE median {m.ade_median_m:.2f}, p90 {m.ade_p90_m:.2f} m"
                    if m.ade_median_m is not None and m.ade_p90_m is not None
                    else ""
                )
                ax_h.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    line,
                    marker=marker,
                    color=color,
                    label=f"{_model_label(rep, role)} (n = {m.n}{spread})",
                )
        red = "" if rep.ade_reduction is None else f"; ADE reduction {rep.ade_reduction:+.1%}"
        ax_h.set_title(f"mean error at each horizon (/v1/ab/report{red})")
        versions = ", ".join(
            f"{_model_label(rep, r)} {rep.models[r].model_version}" for r in ("ipnet", "baseline")
        )
        fig.suptitle(f"{result.source or 'replay'}: {versions}", fontsize=9)
    ax_h.set_xlabel("horizon (s)")
    ax_h.set_ylabel("mean displacement error (m)")
    ax_h.set_ylim(bottom=0)
    ax_h.grid(alpha=0.3)
    ax_h.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _ellipses(ax: Any, pred: KeptPrediction, anchor: float | None, color: str, label: bool) -> None:
    """The most probable future's 95% region at 1, 2 and 3 s after the anchor (when it has deviations)."""
    from matplotlib.patches import Ellipse

    if pred.std is None or anchor is None:
        return
    scale = 2.0 * np.sqrt(5.991464547107979)  # full axes of the 95% ellipse, in deviations
    for k, h in enumerate((1.0, 2.0, 3.0)):
        j = int(np.argmin(np.abs(pred.t - anchor - h)))
        if abs(pred.t[j] - anchor - h) > 0.06:
            continue
        (x, y), (sx, sy) = pred.xy[j], pred.std[j]
        ax.add_patch(
            Ellipse(
                (x, y),
                scale * sx,
                scale * sy,
                fill=False,
                ls=":",
                lw=1.0,
                color=color,
                label="95% region at 1, 2, 3 s" if label and k == 0 else None,
            )
        )


def load(path: str | Path, fmt: str = "auto") -> list[Track]:
    """Tracks of any supported format (``models.data.load_tracks``)."""
    return load_tracks(path, fmt)
