"""The load generator's wire sender against a real socket server: lengths, chunks, close, keep-alive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clients.bench import Fleet, Wire, closed_loop_on_wire


async def _serve(answers: list[bytes], seen: list[bytes]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(ln for ln in head.split(b"\r\n") if ln.startswith(b"content-length")).split(b":")[1]
            )
            seen.append(head + await reader.readexactly(length))
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if b"connection: close" in answer:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_lengths_chunks_and_connection_close() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b'HTTP/1.1 422 Unprocessable\r\nconnection: close\r\ncontent-length: 25\r\n\r\n{"error":{"code":"nope"}}',
    ]
    seen: list[bytes] = []

    async def main() -> list[tuple[int, bytes]]:
        server, port = await _serve(answers, seen)
        async with server:
            wire = Wire(f"http://127.0.0.1:{port}/base", "k1", timeout_s=5.0)
            out = [await wire.post("/v1/x", b'{"a":1}') for _ in range(3)]
            assert not wire._idle  # closed by the server's "connection: close"
            await wire.aclose()
            return out

    out = asyncio.run(main())
    assert out == [(200, b"hello"), (200, b"abcde"), (422, b'{"error":{"code":"nope"}}')]
    assert len(seen) == 3 and all(s.startswith(b"POST /base/v1/x HTTP/1.1\r\n") for s in seen)
    assert all(b"x-api-key: k1\r\n" in s and s.endswith(b'{"a":1}') for s in seen)


def test_answers_split_across_reads_and_one_delimited_by_close() -> None:
    big = bytes(range(256)) * 12_000  # 3 MB: many reads, and the buffer grows
    pieces = [
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big) + big[:1000],
        big[1000:2_000_000],
        big[2_000_000:] + b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nab",  # the next one
        b"cd\r\n1\r\ne\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
    ]
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer_pieces in (pieces[:3], pieces[3:4], pieces[4:]):
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(
                head + await reader.readexactly(int(head.split(b"content-length: ")[1].split(b"\r")[0]))
            )
            for piece in answer_pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
        writer.close()

    async def main() -> list[tuple[int, bytes]]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            wire = Wire(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", None, timeout_s=5.0)
            out = [await wire.post("/v1/x", b"{}") for _ in range(3)]
            assert not wire._idle
            return out

    assert asyncio.run(main()) == [(200, big), (200, b"abcde"), (200, b"until the end")]
    assert len(seen) == 3


def test_a_connection_closed_before_the_answer_is_an_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            wire = Wire(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", None, timeout_s=5.0)
            with pytest.raises(ConnectionError):
                await wire.post("/v1/x", b"{}")
            assert not wire._idle

    asyncio.run(main())


def test_only_plain_http() -> None:
    with pytest.raises(ValueError, match="plain http"):
        Wire("https://example.org", None, 1.0)


def test_closed_loop_on_wire_times_every_answer_and_counts_errors() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    bad = b'HTTP/1.1 500 Oops\r\ncontent-length: 25\r\n\r\n{"error":{"code":"boom"}}'
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # three warm-up frames answered, then every other answer an error, for as long as asked
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(
                next(ln for ln in head.split(b"\r\n") if ln.startswith(b"content-length")).split(b":")[1]
            )
            seen.append(head + await reader.readexactly(length))
            writer.write(ok if len(seen) <= 3 or len(seen) % 2 else bad)
            await writer.drain()
        writer.close()

    def body(fleet: Fleet, k: int) -> bytes:
        return f'{{"frame":{k},"n":{len(fleet.ids)}}}'.encode()

    async def main() -> dict[str, Any]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await closed_loop_on_wire(f"http://127.0.0.1:{port}", "/infer", 7, 0.3, body)

    out = asyncio.run(main())
    sent = len(seen) - 3
    assert out["ok"] + out["errors"] == sent > 2
    assert abs(out["ok"] - out["errors"]) <= 1  # every other answer was an error
    assert out["latency_ms"]["p50"] > 0 and out["requests_per_s"] > 0
    assert all(b"POST /infer HTTP/1.1" in s and b'"n":7}' in s for s in seen)
    assert b'{"frame":0,' in seen[0] and b'{"frame":0,' in seen[3]  # the timed loop starts its own fleet
