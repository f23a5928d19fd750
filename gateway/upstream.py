"""The transport edge: one pool of keep-alive connections per replica.

The hot path uses the lean HTTP/1.1 client in `gateway.http1` (aiohttp cost
more CPU per request than the rest of the gateway; httpx's pool collapses under
concurrency: see BENCHMARKS.md). Every transport failure is translated here,
once, into the gateway's `UpstreamError` hierarchy; callers never see the
client's own errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.errors import BadUpstream, UpstreamDown, UpstreamError, UpstreamTimeout
from gateway.http1 import ConnectFailed, Connection, Pool, ProtocolError, Response

ERROR_BODY_LIMIT = 2048


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 3.0
    read: float = 60.0  # to the first byte, and between two reads of a stream


class Reply:
    """A response whose head has arrived; read its body through `chunks()` or `read()`,
    which translate transport failures into `UpstreamError`s, then `release()` it."""

    def __init__(self, name: str, response: Response, pool: Pool, connection: Connection) -> None:
        self._name = name
        self._response = response
        self._pool = pool
        self._connection: Connection | None = connection
        self.status = response.status
        self.headers = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        while True:
            try:
                chunk = await self._response.next_chunk()
            except TRANSPORT_ERRORS as exc:
                raise upstream_error(self._name, exc) from exc
            if not chunk:
                return
            yield chunk

    async def read(self, limit: int | None = None) -> bytes:
        async with translate_errors(self._name):
            return await self._response.read(limit)

    def release(self) -> None:
        """Read to the end, the connection goes back to the pool; otherwise it is
        dropped, which is how vLLM learns the client left. Idempotent."""
        if self._connection is not None:
            self._pool.release(self._connection)
            self._connection = None


class Endpoint:
    """One OpenAI-compatible server (a vLLM replica) reached at `base_url` (plain HTTP).

    `name` is the backend (pool) it belongs to: errors name the backend, never
    the replica's address, which clients have no business knowing.
    """

    def __init__(
        self, name: str, base_url: str, timeouts: Timeouts, api_key: str | None = None
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"backend {name!r}: only http://host:port URLs are supported")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._prefix = url.path.rstrip("/")
        self._origin = (url.hostname, url.port or 80)
        self._timeouts = timeouts
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._pool: Pool | None = None

    def __repr__(self) -> str:  # the API key stays out of reprs and logs
        return f"Endpoint({self.name!r}, {self.base_url!r})"

    def start(self) -> None:
        host, port = self._origin
        self._pool = Pool(
            host, port, connect_timeout=self._timeouts.connect, read_timeout=self._timeouts.read
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _started(self) -> Pool:
        if self._pool is None:
            raise RuntimeError(f"{self!r} is not started")
        return self._pool

    async def send(self, path: str, body: bytes) -> Reply:
        """POST and return the reply once its status says it can be relayed.

        Raises `UpstreamError` for connect failures, timeouts, 5xx and 404 (the
        server does not serve that model): all failures of the server, not of
        the client. Other 4xx are returned, to be passed through as they are.
        The caller must `release()` the reply.
        """
        pool = self._started()
        async with translate_errors(self.name):
            response, connection = await pool.request(
                "POST", self._prefix + path, body, self._headers
            )
        reply = Reply(self.name, response, pool, connection)
        if response.status >= 500 or response.status == 404:
            try:
                detail = (await reply.read(ERROR_BODY_LIMIT)).decode(errors="replace")
            finally:
                reply.release()
            raise BadUpstream(
                f"backend {self.name!r} answered {response.status}: {detail}",
                upstream_status=response.status,
            )
        return reply

    async def get(self, path: str, limit: int) -> tuple[int, bytes]:
        """Status and body (its first `limit` bytes) of a GET, for the background probes."""
        pool = self._started()
        async with translate_errors(self.name):
            response, connection = await pool.request(
                "GET", self._prefix + path, b"", self._headers
            )
            try:
                body = await response.read(limit)
            finally:
                pool.release(connection)
            return response.status, body


TRANSPORT_ERRORS = (OSError, ProtocolError)  # TimeoutError and ConnectFailed are OSErrors


def upstream_error(backend: str, exc: BaseException) -> UpstreamError:
    if isinstance(exc, ConnectFailed):
        return UpstreamDown(f"backend {backend!r} cannot be reached")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"backend {backend!r} did not answer in time")
    return BadUpstream(f"backend {backend!r} failed: {type(exc).__name__}")


@asynccontextmanager
async def translate_errors(backend: str) -> AsyncIterator[None]:
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise upstream_error(backend, exc) from exc
