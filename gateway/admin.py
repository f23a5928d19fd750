"""Bearer-token protection for `/admin`: a token separate from client API keys."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from gateway.errors import Forbidden, Unauthorized
from gateway.services import Services


def require_admin(request: Request) -> None:
    """401 without a bearer token, 403 with a wrong one or when no admin token is set."""
    services: Services = request.app.state.services
    expected = services.settings.admin_token
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the admin API needs 'Authorization: Bearer <admin token>'")
    if expected is None:
        raise Forbidden("the admin API is disabled: set ROLLGATE_ADMIN_TOKEN")
    # Constant time, so the comparison does not leak how much of the token matched.
    if not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        raise Forbidden("the admin token is not valid")
