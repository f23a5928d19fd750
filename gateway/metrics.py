"""The gateway's Prometheus metrics, on an injected registry.

Labels are bounded sets only: route, variant, role, outcome, reason, rule, cause,
and tenant (tenants are created by admins). Never a user, request or API key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.compare import Comparison
from gateway.exchange import Exchange, Outcome
from rollout.source import REVIEW_ROLE, IncidentCause
from rollout.tenants import ANONYMOUS_TENANT, REVIEW_TENANT
from rollout.traffic import TrafficPlan


def geometric_buckets(low: float, high: float, per_doubling: int = 4) -> tuple[float, ...]:
    """Bounds from `low` past `high`, each 2**(1/per_doubling) (about 1.19) times the last.

    The rollout's p95 checks ask what share of candidate answers is slower than
    1.2 times stable's p95; buckets much wider than that ratio would blur the answer.
    """
    count = math.ceil(per_doubling * math.log2(high / low))
    return tuple(float(f"{low * 2 ** (k / per_doubling):.4g}") for k in range(count + 1))


# LLM latencies run from milliseconds (a cached short answer) to minutes (long generations).
LATENCY_BUCKETS = geometric_buckets(0.005, 300.0)
PER_TOKEN_BUCKETS = geometric_buckets(0.0005, 2.5)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TOKENS_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RATIO_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0)
DELTA_BUCKETS = (-10.0, -2.5, -1.0, -0.25, -0.05, 0.0, 0.05, 0.25, 1.0, 2.5, 10.0)

VARIANT = ("route", "variant", "role")


@dataclass(frozen=True, slots=True)
class _VariantSeries:
    """One variant's labelled children, looked up once instead of per request."""

    latency: Any
    ttft: Any
    itl: Any
    output_tokens: Any
    time_per_token: Any


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, safety_rules: Sequence[str] = ()) -> None:
        self._safety_rules = tuple(safety_rules)
        self._tenants: frozenset[str] = frozenset({ANONYMOUS_TENANT})
        self._plan: TrafficPlan | None = None
        self._by_variant: dict[tuple[str, str, str], _VariantSeries] = {}

        def counter(name: str, doc: str, labels=VARIANT) -> Counter:
            return Counter(f"rollgate_{name}", doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets, labels=VARIANT) -> Histogram:
            return Histogram(f"rollgate_{name}", doc, labels, buckets=buckets, registry=registry)

        self.requests = counter(
            "requests_total", "Attempts at a variant, by outcome.", (*VARIANT, "outcome")
        )
        self.upstream_errors = counter(
            "upstream_errors_total", "Variant failures by kind.", (*VARIANT, "kind")
        )
        self.failovers = counter(
            "failovers_total", "Candidate failures retried on stable.", ("route",)
        )
        self.latency = histogram(
            "request_duration_seconds", "End-to-end time of an attempt.", LATENCY_BUCKETS
        )
        self.ttft = histogram(
            "time_to_first_token_seconds", "Time to the first streamed token.", LATENCY_BUCKETS
        )
        self.itl = histogram(
            "inter_token_latency_seconds", "Gaps between streamed tokens.", TOKEN_GAP_BUCKETS
        )
        self.output_tokens = histogram(
            "output_tokens", "Completion tokens per answer (from usage).", TOKENS_BUCKETS
        )
        self.time_per_token = histogram(
            "time_per_output_token_seconds",
            "Latency per output token: compares variants of different verbosity.",
            PER_TOKEN_BUCKETS,
        )
        self.finish = counter(
            "finish_reason_total", "Answers by finish reason.", (*VARIANT, "reason")
        )
        self.safety = counter(
            "safety_incidents_total",
            "Flagged answers, by whose doing: the variant's, or the prompt's (stable flagged too).",
            (*VARIANT, "rule", "cause"),
        )
        self.rechecks = counter(
            "safety_rechecks_total",
            "Flagged candidate answers weighed against stable's answer to the same prompt.",
            (*VARIANT, "outcome"),
        )
        self.safety_check_errors = counter(
            "safety_check_errors_total", "Answers the safety checker failed to judge."
        )
        self.feedback = histogram(
            "feedback_score",
            "User scores by tenant, and blind reviews (role review), 0..1.",
            SCORE_BUCKETS,
            (*VARIANT, "tenant"),
        )
        self.weight = Gauge(
            "rollgate_traffic_weight_percent",
            "Share of users served by each variant.",
            ("route", "variant", "role"),
            registry=registry,
        )
        self.shadow_sample = Gauge(
            "rollgate_shadow_sample_ratio",
            "Share of requests mirrored.",
            ("route",),
            registry=registry,
        )
        shadow = ("route", "variant")
        self.shadow_compared = counter("shadow_comparisons_total", "Shadow pairs compared.", shadow)
        self.shadow_errors = counter("shadow_candidate_errors_total", "Shadow failures.", shadow)
        self.shadow_dropped = counter(
            "shadow_dropped_total", "Shadow copies not sent.", ("route", "reason")
        )
        self.shadow_similarity = histogram(
            "shadow_similarity", "Stable/candidate similarity.", SCORE_BUCKETS, shadow
        )
        self.shadow_length_ratio = histogram(
            "shadow_length_ratio", "Candidate/stable length.", RATIO_BUCKETS, shadow
        )
        self.shadow_latency_delta = histogram(
            "shadow_latency_delta_seconds", "Candidate minus stable.", DELTA_BUCKETS, shadow
        )

    def _series(self, labels: tuple[str, str, str]) -> _VariantSeries:
        series = self._by_variant.get(labels)
        if series is None:
            series = self._by_variant[labels] = _VariantSeries(
                latency=self.latency.labels(*labels),
                ttft=self.ttft.labels(*labels),
                itl=self.itl.labels(*labels),
                output_tokens=self.output_tokens.labels(*labels),
                time_per_token=self.time_per_token.labels(*labels),
            )
        return series

    def record(self, x: Exchange) -> None:
        """ExchangeSink: one finished attempt."""
        labels = (x.route, x.variant, x.role_label)
        self.requests.labels(*labels, x.outcome.value).inc()
        if x.outcome is Outcome.ERROR:
            self.upstream_errors.labels(*labels, x.error_kind or "unknown").inc()
        if x.outcome is not Outcome.OK:
            return
        series = self._series(labels)
        series.latency.observe(x.duration)
        if x.time_to_first_token is not None:
            series.ttft.observe(x.time_to_first_token)
        for gap in x.token_gaps:
            series.itl.observe(gap)
        if x.output_tokens:
            series.output_tokens.observe(x.output_tokens)
            series.time_per_token.observe(x.duration / x.output_tokens)
        if x.finish_reason:
            self.finish.labels(*labels, x.finish_reason).inc()

    def incident(self, x: Exchange, cause: IncidentCause) -> None:
        """ExchangeSink: a flagged answer, attributed."""
        self.safety.labels(x.route, x.variant, x.role_label, x.incident, cause.value).inc()

    def scored(self, route: str, variant: str, role: str, score: float, tenant: str) -> None:
        """ExchangeSink: a user's score for an answer, or a blind review's (role `review`)."""
        self.feedback.labels(route, variant, role, tenant).observe(score)

    def compared(self, route: str, variant: str, c: Comparison) -> None:
        self.shadow_compared.labels(route, variant).inc()
        if c.candidate_error:
            self.shadow_errors.labels(route, variant).inc()
            return
        self.shadow_similarity.labels(route, variant).observe(c.similarity)
        self.shadow_length_ratio.labels(route, variant).observe(c.length_ratio)
        self.shadow_latency_delta.labels(route, variant).observe(c.latency_delta)

    def known_tenants(self, tenants: frozenset[str]) -> None:
        """The tenants keys exist for: their score series are exported at 0 from now on."""
        self._tenants = tenants | {ANONYMOUS_TENANT}
        if self._plan is not None:
            self.publish(self._plan)

    def publish(self, plan: TrafficPlan) -> None:
        self._plan = plan
        self.weight.clear()
        self.shadow_sample.clear()
        for t in plan.routes.values():
            self.weight.labels(t.route, t.stable.name, "stable").set(100 - t.weight_percent)
            self._zero((t.route, t.stable.name, "stable"))
            if t.candidate is not None:
                self.weight.labels(t.route, t.candidate.name, "candidate").set(t.weight_percent)
                self._zero((t.route, t.candidate.name, "candidate"))
                if t.shadow_sample:
                    self._zero((t.route, t.candidate.name, "shadow"))
                    # Blind reviews of the shadow pairs score both variants.
                    for name in (t.stable.name, t.candidate.name):
                        self.feedback.labels(t.route, name, REVIEW_ROLE, REVIEW_TENANT)
            self.shadow_sample.labels(t.route).set(t.shadow_sample)

    def _zero(self, labels: tuple[str, str, str]) -> None:
        """Export a variant's series at 0 before its first request.

        Prometheus' increase() needs a sample before an event to see it: a
        counter that first appears at 1 adds nothing, so a new candidate's
        first errors would go unseen by the rollout's checks.
        """
        for outcome in (Outcome.OK, Outcome.ERROR):
            self.requests.labels(*labels, outcome.value)
        for rule in self._safety_rules:
            for cause in IncidentCause:
                self.safety.labels(*labels, rule, cause.value)
        # Every tenant a key exists for (admins create them: a bounded set).
        for tenant in self._tenants:
            self.feedback.labels(*labels, tenant)
        self._series(labels)
