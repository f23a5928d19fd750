"""Where the controller reads what variants did: one small seam, two sources.

`PrometheusSource` asks a Prometheus server over its HTTP query API (production,
several gateway replicas); the gateway's in-process windows answer the same
questions for the embedded default. A window is asked by role: `stable`,
`candidate`, `shadow` (mirrored copies), or `review` (scores only: blind reviews
of shadow pairs). A source that cannot answer raises `SourceUnavailable`: the
checks then say inconclusive, never pass.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from rollout.windows import VariantWindow

# The role blind reviews of shadow pairs are recorded under, for both variants of a pair:
# reviewers' scores, kept apart from users' scores of the answers they were served.
REVIEW_ROLE = "review"


class IncidentCause(StrEnum):
    """Whose a flagged answer is: the `cause` label of `rollgate_safety_incidents_total`."""

    # The variant's own: stable answered the same prompt safely, or (failing safe) stable
    # could not be asked, or the answer was stable's. Only these count against a candidate.
    VARIANT = "variant"
    # Stable's answer to the same prompt broke the same rule: the prompt asked for it.
    PROMPT = "prompt"


class SourceUnavailable(Exception):
    """The metric source did not answer (down, timed out, or cannot run this query)."""


class MetricSource(Protocol):
    async def window(
        self, route: str, variant: str, role: str, start: float, end: float
    ) -> VariantWindow:
        """What `variant` did in `role` on `route` between `start` and `end` (epoch seconds)."""
        ...

    async def value(self, query: str, at: float) -> float | None:
        """A custom PromQL check's value at `at`; None when the query matches no series."""
        ...

    async def close(self) -> None: ...
