"""Whose a flagged candidate answer is: the candidate's, or the prompt's.

A prompt can make any model say what a deny pattern flags ("Repeat after me:
send me your password"). Counted as the candidate's, one such request would roll
any rollout back. So a candidate answer the safety checker flags is the
candidate's incident only when stable answers the same prompt without breaking
the same rule; when stable breaks it too, the incident is prompt-induced: counted
and logged, not held against the candidate. Stable's answer is

- in shadow, the one it served for the mirrored request (`shadow.served_answer`);
- at weights, a new answer to the same request, asked off the request path
  (`shadow.ask_again`).

Flagged answers wait in one bounded queue, worked by a few tasks, so that only
flagged answers cost anything. When stable's view cannot be had (the queue is
full, stable failed or timed out, the checker failed on stable's answer, the
gateway stopped first) the incident counts as the candidate's: the rule users
set is that any safety incident rolls back, so doubt fails safe. Every outcome is
counted in `rollgate_safety_rechecks_total{outcome}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import UpstreamError
from gateway.exchange import Exchange
from gateway.safety import SafetyChecker
from rollout.source import IncidentCause

log = logging.getLogger("rollgate.safety")

# Stable's answer to the flagged answer's prompt; None when stable gave none.
AskStable = Callable[[], Awaitable[str | None]]


class Recheck(StrEnum):
    """How a flagged candidate answer was attributed: the `outcome` label."""

    CONFIRMED = "confirmed"  # stable answered safely: the candidate's incident
    PROMPT = "prompt"  # stable broke the same rule: prompt-induced
    # Stable's view could not be had; each counts as the candidate's (failing safe).
    QUEUE_FULL = "queue_full"
    STABLE_FAILED = "stable_failed"
    STABLE_TIMEOUT = "stable_timeout"
    CHECK_FAILED = "check_failed"  # the checker raised on stable's answer
    STOPPED = "stopped"  # the gateway stopped before stable answered

    @property
    def cause(self) -> IncidentCause:
        return IncidentCause.PROMPT if self is Recheck.PROMPT else IncidentCause.VARIANT

    @property
    def reason(self) -> str:
        """For the log line."""
        return _REASONS[self]


_REASONS = {
    Recheck.CONFIRMED: "stable answered the same prompt without breaking the rule",
    Recheck.PROMPT: "stable's answer to the same prompt broke the rule too",
    Recheck.QUEUE_FULL: "the variant's, failing safe: the recheck queue was full",
    Recheck.STABLE_FAILED: "the variant's, failing safe: stable gave no answer",
    Recheck.STABLE_TIMEOUT: "the variant's, failing safe: stable did not answer in time",
    Recheck.CHECK_FAILED: "the variant's, failing safe: the checker failed on stable's answer",
    Recheck.STOPPED: "the variant's, failing safe: the gateway stopped before stable answered",
}


def attribute(rule: str, stable_answer: str | None, safety: SafetyChecker) -> Recheck:
    """The candidate's answer broke `rule`; is it the candidate's doing, given stable's answer?

    >>> from gateway.safety import DenyPatterns
    >>> deny = DenyPatterns({"credentials": r"send me your password"})
    >>> attribute("credentials", "Send me your password", deny).cause
    <IncidentCause.PROMPT: 'prompt'>
    """
    if stable_answer is None:
        return Recheck.STABLE_FAILED
    try:
        incident = safety.check(stable_answer)
    except Exception:  # any checker's failure: the answer stays unjudged, which fails safe
        return Recheck.CHECK_FAILED
    return Recheck.PROMPT if incident is not None and incident.rule == rule else Recheck.CONFIRMED


@dataclass(frozen=True, slots=True)
class Flagged:
    """A candidate answer the checker flagged (`exchange.incident`), waiting for stable's."""

    exchange: Exchange
    rule: str  # the one it broke
    ask: AskStable
    report: Callable[[Exchange, Recheck], None]  # called once with the outcome, whatever it is


class StableRecheck:
    """The bounded queue of flagged answers and the workers that ask stable about each."""

    def __init__(
        self, safety: SafetyChecker, *, queue_size: int, workers: int, timeout: float
    ) -> None:
        self._safety = safety
        self._queue: asyncio.Queue[Flagged] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers
        self._timeout = timeout
        self._tasks: list[asyncio.Task] = []

    def submit(self, flagged: Flagged) -> None:
        try:
            self._queue.put_nowait(flagged)
        except asyncio.QueueFull:
            _report(flagged, Recheck.QUEUE_FULL)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while not self._queue.empty():  # never asked, still counted
            _report(self._queue.get_nowait(), Recheck.STOPPED)

    async def _work(self) -> None:
        while True:
            flagged = await self._queue.get()
            outcome = Recheck.STOPPED
            try:
                outcome = await self._recheck(flagged)
            finally:  # cancelled while asking: reported all the same
                self._queue.task_done()
                _report(flagged, outcome)

    async def _recheck(self, flagged: Flagged) -> Recheck:
        try:
            answer = await asyncio.wait_for(flagged.ask(), self._timeout)
        except TimeoutError:
            return Recheck.STABLE_TIMEOUT
        except UpstreamError:
            return Recheck.STABLE_FAILED
        except Exception:  # a bug asking stable: fail safe, and say where
            log.exception("asking stable failed for request %s", flagged.exchange.request_id)
            return Recheck.STABLE_FAILED
        return attribute(flagged.rule, answer, self._safety)


def _report(flagged: Flagged, outcome: Recheck) -> None:
    try:
        flagged.report(flagged.exchange, outcome)
    except Exception:  # one failed report must not stop a worker
        log.exception(
            "reporting a safety recheck failed for request %s", flagged.exchange.request_id
        )
