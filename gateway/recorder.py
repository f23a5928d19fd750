"""Where finished attempts go: the safety check, then metrics and any other sinks."""

from __future__ import annotations

import logging
from collections.abc import Sequence

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
        for sink in self._sinks:
            try:
                sink.record(x)
            except Exception:  # a broken sink must not fail the client's request
                log.exception("exchange sink %r failed", sink)
