"""Scale-out benchmark: gateway throughput with one replica vs two, and a replica's return.

    .venv/bin/python -m loadtests.bench_scale_out [--duration 5]

Two stand-in upstreams form one pool (`urls`); every gateway balances over
both. Measured in one run, so the figures share the machine's state:

1. throughput through one gateway process, then through two side by side
   (the load split evenly), at the same total concurrency: the scaling ratio;
2. a replica killed under load and started again on its port: the seconds
   from its `/health` answering 200 to the first request a gateway sends it
   (the pool's probe interval bounds it, default 2 s).

Each gateway requires client keys, as by default: it gets one through its admin
API and the load sends it. Everything shares the machine's cores: on 2 cores
the load generator, the stand-ins and the gateways compete, so the ratio says
what one more gateway process buys on the same cores, not on a node of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from loadtests.bench_gateway import BODY, client_key, closed_loop, cpu_seconds, start
from serving.process import free_port

CONCURRENCY = 32


def pool_routes(upstreams: list[int], workdir: Path) -> Path:
    routes = {
        "backends": {"pool": {"urls": [f"http://127.0.0.1:{p}" for p in upstreams]}},
        "routes": [{"name": "support", "stable": {"backend": "pool", "model": "tiny-llama"}}],
    }
    path = workdir / "routes.yaml"
    path.write_text(yaml.safe_dump(routes))
    return path


async def split_load(gateways: dict[int, str], duration: float) -> float:
    """Requests per second over all gateways (port: client key), CONCURRENCY users
    shared evenly among them."""
    each = CONCURRENCY // len(gateways)
    runs = await asyncio.gather(*(
        closed_loop(f"http://127.0.0.1:{p}/v1/chat/completions", BODY, each, duration, key)
        for p, key in gateways.items()
    ))  # fmt: skip
    return sum(len(r) for r in runs) / duration


def requests_seen(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return float(text.split("\nstandin_requests_total ")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--returns", type=int, default=3, help="kill-and-return rounds")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp())
    procs: dict[str, object] = {}
    try:
        upstreams = [free_port(), free_port()]
        for i, port in enumerate(upstreams):
            argv = ["-m", "loadtests.standin", "--port", str(port)]
            procs[f"upstream{i}"] = start(argv, port, "/health")
        routes = pool_routes(upstreams, workdir)
        admin_token = secrets.token_urlsafe(24)  # this run's bootstrap operator token
        gateways: dict[int, str] = {}  # port: its client key
        for i, port in enumerate((free_port(), free_port())):
            argv = ["-m", "gateway", "--routes", str(routes), "--port", str(port)]
            # Throughput of the data plane alone, client keys on as by default: each
            # replica keeps its keys in a SQLite file of its own (one key store per file).
            env = {"ROLLGATE_CONTROL_PLANE": "false", "ROLLGATE_AUTH": "keys",
                   "ROLLGATE_STATE": str(workdir / f"gateway{i}.db"),
                   "ROLLGATE_ADMIN_TOKEN": admin_token}  # fmt: skip
            procs[f"gateway{i}"] = start(argv, port, "/readyz", env)
            gateways[port] = client_key(port, admin_token)
        alone = min(gateways)
        first = {alone: gateways[alone]}  # one gateway on its own

        asyncio.run(split_load(gateways, 1.0))  # warm-up
        rounds = []
        pids = {name: proc.pid for name, proc in procs.items()}

        def busy(run) -> tuple[float, dict[str, float]]:
            """rps, and each process's share of the machine's cores during the run."""
            before = {n: cpu_seconds(pid) for n, pid in pids.items()}
            rps = asyncio.run(run)
            cores = os.cpu_count() or 1
            used = {
                n: (cpu_seconds(pid) - before[n]) / (args.duration * cores)
                for n, pid in pids.items()
            }
            return rps, used

        for _ in range(2):
            one, _ = busy(split_load(first, args.duration))
            two, used = busy(split_load(gateways, args.duration))
            rounds.append((one, two, used))
        print(f"throughput at concurrency {CONCURRENCY}, stand-in pool of 2 replicas:")
        for one, two, used in rounds:
            shares = ", ".join(f"{n} {u:.0%}" for n, u in used.items())
            print(f"  1 gateway {one:,.0f} rps | 2 gateways {two:,.0f} rps | ratio {two / one:.2f}")
            print(f"    machine's CPU during the 2-gateway run: {shares}; the rest: load generator")

        # A replica's return: light load keeps flowing through one gateway meanwhile.
        returns = []
        for _ in range(args.returns):
            victim = "upstream1"
            procs[victim].kill()
            procs[victim].wait()

            async def load_while_down() -> None:
                await split_load(first, 3.0)

            asyncio.run(load_while_down())
            argv = ["-m", "loadtests.standin", "--port", str(upstreams[1])]
            procs[victim] = start(argv, upstreams[1], "/health")
            back = time.monotonic()

            async def until_served(back: float) -> float:
                [(port, key)] = first.items()
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                load = asyncio.create_task(closed_loop(url, BODY, 2, 30.0, key))
                try:
                    while requests_seen(upstreams[1]) == 0:
                        assert time.monotonic() - back < 30, "the replica got no request"
                        await asyncio.sleep(0.02)
                    return time.monotonic() - back
                finally:
                    load.cancel()

            returns.append(asyncio.run(until_served(back)))
        figures = ", ".join(f"{r:.2f}" for r in returns)
        print(f"replica back (/health 200) -> its first request, s: {figures}")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait()


if __name__ == "__main__":
    main()
