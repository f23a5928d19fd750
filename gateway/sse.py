"""Server-sent events as vLLM streams them: `data: {json}` events ending in a
blank line, the last one `data: [DONE]`.

The relay keeps the upstream's event bytes as they are; it only needs to
know where events end and what a few of them say (usage, finish, error).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DONE = b"[DONE]"
_SEPARATORS = (b"\r\n\r\n", b"\n\n")


class EventSplitter:
    """Cuts a byte stream into whole events; a partial event waits for its end."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        events = []
        while True:
            cut = min(
                ((i, len(sep)) for sep in _SEPARATORS if (i := self._buffer.find(sep)) >= 0),
                default=None,
            )
            if cut is None:
                return events
            end, width = cut
            events.append(self._buffer[: end + width])
            self._buffer = self._buffer[end + width :]

    @property
    def pending(self) -> bytes:
        return self._buffer


def event_data(event: bytes) -> bytes | None:
    """The joined `data:` payload of an event; None for comments and keep-alives."""
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    raw: bytes
    payload: dict[str, Any] | None  # None for [DONE], comments and unparseable data
    done: bool = False

    @property
    def is_usage_only(self) -> bool:
        return (
            self.payload is not None and not self.payload.get("choices") and "usage" in self.payload
        )

    @property
    def error(self) -> dict[str, Any] | None:
        return self.payload.get("error") if self.payload is not None else None


def parse_event(raw: bytes) -> StreamEvent:
    data = event_data(raw)
    if data is None:
        return StreamEvent(raw, None)
    if data.strip() == DONE:
        return StreamEvent(raw, None, done=True)
    try:
        payload = json.loads(data)
    except ValueError:
        return StreamEvent(raw, None)
    return StreamEvent(raw, payload if isinstance(payload, dict) else None)


def error_event(message: str, error_type: str, code: int) -> bytes:
    """What ends a stream that failed midway: an OpenAI-style error, then [DONE]."""
    error = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return b"data: " + json.dumps(error).encode() + b"\n\ndata: [DONE]\n\n"
