"""The client's chat body: parsed once, validated only where the gateway needs it,
and re-emitted with the client's own bytes for every member it does not change.

    >>> body = ChatBody.parse(b'{"model": "support", "messages": [{"role": "user"}]}')
    >>> body.patched({"model": "support-v2"})
    b'{"model":"support-v2","messages": [{"role": "user"}]}'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest

_decoder = json.JSONDecoder()
_WS = " \t\n\r"


@dataclass(frozen=True, slots=True)
class Member:
    key: str
    text: str  # the member as the client wrote it: '"key": value'
    value: Any


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _expect(text: str, i: int, char: str) -> int:
    i = _skip_ws(text, i)
    if i >= len(text) or text[i] != char:
        raise ValueError(f"expected {char!r} at character {i}")
    return i + 1


def scan_object(text: str) -> list[Member]:
    """Top-level members of a JSON object, each with its exact source text."""
    i = _expect(text, 0, "{")
    members: list[Member] = []
    if _skip_ws(text, i) < len(text) and text[_skip_ws(text, i)] == "}":
        i = _skip_ws(text, i) + 1
    else:
        while True:
            start = _skip_ws(text, i)
            key, i = _decoder.raw_decode(text, start)
            if not isinstance(key, str):
                raise ValueError(f"expected a string key at character {start}")
            value, i = _decoder.raw_decode(text, _skip_ws(text, _expect(text, i, ":")))
            members.append(Member(key, text[start:i], value))
            i = _skip_ws(text, i)
            if i < len(text) and text[i] == ",":
                i += 1
                continue
            i = _expect(text, i, "}")
            break
    if _skip_ws(text, i) != len(text):
        raise ValueError(f"unexpected data after the object at character {i}")
    return members


@dataclass(frozen=True, slots=True)
class ChatBody:
    members: tuple[Member, ...]
    fields: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: bytes) -> ChatBody:
        try:
            members = scan_object(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidRequest(f"the body is not a JSON object: {exc}") from exc
        fields = {m.key: m.value for m in members}
        body = cls(tuple(members), fields)
        body._validate()
        return body

    def _validate(self) -> None:
        model, messages = self.fields.get("model"), self.fields.get("messages")
        if not isinstance(model, str) or not model:
            raise InvalidRequest(
                "'model' is required and must be a non-empty string", param="model"
            )
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest(
                "'messages' is required and must be a non-empty array", param="messages"
            )
        if not isinstance(self.fields.get("stream", False), bool):
            raise InvalidRequest("'stream' must be a boolean", param="stream")
        if not isinstance(self.fields.get("user", ""), str):
            raise InvalidRequest("'user' must be a string", param="user")
        options = self.fields.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")

    @property
    def model(self) -> str:
        return self.fields["model"]

    @property
    def stream(self) -> bool:
        return self.fields.get("stream", False)

    @property
    def user(self) -> str | None:
        return self.fields.get("user") or None

    @property
    def wants_usage(self) -> bool:
        """Did the client itself ask for the final usage chunk of a stream?"""
        options = self.fields.get("stream_options") or {}
        return bool(
            self.stream and options.get("include_usage", True) and "stream_options" in self.fields
        )

    def patched(self, changes: Mapping[str, Any], drop: Iterable[str] = ()) -> bytes:
        """The body with `changes` set and `drop` removed; other members byte for byte."""
        dropped = set(drop)
        parts = [
            f"{json.dumps(m.key)}:{json.dumps(changes[m.key])}" if m.key in changes else m.text
            for m in self.members
            if m.key not in dropped
        ]
        present = {m.key for m in self.members}
        parts += [
            f"{json.dumps(k)}:{json.dumps(v)}" for k, v in changes.items() if k not in present
        ]
        return ("{" + ",".join(parts) + "}").encode()

    def for_upstream(self, model: str) -> bytes:
        """What the variant receives: `model` rewritten; streams always ask for usage."""
        changes: dict[str, Any] = {"model": model}
        if self.stream and not self.wants_usage:
            options = self.fields.get("stream_options") or {}
            changes["stream_options"] = {**options, "include_usage": True}
        return self.patched(changes)

    def for_shadow(self, model: str) -> bytes:
        """The mirrored copy: same request, answered whole (shadow answers are never streamed)."""
        return self.patched({"model": model, "stream": False}, drop=("stream_options",))
