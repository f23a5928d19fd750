"""The few fields of vLLM's answers that the gateway reads, decoded with msgspec.

msgspec skips every other field without building it: most of the cost of
parsing each event of a stream, or a whole answer, on the hot path. Decoding
raises `msgspec.DecodeError` (not JSON) or `msgspec.ValidationError` (not
this shape); callers treat both as "nothing to read" and relay the bytes as
they are.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Delta(msgspec.Struct):
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    delta: Delta | None = None
    finish_reason: str | None = None


class Chunk(msgspec.Struct):
    """One streamed event's payload (`chat.completion.chunk`, or an error)."""

    choices: list[ChunkChoice] | None = None
    usage: Usage | None = None
    error: dict[str, Any] | None = None


class Message(msgspec.Struct):
    content: str | None = None


class Choice(msgspec.Struct):
    message: Message | None = None
    finish_reason: str | None = None


class Completion(msgspec.Struct):
    """A whole (non-streamed) `chat.completion`."""

    choices: list[Choice] | None = None
    usage: Usage | None = None


DecodeFailed = (msgspec.DecodeError, msgspec.ValidationError)
decode_chunk = msgspec.json.Decoder(Chunk).decode
decode_completion = msgspec.json.Decoder(Completion).decode
