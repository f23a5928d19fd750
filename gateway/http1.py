"""A lean HTTP/1.1 client for the hot path: pooled keep-alive connections to one origin.

It speaks the small subset an OpenAI-compatible server needs: a request with a
whole body, a response with a Content-Length or chunked body, read whole or as
it arrives. Parsing is httptools (the parser uvicorn serves with). It exists
because the general-purpose clients spend more CPU per request than the rest of
the gateway together (see BENCHMARKS.md); everything else, the control plane
included, uses httpx.

Errors are plain: `ConnectFailed` when no connection opens, other `OSError`s for lost connections,
`TimeoutError` for timeouts, `ProtocolError` for a response that does not parse.
The caller (`gateway.upstream`) translates them.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

HIGH_WATER = 256 * 1024  # buffered body bytes before reading pauses


class ProtocolError(Exception):
    """The server's response is not valid HTTP/1.1."""


class ConnectFailed(OSError):
    """No connection could be opened (refused, unreachable, or too slow)."""


class Response:
    """A response whose head has arrived; its body arrives through `chunks()` or `read()`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call (chunked encoding removed);
        b"" at the end of the body."""
        return await self._connection.next_body()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first `limit` bytes."""
        parts, size = [], 0
        while chunk := await self.next_chunk():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        body = b"".join(parts)
        return body if limit is None else body[:limit]


class Connection(asyncio.Protocol):
    """One TCP connection: feeds httptools and hands the parsed parts to its reader."""

    def __init__(self, read_timeout: float) -> None:
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._last_read = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        self._response: Response | None = None
        self.head_complete = False
        self.message_complete = False
        self._keep_alive = False
        self.lost = False
        self.bytes_received = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP response: {exc}"))
            self.abort()
            return
        if self._buffered > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.message_complete:
            self._fail(exc or ConnectionResetError("the server closed the connection"))
        self._wake()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            self._response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._response is not None:
            self._response.status = self._parser.get_status_code()
        # llhttp answers this reliably only here, not after the message ends.
        self._keep_alive = self._parser.should_keep_alive()
        self.head_complete = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        self.message_complete = True

    # used by Response and Pool

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        if self._timer is None:  # armed once, not per wait: streams wait per event
            self._timer = self._loop.call_at(self._last_read + self._read_timeout, self._check)
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _check(self) -> None:
        """The read timer: fail the waiter after `read_timeout` without a byte."""
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        due = self._last_read + self._read_timeout
        if self._loop.time() >= due:
            self._waiter.set_exception(TimeoutError("the server did not answer in time"))
        else:
            self._timer = self._loop.call_at(due, self._check)

    def send(self, request: bytes) -> Response:
        assert self._transport is not None
        self._last_read = self._loop.time()  # the read timeout counts from the request
        self._response = Response(self)
        self._transport.write(request)
        return self._response

    async def head(self) -> None:
        while not self.head_complete:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def next_body(self) -> bytes:
        while not self._body:
            if self.message_complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        # Everything buffered at once: a stream's events, chunk-encoded one by one,
        # go on to the client in one write per read, not one per event.
        chunk = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        if self._paused and self._buffered <= HIGH_WATER // 4 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return chunk

    @property
    def reusable(self) -> bool:
        return self.message_complete and not self.lost and self._error is None and self._keep_alive

    def reset(self) -> None:
        """Ready for the next request on the same connection."""
        self._parser = httptools.HttpResponseParser(self)
        self._response = None
        self._body.clear()
        self._buffered = 0
        self.head_complete = self.message_complete = self._keep_alive = False
        self.bytes_received = 0

    def abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()


class Pool:
    """Keep-alive connections to one origin (`host:port`), opened on demand."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int = 256,
    ) -> None:
        self.host, self.port = host, port
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle
        self._idle: deque[Connection] = deque()
        self._closed = False
        self._host_header = f"{host}:{port}".encode()

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self._read_timeout), self.host, self.port
                )
        except OSError as exc:  # TimeoutError included
            raise ConnectFailed(f"{self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        return connection

    def _request_bytes(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        head = [f"{method} {path} HTTP/1.1".encode(), b"host: " + self._host_header]
        head += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()]
        head.append(b"content-length: " + str(len(body)).encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[Response, Connection]:
        """Send a request; return once the response's head has arrived.

        A kept-alive connection the server closed while idle fails before any
        byte comes back: the request is then sent once more on a new connection.
        """
        raw = self._request_bytes(method, path, body, headers)
        while self._idle:
            connection = self._idle.pop()
            if connection.lost:
                continue
            response = connection.send(raw)
            try:
                await connection.head()
                return response, connection
            except TimeoutError:
                connection.abort()
                raise
            except OSError:
                connection.abort()
                if connection.bytes_received:
                    raise
            except BaseException:
                connection.abort()
                raise
        connection = await self._connect()
        response = connection.send(raw)
        try:
            await connection.head()
        except BaseException:
            connection.abort()
            raise
        return response, connection

    def release(self, connection: Connection) -> None:
        """Back to the pool when the response was read to its end; otherwise closed.

        Closing a connection mid-response is how the server learns the client
        left (vLLM then aborts the request and frees its slot).
        """
        if connection.reusable and len(self._idle) < self._max_idle and not self._closed:
            connection.reset()
            self._idle.append(connection)
        else:
            connection.abort()

    def close(self) -> None:
        """Close the idle connections now, and those in use as they are released."""
        self._closed = True
        while self._idle:
            self._idle.pop().abort()
