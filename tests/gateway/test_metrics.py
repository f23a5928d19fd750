"""The gateway's Prometheus metrics: what a scrape shows before any traffic."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from rollout.tenants import ANONYMOUS_TENANT, REVIEW_TENANT
from rollout.traffic import RouteTraffic, TrafficPlan, Variant

STABLE = Variant("base", "pool", "tiny-llama")
CANDIDATE = Variant("v2", "pool", "acme-voice")


def published(traffic: RouteTraffic) -> CollectorRegistry:
    registry = CollectorRegistry()
    GatewayMetrics(registry, safety_rules=("credentials",)).publish(
        TrafficPlan({traffic.route: traffic})
    )
    return registry


def test_published_variants_export_zeros_before_their_first_request():
    """increase() sees a variant's first errors only if a scrape saw the counter at 0."""
    registry = published(RouteTraffic("support", STABLE, CANDIDATE, weight_bp=500))
    for variant, role in (("base", "stable"), ("v2", "candidate")):
        labels = {"route": "support", "variant": variant, "role": role}
        for outcome in ("ok", "error"):
            assert (
                registry.get_sample_value("rollgate_requests_total", {**labels, "outcome": outcome})
                == 0
            )
        assert registry.get_sample_value("rollgate_request_duration_seconds_count", labels) == 0
        anonymous = {**labels, "tenant": ANONYMOUS_TENANT}
        assert registry.get_sample_value("rollgate_feedback_score_count", anonymous) == 0
        for cause in ("variant", "prompt"):
            incidents = {**labels, "rule": "credentials", "cause": cause}
            assert registry.get_sample_value("rollgate_safety_incidents_total", incidents) == 0
    shadow = {"route": "support", "variant": "v2", "role": "shadow"}
    assert registry.get_sample_value("rollgate_request_duration_seconds_count", shadow) is None
    review = {"route": "support", "variant": "v2", "role": "review", "tenant": REVIEW_TENANT}
    assert registry.get_sample_value("rollgate_feedback_score_count", review) is None


def test_a_shadowed_candidate_exports_zeros_for_its_shadow_copies():
    registry = published(RouteTraffic("support", STABLE, CANDIDATE, shadow_sample=0.1))
    labels = {"route": "support", "variant": "v2", "role": "shadow", "outcome": "error"}
    assert registry.get_sample_value("rollgate_requests_total", labels) == 0
    for variant in ("base", "v2"):  # blind reviews of the pairs score both
        review = {"route": "support", "variant": variant, "role": "review"}
        scores = {**review, "tenant": REVIEW_TENANT}
        assert registry.get_sample_value("rollgate_feedback_score_count", scores) == 0
        assert (
            registry.get_sample_value("rollgate_requests_total", {**review, "outcome": "ok"})
            is None
        )


def test_every_metric_carries_the_rollgate_prefix():
    registry = published(RouteTraffic("support", STABLE, CANDIDATE, weight_bp=500))
    names = {metric.name for metric in registry.collect()}
    assert names
    assert all(name.startswith("rollgate_") for name in names), sorted(names)
    weight = {"route": "support", "variant": "v2", "role": "candidate"}
    assert registry.get_sample_value("rollgate_traffic_weight_percent", weight) == 5.0
