"""Forwarding one chat completion to a variant: failover, relay, cancellation.

`ForwardResponse` is the ASGI response the chat handler returns. It decides its
status and headers only once an upstream has answered, so that

- a candidate failing before its first byte is retried on stable, and the
  client sees stable's answer with `x-rollgate-variant` naming stable;
- a failure after the first byte ends the stream with an OpenAI-style error
  event, never a silent truncation;
- a client that disconnects cancels the upstream request (the connection is
  dropped, vLLM aborts the request and frees its slot);
- the client sees the route it asked for as `model`, not the variant that
  answered (vLLM echoes an adapter's name), unless its key may debug.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError, UpstreamError
from gateway.exchange import Clock, Exchange, Outcome
from gateway.payloads import DecodeFailed, decode_completion
from gateway.pool import BackendPool
from gateway.recorder import Recorder
from gateway.sse import EventSplitter, error_event, parse_event
from gateway.upstream import Reply
from rollout.traffic import Role, Variant

CHAT_PATH = "/v1/chat/completions"
STATUS_CANCELLED = 499  # nginx's "client closed request"
VARIANT_HEADER = "x-rollgate-variant"
FEEDBACK_HEADER = "x-rollgate-feedback-token"


@functools.lru_cache(maxsize=256)
def _model_member(model: str) -> re.Pattern[bytes]:
    # A `"model": "<name>"` member; the same text inside a JSON string has escaped quotes.
    name = re.escape(json.dumps(model).encode()[1:-1])
    return re.compile(rb'("model"\s*:\s*)"' + name + rb'"')


def disguise(data: bytes, model: str, public: str) -> bytes:
    """`data` (a completion or SSE events) with `model` members naming `public` instead.

    >>> disguise(b'{"id":"x","model":"acme-voice"}', "acme-voice", "support")
    b'{"id":"x","model":"support"}'
    """
    public_json = json.dumps(public).encode()
    return _model_member(model).sub(lambda m: m.group(1) + public_json, data)


@dataclass(frozen=True, slots=True)
class Attempt:
    variant: Variant
    role: Role
    backend: BackendPool
    body: bytes


def summarise(x: Exchange, content: bytes) -> None:
    """Fill an exchange from a whole (non-streamed) completion."""
    try:
        completion = decode_completion(content)
    except DecodeFailed:
        return
    for choice in completion.choices or ():
        if choice.message is not None and choice.message.content is not None:
            x.text_parts.append(choice.message.content)
        x.finish_reason = choice.finish_reason or x.finish_reason
    if completion.usage is not None:
        x.input_tokens = completion.usage.prompt_tokens
        if completion.usage.completion_tokens is not None:
            x.output_tokens = completion.usage.completion_tokens


async def exchange_whole(attempt: Attempt, x: Exchange, clock: Clock) -> tuple[int, bytes, str]:
    """One non-streamed attempt: (status, body, content type). Raises `UpstreamError`."""
    async with attempt.backend.post(CHAT_PATH, attempt.body, attempt.variant.model) as upstream:
        content = await upstream.read()
        content_type = upstream.headers.get("content-type", "application/json")
        status = upstream.status
    if status == 200:
        summarise(x, content)
        x.finish(clock(), Outcome.OK, status)
    else:
        x.finish(clock(), Outcome.CLIENT_ERROR, status)
    return status, content, content_type


def _headers(pairs: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs.items()]


async def send_error(send: Send, error: GatewayError, extra: dict[str, str]) -> None:
    body = error.json_bytes()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    await send({
        "type": "http.response.start",
        "status": error.status,
        "headers": _headers({**headers, **error.headers, **extra}),
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class ForwardResponse(Response):
    """Serves one request from the first attempt that answers."""

    def __init__(
        self,
        *,
        request_id: str,
        route: str,
        attempts: Sequence[Attempt],
        stream: bool,
        strip_usage: bool,
        recorder: Recorder,
        clock: Clock,
        answer_headers: Callable[[Attempt], dict[str, str]],
        public_model: str | None,
        on_finished: Callable[[Exchange | None], None],
    ) -> None:
        self.request_id = request_id
        self.route = route
        self.attempts = attempts
        self.stream = stream
        self.strip_usage = strip_usage
        self.recorder = recorder
        self.clock = clock
        self.answer_headers = answer_headers
        self.public_model = public_model  # None: the client may see the variant's model
        self.on_finished = on_finished
        self.background = None
        self._started = False  # response headers sent
        self._complete = False  # last body message sent
        self._current: Exchange | None = None
        self._client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The work runs in the server's task; a watcher cancels it if the client
        # goes away first. One extra task per request, and no asyncio.wait().
        task = asyncio.current_task()
        assert task is not None
        watch = asyncio.ensure_future(self._watch(receive, task))
        try:
            await self._serve(send)
        except asyncio.CancelledError:
            if not self._client_gone:
                raise  # the server is shutting down: let it
            task.uncancel()
        finally:
            watch.cancel()

    async def _watch(self, receive: Receive, task: asyncio.Task) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._complete:
            self._client_gone = True
            task.cancel()

    def _exchange(self, attempt: Attempt) -> Exchange:
        self._current = Exchange(
            request_id=self.request_id,
            route=self.route,
            variant=attempt.variant.name,
            role=attempt.role,
            started=self.clock(),
        )
        return self._current

    async def _serve(self, send: Send) -> None:
        served: Exchange | None = None
        try:
            served = await self._attempts(send)
        except asyncio.CancelledError:
            x = self._current
            if x is not None and x.outcome is None:
                x.finish(self.clock(), Outcome.CANCELLED, STATUS_CANCELLED)
                self.recorder.finished(x)
            raise
        finally:
            self.on_finished(served if served and served.outcome is Outcome.OK else None)

    async def _attempts(self, send: Send) -> Exchange | None:
        for i, attempt in enumerate(self.attempts):
            x = self._exchange(attempt)
            try:
                if self.stream:
                    await self._stream(attempt, x, send)
                else:
                    await self._whole(attempt, x, send)
                self.recorder.finished(x)
                return x
            except UpstreamError as error:
                x.finish(self.clock(), Outcome.ERROR, error.status, error.kind)
                self.recorder.finished(x)
                if self._started:
                    return None  # the stream was ended with an error event
                if i + 1 < len(self.attempts):
                    self.recorder.metrics.failovers.labels(self.route).inc()
                    continue
                # A failure is no answer to score: no feedback token.
                ids = self.answer_headers(attempt)
                del ids[FEEDBACK_HEADER]
                await send_error(send, error, ids)
                self._complete = True
        return None

    @property
    def tokens_used(self) -> int:
        """Prompt and completion tokens of the attempt that answered last, as its usage said
        (0 when unknown)."""
        x = self._current
        return (x.input_tokens or 0) + (x.output_tokens or 0) if x is not None else 0

    def _public(self, attempt: Attempt, data: bytes) -> bytes:
        if self.public_model is None or not data:
            return data
        return disguise(data, attempt.variant.model, self.public_model)

    async def _start(
        self, send: Send, status: int, attempt: Attempt, headers: dict[str, str]
    ) -> None:
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": _headers({**headers, **self.answer_headers(attempt)}),
        })  # fmt: skip
        self._started = True

    async def _whole(self, attempt: Attempt, x: Exchange, send: Send) -> None:
        status, body, content_type = await exchange_whole(attempt, x, self.clock)
        body = self._public(attempt, body)
        headers = {"content-type": content_type, "content-length": str(len(body))}
        await self._start(send, status, attempt, headers)
        await send({"type": "http.response.body", "body": body})
        self._complete = True

    async def _stream(self, attempt: Attempt, x: Exchange, send: Send) -> None:
        async with attempt.backend.post(CHAT_PATH, attempt.body, attempt.variant.model) as upstream:
            if upstream.status != 200:  # a 4xx the client caused: pass it through whole
                body = await upstream.read()
                x.finish(self.clock(), Outcome.CLIENT_ERROR, upstream.status)
                ctype = upstream.headers.get("content-type", "application/json")
                await self._start(send, upstream.status, attempt, {"content-type": ctype})
                await send({"type": "http.response.body", "body": self._public(attempt, body)})
                self._complete = True
                return
            await self._relay(attempt, x, upstream, send)

    async def _relay(
        self,
        attempt: Attempt,
        x: Exchange,
        upstream: Reply,
        send: Send,
    ) -> None:
        splitter, done = EventSplitter(), False
        try:
            async for chunk in upstream.chunks():
                out, done = self._events(x, splitter.feed(chunk), done)
                if not out:
                    continue
                if not self._started:
                    headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
                    await self._start(send, 200, attempt, headers)
                out = self._public(attempt, out)
                await send({"type": "http.response.body", "body": out, "more_body": True})
        except UpstreamError as error:
            if not self._started:
                raise  # nothing sent yet: the caller may still fail over
            await self._end(send, error_event(error.message, error.type, error.status))
            raise
        if x.outcome is None and not done:
            error = "the upstream stream ended without [DONE]"
            x.finish(self.clock(), Outcome.ERROR, 502, "truncated")
            tail = self._public(attempt, splitter.pending)
            tail += error_event(error, "upstream_error", 502)
            if not self._started:
                await self._start(send, 200, attempt, {"content-type": "text/event-stream"})
            await self._end(send, tail)
            return
        if x.outcome is None:
            x.finish(self.clock(), Outcome.OK, 200)
        await self._end(send, self._public(attempt, splitter.pending))

    async def _end(self, send: Send, body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self._complete = True

    def _events(self, x: Exchange, events: list[bytes], done: bool) -> tuple[bytes, bool]:
        """Measure the events of one read; return the bytes to relay and whether [DONE] came."""
        now, out = self.clock(), []
        for raw in events:
            event = parse_event(raw)
            done = done or event.done
            if event.error is not None:
                x.finish(now, Outcome.ERROR, 200, "stream_error")
            elif event.chunk is not None:
                chunk = event.chunk
                if chunk.usage is not None:
                    x.input_tokens = chunk.usage.prompt_tokens
                    if chunk.usage.completion_tokens is not None:
                        x.output_tokens = chunk.usage.completion_tokens
                if self.strip_usage and event.is_usage_only:
                    continue
                for choice in chunk.choices or ():
                    if choice.delta is not None and choice.delta.content:
                        x.token(now, choice.delta.content)
                    x.finish_reason = choice.finish_reason or x.finish_reason
            out.append(raw)
        return b"".join(out), done
