"""Where finished attempts and users' scores go: metrics and any other sinks.

Every finished attempt passes the safety check first, so sinks see its incident.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from gateway.exchange import Exchange, ExchangeSink, Outcome
from gateway.metrics import GatewayMetrics
from gateway.safety import SafetyChecker

log = logging.getLogger("rollgate.gateway")


class Recorder:
    def __init__(
        self, metrics: GatewayMetrics, safety: SafetyChecker, sinks: Sequence[ExchangeSink] = ()
    ) -> None:
        self.metrics = metrics
        self._safety = safety
        self._sinks = sinks

    def finished(self, x: Exchange) -> None:
        if x.outcome is Outcome.OK and x.text_parts:
            incident = self._safety.check(x.text)
            if incident is not None:
                x.incident = incident.rule
                self.metrics.safety.labels(x.route, x.variant, x.role_label, incident.rule).inc()
                # The request id lets an SRE find the exchange; the user's text stays out.
                log.warning(
                    "safety incident: rule=%s route=%s variant=%s role=%s request_id=%s",
                    incident.rule, x.route, x.variant, x.role_label, x.request_id,
                )  # fmt: skip
        self.metrics.record(x)
        self._tell_sinks(lambda sink: sink.record(x))

    def scored(self, route: str, variant: str, role: str, score: float) -> None:
        """A score (0..1) for an answer of `variant` in `role`: a user's, or a blind review's."""
        self.metrics.scored(route, variant, role, score)
        self._tell_sinks(lambda sink: sink.scored(route, variant, role, score))

    def _tell_sinks(self, tell: Callable[[ExchangeSink], None]) -> None:
        for sink in self._sinks:
            try:
                tell(sink)
            except Exception:  # a broken sink must not fail the client's request
                log.exception("exchange sink %r failed", sink)
