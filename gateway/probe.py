"""What one active probe learns about a vLLM replica, off the request path.

A probe asks `/health`; when the replica answers 200 it also reads
`/v1/models` (the base model and the adapters loaded now) and vLLM's
`/metrics` (queue length and KV-cache use), so that the balancer knows what a
replica serves before the probe lets it take traffic. Either of the two may be
missing (a server that is not vLLM): then that part stays unknown.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import UpstreamError
from gateway.upstream import Endpoint

BODY_LIMIT = 4 * 1024 * 1024  # vLLM's /metrics with many adapters and buckets stays well under
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"


@dataclass(frozen=True, slots=True)
class Probe:
    healthy: bool
    models: frozenset[str] | None = None  # None: not known
    waiting: float | None = None
    kv_usage: float | None = None
    has_load: bool = False  # /metrics answered


def parse_models(body: bytes) -> frozenset[str] | None:
    try:
        data = json.loads(body)["data"]
        return frozenset(str(m["id"]) for m in data)
    except (ValueError, KeyError, TypeError):
        return None


def parse_load(text: str) -> tuple[float | None, float | None]:
    """(requests waiting, KV-cache use) from vLLM's metrics text.

    Summed (waiting) and maxed (KV use) over the series: vLLM labels them by
    model name and engine, and a replica with two engines is as full as its
    fullest one.
    """
    waiting: float | None = None
    kv_usage: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name == WAITING:
            waiting = sum(s.value for s in family.samples)
        elif family.name == KV_USAGE and family.samples:
            kv_usage = max(s.value for s in family.samples)
    return waiting, kv_usage


async def probe(endpoint: Endpoint, limit_s: float) -> Probe:
    """Probe one replica; any failure or no answer to `/health` within `limit_s` says unhealthy."""
    try:
        status, _ = await asyncio.wait_for(endpoint.get("/health", BODY_LIMIT), limit_s)
    except (UpstreamError, TimeoutError):
        return Probe(healthy=False)
    if status != 200:
        return Probe(healthy=False)
    models_task = _get(endpoint, "/v1/models", limit_s)
    metrics_task = _get(endpoint, "/metrics", limit_s)
    models_body, metrics_body = await asyncio.gather(models_task, metrics_task)
    models = parse_models(models_body) if models_body is not None else None
    waiting = kv_usage = None
    if metrics_body is not None:
        try:
            waiting, kv_usage = parse_load(metrics_body.decode(errors="replace"))
        except ValueError:
            metrics_body = None  # not Prometheus text: load stays unknown
    return Probe(True, models, waiting, kv_usage, has_load=metrics_body is not None)


async def _get(endpoint: Endpoint, path: str, limit_s: float) -> bytes | None:
    try:
        status, body = await asyncio.wait_for(endpoint.get(path, BODY_LIMIT), limit_s)
    except (UpstreamError, TimeoutError):
        return None
    return body if status == 200 else None
