"""A fault-injecting stand-in for vLLM's OpenAI server, for load, chaos and fast tests.

It is not an engine: it answers chat completions with a fixed text (or, told to
echo, with the last user message, as a model does when asked "Repeat after me"),
streamed one word per event the way vLLM streams, and injects the faults it is told to
(latency, a share of 5xx, failure mid-stream, silence). Wherever vLLM itself can
run, the tests use vLLM. Given an `upstream`, it is a fault-injecting proxy
instead: requests that survive the latency and 5xx faults go to the real server.

    python -m loadtests.standin --port 9000 --error-rate 0.1 --latency 0.05
    python -m loadtests.standin --port 9001 --latency 0.3 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_TEXT = "To reset your password, open Settings, choose Password and press Reset."


@dataclass
class Faults:
    """What the stand-in does to each request; change it while it runs."""

    latency: float = 0.0  # before the first byte
    token_delay: float = 0.0  # between streamed events
    events_per_write: int = 1  # as a busy vLLM coalesces the tokens of one step
    error_rate: float = 0.0  # share of requests answered with `error_status`
    error_status: int = 500
    fail_after_events: int | None = None  # drop the connection mid-stream
    hang: bool = False  # never answer
    healthy: bool = True  # /health answers 200, else 503 (vLLM's engine died)
    models: list[str] | None = None  # served models; None: any, and no /v1/models
    base_model: str = "tiny-llama"  # the one of `models` that is not an adapter
    refuse_loads: bool = False  # /v1/load_lora_adapter answers 400
    waiting: float | None = None  # vLLM's queue and KV-cache gauges on /metrics
    kv_usage: float | None = None
    text: str = DEFAULT_TEXT
    echo: bool = False  # answer with the last user message instead of `text`
    upstream: str | None = None  # proxy to this server instead of answering
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


@dataclass
class Seen:
    """What the stand-in received, for assertions."""

    bodies: list[dict] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)  # adapter names asked to load
    unloads: list[str] = field(default_factory=list)
    cancelled: int = 0
    active: int = 0


def _chunk(cid: str, model: str, delta: dict, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _last_user_message(body: dict) -> str:
    users = [m for m in body.get("messages", ()) if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    return content if isinstance(content, str) else ""


async def _relay(upstream: str, body: dict) -> Response:
    client = httpx.AsyncClient(base_url=upstream, timeout=120)
    response = await client.send(
        client.build_request("POST", "/v1/chat/completions", json=body), stream=True
    )

    async def close() -> None:
        await response.aclose()
        await client.aclose()

    return StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        media_type=response.headers.get("content-type"),
        background=BackgroundTask(close),
    )


def create_standin(faults: Faults | None = None, seen: Seen | None = None) -> Starlette:
    faults = faults or Faults()
    seen = seen or Seen()

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        seen.bodies.append(body)
        if faults.hang:
            await asyncio.sleep(3600)
        if faults.latency:
            await asyncio.sleep(faults.latency)
        if faults.models is not None and body.get("model") not in faults.models:
            error = {
                "error": {
                    "message": f"The model `{body.get('model')}` does not exist.",
                    "type": "NotFoundError",
                    "param": "model",
                    "code": 404,
                }
            }
            return JSONResponse(error, status_code=404)
        if faults.rng.random() < faults.error_rate:
            error = {
                "error": {
                    "message": "injected failure",
                    "type": "InternalServerError",
                    "code": faults.error_status,
                }
            }
            return JSONResponse(error, status_code=faults.error_status)
        if faults.upstream:
            return await _relay(faults.upstream, body)
        text = _last_user_message(body) if faults.echo else faults.text
        model, words = body["model"], text.split(" ")
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": len(words),
            "total_tokens": 10 + len(words),
        }
        cid = f"chatcmpl-{random.getrandbits(64):x}"
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [choice], "usage": usage,
            })  # fmt: skip

        def chunks():
            yield _chunk(cid, model, {"role": "assistant", "content": ""})
            for i, word in enumerate(words):
                if faults.fail_after_events is not None and i >= faults.fail_after_events:
                    raise ConnectionResetError("injected mid-stream failure")
                yield _chunk(cid, model, {"content": word if i == 0 else " " + word})
            yield _chunk(cid, model, {}, finish="stop")
            if body.get("stream_options") is not None:
                final = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield b"data: " + json.dumps(final).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        async def events():
            seen.active += 1
            batch: list[bytes] = []
            first = True
            try:
                for event in chunks():
                    batch.append(event)
                    if len(batch) < faults.events_per_write:
                        continue
                    if faults.token_delay and not first:
                        await asyncio.sleep(faults.token_delay)
                    yield b"".join(batch)
                    batch.clear()
                    first = False
                if batch:
                    yield b"".join(batch)
            except asyncio.CancelledError:
                seen.cancelled += 1
                raise
            finally:
                seen.active -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(_: Request) -> Response:
        return Response(status_code=200 if faults.healthy else 503)

    async def models(_: Request) -> Response:
        if faults.models is None:
            return JSONResponse({"error": {"message": "not served", "code": 404}}, 404)
        data = [
            {"id": m, "object": "model", "parent": None if m == faults.base_model else "base"}
            for m in faults.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def load_adapter(request: Request) -> Response:
        # As vLLM: a plain-text 200 on success, a JSON 400 otherwise.
        name = (await request.json())["lora_name"]
        seen.loads.append(name)
        if faults.refuse_loads or faults.models is None or name in faults.models:
            reason = "already loaded" if name in (faults.models or ()) else "injected refusal"
            return JSONResponse({"error": {"message": reason, "code": 400}}, 400)
        faults.models.append(name)
        return Response(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_adapter(request: Request) -> Response:
        name = (await request.json())["lora_name"]
        seen.unloads.append(name)
        if faults.models is None or name not in faults.models or name == faults.base_model:
            return JSONResponse({"error": {"message": f"{name} not found", "code": 404}}, 404)
        faults.models.remove(name)
        return Response(f"Success: LoRA adapter '{name}' removed successfully.")

    async def metrics(_: Request) -> Response:
        lines = [
            "# TYPE standin_requests_total counter",
            f"standin_requests_total {len(seen.bodies)}",
        ]
        if faults.waiting is not None:
            lines += [
                "# TYPE vllm:num_requests_waiting gauge",
                f'vllm:num_requests_waiting{{model_name="tiny-llama"}} {faults.waiting}',
            ]
        if faults.kv_usage is not None:
            lines += [
                "# TYPE vllm:kv_cache_usage_perc gauge",
                f'vllm:kv_cache_usage_perc{{model_name="tiny-llama"}} {faults.kv_usage}',
            ]
        return Response("\n".join(lines) + "\n", media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/load_lora_adapter", load_adapter, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload_adapter, methods=["POST"]),
            Route("/metrics", metrics),
        ]
    )
    app.state.faults, app.state.seen = faults, seen
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--words", type=int, help="answer with this many words instead")
    parser.add_argument("--echo", action="store_true", help="answer with the last user message")
    parser.add_argument("--events-per-write", type=int, default=1)
    parser.add_argument("--upstream", help="proxy to this OpenAI-style server (e.g. vLLM)")
    args = parser.parse_args()
    faults = Faults(
        upstream=args.upstream,
        latency=args.latency,
        token_delay=args.token_delay,
        error_rate=args.error_rate,
        events_per_write=args.events_per_write,
        echo=args.echo,
    )
    if args.words:
        faults.text = " ".join(f"w{i}" for i in range(args.words))
    uvicorn.run(create_standin(faults), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
