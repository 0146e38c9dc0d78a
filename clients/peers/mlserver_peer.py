"""Seldon MLServer peer: a custom runtime around :class:`clients.peers.state.GRUState`.

Runs inside MLServer's own virtualenv (``mlserver`` is not a project dependency): ``clients.benchmarks``
writes the model settings and starts ``mlserver start`` with this runtime. V2 REST request: inputs
``agent_id`` (BYTES, [N]), ``t``, ``x``, ``y`` (FP64, [N]); output ``trajectory`` (FP32, [N, H, 2]).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from clients.peers.state import GRUState


class GRUPeer(MLModel):  # type: ignore[misc]  # MLServer is typed as Any here (its own virtualenv)
    """One process (``parallel_workers`` 0): the per-agent state lives in this model object."""

    async def load(self) -> bool:
        self.state = GRUState(str(self.settings.parameters.uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs: dict[str, Any] = {i.name: i for i in payload.inputs}
        ids = [str(a) for a in StringCodec.decode_input(inputs["agent_id"])]
        t = NumpyCodec.decode_input(inputs["t"]).astype(np.float64).reshape(-1)
        x = NumpyCodec.decode_input(inputs["x"]).astype(np.float64).reshape(-1)
        y = NumpyCodec.decode_input(inputs["y"]).astype(np.float64).reshape(-1)
        trajectory = self.state.step(ids, t, np.stack([x, y], axis=1))
        out = NumpyCodec.encode_output("trajectory", trajectory)
        return InferenceResponse(model_name=self.name, outputs=[out])
