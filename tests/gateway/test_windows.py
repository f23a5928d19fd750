"""The gateway's own windows, driven by a fake wall clock."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from gateway.exchange import Exchange, Outcome
from gateway.metrics import LATENCY_BUCKETS, PER_TOKEN_BUCKETS, GatewayMetrics
from gateway.recorder import Recorder
from gateway.safety import DEFAULT_DENY_PATTERNS, DenyPatterns
from gateway.windows import LocalWindows
from rollout.source import IncidentCause, SourceUnavailable
from rollout.tenants import ANONYMOUS_TENANT, TenantScores
from rollout.traffic import Role
from rollout.windows import Histogram

pytestmark = pytest.mark.anyio

EVER = (-math.inf, math.inf)


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exchange(
    outcome: Outcome = Outcome.OK,
    *,
    variant: str = "base",
    role: Role = Role.STABLE,
    shadow: bool = False,
    duration: float = 0.3,
    ttft: float | None = None,
    tokens: int | None = None,
    text: str = "",
) -> Exchange:
    x = Exchange("req-1", "support", variant, role, started=5.0, shadow=shadow)
    if ttft is not None:
        x.token(5.0 + ttft, text)
    x.output_tokens = tokens
    x.finish(5.0 + duration, outcome, 200)
    return x


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def windows(clock: FakeClock) -> LocalWindows:
    return LocalWindows(clock=clock)


async def requests(windows: LocalWindows, start: float, end: float, **key: str) -> float:
    key = {"route": "support", "variant": "base", "role": "stable", **key}
    return (await windows.window(**key, start=start, end=end)).requests


async def test_second_s_holds_what_happened_after_s_minus_1_up_to_s(windows, clock):
    for now in (100.0, 100.5, 101.0, 102.2):
        clock.now = now
        windows.record(exchange())
    assert await requests(windows, 99, 100) == 1
    assert await requests(windows, 100, 101) == 2
    assert await requests(windows, 100.5, 101) == 2
    assert await requests(windows, 101, 102.9) == 0
    assert await requests(windows, 101, 103) == 1


async def test_windows_that_meet_count_everything_once(windows, clock):
    """A window ending mid-second stops before that second; the next window has it."""
    clock.now = 101.5
    windows.record(exchange())
    assert await requests(windows, 100, 101.5) == 0
    assert await requests(windows, 101.5, 103) == 1


async def test_short_windows_in_a_long_history_count_the_same_seconds(windows, clock):
    """Charts read many short windows of an hour's history (looked up second by second)."""
    times = [100.0 + 0.7 * i for i in range(500)]
    for now in times:
        clock.now = now
        windows.record(exchange())
    for start, end in ((99, 100), (150.2, 160), (150.5, 150.9), (200, 260.3), (300, 460)):
        expected = sum(start < math.ceil(t) <= end for t in times)
        assert await requests(windows, start, end) == expected, (start, end)


async def test_roles_and_variants_are_kept_apart(windows):
    windows.record(exchange())
    windows.record(exchange(variant="v2", role=Role.CANDIDATE))
    windows.record(exchange(variant="v2", role=Role.CANDIDATE))
    windows.record(exchange(variant="v2", role=Role.CANDIDATE, shadow=True))
    assert await requests(windows, *EVER) == 1
    assert await requests(windows, *EVER, variant="v2", role="candidate") == 2
    assert await requests(windows, *EVER, variant="v2", role="shadow") == 1
    assert await requests(windows, *EVER, variant="v2", role="stable") == 0


async def test_client_errors_and_cancellations_are_left_out(windows):
    for outcome in (Outcome.OK, Outcome.ERROR, Outcome.CLIENT_ERROR, Outcome.CANCELLED):
        windows.record(exchange(outcome))
    w = await windows.window("support", "base", "stable", *EVER)
    assert (w.requests, w.errors) == (2, 1)
    assert w.latency.total == 1  # answered requests only


async def test_histograms_have_the_gateway_buckets(windows):
    windows.record(exchange(duration=0.2, ttft=0.05, tokens=10))
    windows.record(exchange(duration=4.0, ttft=1.0, tokens=100))
    windows.record(exchange(duration=0.4))  # no tokens seen: no first token, no per-token time
    w = await windows.window("support", "base", "stable", *EVER)
    assert w.latency == Histogram.of(LATENCY_BUCKETS, [0.2, 4.0, 0.4])
    assert w.ttft == Histogram.of(LATENCY_BUCKETS, [0.05, 1.0])
    assert w.time_per_token == Histogram.of(PER_TOKEN_BUCKETS, [0.02, 0.04])


async def test_an_empty_window_has_the_same_shape(windows):
    w = await windows.window("support", "base", "stable", *EVER)
    assert (w.requests, w.latency.total) == (0, 0)
    assert w.latency.bounds == LATENCY_BUCKETS
    assert w.time_per_token.bounds == PER_TOKEN_BUCKETS


async def test_feedback_scores_count_and_add_up_by_tenant(windows, clock):
    for score, tenant in ((1.0, "acme"), (0.25, "globex"), (0.0, "acme")):
        windows.scored("support", "v2", "candidate", score, tenant)
        clock.now += 1
    w = await windows.window("support", "v2", "candidate", *EVER)
    assert (w.feedback_count, w.feedback_sum) == (3, 1.25)
    assert w.feedback_tenants == (
        TenantScores("acme", 2, 1.0),
        TenantScores("globex", 1, 0.25),
    )
    assert (await windows.window("support", "base", "stable", *EVER)).feedback_count == 0


async def test_incidents_count_by_cause(windows):
    x = exchange()
    x.incident = "credentials"
    windows.incident(x, IncidentCause.VARIANT)
    windows.incident(x, IncidentCause.PROMPT)
    windows.incident(x, IncidentCause.PROMPT)
    w = await windows.window("support", "base", "stable", *EVER)
    assert (w.incidents, w.prompt_incidents) == (1, 2)


async def test_seconds_older_than_the_retention_are_dropped(clock):
    windows = LocalWindows(clock=clock, retention=60)
    windows.record(exchange())
    windows.scored("support", "v2", "candidate", 1.0, ANONYMOUS_TENANT)
    clock.now += 30
    windows.record(exchange())
    assert await requests(windows, *EVER) == 2
    clock.now += 31
    windows.record(exchange(variant="v3"))
    assert await requests(windows, *EVER) == 1
    assert (await windows.window("support", "v2", "candidate", *EVER)).feedback_count == 0


async def test_value_is_not_supported(windows):
    with pytest.raises(SourceUnavailable, match="use Prometheus"):
        await windows.value("sum(up)", 100.0)


async def test_the_recorder_sends_incidents_and_scores_to_its_sinks(windows):
    registry = CollectorRegistry()
    recorder = Recorder(GatewayMetrics(registry), DenyPatterns(DEFAULT_DENY_PATTERNS), [windows])
    recorder.finished(exchange(ttft=0.1, text="First send me your password."))
    recorder.finished(exchange(ttft=0.1, text="Open Settings."))
    recorder.scored("support", "base", "stable", 0.75, "acme")
    w = await windows.window("support", "base", "stable", *EVER)
    assert (w.requests, w.incidents, w.feedback_count, w.feedback_sum) == (2, 1, 1, 0.75)
    assert w.feedback_tenants == (TenantScores("acme", 1, 0.75),)
    labels = {"route": "support", "variant": "base", "role": "stable"}
    assert (
        registry.get_sample_value("rollgate_feedback_score_sum", labels | {"tenant": "acme"})
        == 0.75
    )
    # Stable's own answer: nothing to weigh it against, the variant's incident.
    incidents = labels | {"rule": "credentials", "cause": "variant"}
    assert registry.get_sample_value("rollgate_safety_incidents_total", incidents) == 1
