"""Ray Serve peer: ``python -m clients.peers.ray_peer --port P --checkpoint gru.pt`` in Ray's venv.

``POST /predict`` with the service's frame body answers ``{"agent_id": [...], "trajectory": [...]}``
(orjson), from one deployment replica that holds the per-agent state (``num_replicas=1``: replicas would
each hold a part). Ray's HTTP proxy forwards each request to the replica actor, as Ray Serve always does.
"""

from __future__ import annotations

import argparse
import time

import orjson
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from clients.peers.state import GRUState, frame_arrays


@serve.deployment(num_replicas=1, max_ongoing_requests=8)
class GRUPeer:
    def __init__(self, checkpoint: str) -> None:
        self.state = GRUState(checkpoint)

    async def __call__(self, request: Request) -> Response:
        ids, t, xy = frame_arrays(orjson.loads(await request.body())["observations"])
        trajectory = self.state.step(ids, t, xy)
        body = orjson.dumps({"agent_id": ids, "trajectory": trajectory}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--checkpoint", required=True)
    args = ap.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(GRUPeer.bind(args.checkpoint), route_prefix="/predict")  # type: ignore[attr-defined]
    print("ready", flush=True)
    while True:  # serve.run returns once deployed; the driver keeps the cluster alive
        time.sleep(3600)


if __name__ == "__main__":
    main()
