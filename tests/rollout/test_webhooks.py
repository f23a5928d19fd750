"""Webhooks deliver each event as JSON, retry failures, and never hold up the caller."""

from __future__ import annotations

import json

import httpx
import pytest

from rollout.machine import start
from rollout.plan import RolloutPlan
from rollout.webhooks import Webhooks

pytestmark = pytest.mark.anyio

PLAN = RolloutPlan.model_validate(
    {"route": "support", "candidate": {"name": "v2", "backend": "local", "model": "v2"}}
)
EVENT = start("r1", PLAN, 1000.0, "alice")[1][0]


def receiver(statuses: list[int], seen: list[dict]) -> httpx.MockTransport:
    """Answers with `statuses` in turn (the last one repeats), recording every body."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(statuses.pop(0) if len(statuses) > 1 else statuses[0])

    return httpx.MockTransport(handle)


async def test_each_event_is_posted_as_json() -> None:
    seen: list[dict] = []
    hooks = Webhooks(["http://hooks.test/rollouts"], transport=receiver([204], seen))
    hooks.start()
    hooks.notify([EVENT, EVENT])
    await hooks.drain()
    await hooks.stop()
    assert len(seen) == 2
    assert (seen[0]["kind"], seen[0]["route"], seen[0]["actor"]) == ("started", "support", "alice")


async def test_failures_are_retried_then_given_up_without_raising(caplog) -> None:
    seen: list[dict] = []
    hooks = Webhooks(["http://hooks.test/x?token=secret"], backoff_s=0.001,
                     transport=receiver([503, 503, 200], seen))  # fmt: skip
    hooks.start()
    hooks.notify([EVENT])
    await hooks.drain()
    assert len(seen) == 3  # two failures, then delivered

    seen.clear()
    down = Webhooks(["http://hooks.test/x?token=secret"], attempts=2, backoff_s=0.001,
                    transport=receiver([500], seen))  # fmt: skip
    down.start()
    down.notify([EVENT])
    await down.drain()
    assert len(seen) == 2
    assert "gave up" in caplog.text
    assert "secret" not in caplog.text
    await hooks.stop()
    await down.stop()


async def test_a_full_queue_drops_rather_than_blocks(caplog) -> None:
    hooks = Webhooks(["http://hooks.test/"], queue_size=1, transport=receiver([200], []))
    hooks.notify([EVENT, EVENT, EVENT])  # no worker yet: the queue fills at once
    assert "queue full" in caplog.text
    await hooks.stop()
