"""Optional notification webhooks: each audit event POSTed as JSON, off the decision path.

Events queue in memory (bounded) and one worker delivers them in order,
retrying failures with backoff; a full queue or a receiver that stays down
drops the event with a log line. A decision never waits on a webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import httpx

from rollout.machine import AuditEvent
from rollout.record import event_to_json

log = logging.getLogger("rollgate.webhooks")


class Webhooks:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        attempts: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        queue_size: int = 1000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._urls = list(urls)
        self._attempts, self._backoff = attempts, backoff_s
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(queue_size)
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._worker: asyncio.Task | None = None

    def notify(self, events: Sequence[AuditEvent]) -> None:
        if not self._urls:
            return
        for event in events:
            try:
                self._queue.put_nowait(event)
            except asyncio.QueueFull:
                log.error("webhook queue full: dropped %s event of %s", event.kind, event.route)

    def start(self) -> None:
        if self._urls:
            self._worker = asyncio.create_task(self._deliver_forever())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self._client.aclose()

    async def drain(self) -> None:
        """Wait until every queued event has been delivered or given up on."""
        await self._queue.join()

    async def _deliver_forever(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                body = event_to_json(event)
                for url in self._urls:
                    await self._deliver(url, body, event)
            finally:
                self._queue.task_done()

    async def _deliver(self, url: str, body: bytes, event: AuditEvent) -> None:
        headers = {"content-type": "application/json"}
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(url, content=body, headers=headers)
                if response.status_code < 500:
                    if response.status_code >= 400:
                        log.error(
                            "webhook %s refused the event (%d)", _host(url), response.status_code
                        )
                    return
                problem = f"status {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if attempt < self._attempts:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
        log.error("webhook %s: gave up on a %s event after %s", _host(url), event.kind, problem)


def _host(url: str) -> str:
    """The receiver without its path or query, which may carry a token."""
    return httpx.URL(url).host
