"""Gateway overhead benchmark: the stand-in upstream reached directly vs through the gateway.

    .venv/bin/python -m loadtests.bench_gateway [--duration 5]

Each server runs in its own process (uvicorn, uvloop, httptools, one worker);
the load comes from this process (aiohttp, closed loop). Everything shares the
machine's cores, so compare figures taken in the same run: the ratios matter.
The gateways run as deployed by default, with client keys on: each gets a key
through its admin API and every request carries it (the direct requests too,
so both sides send the same bytes); the overhead includes checking the key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from serving.process import free_port

SSE_BATCH = 16
BODY = {
    "model": "support",
    "messages": [{"role": "user", "content": "How do I reset my password?"}],
}


# Limits that never refuse in a benchmark's few seconds: their cost, not their effect.
GENEROUS_LIMITS = {"requests_per_s": 1e6, "tokens_per_min": 1e12, "concurrent": 10_000}


def client_key(port: int, admin_token: str, **limits: float) -> str:
    """A client key (no debug scope; no limits unless given) made through the admin API."""
    created = httpx.post(
        f"http://127.0.0.1:{port}/admin/keys",
        json={"name": "bench", "tenant": "bench", **limits},
        headers={"authorization": f"Bearer {admin_token}"},
    )
    created.raise_for_status()
    return created.json()["key"]


def request_headers(key: str | None) -> dict[str, str]:
    auth = {"authorization": f"Bearer {key}"} if key else {}
    return {"content-type": "application/json", **auth}


def start(
    argv: list[str], port: int, health: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, *argv], env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health}").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{argv} did not start")


async def closed_loop(
    url: str, body: dict, concurrency: int, duration: float, key: str | None = None
) -> list[float]:
    latencies: list[float] = []
    payload = json.dumps(body).encode()
    headers = request_headers(key)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        end = time.perf_counter() + duration

        async def user() -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(user() for _ in range(concurrency)))
    return latencies


async def stream_events(url: str, duration: float, key: str | None = None) -> float:
    """Events per second relayed to one streaming client."""
    events = 0
    body = json.dumps({**BODY, "stream": True}).encode()
    headers = request_headers(key)
    async with aiohttp.ClientSession() as session:
        end = time.perf_counter() + duration
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            async with session.post(url, data=body, headers=headers) as r:
                async for chunk in r.content.iter_any():
                    events += chunk.count(b"\n\n")
        return events / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def routes_file(upstream: str, shadow: float) -> Path:
    text = f"""
backends:
  up: {{url: "{upstream}"}}
routes:
  - name: support
    stable: {{backend: up, model: tiny-llama}}
    candidate: {{backend: up, model: acme-voice}}
    shadow_sample: {shadow}
"""
    path = Path(tempfile.mkdtemp()) / "routes.yaml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    d = args.duration
    admin_token = secrets.token_urlsafe(24)  # this run's bootstrap operator token
    procs = []
    try:
        up_port = free_port()
        up_argv = ["-m", "loadtests.standin", "--port", str(up_port)]
        procs.append(start(up_argv, up_port, "/health"))
        # Long answers, written one event at a time and SSE_BATCH at a time (as a
        # busy vLLM does when a stream falls behind its engine).
        long_ports = {}
        for per_write in (1, SSE_BATCH):
            port = long_ports[per_write] = free_port()
            argv = ["-m", "loadtests.standin", "--port", str(port), "--words", "2000"]
            procs.append(start([*argv, "--events-per-write", str(per_write)], port, "/health"))
        gateways = {}
        # The price of access control, side by side: no keys, and a key under all three limits.
        for name, auth in (("gateway-no-keys", "none"), ("gateway-limited", "keys")):
            port = free_port()
            routes = routes_file(f"http://127.0.0.1:{up_port}", 0.0)
            argv = ["-m", "gateway", "--routes", str(routes), "--port", str(port)]
            env = {"ROLLGATE_STATE": str(routes.parent / "state.db"), "ROLLGATE_AUTH": auth,
                   "ROLLGATE_ADMIN_TOKEN": admin_token}  # fmt: skip
            procs.append(start(argv, port, "/healthz", env))
            limits = GENEROUS_LIMITS if auth == "keys" else {}
            gateways[name] = (port, procs[-1].pid, client_key(port, admin_token, **limits))
        for name, upstream, shadow in (
            ("gateway", up_port, 0.0),
            ("gateway+shadow", up_port, 1.0),
            ("gateway-sse-1", long_ports[1], 0.0),
            (f"gateway-sse-{SSE_BATCH}", long_ports[SSE_BATCH], 0.0),
        ):
            port = free_port()
            routes = routes_file(f"http://127.0.0.1:{upstream}", shadow)
            argv = ["-m", "gateway", "--routes", str(routes), "--port", str(port)]
            # As deployed by default: the embedded control plane on, its state its own,
            # client keys required.
            env = {"ROLLGATE_STATE": str(routes.parent / "state.db"), "ROLLGATE_AUTH": "keys",
                   "ROLLGATE_ADMIN_TOKEN": admin_token}  # fmt: skip
            procs.append(start(argv, port, "/healthz", env))
            gateways[name] = (port, procs[-1].pid, client_key(port, admin_token))

        def url(port: int) -> str:
            return f"http://127.0.0.1:{port}/v1/chat/completions"

        direct, via = url(up_port), url(gateways["gateway"][0])
        _, gateway_pid, key = gateways["gateway"]
        asyncio.run(closed_loop(via, BODY, 8, 1.0, key))  # warm-up
        rows = []
        for c in (1, 32):
            a = asyncio.run(closed_loop(direct, BODY, c, d, key))
            cpu_before = cpu_seconds(gateway_pid)
            b = asyncio.run(closed_loop(via, BODY, c, d, key))
            cpu_per_request = (cpu_seconds(gateway_pid) - cpu_before) / len(b)
            rows.append((c, a, b, cpu_per_request))
        access_rows = []
        access = ("gateway-no-keys", "gateway", "gateway-limited")
        for name in access:  # each warmed up as the first gateway was
            port, _, its_key = gateways[name]
            asyncio.run(closed_loop(url(port), BODY, 8, 1.0, its_key))
        for round_ in (1, 2):  # interleaved: a drift in the machine's load hits all three
            for name in access:
                port, pid, its_key = gateways[name]
                for c in (1, 32):
                    cpu_before = cpu_seconds(pid)
                    b = asyncio.run(closed_loop(url(port), BODY, c, d / 2, its_key))
                    cpu = (cpu_seconds(pid) - cpu_before) / len(b)
                    access_rows.append((round_, name, c, b, cpu))
        shadow_runs = []
        for _ in range(2):
            shadowing, _, shadow_key = gateways["gateway+shadow"]
            off = asyncio.run(closed_loop(via, BODY, 1, d / 2, key))
            on = asyncio.run(closed_loop(url(shadowing), BODY, 1, d / 2, shadow_key))
            shadow_runs.append((statistics.median(off) * 1000, statistics.median(on) * 1000))
        sse = {}
        for per_write, port in long_ports.items():
            relay, _, relay_key = gateways[f"gateway-sse-{per_write}"]
            sse[per_write] = (
                asyncio.run(stream_events(url(port), d, relay_key)),
                asyncio.run(stream_events(url(relay), d, relay_key)),
            )

        # The gateway shares 2 cores with the load and the upstream: its CPU time
        # per request says what one worker with a core to itself would serve.
        print(
            "concurrency | direct rps | gateway rps | direct p50/p99 ms | via p50/p99 ms "
            "| added ms | gateway CPU µs/request | one core's worth, rps"
        )
        for c, a, b, cpu in rows:
            direct_ms = f"{pct(a, 50):.2f} / {pct(a, 99):.2f}"
            via_ms = f"{pct(b, 50):.2f} / {pct(b, 99):.2f}"
            added = pct(b, 50) - pct(a, 50)
            rps = f"{len(a) / d:>10.0f} | {len(b) / d:>11.0f}"
            print(
                f"{c:>11} | {rps} | {direct_ms} | {via_ms} | {added:.2f} "
                f"| {cpu * 1e6:.0f} | {1 / cpu:,.0f}"
            )
        print("round | access | concurrency | rps | p50 ms | gateway CPU µs/request | vs no keys")
        baseline = {(r, c): cpu for r, name, c, _, cpu in access_rows if name == access[0]}
        for r, name, c, b, cpu in access_rows:
            print(
                f"{r} | {name} | {c} | {len(b) / (d / 2):,.0f} | {pct(b, 50):.2f} "
                f"| {cpu * 1e6:.0f} | {cpu / baseline[r, c]:.2f}"
            )
        noise = abs(shadow_runs[0][0] - shadow_runs[1][0])
        rounds = ", ".join(f"off {off:.3f} / on {on:.3f}" for off, on in shadow_runs)
        print(f"shadow, client p50 ms: {rounds}; off-to-off noise {noise:.3f} ms")
        for per_write, (direct_eps, via_eps) in sse.items():
            print(
                f"SSE events/s, {per_write} per upstream write: direct {direct_eps:,.0f}, "
                f"via gateway {via_eps:,.0f} ({via_eps / direct_eps:.2f})"
            )
        print(f"gateway RSS after the run: {rss_mib(gateway_pid):.0f} MiB")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


if __name__ == "__main__":
    main()
