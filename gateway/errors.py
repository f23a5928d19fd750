"""Errors the gateway answers with, each rendered as an OpenAI-style JSON error.

GatewayError                   {"error": {"message", "type", "param", "code"}}
├── InvalidRequest        400  malformed JSON, missing or wrong fields
├── Unauthorized          401  admin API without a bearer token
├── Forbidden             403  admin API with a wrong token, or disabled
├── NotFound              404  unknown route, unknown or expired request id
├── PayloadTooLarge       413  body over the configured limit
└── UpstreamError              the backend failed; raised once, at the transport edge
    ├── BadUpstream       502  the backend answered 5xx or garbage
    ├── UpstreamDown      503  the backend could not be reached (with retry-after)
    └── UpstreamTimeout   504  the backend did not answer in time
"""

from __future__ import annotations

import json

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


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


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
