"""The transport edge: one pooled aiohttp session per backend.

aiohttp, not httpx, on the hot path: httpx's pool collapses under concurrency
(see BENCHMARKS.md). Every transport failure is translated here, once, into
the gateway's `UpstreamError` hierarchy; callers never see aiohttp errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from gateway.errors import BadUpstream, UpstreamDown, UpstreamError, UpstreamTimeout

ERROR_BODY_LIMIT = 2048


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 3.0
    read: float = 60.0  # to the first byte, and between two reads of a stream


class Backend:
    """An OpenAI-compatible server (vLLM) reached at `base_url`."""

    def __init__(
        self, name: str, base_url: str, timeouts: Timeouts, api_key: str | None = None
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # the API key stays out of reprs and logs
        return f"Backend({self.name!r}, {self.base_url!r})"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeouts.connect, sock_read=self._timeouts.read
            ),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @asynccontextmanager
    async def post(self, path: str, body: bytes) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST and yield the response once its status says it can be relayed.

        Raises `UpstreamError` for connect failures, timeouts, 5xx and 404 (the
        backend does not serve that model): all failures of the variant, not of
        the client. Other 4xx are yielded, to be passed through as they are.
        Read the body through `chunks()` or `read()`, which translate failures too.
        """
        if self._session is None:
            raise RuntimeError(f"{self!r} is not started")
        async with translate_errors(self.name):
            response = await self._session.post(
                self.base_url + path, data=body, headers=self._headers
            )
        try:
            if response.status >= 500 or response.status == 404:
                async with translate_errors(self.name):
                    detail = (await response.content.read(ERROR_BODY_LIMIT)).decode(
                        errors="replace"
                    )
                raise BadUpstream(
                    f"backend {self.name!r} answered {response.status}: {detail}",
                    upstream_status=response.status,
                )
            yield response
        finally:
            if response.content.is_eof():
                response.release()  # read to the end: the connection goes back to the pool
            else:
                # Dropping the connection is how vLLM learns the client left: it
                # aborts the request and frees its slot.
                response.close()

    async def chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The body as it arrives, upstream failures translated."""
        iterator = response.content.iter_any().__aiter__()
        while True:
            async with translate_errors(self.name):
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            yield chunk

    async def read(self, response: aiohttp.ClientResponse) -> bytes:
        async with translate_errors(self.name):
            return await response.read()

    async def get(self, path: str) -> int:
        """Status of a GET, for readiness probes."""
        if self._session is None:
            raise RuntimeError(f"{self!r} is not started")
        async with translate_errors(self.name), self._session.get(self.base_url + path) as response:
            return response.status


@asynccontextmanager
async def translate_errors(backend: str) -> AsyncIterator[None]:
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"backend {backend!r} did not answer in time") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamDown(f"backend {backend!r} cannot be reached") from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise BadUpstream(f"backend {backend!r} failed: {type(exc).__name__}") from exc
