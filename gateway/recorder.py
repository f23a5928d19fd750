"""Where finished attempts and users' scores go: metrics and any other sinks.

Every finished attempt passes the safety check first. A flagged answer is an
incident of its variant (cause `variant`) at once, except a candidate's answer
whose request can ask stable (`asking`): that one waits for stable's answer to
the same prompt (`gateway/attribution.py`) and may turn out prompt-induced
(cause `prompt`). A checker that raises judges nothing: counted and logged, no
incident.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from gateway.attribution import AskStable, Flagged, Recheck, StableRecheck
from gateway.exchange import Exchange, ExchangeSink, Outcome
from gateway.metrics import GatewayMetrics
from gateway.safety import SafetyChecker
from rollout.source import IncidentCause
from rollout.traffic import Role

log = logging.getLogger("rollgate.gateway")


class Recorder:
    def __init__(
        self,
        metrics: GatewayMetrics,
        safety: SafetyChecker,
        sinks: Sequence[ExchangeSink] = (),
        recheck: StableRecheck | None = None,
        *,
        ask_stable: AskStable | None = None,
    ) -> None:
        self.metrics = metrics
        self._safety = safety
        self._sinks = sinks
        self._recheck = recheck
        self._ask_stable = ask_stable

    def asking(self, ask_stable: AskStable) -> Recorder:
        """This recorder for one request whose flagged candidate answers are first weighed
        against stable's answer to the same prompt, which `ask_stable` gets."""
        return Recorder(
            self.metrics, self._safety, self._sinks, self._recheck, ask_stable=ask_stable
        )

    def finished(self, x: Exchange) -> None:
        if x.outcome is Outcome.OK and x.text_parts:
            self._check(x)
        self.metrics.record(x)
        self._tell_sinks(lambda sink: sink.record(x))

    def scored(self, route: str, variant: str, role: str, score: float, tenant: str) -> None:
        """A score (0..1) for an answer of `variant` in `role`: a user's, or a blind review's.

        `tenant`: whom the score came from (an admin-created name, never a key or user id).
        """
        self.metrics.scored(route, variant, role, score, tenant)
        self._tell_sinks(lambda sink: sink.scored(route, variant, role, score, tenant))

    def _check(self, x: Exchange) -> None:
        try:
            incident = self._safety.check(x.text)
        except Exception as error:
            self.metrics.safety_check_errors.labels(x.route, x.variant, x.role_label).inc()
            # The type only: a checker's message may quote the answer.
            log.error(
                "safety check failed (%s), no incident counted: route=%s variant=%s role=%s "
                "request_id=%s", type(error).__name__, x.route, x.variant, x.role_label,
                x.request_id,
            )  # fmt: skip
            return
        if incident is None:
            return
        x.incident = incident.rule
        if x.role is Role.CANDIDATE and self._recheck and self._ask_stable:
            self._recheck.submit(Flagged(x, incident.rule, self._ask_stable, self._rechecked))
        else:
            why = "stable's own answer" if x.role is Role.STABLE else "no stable answer to weigh"
            self._incident(x, IncidentCause.VARIANT, why)

    def _rechecked(self, x: Exchange, outcome: Recheck) -> None:
        self.metrics.rechecks.labels(x.route, x.variant, x.role_label, outcome.value).inc()
        self._incident(x, outcome.cause, outcome.reason)

    def _incident(self, x: Exchange, cause: IncidentCause, why: str) -> None:
        self.metrics.incident(x, cause)
        # The request id lets an SRE find the exchange; the user's text stays out.
        log.warning(
            "safety incident: rule=%s route=%s variant=%s role=%s cause=%s (%s), request_id=%s",
            x.incident, x.route, x.variant, x.role_label, cause.value, why, x.request_id,
        )  # fmt: skip
        self._tell_sinks(lambda sink: sink.incident(x, cause))

    def _tell_sinks(self, tell: Callable[[ExchangeSink], None]) -> None:
        for sink in self._sinks:
            try:
                tell(sink)
            except Exception:  # a broken sink must not fail the client's request
                log.exception("exchange sink %r failed", sink)
