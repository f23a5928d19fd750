"""`POST /v1/chat/completions`: parse → choose variant → forward → record.

Served by a pure ASGI middleware in front of FastAPI's router: the hot path
skips routing, dependency resolution and the exception middleware, which
took about a third of the gateway's CPU per request (py-spy, see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.assignment import KEY_HEADER, bucket, choose_role, user_key
from gateway.body import ChatBody
from gateway.bounded import read_body
from gateway.errors import GatewayError, NotFound, RateLimited
from gateway.exchange import Exchange
from gateway.feedback import Answered
from gateway.forward import CHAT_PATH, FEEDBACK_HEADER, VARIANT_HEADER, Attempt, ForwardResponse
from gateway.keys import Client
from gateway.limits import Permit
from gateway.services import Services
from gateway.shadow import ShadowJob, ask_again
from rollout.traffic import Role, RouteTraffic, Variant

log = logging.getLogger("rollgate.gateway")


def error_response(error: GatewayError) -> JSONResponse:
    """The one renderer of gateway errors as OpenAI-style JSON."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def internal_error_response(where: str) -> JSONResponse:
    """A bug answered as a 500 without details; the traceback goes to the log only."""
    log.exception("unhandled error in %s", where)
    return error_response(GatewayError("internal error"))


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def find_route(services: Services, model: str) -> RouteTraffic:
    traffic = services.table.route(model)
    if traffic is None:
        known = ", ".join(sorted(services.table.plan.routes)) or "(none)"
        raise NotFound(
            f"The model '{model}' does not exist. Routes: {known}",
            param="model",
            code="model_not_found",
        )
    return traffic


def attempts_for(
    services: Services, traffic: RouteTraffic, role: Role, body: ChatBody
) -> list[Attempt]:
    """The chosen variant, then stable again if the candidate fails before its first byte."""

    def attempt(variant: Variant, r: Role) -> Attempt:
        return Attempt(
            variant, r, services.backends[variant.backend], body.for_upstream(variant.model)
        )

    first = attempt(traffic.variant(role), role)
    return [first, attempt(traffic.stable, Role.STABLE)] if role is Role.CANDIDATE else [first]


def shadow_job(
    services: Services,
    traffic: RouteTraffic,
    role: Role,
    body: ChatBody,
    request_id: str,
    client: Client,
) -> ShadowJob | None:
    """A mirrored copy for the candidate, queued; None when not sampled or dropped.

    A key that opted out of candidates (blast radius 0) has none of its prompts mirrored.
    """
    if role is not Role.STABLE or traffic.candidate is None or traffic.shadow_sample <= 0:
        return None
    if client.max_candidate_bp == 0:
        return None
    if services.rng.random() >= traffic.shadow_sample:
        return None
    candidate = traffic.candidate
    attempt = Attempt(
        candidate,
        Role.CANDIDATE,
        services.backends[candidate.backend],
        body.for_shadow(candidate.model),
    )
    job = ShadowJob(request_id, traffic.route, attempt, body.fields["messages"])
    return job if services.shadow.submit(job) else None


def served_as(
    services: Services, client: Client, request_id: str, route: str
) -> Callable[[Attempt], dict[str, str]]:
    """The headers an answer from `attempt` carries: its id, a feedback token, and for a
    key with the debug scope only, the variant."""

    def headers(attempt: Attempt) -> dict[str, str]:
        answered = Answered(
            request_id, route, attempt.variant.name, attempt.role.value,
            client.key_id, client.tenant,
        )  # fmt: skip
        found = {"x-request-id": request_id, FEEDBACK_HEADER: services.access.tokens.seal(answered)}
        if client.debug:
            found[VARIANT_HEADER] = attempt.variant.name
        return found

    return headers


def assign(
    services: Services, traffic: RouteTraffic, client: Client, body: ChatBody, header: str | None
) -> Role:
    """The variant's role for this request: the user's sticky bucket, within the key's blast
    radius and the tenant's share of the candidate."""
    if traffic.candidate is None or traffic.weight_bp == 0:
        return Role.STABLE
    user = user_key(header, body.user, client.key_id or uuid.uuid4().hex)
    found = bucket(services.access.secret, traffic.route, traffic.rollout_id, client.tenant, user)
    wanted = choose_role(traffic, found, client.max_candidate_bp)
    share = min(traffic.weight_bp, client.max_candidate_bp)
    return services.guard.decide(traffic, client.tenant, wanted, share)


async def chat_completions(request: Request, client: Client) -> ForwardResponse:
    services: Services = request.app.state.services
    body = ChatBody.parse(await read_body(request, services.settings.max_body_bytes))
    traffic = find_route(services, body.model)
    role = assign(services, traffic, client, body, request.headers.get(KEY_HEADER))
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    job = shadow_job(services, traffic, role, body, request_id, client)
    recorder = services.recorder
    if role is Role.CANDIDATE:  # its flagged answers are weighed against stable's
        ask = ask_again(traffic.stable, services.backends, body, services.clock)
        recorder = recorder.asking(ask)

    def finished(exchange: Exchange | None) -> None:
        if job is not None and not job.stable.done():
            job.stable.set_result(exchange)

    return ForwardResponse(
        request_id=request_id,
        route=traffic.route,
        attempts=attempts_for(services, traffic, role, body),
        stream=body.stream,
        strip_usage=body.stream and not body.wants_usage,
        recorder=recorder,
        clock=services.clock,
        answer_headers=served_as(services, client, request_id, traffic.route),
        public_model=None if client.debug else traffic.route,
        on_finished=finished,
    )


async def admitted(request: Request) -> tuple[Client, Permit]:
    """The caller's key, and its permit under the key's limits. Raises 401 or 429."""
    services: Services = request.app.state.services
    client = services.access.client(bearer(request))
    try:
        permit = await services.limiter.acquire(client.key_id or "", client.limits)
    except RateLimited:
        services.access.metrics.requests.labels(client.tenant, "rate_limited").inc()
        raise
    services.access.metrics.requests.labels(client.tenant, "admitted").inc()
    return client, permit


class ChatFastPath:
    """Serves `POST /v1/chat/completions`; passes everything else to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        permit: Permit | None = None
        response: Response
        try:
            request = Request(scope, receive)
            client, permit = await admitted(request)
            response = await chat_completions(request, client)
        except GatewayError as error:
            response = error_response(error)
        except Exception:
            response = internal_error_response("the chat handler")
        try:
            await response(scope, receive, send)
        finally:
            if permit is not None:
                tokens = response.tokens_used if isinstance(response, ForwardResponse) else 0
                await permit.release(tokens)
