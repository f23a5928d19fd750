"""The hot-path HTTP/1.1 client against scripted loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.http1 import ConnectFailed, Pool
from serving.process import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def whole(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"content-length: " + str(len(body)).encode(), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def chunked(*parts: bytes) -> bytes:
    out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    for part in parts:
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


async def with_server(handler: Handler, test: Callable[[Pool, list], Awaitable[None]]) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def accept(reader, writer):
        connections.append(writer)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool("127.0.0.1", port, connect_timeout=1.0, read_timeout=0.3)
    try:
        async with server:
            await test(pool, connections)
    finally:
        pool.close()


async def serve_forever(reader, writer, answer: bytes = whole(b"ok")) -> None:
    while True:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()


async def ask(pool: Pool, body: bytes = b"{}") -> tuple[int, bytes]:
    response, connection = await pool.request("POST", "/v1/x", body, {"x-test": "1"})
    try:
        return response.status, await response.read()
    finally:
        pool.release(connection)


def test_a_kept_alive_connection_is_reused():
    async def test(pool, connections):
        assert await ask(pool) == (200, b"ok")
        assert await ask(pool) == (200, b"ok")
        assert len(connections) == 1

    asyncio.run(with_server(serve_forever, test))


def test_a_connection_the_server_closed_while_idle_is_replaced():
    async def once_then_close(reader, writer):
        await read_request(reader)
        writer.write(whole(b"ok"))
        await writer.drain()

    async def test(pool, connections):
        assert await ask(pool) == (200, b"ok")
        await asyncio.sleep(0.05)  # the server has closed it by now
        assert await ask(pool) == (200, b"ok")
        assert len(connections) == 2

    asyncio.run(with_server(once_then_close, test))


def test_connection_close_is_not_kept():
    async def test(pool, connections):
        await ask(pool)
        await ask(pool)
        assert len(connections) == 2

    async def closing(reader, writer):
        await serve_forever(reader, writer, whole(b"ok", b"connection: close"))

    asyncio.run(with_server(closing, test))


def test_chunked_body_arrives_in_parts_and_whole():
    async def slow_chunks(reader, writer):
        await read_request(reader)
        answer = chunked(b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n")
        for start in range(0, len(answer), 7):  # cut anywhere, chunk sizes included
            writer.write(answer[start : start + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        await reader.read()

    async def test(pool, connections):
        assert await ask(pool) == (200, b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n")

    asyncio.run(with_server(slow_chunks, test))


def test_silence_is_a_timeout_and_the_connection_is_not_reused():
    async def silent(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    async def test(pool, connections):
        with pytest.raises(TimeoutError):
            await pool.request("POST", "/v1/x", b"{}", {})

    asyncio.run(with_server(silent, test))


def test_a_body_cut_short_is_an_error():
    async def cut(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    async def test(pool, connections):
        response, connection = await pool.request("POST", "/v1/x", b"{}", {})
        with pytest.raises(ConnectionResetError):
            await response.read()
        pool.release(connection)
        assert not connection.reusable

    asyncio.run(with_server(cut, test))


def test_nothing_listening_is_a_connect_failure():
    async def test():
        pool = Pool("127.0.0.1", free_port(), connect_timeout=1.0, read_timeout=1.0)
        with pytest.raises(ConnectFailed):
            await pool.request("POST", "/", b"", {})

    asyncio.run(test())


def test_the_request_carries_host_headers_and_body():
    seen = []

    async def record(reader, writer):
        seen.append(await read_request(reader))
        writer.write(whole(b"ok"))
        await writer.drain()
        await reader.read()

    async def test(pool, connections):
        await ask(pool, b'{"a": 1}')
        head, _, body = seen[0].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1/x HTTP/1.1"
        assert b"x-test: 1" in lines
        assert any(line.startswith(b"host: 127.0.0.1:") for line in lines)
        assert body == b'{"a": 1}'

    asyncio.run(with_server(record, test))
