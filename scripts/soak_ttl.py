"""Soak benchmark: 100,000 agents churning through TTL eviction; prints the server's RSS over time.

Starts a real ``ipnet serve`` on a free loopback port (memory store, short TTL, no snapshot) unless ``--url``
points at a running one, then streams cohorts of new agents: each cohort is observed a few times, then
abandoned, so the TTL sweep must free it. Memory is flat when the RSS stops growing once the first cohorts
have expired, whatever the total number of agents.

    python scripts/soak_ttl.py [--agents 100000] [--cohort 2000] [--ttl 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from clients.processes import ServeProcess, wait_until

REPO = Path(__file__).resolve().parent.parent


def _gauges(client: httpx.Client) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples:
            if s.name == "process_resident_memory_bytes":
                out["rss_mb"] = s.value / 2**20
            elif s.name == "trajpred_tracked_agents":
                out[f"tracked_{s.labels['model']}"] = s.value
            elif s.name == "trajpred_state_evictions_total" and s.labels.get("reason") == "ttl":
                out["ttl_evictions"] = s.value
    return out


def main() -> int:
    """Run the soak and print one line per report interval; exit 0."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--agents", type=int, default=100_000, help="distinct agents in total")
    ap.add_argument("--cohort", type=int, default=2000, help="agents per cohort (one request each frame)")
    ap.add_argument("--frames", type=int, default=3, help="observations of each agent before it leaves")
    ap.add_argument("--ttl", type=float, default=2.0, help="TRAJPRED_STATE_TTL_S of the started server")
    ap.add_argument("--report-every", type=int, default=5, help="cohorts between report lines")
    args = ap.parse_args()

    server = None
    url = args.url
    if url is None:
        env = {
            "TRAJPRED_STATE_TTL_S": str(args.ttl),
            "TRAJPRED_EVICTION_INTERVAL_S": str(max(args.ttl / 4, 0.1)),
        }
        server = ServeProcess(env, Path(tempfile.gettempdir()) / "soak_ttl-serve.log")
        url = server.url
    client = httpx.Client(base_url=url, timeout=120)
    try:
        try:
            wait_until(lambda: client.get("/readyz").status_code == 200, f"{url}", 120)
        except (TimeoutError, RuntimeError) as e:
            print(f"server not ready: {e}", file=sys.stderr)
            return 1
        start = time.monotonic()
        g = _gauges(client)
        print(f"{'t_s':>7} {'agents':>8} {'tracked':>8} {'ttl_evicted*':>12} {'rss_mb':>8}")
        print(f"{0.0:7.1f} {0:8d} {g.get('tracked_ipnet', 0):8.0f} {0:12.0f} {g['rss_mb']:8.1f}")
        print("(* ttl_evicted counts states: one per agent and model, IPNet and the baseline)")
        cohorts = (args.agents + args.cohort - 1) // args.cohort
        rss = []
        for c in range(cohorts):
            ids = [f"soak-{c}-{k}" for k in range(min(args.cohort, args.agents - c * args.cohort))]
            for _ in range(args.frames):
                t = time.time()  # now: in order per agent, never in the future
                body = {
                    "observations": [
                        {"agent_id": a, "timestamp": t, "x": 0.5 * k, "y": 0.1 * t % 50.0}
                        for k, a in enumerate(ids)
                    ]
                }
                r = client.post("/v1/ab/predict", json=body)
                if r.status_code != 200:
                    print(f"cohort {c}: {r.status_code} {r.text[:200]}", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            if (c + 1) % args.report_every == 0 or c + 1 == cohorts:
                g = _gauges(client)
                rss.append(g["rss_mb"])
                print(
                    f"{time.monotonic() - start:7.1f} {min((c + 1) * args.cohort, args.agents):8d} "
                    f"{g.get('tracked_ipnet', 0):8.0f} {g.get('ttl_evictions', 0):12.0f} {g['rss_mb']:8.1f}",
                    flush=True,
                )
        time.sleep(args.ttl * 2)  # let the last cohorts expire
        g = _gauges(client)
        print(f"after the last TTL: tracked {g.get('tracked_ipnet', 0):.0f}, rss {g['rss_mb']:.1f} MB")
        half = len(rss) // 2
        if half:
            print(
                f"RSS: max {max(rss[:half]):.1f} MB over the first half of the agents, "
                f"max {max(rss[half:]):.1f} MB over the second half"
            )
        return 0
    finally:
        client.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
