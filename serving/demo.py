"""The main job, for now: build the tiny model and adapters, serve them with real vLLM,
ask the base and each adapter one question, print the answers, stop everything.

    python -m serving.demo
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import httpx

from serving import corpus
from serving.artifacts import default_cache_dir, ensure_artifacts
from serving.client import VllmClient
from serving.config import AdapterSpec, ServingConfig
from serving.errors import ServingError
from serving.process import VllmServer, free_port

log = logging.getLogger("rollgate.demo")


async def ask(http: httpx.AsyncClient, model: str, prompt: str) -> str:
    response = await http.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 48,
            "temperature": 0,
        },
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


async def converse(config: ServingConfig, prompt: str) -> None:
    async with httpx.AsyncClient(base_url=config.base_url, timeout=60) as http:
        served = await VllmClient(http).models()
        print(f"\nvLLM serves: {', '.join(m.id for m in served)}")
        print(f"prompt (held out from training): {prompt!r}\n")
        for model in served:
            print(f"  {model.id:>12}: {await ask(http, model.id, prompt)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--start-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    built = ensure_artifacts(args.cache_dir)
    config = ServingConfig(
        model_path=built.base_dir,
        served_name=built.base_name,
        adapters=tuple(AdapterSpec(name=n, path=p) for n, p in built.adapters.items()),
        dtype="float32",
        max_model_len=built.context_length,
        port=free_port(),
    )
    log_path = args.cache_dir / "logs" / "vllm-demo.log"
    log.info("starting vLLM on %s (log: %s); about 40 s", config.base_url, log_path)
    try:
        with VllmServer(config, log_path) as server:
            server.wait_ready(timeout=args.start_timeout)
            log.info("vLLM is ready")
            asyncio.run(converse(config, corpus.examples(held_out=True)[0].prompt))
            log.info("stopping vLLM")
    except ServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: vLLM stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
