"""Server-sent events as vLLM streams them: `data: {json}` events ending in a
blank line, the last one `data: [DONE]`.

The relay keeps the upstream's event bytes as they are; it only needs to
know where events end and what a few of them say (usage, finish, error).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.payloads import Chunk, DecodeFailed, decode_chunk

DONE = b"[DONE]"
# A blank line ends an event. vLLM ends lines with LF; CRLF is handled too, on
# the slower path (JSON escapes CR, so a raw CR only ever ends a line).
_LF_END = b"\n\n"
_ANY_END = re.compile(rb"\r?\n\r?\n")


class EventSplitter:
    """Cuts a byte stream into whole events; a partial event waits for its end.

    Linear in the bytes fed: a read that brings thousands of events (a relay
    that fell behind gets them all at once) is scanned once, not once per event.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" not in buffer:
            *events, self._buffer = buffer.split(_LF_END)
            return [event + _LF_END for event in events]
        events, start = [], 0
        for end in _ANY_END.finditer(buffer):
            events.append(buffer[start : end.end()])
            start = end.end()
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        return self._buffer


def event_data(event: bytes) -> bytes | None:
    """The joined `data:` payload of an event; None for comments and keep-alives."""
    if event.startswith(b"data: ") and event.count(b"\n") == 2:  # vLLM's one-line events
        return event[6:].rstrip(b"\r\n")
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    raw: bytes
    chunk: Chunk | None  # None for [DONE], comments and data that is not a chunk
    done: bool = False

    @property
    def is_usage_only(self) -> bool:
        return self.chunk is not None and not self.chunk.choices and self.chunk.usage is not None

    @property
    def error(self) -> dict[str, Any] | None:
        return self.chunk.error if self.chunk is not None else None


def parse_event(raw: bytes) -> StreamEvent:
    data = event_data(raw)
    if data is None:
        return StreamEvent(raw, None)
    if data.strip() == DONE:
        return StreamEvent(raw, None, done=True)
    try:
        return StreamEvent(raw, decode_chunk(data))
    except DecodeFailed:
        return StreamEvent(raw, None)


def error_event(message: str, error_type: str, code: int) -> bytes:
    """What ends a stream that failed midway: an OpenAI-style error, then [DONE]."""
    error = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return b"data: " + json.dumps(error).encode() + b"\n\ndata: [DONE]\n\n"
