"""Errors the gateway answers with, each rendered as an OpenAI-style JSON error.

GatewayError                   {"error": {"message", "type", "param", "code"}}
├── InvalidRequest        400  malformed JSON, missing or wrong fields
│   └── Unprocessable     422  well-formed JSON whose fields are wrong (feedback, admin bodies)
├── Unauthorized          401  no valid API key or admin token
├── Forbidden             403  a credential without the role or scope the call needs
├── Conflict              409  a second score for one answer
├── NotFound              404  unknown route, unknown or expired request id
├── PayloadTooLarge       413  body over the configured limit
├── RateLimited           429  a key's request, token or concurrency limit (with retry-after)
├── Unavailable           503  a store the call needs is down (with retry-after)
└── UpstreamError              the backend failed; raised once, at the transport edge
    ├── BadUpstream       502  the backend answered 5xx or garbage
    ├── UpstreamDown      503  the backend could not be reached (with retry-after)
    └── UpstreamTimeout   504  the backend did not answer in time
"""

from __future__ import annotations

import json
import math

RETRY_AFTER_SECONDS = 1


def error_body(message: str, type: str, code: int | str, param: str | None = None) -> dict:
    """The OpenAI error shape every error the gateway answers with takes."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class GatewayError(Exception):
    status = 500
    type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict:
        code = self.code if self.code is not None else self.status
        return error_body(self.message, self.type, code, self.param)

    def json_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unprocessable(InvalidRequest):
    status = 422


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"

    @property
    def headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class Conflict(GatewayError):
    status = 409
    type = "conflict_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float, code: str = "rate_limited") -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        # Whole seconds, rounded up: a client that waits that long is admitted.
        return {"retry-after": str(max(1, math.ceil(self.retry_after_s)))}


class Unavailable(GatewayError):
    status = 503
    type = "service_unavailable"

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(RETRY_AFTER_SECONDS)}


class UpstreamError(GatewayError):
    """The backend failed. `kind` names how, for metrics: connect, timeout, status, protocol."""

    kind = "upstream"


class BadUpstream(UpstreamError):
    status = 502
    type = "upstream_error"
    kind = "status"

    def __init__(self, message: str, *, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class UpstreamDown(UpstreamError):
    status = 503
    type = "upstream_unavailable"
    kind = "connect"

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(RETRY_AFTER_SECONDS)}


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "upstream_timeout"
    kind = "timeout"
