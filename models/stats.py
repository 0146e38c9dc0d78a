"""Confidence intervals for displacement errors: a bootstrap over scenes and training seeds.

Windows of one scene (one log) share the road, the ego vehicle's sensor and often the same agents, so they
are not independent: resampling windows would give intervals far too narrow. Here the unit of resampling is
the scene (windows of a scene enter or leave a replicate together), and, where a model was trained with
several seeds, the seed as well, so that an interval covers both which scenes were recorded and which seed
was trained. Two models compared on the same windows are resampled with the same scenes (a paired
comparison); their seeds are drawn independently (seeds are not paired across models).

With few scenes (the Argoverse 2 test set has five logs) the percentile interval is coarse and tends to be
too narrow rather than too wide: read it as the least uncertainty there is, not the most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Clustered:
    """Per-window errors of one model, by seed: the sums and counts per scene that a bootstrap needs."""

    sums: np.ndarray  # (S, K) error summed over each scene's windows, per seed
    counts: np.ndarray  # (K,) windows per scene

    @staticmethod
    def of(values: np.ndarray, scene_index: np.ndarray, n_scenes: int) -> Clustered:
        """``values`` (S, W): one row per seed; ``scene_index`` (W,) in ``range(n_scenes)``."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        sums = np.stack([np.bincount(scene_index, weights=row, minlength=n_scenes) for row in values])
        return Clustered(sums, np.bincount(scene_index, minlength=n_scenes).astype(np.float64))

    @property
    def mean(self) -> float:
        """Window-weighted mean over every window, averaged over seeds."""
        return float((self.sums.sum(axis=1) / self.counts.sum()).mean())

    def replicates(self, scene_draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B,) bootstrap means for ``scene_draws`` (B, K) counts of each scene in each replicate."""
        n_seeds = self.sums.shape[0]
        seeds = rng.integers(0, n_seeds, size=(len(scene_draws), n_seeds))  # (B, S) seeds drawn
        num = np.einsum("bsk,bk->bs", self.sums[seeds], scene_draws)
        den = scene_draws @ self.counts
        return (num / den[:, None]).mean(axis=1)


def scene_draws(n_scenes: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_scenes): how many times each scene is drawn in each replicate (a multinomial draw).

    A replicate whose draw holds no window at all cannot happen: every scene holds at least one window.
    """
    return rng.multinomial(n_scenes, np.full(n_scenes, 1.0 / n_scenes), size=n_boot).astype(np.float64)


def interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_ci(c: Clustered, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """95% interval of a model's mean error, resampling scenes and seeds."""
    rng = np.random.default_rng(seed)
    return interval(c.replicates(scene_draws(len(c.counts), n_boot, rng), rng))


def reduction_ci(
    model: Clustered, baseline: Clustered, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """95% interval of ``1 - mean(model) / mean(baseline)`` on the same windows (paired over scenes)."""
    if not np.array_equal(model.counts, baseline.counts):
        raise ValueError("a paired comparison needs both models scored on the same windows")
    rng = np.random.default_rng(seed)
    draws = scene_draws(len(model.counts), n_boot, rng)
    return interval(1.0 - model.replicates(draws, rng) / baseline.replicates(draws, rng))


def change_ci(
    model: Clustered, reference: Clustered, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """95% interval of ``mean(model) / mean(reference) - 1`` on the same windows (paired over scenes)."""
    lo, hi = reduction_ci(reference, model, n_boot, seed)  # of 1 - reference/model
    # x = 1 - r/m  <=>  m/r - 1 = x / (1 - x): monotone in x below 1, so the percentiles map over
    return lo / (1.0 - lo), hi / (1.0 - hi)


def significant(ci: tuple[float, float]) -> bool:
    """Whether an interval of a difference excludes zero."""
    return ci[0] > 0 or ci[1] < 0
