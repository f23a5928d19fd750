"""Errors raised by `serving`.

ServingError
├── InvalidAdapter      an adapter directory that must not be served (names the field)
├── VllmStartError      the vLLM process died or did not become healthy in time
└── VllmRequestError    vLLM answered a management call with a failure
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error `serving` raises on purpose."""


class InvalidAdapter(ServingError):
    """An adapter failed validation; `field` names what is wrong, e.g. ``r``."""

    def __init__(self, adapter: str, field: str, reason: str) -> None:
        self.adapter = adapter
        self.field = field
        self.reason = reason
        super().__init__(f"adapter {adapter!r}: {field}: {reason}")


class VllmStartError(ServingError):
    """vLLM exited or stayed unhealthy; the message ends with the tail of its log."""

    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{reason}\n--- last lines of the vLLM log ---\n{log_tail}")


class VllmRequestError(ServingError):
    """A management request (load/unload adapter, list models) failed."""

    def __init__(self, action: str, status: int, body: str) -> None:
        self.action = action
        self.status = status
        self.body = body
        super().__init__(f"vLLM refused to {action}: HTTP {status}: {body[:500]}")
