"""Triton Inference Server through PyTriton: ``python -m clients.peers.pytriton_peer --port P --checkpoint
gru.pt`` in PyTriton's venv.

KServe V2 REST, the MLServer peer's request (``agent_id`` BYTES [N], ``t``, ``x``, ``y`` FP64 [N]) and answer
(``trajectory`` FP32 [N, H, 2]), at ``/v2/models/gru-peer/infer``. The Python model runs in one PyTriton
process that holds the per-agent state; Triton itself (C++) does HTTP and the tensors.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from clients.peers.state import GRUState

MODEL = "gru-peer"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--checkpoint", required=True)
    args = ap.parse_args()
    state = GRUState(args.checkpoint)

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        out = []
        for r in requests:  # one request is one frame: its agents are the batch
            ids = [a.decode() if isinstance(a, bytes) else str(a) for a in r["agent_id"].reshape(-1)]
            xy = np.stack([r["x"].reshape(-1), r["y"].reshape(-1)], axis=1).astype(np.float64)
            out.append({"trajectory": state.step(ids, r["t"].reshape(-1).astype(np.float64), xy)})
        return out

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=infer,
            inputs=[
                Tensor(name="agent_id", dtype=bytes, shape=(-1,)),
                Tensor(name="t", dtype=np.float64, shape=(-1,)),
                Tensor(name="x", dtype=np.float64, shape=(-1,)),
                Tensor(name="y", dtype=np.float64, shape=(-1,)),
            ],
            outputs=[Tensor(name="trajectory", dtype=np.float32, shape=(-1, -1, 2))],
            config=ModelConfig(batching=False),  # no batching across requests: states are per agent
        )
        triton.serve()


if __name__ == "__main__":
    main()
