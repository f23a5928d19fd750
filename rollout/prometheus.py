"""`PrometheusSource`: the metric-source seam over Prometheus' HTTP query API.

A window is one instant query at the window's end: `increase()` over the window's
length (whole seconds) for each of the gateway's metrics, summed over every
series of the variant, so the replicas of the gateway add up. The parts are
joined with `or`, each tagged with a `part` label, so a window costs one round
trip and all its parts are read at the same instant.

Users' scores are summed by tenant (the satisfaction check caps each tenant's
share) and safety incidents by cause (only the variant's own count against it).

`increase()` extrapolates to the edges of its range, so counts are floats; the
gateway creates a variant's series at 0 when a plan names it, because a counter
that first appears mid-window adds nothing to `increase()`.

    >>> source = PrometheusSource("http://prometheus:9090")
    >>> window = await source.window("support", "support-v2", "candidate", now - 300, now)
    >>> await source.value('sum(rate(rollgate_requests_total{route="support"}[5m]))', now)
    12.5
    >>> await source.close()
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from rollout.source import IncidentCause, SourceUnavailable
from rollout.tenants import TenantScores, merge
from rollout.windows import Histogram, VariantWindow

DEFAULT_TIMEOUT_S = 10.0

_HISTOGRAMS = {
    "latency": "rollgate_request_duration_seconds",
    "ttft": "rollgate_time_to_first_token_seconds",
    "time_per_token": "rollgate_time_per_output_token_seconds",
}
# Each summed by one label: users' scores by tenant, safety incidents by cause.
_BY = {
    "feedback_count": ("rollgate_feedback_score_count", "tenant"),
    "feedback_sum": ("rollgate_feedback_score_sum", "tenant"),
    "incidents": ("rollgate_safety_incidents_total", "cause"),
}


def quoted(value: str) -> str:
    """A PromQL string literal.

    PromQL unquotes like Go, which understands every escape JSON writes; non-ASCII
    stays raw because Go rejects the surrogate pairs `ensure_ascii` would write.
    """
    return json.dumps(value, ensure_ascii=False)


def window_query(route: str, variant: str, role: str, seconds: int) -> str:
    """One query for every part of a window, each part tagged by a `part` label."""
    labels = f"route={quoted(route)},variant={quoted(variant)},role={quoted(role)}"

    def increase(metric: str, extra: str = "") -> str:
        return f"increase({metric}{{{labels}{extra}}}[{seconds}s])"

    answered_or_failed = ',outcome=~"ok|error"'  # client errors and cancellations are left out
    parts = {
        "requests": f"sum by (outcome) ({increase('rollgate_requests_total', answered_or_failed)})",
        **{p: f"sum by (le) ({increase(m + '_bucket')})" for p, m in _HISTOGRAMS.items()},
        **{p: f"sum by ({label}) ({increase(m)})" for p, (m, label) in _BY.items()},
    }
    return " or ".join(f'label_replace({q}, "part", "{p}", "", "")' for p, q in parts.items())


def parse_window(samples: Sequence[Mapping[str, Any]]) -> VariantWindow:
    """The window from the vector `window_query` returned."""
    outcomes: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {part: [] for part in _HISTOGRAMS}
    by: dict[str, dict[str, float]] = {part: {} for part in _BY}
    for sample in samples:
        labels, value = sample["metric"], float(sample["value"][1])
        part = labels["part"]
        if part == "requests":
            outcomes[labels["outcome"]] = value
        elif part in buckets:
            buckets[part].append((float(labels["le"]), value))
        else:
            # A series without the label (a gateway from before it) sums under "".
            by[part][labels.get(_BY[part][1], "")] = value
    counts, sums, causes = by["feedback_count"], by["feedback_sum"], by["incidents"]
    return VariantWindow(
        requests=outcomes.get("ok", 0.0) + outcomes.get("error", 0.0),
        errors=outcomes.get("error", 0.0),
        latency=Histogram.from_cumulative(buckets["latency"]),
        ttft=Histogram.from_cumulative(buckets["ttft"]),
        time_per_token=Histogram.from_cumulative(buckets["time_per_token"]),
        feedback_count=sum(counts.values()),
        feedback_sum=sum(sums.values()),
        # Scores without a tenant stay untracked: counted, not capped.
        feedback_tenants=merge(
            TenantScores(t, n, sums.get(t, 0.0)) for t, n in counts.items() if t and n > 0
        ),
        # Incidents without a cause (a gateway from before it) count against the variant.
        incidents=sum(n for c, n in causes.items() if c != IncidentCause.PROMPT),
        prompt_incidents=causes.get(IncidentCause.PROMPT, 0.0),
    )


def single_value(data: Mapping[str, Any]) -> float | None:
    """A custom check's value: a scalar or a one-series vector; None for an empty vector.

    Several series raise rather than add up: a sum the query's author did not
    write could hide the very series the check was meant to watch.
    """
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return float(result[1])
    if kind != "vector":
        raise SourceUnavailable(f"the query returned a {kind}; a check needs a single number")
    if not result:
        return None
    if len(result) > 1:
        raise SourceUnavailable(
            f"the query returned {len(result)} series; a check needs one (aggregate with sum, max)"
        )
    return float(result[0]["value"][1])


class PrometheusSource:
    """A `MetricSource` that asks a Prometheus server; owns its HTTP client (`close()`)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._client = httpx.AsyncClient(base_url=url, timeout=timeout)
        # Messages name the server, never credentials in its URL.
        self._where = str(httpx.URL(url).copy_with(username=None, password=None))

    async def window(
        self, route: str, variant: str, role: str, start: float, end: float
    ) -> VariantWindow:
        seconds = max(round(end - start), 1)
        data = await self._query(window_query(route, variant, role, seconds), end)
        return parse_window(data["result"])

    async def value(self, query: str, at: float) -> float | None:
        return single_value(await self._query(query, at))

    async def close(self) -> None:
        await self._client.aclose()

    async def _query(self, query: str, at: float) -> dict[str, Any]:
        # POST: a window's query is too long to be comfortable in a URL.
        form = {"query": query, "time": f"{at:.3f}"}
        try:
            response = await self._client.post("/api/v1/query", data=form)
        except httpx.HTTPError as error:
            raise SourceUnavailable(
                f"Prometheus at {self._where} did not answer: {type(error).__name__}: {error}"
            ) from error
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.is_success and body.get("status") == "success":
            return body["data"]
        reason = body.get("error") or response.reason_phrase
        raise SourceUnavailable(
            f"Prometheus at {self._where} answered {response.status_code}: {reason}"
        )
