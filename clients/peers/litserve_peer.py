"""LitServe peer: ``python -m clients.peers.litserve_peer --port P --checkpoint gru.pt`` in LitServe's venv.

``POST /predict`` with the service's frame body (``{"observations": [...]}``) answers
``{"agent_id": [...], "trajectory": [[[x, y], ...], ...]}`` (orjson). One inference worker
(``workers_per_device=1``, ZeroMQ queue): the per-agent state lives in it; no batching across requests (a frame already is
a batch, and batching frames of the same agents would reorder their states).
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls
import orjson
from fastapi import Response

from clients.peers.state import GRUState, frame_arrays


class GRUPeerAPI(ls.LitAPI):  # type: ignore[misc]  # LitServe is typed as Any here (its own virtualenv)
    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        self.checkpoint = checkpoint

    def setup(self, device: Any) -> None:
        self.state = GRUState(self.checkpoint)

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe passes the JSON body
        return frame_arrays(request["observations"])

    def predict(self, frame: Any) -> Any:
        ids, t, xy = frame
        return ids, self.state.step(ids, t, xy)

    def encode_response(self, output: Any) -> Any:
        ids, trajectory = output
        return Response(
            orjson.dumps({"agent_id": ids, "trajectory": trajectory}, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--checkpoint", required=True)
    args = ap.parse_args()
    # fast_queue: ZeroMQ between the HTTP server and the inference worker, LitServe's faster transport
    server = ls.LitServer(
        GRUPeerAPI(args.checkpoint), accelerator="cpu", devices=1, workers_per_device=1, fast_queue=True
    )
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
