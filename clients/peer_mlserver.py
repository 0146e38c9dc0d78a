"""The benchmark's peer: a Seldon MLServer custom runtime that keeps a per-agent GRU state.

It does the per-frame work of ``/v1/baseline/predict``: for each agent of the frame, load its state
(kinematics + GRU hidden state), advance it by the real elapsed time with the same GRU checkpoint
(``models.predictor.Predictor.step``, one batched forward), store it back and answer the predicted
trajectory. It does not score predictions online, validate bounds or keep metrics, so it does less than
the service.

This module runs inside MLServer's own virtualenv (``mlserver`` is not a project dependency):
``clients.benchmarks`` writes the model settings and starts ``mlserver start`` with this runtime.

V2 REST request: inputs ``agent_id`` (BYTES, [N]), ``t``, ``x``, ``y`` (FP64, [N]); output ``trajectory``
(FP32, [N, H, 2]).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from models.kinematics import KinState
from models.predictor import Predictor


class GRUPeer(MLModel):
    """Per-agent GRU state in a dict (one process, ``parallel_workers`` 0)."""

    async def load(self) -> bool:
        torch.set_num_threads(1)
        uri = self.settings.parameters.uri
        self.predictor = Predictor.from_checkpoint(uri)
        self.kin: dict[str, np.ndarray] = {}
        self.memory: dict[str, np.ndarray] = {}
        self.last_t: dict[str, float] = {}
        self.empty_kin = KinState.empty(1).to_array()[0]
        self.empty_memory = self.predictor.initial_memory(1)[0]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs: dict[str, Any] = {i.name: i for i in payload.inputs}
        ids = [str(a) for a in StringCodec.decode_input(inputs["agent_id"])]
        t = NumpyCodec.decode_input(inputs["t"]).astype(np.float64).reshape(-1)
        xy = np.stack(
            [
                NumpyCodec.decode_input(inputs["x"]).astype(np.float64).reshape(-1),
                NumpyCodec.decode_input(inputs["y"]).astype(np.float64).reshape(-1),
            ],
            axis=1,
        )
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
        out = NumpyCodec.encode_output("trajectory", r.trajectory.astype(np.float32))
        return InferenceResponse(model_name=self.name, outputs=[out])
