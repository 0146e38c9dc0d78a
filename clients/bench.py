"""``ipnet bench``: a load generator for the prediction service.

Open loop (``rate_hz`` set): one frame of N agents is sent every 1/F s whatever the answers do, and latency
is measured from the frame's scheduled time, so a slow server shows as latency instead of as a lower send
rate (no coordinated omission). Closed loop (``rate_hz=None``): ``concurrency`` workers, each with its own
N agents, send their next frame as soon as the previous answer arrives.

Synthetic agents drive circles of 20-60 m radius at 2-15 m/s; observation timestamps advance by 1/F s (0.1 s
in closed loop) per frame from a base one day in the past, so they are valid (not in the future) however
fast frames go. Retries are off: every failure is counted as an error.

The server's resident memory and tracked agents come from its ``/metrics``
(``process_resident_memory_bytes``, ``trajpred_tracked_agents``), read before and after the run.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import msgpack
import numpy as np
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedOK, WebSocketException

from clients.client import ApiError, AsyncTrajpredClient, RetryPolicy, parse_metrics
from clients.stream import stream_url

__all__ = [
    "ROUTES",
    "BenchConfig",
    "BenchResult",
    "Fleet",
    "Wire",
    "closed_loop_on_wire",
    "run_bench",
    "server_memory",
    "server_timing",
]

ROUTES = {
    "predict": "/v1/predict",
    "baseline": "/v1/baseline/predict",
    "ab": "/v1/ab/predict",
    "ping": "/v1/ping",
}


@dataclass
class BenchConfig:
    """One load run. ``rate_hz=None`` is closed loop at maximum rate."""

    server: str = "http://127.0.0.1:8000"
    route: str = "predict"
    agents: int = 100
    rate_hz: float | None = 10.0
    concurrency: int = 1
    duration_s: float = 10.0
    api_key: str | None = None
    timeout_s: float = 10.0
    seed: int = 0
    layout: str = "points"  # predict routes: "columns" asks for the compact trajectory layout
    encoding: str = "json"  # "msgpack": requests and answers in MessagePack
    stream: bool = False  # frames over WebSocket streams (/v1/stream), one per sender, not HTTP requests
    wait_s: float = 30.0  # how long to wait for the server's /readyz before the run
    modes: int | None = None  # predict routes: also the K most probable futures per agent (?modes=K)


@dataclass
class BenchResult:
    """What a run measured (latencies in milliseconds)."""

    route: str
    mode: str
    agents_per_frame: int
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    errors: int
    error_codes: dict[str, int]
    requests_per_s: float
    agent_updates_per_s: float
    latency_ms: dict[str, float]
    server_rss_bytes: float | None
    tracked_agents: dict[str, float]
    rss_delta_bytes: float | None
    bytes_per_tracked_agent: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A human summary, one quantity per line."""
        lat = self.latency_ms
        lines = [
            f"route {self.route} ({ROUTES.get(self.route, self.route)}), {self.mode}, "
            f"{self.agents_per_frame} agents/frame, concurrency {self.concurrency}, {self.duration_s:.1f} s"
            + (f", {self.extra['modes']} modes" if self.extra.get("modes") else ""),
            f"requests: {self.requests} ({self.ok} ok, {self.errors} errors"
            + (f": {self.error_codes}" if self.error_codes else "")
            + ")",
            f"throughput: {self.requests_per_s:.1f} requests/s, {self.agent_updates_per_s:.0f} agent-updates/s",
            "latency: " + ", ".join(f"{k} {v:.2f} ms" for k, v in lat.items()),
        ]
        cpu = self.extra.get("client_cpu_ms_per_request")
        if cpu is not None:
            lines.append(f"client CPU (this process): {cpu:.2f} ms per request")
        srv = self.extra.get("server") or {}
        if srv:
            lines.append(
                f"server-side (its own histogram): mean {srv['mean_ms']:.2f} ms, "
                f"{srv['share_le_5ms']:.1%} within 5 ms, {srv['share_le_10ms']:.1%} within 10 ms"
            )
        if self.server_rss_bytes is not None:
            per = "-" if self.bytes_per_tracked_agent is None else f"{self.bytes_per_tracked_agent:.0f}"
            tracked = ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.tracked_agents.items())) or "-"
            lines.append(
                f"server RSS: {self.server_rss_bytes / 2**20:.1f} MiB; tracked agents: {tracked}; "
                f"bytes per tracked agent (RSS growth / new agents): {per}"
            )
        return "\n".join(lines)


class Fleet:
    """N synthetic agents on circles; ``frame(k)`` is the JSON body of their k-th observation."""

    def __init__(self, n: int, prefix: str, dt_s: float, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.ids = [f"{prefix}-{i}" for i in range(n)]
        self.center = rng.uniform(-2000.0, 2000.0, (n, 2))
        self.radius = rng.uniform(20.0, 60.0, n)
        self.omega = rng.uniform(2.0, 15.0, n) / self.radius * rng.choice([-1.0, 1.0], n)
        self.phase = rng.uniform(0.0, 2 * math.pi, n)
        self.dt_s = dt_s
        # one day in the past: valid timestamps for 86,400 / dt_s frames, never "in the future"
        self.base_t = math.floor(time.time()) - 86_400.0

    def positions(self, k: int) -> tuple[float, list[float], list[float]]:
        """The k-th observation of every agent: (timestamp, x, y), millimetre-rounded metres."""
        t = self.base_t + k * self.dt_s
        ang = self.phase + self.omega * (k * self.dt_s)
        x = (self.center[:, 0] + self.radius * np.cos(ang)).round(3).tolist()
        y = (self.center[:, 1] + self.radius * np.sin(ang)).round(3).tolist()
        return t, x, y

    def frame(self, k: int, encoding: str = "json") -> bytes:
        t, x, y = self.positions(k)
        obs = [
            {"agent_id": a, "timestamp": t, "x": xi, "y": yi, "agent_type": "vehicle"}
            for a, xi, yi in zip(self.ids, x, y, strict=True)
        ]
        if encoding == "msgpack":
            return bytes(msgpack.packb({"observations": obs}, use_bin_type=True))
        # orjson: the same bytes as json.dumps in a tenth of its time, which a closed loop's sender spends
        # between two requests on the cores it shares with the server
        return orjson.dumps({"observations": obs})


def server_timing(metrics: dict[str, float], path: str) -> dict[str, float]:
    """The server's own request count, total seconds and counts within 5 and 10 ms for ``path`` (from its
    ``trajpred_request_duration_seconds`` histogram; empty if the server has not served the route)."""
    name = "trajpred_request_duration_seconds"
    route = f'route="{path}"'
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not key.startswith(name) or route not in key:
            continue
        if key.startswith(name + "_count"):
            out["count"] = value
        elif key.startswith(name + "_sum"):
            out["sum_s"] = value
        elif 'le="0.005"' in key:
            out["le_5ms"] = value
        elif 'le="0.01"' in key:
            out["le_10ms"] = value
    return out


async def server_memory(client: AsyncTrajpredClient) -> tuple[float | None, dict[str, float]]:
    """(resident bytes, tracked agents per model) from the server's ``/metrics``."""
    m = parse_metrics(await client.metrics())
    rss = m.get("process_resident_memory_bytes")
    tracked = {
        k.split('model="', 1)[1].split('"', 1)[0]: v
        for k, v in m.items()
        if k.startswith("trajpred_tracked_agents{")
    }
    return rss, tracked


def _percentiles(lat_s: list[float]) -> dict[str, float]:
    if not lat_s:
        return {}
    a = np.asarray(lat_s) * 1000.0
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ok = 0
        self.errors: dict[str, int] = {}

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class _Answers(asyncio.BufferedProtocol):
    """The reading side of one keep-alive HTTP/1.1 connection: the answers land in one reused buffer and are
    parsed there (by length, chunked, or up to the connection's close).

    Not asyncio's ``StreamReader``: that appends every chunk of 256 KB to a growing buffer, copies the body
    out, and pauses reading above 128 KB; reading a 1.8 MB answer (100 agents with six futures) cost the
    client about 1.3 ms against 0.9 ms this way (0.5 ms with a blocking socket, which the open loop cannot
    use), a cost the benchmark would have charged to the server.
    """

    def __init__(self) -> None:
        self.buf = bytearray(1 << 16)
        self.n = 0  # bytes of self.buf received and not yet consumed
        self.head: tuple[int, dict[str, str], int] | None = None  # status, headers, where the body starts
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.eof = False

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buf) - self.n < 1 << 16:
            self.buf.extend(bytes(len(self.buf)))
        return memoryview(self.buf)[self.n :]

    def buffer_updated(self, nbytes: int) -> None:
        self.n += nbytes
        self._deliver()

    def eof_received(self) -> bool:
        self.eof = True
        self._deliver()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._deliver(exc)

    def answer(self) -> asyncio.Future[tuple[int, bytes, bool]]:
        """The next answer: (status, body, whether the connection stays open)."""
        self.waiter = asyncio.get_running_loop().create_future()
        self._deliver()
        return self.waiter

    def _deliver(self, exc: Exception | None = None) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            got = self._parse()
        except ValueError as e:
            waiter.set_exception(e)
            return
        if got is not None:
            waiter.set_result(got)
        elif self.eof:
            waiter.set_exception(
                exc or ConnectionResetError("the server closed the connection before answering")
            )

    def _parse(self) -> tuple[int, bytes, bool] | None:
        if self.head is None:
            at = self.buf.find(b"\r\n\r\n", 0, self.n)
            if at < 0:
                return None
            lines = self.buf[:at].decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip().lower()
                for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            self.head = (int(lines[0].split(" ", 2)[1]), headers, at + 4)
        status, headers, start = self.head
        keep = headers.get("connection") != "close"
        if "content-length" in headers:
            end = start + int(headers["content-length"])
            if self.n < end:
                return None
            body = bytes(memoryview(self.buf)[start:end])  # one copy (a bytearray slice is one more)
        elif headers.get("transfer-encoding") == "chunked":
            parts, at = [], start
            while True:  # every chunk received so far, from the body's start (chunked answers are small here)
                line_end = self.buf.find(b"\r\n", at, self.n)
                if line_end < 0:
                    return None
                size = int(self.buf[at:line_end].split(b";")[0], 16)
                at = line_end + 2
                if at + size + 2 > self.n:
                    return None
                if size == 0:  # no trailers are sent: the last chunk's line ends the answer
                    break
                parts.append(bytes(memoryview(self.buf)[at : at + size]))
                at += size + 2
            body, end = b"".join(parts), at + 2
        else:
            if not self.eof:
                return None
            body, end, keep = bytes(memoryview(self.buf)[start : self.n]), self.n, False
        rest = self.n - end
        self.buf[:rest] = self.buf[end : self.n]
        self.n, self.head, self.waiter = rest, None, None
        return status, body, keep


class Wire:
    """A minimal HTTP/1.1 keep-alive sender: the load generator's hot path for ``http://`` servers.

    The client and the server share this machine's cores, so the sender's own cost is measured along with
    the server's, and httpx parses HTTP in Python; this sender writes pre-built request bytes and reads the
    answer by its length (:class:`_Answers`), and parses the body only for an error's code. Everything else
    (readiness, metrics) stays on the client.
    """

    def __init__(self, url: str, api_key: str | None, timeout_s: float, encoding: str = "json") -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or u.hostname is None:
            raise ValueError(f"the wire sender speaks plain http only, not {url!r}")
        self.host, self.port, self.prefix = u.hostname, u.port or 80, u.path.rstrip("/")
        key = f"x-api-key: {api_key}\r\n" if api_key else ""
        media = "application/msgpack" if encoding == "msgpack" else "application/json"
        accept = f"accept: {media}\r\n" if encoding == "msgpack" else ""
        self.headers = f"host: {u.netloc}\r\ncontent-type: {media}\r\n{accept}{key}"
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.Transport, _Answers]] = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """``POST`` on an idle keep-alive connection (or a new one): (status, body)."""
        if self._idle:
            conn = self._idle.pop()
        else:
            conn = await asyncio.get_running_loop().create_connection(_Answers, self.host, self.port)
        transport, answers = conn
        head = f"POST {self.prefix}{path} HTTP/1.1\r\n{self.headers}content-length: {len(body)}\r\n\r\n"
        try:
            transport.write(head.encode("latin-1") + body)
            async with asyncio.timeout(self.timeout_s):  # not wait_for: no task per request
                status, data, keep = await answers.answer()
        except BaseException:
            transport.close()
            raise
        if keep:
            self._idle.append(conn)
        else:
            transport.close()
        return status, data

    async def aclose(self) -> None:
        for transport, _ in self._idle:
            transport.close()
        self._idle.clear()


def _error_code(status: int, body: bytes) -> str:
    try:
        data = msgpack.unpackb(body, raw=False) if body[:1] != b"{" else json.loads(body)
        return str(data["error"]["code"])
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        return f"http_{status}"


class StreamWire:
    """One ``/v1/stream`` connection as a sender: ``post`` sends a frame and waits for its reply. Replies
    come in order, so concurrent posts (the open loop) pipeline on the one stream; a reader task hands each
    reply to the oldest waiting post. An error reply is told from an answer by its first key."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        timeout_s: float,
        route: str,
        layout: str,
        encoding: str,
        modes: int | None = None,
    ) -> None:
        self.url = stream_url(url, route, layout, modes)  # type: ignore[arg-type]  # checked by run_bench_async
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.timeout_s = timeout_s
        self.binary = encoding == "msgpack"
        self.ws: ClientConnection | None = None
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> StreamWire:
        self.ws = await ws_connect(self.url, additional_headers=self.headers, max_size=None)
        self._reader = asyncio.create_task(self._read(self.ws))
        return self

    async def _read(self, ws: ClientConnection) -> None:
        try:
            while True:
                # a text reply as its UTF-8 bytes: a client parses those, it need not decode them first
                reply = await ws.recv(decode=False)
                assert isinstance(reply, bytes)
                self._waiting.popleft().set_result(reply)
        except ConnectionClosedOK:
            pass
        except WebSocketException as e:
            while self._waiting:
                self._waiting.popleft().set_exception(OSError(f"stream closed: {e}"))
        while self._waiting:  # closed by the server
            self._waiting.popleft().set_exception(OSError("stream closed"))

    async def post(self, path: str, body: bytes) -> None:
        """Send one frame (``path`` is the stream's route, fixed at :meth:`open`) and wait for its reply."""
        assert self.ws is not None, "open() the stream first"
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        await self.ws.send(body, text=not self.binary)
        async with asyncio.timeout(self.timeout_s):
            reply = await done
        if b"error" in reply[:9]:  # {"error": ...} or a MessagePack map whose first key is "error"
            data = msgpack.unpackb(reply, raw=False) if self.binary else json.loads(reply)
            raise _Rejected(str(data["error"]["code"]))

    async def aclose(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader


Sender = Callable[[str, bytes], Awaitable[None]]
FrameBody = Callable[[Fleet, int], bytes]  # the k-th request body of a fleet


def _sender(client: AsyncTrajpredClient, wire: Wire | None) -> Sender:
    """One request, raising :class:`ApiError` on an error status: on the wire if there is one."""
    if wire is None:

        async def via_client(path: str, body: bytes) -> None:
            await client.request("POST", path, body=body)

        return via_client

    return _wire_sender(wire)


def _wire_sender(wire: Wire) -> Sender:
    async def via_wire(path: str, body: bytes) -> None:
        status, data = await wire.post(path, body)
        if status >= 400:
            raise _Rejected(_error_code(status, data))

    return via_wire


class _Rejected(Exception):
    """An error status seen by the wire sender; ``code`` as :attr:`ApiError.code` would give it."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def _send(send: Sender, path: str, body: bytes, t0: float, tally: _Tally) -> None:
    try:
        await send(path, body)
    except ApiError as e:
        tally.error(e.code or f"http_{e.status}")
        return
    except _Rejected as e:
        tally.error(e.code)
        return
    except (
        httpx.HTTPError,
        OSError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        TimeoutError,
    ) as e:
        tally.error(type(e).__name__)
        return
    tally.latencies.append(time.perf_counter() - t0)
    tally.ok += 1


_SPIN_S = 0.002


async def _open_loop(send: Sender, cfg: BenchConfig, path: str, tally: _Tally) -> float:
    assert cfg.rate_hz is not None
    period = 1.0 / cfg.rate_hz
    fleet = Fleet(cfg.agents, f"bench-{uuid.uuid4().hex[:8]}", period, cfg.seed)
    n_frames = max(1, int(cfg.duration_s * cfg.rate_hz))
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for k in range(n_frames):
        scheduled = start + k * period
        body = fleet.frame(k, cfg.encoding)  # ready before its time, as a perception stack's frame would be
        delay = scheduled - time.perf_counter()
        if delay > _SPIN_S:
            await asyncio.sleep(delay - _SPIN_S)
        # the last ~2 ms yielding in a loop: the event loop's timers wake up to a millisecond late, which
        # would count as the server's latency (measured from the scheduled time)
        while time.perf_counter() < scheduled:
            await asyncio.sleep(0)
        tasks.append(asyncio.create_task(_send(send, path, body, scheduled, tally)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


async def _closed_loop(
    send: Sender | list[Sender],
    cfg: BenchConfig,
    path: str,
    tally: _Tally,
    body_of: FrameBody = Fleet.frame,
) -> float:
    """``send``: one sender for every worker, or one per worker (streams)."""
    run = uuid.uuid4().hex[:8]
    fleets = [Fleet(cfg.agents, f"bench-{run}-{w}", 0.1, cfg.seed + w) for w in range(cfg.concurrency)]
    sends = send if isinstance(send, list) else [send] * cfg.concurrency
    start = time.perf_counter()
    stop_at = start + cfg.duration_s

    async def worker(fleet: Fleet, send: Sender) -> None:
        k = 0
        while time.perf_counter() < stop_at:
            body = body_of(fleet, k)
            await _send(send, path, body, time.perf_counter(), tally)
            k += 1

    await asyncio.gather(*(worker(f, s) for f, s in zip(fleets, sends, strict=True)))
    return time.perf_counter() - start


async def run_bench_async(cfg: BenchConfig, http: httpx.AsyncClient | None = None) -> BenchResult:
    """Run one load as configured; see the module docstring for the two modes."""
    if cfg.route not in ROUTES:
        raise ValueError(f"unknown route {cfg.route!r}; expected one of {sorted(ROUTES)}")
    if cfg.agents < 1 or cfg.concurrency < 1 or cfg.duration_s <= 0:
        raise ValueError("agents and concurrency must be >= 1 and duration_s > 0")
    if cfg.rate_hz is not None and cfg.rate_hz <= 0:
        raise ValueError("rate_hz must be > 0 (or None for closed loop)")
    if cfg.layout not in ("points", "columns"):
        raise ValueError(f"unknown layout {cfg.layout!r}; expected 'points' or 'columns'")
    if cfg.encoding not in ("json", "msgpack"):
        raise ValueError(f"unknown encoding {cfg.encoding!r}; expected 'json' or 'msgpack'")
    if cfg.stream and cfg.route == "ping":
        raise ValueError("the stream serves the predict routes, not ping")
    if (cfg.stream or cfg.encoding == "msgpack") and (
        http is not None or not cfg.server.startswith("http://")
    ):
        raise ValueError("--stream and --encoding msgpack need a plain http:// server (no injected client)")
    if cfg.modes is not None and not 1 <= cfg.modes <= 6:
        raise ValueError(f"modes must be within 1..6, got {cfg.modes}")
    path = ROUTES[cfg.route]
    query = []
    if cfg.layout != "points" and cfg.route != "ping":
        query.append(f"layout={cfg.layout}")
    if cfg.modes is not None and cfg.route != "ping":
        query.append(f"modes={cfg.modes}")
    if query:
        path += "?" + "&".join(query)
    timed_path = "/v1/stream" if cfg.stream else path.split("?")[0]
    async with AsyncTrajpredClient(
        cfg.server,
        api_key=cfg.api_key,
        timeout_s=cfg.timeout_s,
        retry=RetryPolicy(retries=0),
        http=http,
        max_connections=max(cfg.concurrency, 8) * 2,
    ) as client:
        await client.wait_ready(cfg.wait_s)
        rss0, tracked0 = await server_memory(client)
        timing0 = server_timing(parse_metrics(await client.metrics()), timed_path)
        tally = _Tally()
        # the wire sender for a real http server; an injected client (tests, in-process) keeps httpx
        wire = (
            Wire(cfg.server, cfg.api_key, cfg.timeout_s, cfg.encoding)
            if http is None and cfg.server.startswith("http://") and not cfg.stream
            else None
        )
        streams: list[StreamWire] = []
        if (
            cfg.stream
        ):  # one stream per sender: the open loop pipelines on one, each closed-loop worker owns one
            n = 1 if cfg.rate_hz is not None else cfg.concurrency
            for _ in range(n):
                stream = StreamWire(
                    cfg.server, cfg.api_key, cfg.timeout_s, cfg.route, cfg.layout, cfg.encoding, cfg.modes
                )
                streams.append(await stream.open())
        send: Sender | list[Sender] = [w.post for w in streams] if streams else _sender(client, wire)
        # this process's CPU over the load: the client's own cost (encoding frames, the transport, reading
        # answers), beside the server's (``extra["server"]``); the server is another process
        cpu0 = time.process_time()
        try:
            if cfg.rate_hz is not None:
                elapsed = await _open_loop(send[0] if isinstance(send, list) else send, cfg, path, tally)
                mode = f"open loop {cfg.rate_hz:g} Hz"
            else:
                elapsed = await _closed_loop(
                    send, cfg, path, tally, lambda fleet, k: fleet.frame(k, cfg.encoding)
                )
                mode = "closed loop"
        finally:
            if wire is not None:
                await wire.aclose()
            for stream in streams:
                await stream.aclose()
        client_cpu_s = time.process_time() - cpu0
        mode += (", stream" if cfg.stream else ", http") + f", {cfg.encoding}"
        rss1, tracked1 = await server_memory(client)
        timing1 = server_timing(parse_metrics(await client.metrics()), timed_path)
    n_req = tally.ok + sum(tally.errors.values())
    new_agents = max(tracked1.values(), default=0.0) - max(tracked0.values(), default=0.0)
    rss_delta = rss1 - rss0 if rss0 is not None and rss1 is not None else None
    per_agent = rss_delta / new_agents if rss_delta is not None and new_agents > 0 else None
    return BenchResult(
        route=cfg.route,
        mode=mode,
        agents_per_frame=cfg.agents,
        concurrency=cfg.concurrency,
        duration_s=elapsed,
        requests=n_req,
        ok=tally.ok,
        errors=n_req - tally.ok,
        error_codes=dict(tally.errors),
        requests_per_s=tally.ok / elapsed,
        agent_updates_per_s=tally.ok * cfg.agents / elapsed,
        latency_ms=_percentiles(tally.latencies),
        server_rss_bytes=rss1,
        tracked_agents=tracked1,
        rss_delta_bytes=rss_delta,
        bytes_per_tracked_agent=per_agent,
        extra={
            "server": _server_delta(timing0, timing1),
            "client_cpu_ms_per_request": client_cpu_s * 1e3 / max(1, n_req),
            **({"modes": cfg.modes} if cfg.modes else {}),
        },
    )


async def closed_loop_on_wire(
    url: str, path: str, agents: int, duration_s: float, body_of: FrameBody, warmup_frames: int = 3
) -> dict[str, Any]:
    """One sender at maximum rate on the raw sender, for a server that is not this service (the benchmark's
    peer): the same loop, sender and tally as :func:`run_bench_async`, with ``body_of(fleet, k)`` as frames.

    Returns requests/s, ok, errors and latency percentiles (ms); the first ``warmup_frames`` are not timed.
    """
    wire = Wire(url, None, 30.0)
    send = _wire_sender(wire)
    try:
        warm = Fleet(agents, f"warmup-{uuid.uuid4().hex[:8]}", 0.1)
        for k in range(warmup_frames):
            await send(path, body_of(warm, k))
        tally = _Tally()
        cfg = BenchConfig(server=url, agents=agents, rate_hz=None, duration_s=duration_s)
        elapsed = await _closed_loop(send, cfg, path, tally, body_of)
    finally:
        await wire.aclose()
    return {
        "requests_per_s": tally.ok / elapsed,
        "ok": tally.ok,
        "errors": sum(tally.errors.values()),
        "latency_ms": _percentiles(tally.latencies),
    }


def _server_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the server measured itself during the run: mean ms and the shares within 5 and 10 ms."""
    n = after.get("count", 0.0) - before.get("count", 0.0)
    if n <= 0:
        return {}
    return {
        "requests": n,
        "mean_ms": (after.get("sum_s", 0.0) - before.get("sum_s", 0.0)) / n * 1e3,
        "share_le_5ms": (after.get("le_5ms", 0.0) - before.get("le_5ms", 0.0)) / n,
        "share_le_10ms": (after.get("le_10ms", 0.0) - before.get("le_10ms", 0.0)) / n,
    }


def run_bench(cfg: BenchConfig) -> BenchResult:
    """Synchronous entry point of :func:`run_bench_async`."""
    return asyncio.run(run_bench_async(cfg))
