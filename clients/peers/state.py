"""Per-agent GRU state as every peer keeps it: the work of ``/v1/baseline/predict`` without its checks.

For each agent of a frame: load its state (kinematics + GRU hidden state), advance it by the real elapsed
time with the served GRU checkpoint (``models.predictor.Predictor.step``, one batched forward), store it
back and return the predicted trajectories. No online scoring, bound checks or metrics: a peer does less
than the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.kinematics import KinState
from models.predictor import Predictor


class GRUState:
    """Per-agent state in dicts, in one process (a serving system's workers would each hold a part)."""

    def __init__(self, checkpoint: str) -> None:
        torch.set_num_threads(1)
        self.predictor = Predictor.from_checkpoint(checkpoint)
        self.kin: dict[str, np.ndarray] = {}
        self.memory: dict[str, np.ndarray] = {}
        self.last_t: dict[str, float] = {}
        self.empty_kin = KinState.empty(1).to_array()[0]
        self.empty_memory = self.predictor.initial_memory(1)[0]

    def step(self, ids: Sequence[str], t: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """Advance each agent by its observation (``t`` [N], ``xy`` [N, 2]): trajectories [N, H, 2] (float32)."""
        kin = KinState.from_array(np.stack([self.kin.get(a, self.empty_kin) for a in ids]))
        memory = np.stack([self.memory.get(a, self.empty_memory) for a in ids]).astype(np.float32)
        dt = np.array([t[i] - self.last_t.get(a, t[i]) for i, a in enumerate(ids)])
        types = np.zeros(len(ids), np.int64)
        r = self.predictor.step(kin, memory, xy, dt, types)
        new_kin = r.kin.to_array()
        for i, a in enumerate(ids):
            self.kin[a] = new_kin[i]
            self.memory[a] = r.memory[i]
            self.last_t[a] = float(t[i])
        return np.ascontiguousarray(r.trajectory, dtype=np.float32)


def frame_arrays(observations: list[dict[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A frame body's observations (``{"agent_id", "timestamp", "x", "y"}``) as ids, times and positions."""
    ids = [o["agent_id"] for o in observations]
    t = np.array([o["timestamp"] for o in observations], dtype=np.float64)
    xy = np.array([[o["x"], o["y"]] for o in observations], dtype=np.float64)
    return ids, t, xy
