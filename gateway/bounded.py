"""Request bodies read with a limit before anything parses them.

raw = await read_body(request, 1 << 20)                  # 413 past the limit, however sent
feedback = await read_model(request, FeedbackIn, 4096)   # also 422 naming the bad field
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from gateway.errors import PayloadTooLarge, Unprocessable

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_model(request: Request, model: type[M], limit: int) -> M:
    """The body, read up to `limit` bytes, validated as `model`; the first error names its
    field."""
    raw = await read_body(request, limit)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise unprocessable(exc.errors()) from exc


def unprocessable(errors: Sequence[Mapping[str, Any]], skip: int = 0) -> Unprocessable:
    """The 422 for a body's validation errors, naming the first one's field (its location
    after `skip` leading parts: FastAPI's errors start with "body")."""
    first = errors[0] if errors else {}
    param = ".".join(str(p) for p in first.get("loc", ())[skip:]) or None
    return Unprocessable(f"{param or 'body'}: {first.get('msg', 'invalid')}", param=param)
