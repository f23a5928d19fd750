"""One attempt at one variant, measured as it happens.

The proxy fills an `Exchange` while it forwards; when the attempt ends, the
finished record goes to every `ExchangeSink` (Prometheus metrics and the
controller's in-process windows), and so do safety incidents, once attributed,
and users' scores for the answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from rollout.source import IncidentCause
from rollout.traffic import Role

Clock = Callable[[], float]  # monotonic seconds


class Outcome(StrEnum):
    OK = "ok"
    CLIENT_ERROR = "client_error"  # the upstream refused the request (4xx): the client's fault
    ERROR = "error"  # the variant failed: counts against it
    CANCELLED = "cancelled"  # the client went away


@dataclass(slots=True)
class Exchange:
    request_id: str
    route: str
    variant: str
    role: Role
    started: float
    shadow: bool = False
    outcome: Outcome | None = None
    status: int = 0
    error_kind: str | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    token_gaps: list[float] = field(default_factory=list)
    output_tokens: int | None = None
    input_tokens: int | None = None  # the prompt's, from usage: a key's tokens per minute
    finish_reason: str | None = None
    text_parts: list[str] = field(default_factory=list)
    ended: float | None = None
    incident: str | None = None  # the safety rule the answer broke (whoever's doing it was)

    @property
    def role_label(self) -> str:
        return "shadow" if self.shadow else self.role.value

    def token(self, now: float, text: str | None) -> None:
        """A content event arrived at `now`."""
        if self.first_token_at is None:
            self.first_token_at = now
        else:
            self.token_gaps.append(now - self.last_token_at)
        self.last_token_at = now
        if text:
            self.text_parts.append(text)

    def finish(
        self, now: float, outcome: Outcome, status: int, error_kind: str | None = None
    ) -> None:
        self.ended, self.outcome, self.status, self.error_kind = now, outcome, status, error_kind

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started


class ExchangeSink(Protocol):
    """Where the `Recorder` sends what it learns: finished attempts, incidents and scores."""

    def record(self, exchange: Exchange) -> None:
        """One finished attempt. A safety incident in it comes apart, to `incident`."""
        ...

    def incident(self, exchange: Exchange, cause: IncidentCause) -> None:
        """`exchange`'s answer broke the rule `exchange.incident`; `cause` says whose it is."""
        ...

    def scored(self, route: str, variant: str, role: str, score: float, tenant: str) -> None:
        """A score (0..1) from `tenant` for an answer `variant` served in `role`."""
        ...
